// One server, healthy and hostile requests side by side (for bench/soak and the hostile-load test).
// The path picks the behaviour:
//   /spin    loops forever without answering (only a deadline ends it)
//   /trap    traps before answering
//   /memhog  allocates and touches 1 MiB after 1 MiB until malloc fails, then traps
//   /headers makes header maps (host memory, not the guest's), 56 KiB of values in each (below the
//            host's per-map limit, over which an append traps), and keeps them all: 10 million of
//            them unless the host refuses; answers 200 "headers: N KiB held" if it ever gets there
//   anything else: 200 "hello from wasi:http\n", as hello.c
#include <stdio.h>
#include <string.h>

#include "common.h"

void exports_wasi_http_incoming_handler_handle(request_t req, outparam_t out) {
  char *path = request_path(req);
  if (strcmp(path, "/spin") == 0) {
    volatile uint64_t counter = 0;
    for (;;) counter++;
  }
  if (strcmp(path, "/trap") == 0) __builtin_trap();
  if (strcmp(path, "/memhog") == 0) {
    enum { CHUNK = 1 << 20 };
    for (;;) {
      volatile char *p = malloc(CHUNK);
      if (!p) __builtin_trap();
      for (size_t i = 0; i < CHUNK; i += 4096) p[i] = 1;
    }
  }
  if (strcmp(path, "/headers") == 0) {
    static char value[8192];
    memset(value, 'x', sizeof value);
    wasi_http_types_field_name_t n = str("x-fill");
    wasi_http_types_field_value_t v = {(uint8_t *)value, sizeof value};
    size_t held = 0;
    for (size_t maps = 0; maps < 10000000; maps++) {
      fields_t f = wasi_http_types_constructor_fields();  // a full resource table traps here
      wasi_http_types_header_error_t err;
      for (int i = 0; i < 7; i++) {
        if (!wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(f), &n, &v, &err)) __builtin_trap();
        held += sizeof value;
      }
    }
    char msg[64];
    snprintf(msg, sizeof msg, "headers: %zu KiB held\n", held / 1024);
    respond(out, 200, msg);
    return;
  }
  free(path);
  wasi_http_types_incoming_request_drop_own(req);
  respond(out, 200, "hello from wasi:http\n");
}
