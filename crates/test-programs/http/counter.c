// Answers the number of requests this instance has handled, counting this one: "1\n" on a fresh
// instance, so it shows whether the host instantiates afresh per request.
#include <stdio.h>

#include "common.h"

static unsigned requests;

void exports_wasi_http_incoming_handler_handle(request_t req, outparam_t out) {
  char body[32];
  snprintf(body, sizeof body, "%u\n", ++requests);
  wasi_http_types_incoming_request_drop_own(req);
  respond(out, 200, body);
}
