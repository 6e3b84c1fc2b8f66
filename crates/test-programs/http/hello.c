// 200 with `content-type: text/plain` and the body "hello from wasi:http\n".
#include "common.h"

void exports_wasi_http_incoming_handler_handle(request_t req, outparam_t out) {
  wasi_http_types_incoming_request_drop_own(req);
  respond(out, 200, "hello from wasi:http\n");
}
