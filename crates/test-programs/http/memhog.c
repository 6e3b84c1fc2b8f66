// Allocates (and touches) 1 MiB after 1 MiB until malloc fails, then traps. Never responds.
#include "common.h"

void exports_wasi_http_incoming_handler_handle(request_t req, outparam_t out) {
  enum { CHUNK = 1 << 20 };
  for (;;) {
    volatile char *p = malloc(CHUNK);
    if (!p) __builtin_trap();
    for (size_t i = 0; i < CHUNK; i += 4096) p[i] = 1;
  }
}
