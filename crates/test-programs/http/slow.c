// Sleeps `?ms=N` milliseconds (default 1000) on a monotonic-clock pollable -- blocking, not
// spinning -- then answers 200 "slow done\n".
#include "common.h"

void exports_wasi_http_incoming_handler_handle(request_t req, outparam_t out) {
  char *path = request_path(req);
  const char *q = strstr(path, "ms=");
  uint64_t ms = q && (q[-1] == '?' || q[-1] == '&') ? strtoull(q + 3, NULL, 10) : 1000;
  free(path);
  wasi_http_types_incoming_request_drop_own(req);
  sleep_ms(ms);
  respond(out, 200, "slow done\n");
}
