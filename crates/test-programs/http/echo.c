// Streams the request body back chunk by chunk as it arrives (never holding all of it), with
// status 200 and the request's method and path in the headers `x-method` and `x-path`.
#include "common.h"

void exports_wasi_http_incoming_handler_handle(request_t req, outparam_t out) {
  char *method = request_method(req), *path = request_path(req);
  fields_t headers = wasi_http_types_constructor_fields();
  header_add(headers, "content-type", "application/octet-stream");
  header_add(headers, "x-method", method);
  header_add(headers, "x-path", path);
  free(method);
  free(path);

  wasi_http_types_own_incoming_body_t body;
  input_t in;
  if (!wasi_http_types_method_incoming_request_consume(wasi_http_types_borrow_incoming_request(req), &body)) __builtin_trap();
  if (!wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body), &in)) __builtin_trap();

  response_t res = start_response(out, 200, headers);
  copy_stream(in, res.out);
  wasi_io_streams_input_stream_drop_own(in);
  wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(body));
  wasi_http_types_incoming_request_drop_own(req);
  end_response(res);
}
