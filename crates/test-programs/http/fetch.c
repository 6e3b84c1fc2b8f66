// GETs the URL in the request header `x-fetch-url` (http:// or https://) through
// wasi:http/outgoing-handler and answers 200 with the fetched body (streamed) and the upstream
// status in `x-upstream-status`. When the host refuses or the fetch fails with an error-code, answers
// 502 "error: <error-code case>\n", e.g. "error: HTTP-request-denied\n".
#include <stdio.h>

#include "common.h"

static void fail(outparam_t out, const wasi_http_types_error_code_t *e) {
  char body[64];
  snprintf(body, sizeof body, "error: %s\n", error_code_name(e));
  respond(out, 502, body);
}

void exports_wasi_http_incoming_handler_handle(request_t req, outparam_t out) {
  char *url = request_header(req, "x-fetch-url");
  wasi_http_types_incoming_request_drop_own(req);
  wasi_http_types_scheme_t scheme;
  const char *rest;
  if (url && strncmp(url, "http://", 7) == 0) {
    scheme.tag = WASI_HTTP_TYPES_SCHEME_HTTP;
    rest = url + 7;
  } else if (url && strncmp(url, "https://", 8) == 0) {
    scheme.tag = WASI_HTTP_TYPES_SCHEME_HTTPS;
    rest = url + 8;
  } else {
    respond(out, 400, "x-fetch-url must be an http:// or https:// URL\n");
    free(url);
    return;
  }
  const char *slash = strchr(rest, '/');
  proxy_string_t authority = {(uint8_t *)rest, slash ? (size_t)(slash - rest) : strlen(rest)};
  proxy_string_t path = str(slash ? slash : "/");

  wasi_http_types_own_outgoing_request_t request = wasi_http_types_constructor_outgoing_request(wasi_http_types_constructor_fields());
  wasi_http_types_borrow_outgoing_request_t r = wasi_http_types_borrow_outgoing_request(request);
  if (!wasi_http_types_method_outgoing_request_set_scheme(r, &scheme) ||
      !wasi_http_types_method_outgoing_request_set_authority(r, &authority) ||
      !wasi_http_types_method_outgoing_request_set_path_with_query(r, &path)) {
    respond(out, 400, "bad x-fetch-url\n");
    wasi_http_types_outgoing_request_drop_own(request);
    free(url);
    return;
  }
  free(url);

  wasi_http_types_own_future_incoming_response_t future;
  wasi_http_types_error_code_t err;
  if (!wasi_http_outgoing_handler_handle(request, NULL, &future, &err)) {
    fail(out, &err);
    return;
  }
  wasi_http_types_borrow_future_incoming_response_t f = wasi_http_types_borrow_future_incoming_response(future);
  wasi_io_poll_own_pollable_t ready = wasi_http_types_method_future_incoming_response_subscribe(f);
  wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
  wasi_io_poll_pollable_drop_own(ready);
  wasi_http_types_result_result_own_incoming_response_error_code_void_t result;
  if (!wasi_http_types_method_future_incoming_response_get(f, &result) || result.is_err) __builtin_trap();
  wasi_http_types_future_incoming_response_drop_own(future);
  if (result.val.ok.is_err) {
    fail(out, &result.val.ok.val.err);
    return;
  }

  wasi_http_types_own_incoming_response_t response = result.val.ok.val.ok;
  char status[8];
  snprintf(status, sizeof status, "%u", wasi_http_types_method_incoming_response_status(wasi_http_types_borrow_incoming_response(response)));
  fields_t headers = wasi_http_types_constructor_fields();
  header_add(headers, "content-type", "application/octet-stream");
  header_add(headers, "x-upstream-status", status);
  wasi_http_types_own_incoming_body_t body;
  input_t in;
  if (!wasi_http_types_method_incoming_response_consume(wasi_http_types_borrow_incoming_response(response), &body)) __builtin_trap();
  if (!wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body), &in)) __builtin_trap();
  response_t res = start_response(out, 200, headers);
  copy_stream(in, res.out);
  wasi_io_streams_input_stream_drop_own(in);
  wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(body));
  wasi_http_types_incoming_response_drop_own(response);
  end_response(res);
}
