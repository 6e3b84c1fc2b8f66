// Answers the value of the environment variable GREETING, or "unset\n".
#include "common.h"

void exports_wasi_http_incoming_handler_handle(request_t req, outparam_t out) {
  wasi_http_types_incoming_request_drop_own(req);
  const char *greeting = getenv("GREETING");
  if (!greeting) {
    respond(out, 200, "unset\n");
    return;
  }
  char *body = malloc(strlen(greeting) + 2);
  strcpy(body, greeting);
  strcat(body, "\n");
  respond(out, 200, body);
  free(body);
}
