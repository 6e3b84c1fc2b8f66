// Traps (wasm `unreachable`) in the handler, before any response is sent.
#include "common.h"

void exports_wasi_http_incoming_handler_handle(request_t req, outparam_t out) {
  __builtin_trap();
}
