// Never returns: spins forever in the handler without sending a response (for timeouts and
// epoch/fuel interruption).
#include "common.h"

void exports_wasi_http_incoming_handler_handle(request_t req, outparam_t out) {
  volatile uint64_t counter = 0;
  for (;;) counter++;
}
