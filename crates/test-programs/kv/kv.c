// wasi:keyvalue@0.2.0-draft2 behind HTTP: a wasi:http/proxy handler (world kv-proxy in wit/world.wit)
// that maps each request to store, atomics or batch calls. Every route takes `?store=NAME` (default
// "default") and opens that store for the request; KEY is the rest of the path, taken literally, and
// query values are not percent-decoded. The routes and answers are listed in src/lib.rs (HTTP_KV).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_proxy.h"

// common.h's helpers, on this world's bindings.
typedef kv_proxy_string_t proxy_string_t;
typedef kv_proxy_list_u8_t proxy_list_u8_t;
#define proxy_string_free kv_proxy_string_free
#define proxy_list_u8_free kv_proxy_list_u8_free
#define COMMON_BINDINGS_INCLUDED
#include "../http/common.h"

typedef wasi_keyvalue_store_borrow_bucket_t bucket_t;
typedef wasi_keyvalue_store_error_t kv_error_t;

// Gives up on /cas-incr after this many failed swaps (only a broken host gets there).
#define CAS_MAX_RETRIES 100000

// A growable byte buffer (traps when out of memory).
typedef struct {
  uint8_t *ptr;
  size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const void *data, size_t n) {
  if (n == 0) return;
  if (n > SIZE_MAX / 2 - b->len) __builtin_trap();
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    uint8_t *p = realloc(b->ptr, cap);
    if (!p) __builtin_trap();
    b->ptr = p;
    b->cap = cap;
  }
  memcpy(b->ptr + b->len, data, n);
  b->len += n;
}

static void buf_str(buf_t *b, const char *s) {
  buf_add(b, s, strlen(s));
}

// Sends a whole response: `headers` (consumed) plus a content-type, and `len` bytes of body.
static void send(outparam_t out, uint16_t status, fields_t headers, const char *content_type, const uint8_t *body, size_t len) {
  header_add(headers, "content-type", content_type);
  response_t res = start_response(out, status, headers);
  write_all(res.out, body, len);
  end_response(res);
}

// Answers a wasi:keyvalue error (and frees it): access-denied 403, no-such-store 404, other 500.
static void respond_kv_error(outparam_t out, kv_error_t *e) {
  switch (e->tag) {
    case WASI_KEYVALUE_STORE_ERROR_ACCESS_DENIED:
      respond(out, 403, "error: access-denied\n");
      break;
    case WASI_KEYVALUE_STORE_ERROR_NO_SUCH_STORE:
      respond(out, 404, "error: no-such-store\n");
      break;
    default: {
      buf_t b = {0};
      buf_str(&b, "error: other: ");
      if (e->tag == WASI_KEYVALUE_STORE_ERROR_OTHER) buf_add(&b, e->val.other.ptr, e->val.other.len);
      buf_str(&b, "\n");
      send(out, 500, wasi_http_types_constructor_fields(), "text/plain", b.ptr, b.len);
      free(b.ptr);
      break;
    }
  }
  wasi_keyvalue_store_error_free(e);
}

// `path` without `prefix`, or NULL when it does not start with it.
static const char *after(const char *path, const char *prefix) {
  size_t n = strlen(prefix);
  return strncmp(path, prefix, n) == 0 ? path + n : NULL;
}

// The value of the query parameter `name` (malloc'd, not percent-decoded), or NULL when absent;
// `query` is the part after '?' or NULL.
static char *query_param(const char *query, const char *name) {
  size_t n = strlen(name);
  for (const char *p = query; p && *p;) {
    const char *amp = strchr(p, '&');
    size_t len = amp ? (size_t)(amp - p) : strlen(p);
    if (len >= n && strncmp(p, name, n) == 0 && (len == n || p[n] == '='))
      return len == n ? cstr((const uint8_t *)"", 0) : cstr((const uint8_t *)p + n + 1, len - n - 1);
    p = amp ? amp + 1 : NULL;
  }
  return NULL;
}

// Splits `keys` ("a,b,c"; NULL or "" is no key) into a list of strings pointing into it; free only
// `list->ptr`.
static void split_keys(const char *keys, kv_proxy_list_string_t *list) {
  list->ptr = NULL;
  list->len = 0;
  if (!keys || !*keys) return;
  size_t count = 1;
  for (const char *p = keys; *p; p++) count += *p == ',';
  list->ptr = calloc(count, sizeof *list->ptr);
  if (!list->ptr) __builtin_trap();
  for (const char *p = keys;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    list->ptr[list->len++] = (kv_proxy_string_t){(uint8_t *)p, len};
    if (!comma) break;
    p = comma + 1;
  }
}

// Reads the whole request body into `b`. Returns false when the stream failed.
static bool read_body(request_t req, buf_t *b) {
  wasi_http_types_own_incoming_body_t body;
  input_t in;
  if (!wasi_http_types_method_incoming_request_consume(wasi_http_types_borrow_incoming_request(req), &body)) return false;
  if (!wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body), &in)) {
    wasi_http_types_incoming_body_drop_own(body);
    return false;
  }
  bool ok = true;
  for (;;) {
    proxy_list_u8_t chunk;
    wasi_io_streams_stream_error_t err;
    if (!wasi_io_streams_method_input_stream_blocking_read(wasi_io_streams_borrow_input_stream(in), 65536, &chunk, &err)) {
      if (err.tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED) {
        wasi_io_error_error_drop_own(err.val.last_operation_failed);
        ok = false;
      }
      break;
    }
    buf_add(b, chunk.ptr, chunk.len);
    proxy_list_u8_free(&chunk);
  }
  wasi_io_streams_input_stream_drop_own(in);
  wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(body));
  return ok;
}

// Parses a stored counter: absent is 0, otherwise an optionally signed decimal filling the value.
static bool parse_counter(const kv_proxy_option_list_u8_t *v, int64_t *n) {
  *n = 0;
  if (!v->is_some) return true;
  if (v->val.len == 0 || v->val.len > 20) return false;
  char *s = cstr(v->val.ptr, v->val.len), *end;
  bool ok = (s[0] == '-' || (s[0] >= '0' && s[0] <= '9'));
  errno = 0;
  long long x = ok ? strtoll(s, &end, 10) : 0;
  ok = ok && errno == 0 && *end == 0;
  free(s);
  *n = x;
  return ok;
}

static void route_get(bucket_t b, kv_proxy_string_t *key, outparam_t out) {
  kv_proxy_option_list_u8_t v;
  kv_error_t err;
  if (!wasi_keyvalue_store_method_bucket_get(b, key, &v, &err)) { respond_kv_error(out, &err); return; }
  if (!v.is_some) { respond(out, 404, "not found\n"); return; }
  send(out, 200, wasi_http_types_constructor_fields(), "application/octet-stream", v.val.ptr, v.val.len);
  kv_proxy_option_list_u8_free(&v);
}

static void route_set(bucket_t b, kv_proxy_string_t *key, const buf_t *body, outparam_t out) {
  kv_proxy_list_u8_t value = {body->ptr, body->len};
  kv_error_t err;
  if (!wasi_keyvalue_store_method_bucket_set(b, key, &value, &err)) { respond_kv_error(out, &err); return; }
  respond(out, 200, "ok\n");
}

static void route_delete(bucket_t b, kv_proxy_string_t *key, outparam_t out) {
  kv_error_t err;
  if (!wasi_keyvalue_store_method_bucket_delete(b, key, &err)) { respond_kv_error(out, &err); return; }
  respond(out, 200, "ok\n");
}

static void route_exists(bucket_t b, kv_proxy_string_t *key, outparam_t out) {
  bool exists;
  kv_error_t err;
  if (!wasi_keyvalue_store_method_bucket_exists(b, key, &exists, &err)) { respond_kv_error(out, &err); return; }
  respond(out, 200, exists ? "true\n" : "false\n");
}

static void route_incr(bucket_t b, kv_proxy_string_t *key, const char *query, outparam_t out) {
  int64_t delta = 1;
  char *by = query_param(query, "by");
  if (by) {
    char *end;
    errno = 0;
    long long x = strtoll(by, &end, 10);
    bool ok = *by && errno == 0 && *end == 0;
    free(by);
    if (!ok) { respond(out, 400, "bad by\n"); return; }
    delta = x;
  }
  int64_t n;
  kv_error_t err;
  if (!wasi_keyvalue_atomics_increment(b, key, delta, &n, &err)) { respond_kv_error(out, &err); return; }
  char body[32];
  snprintf(body, sizeof body, "%lld\n", (long long)n);
  respond(out, 200, body);
}

static void route_cas_incr(bucket_t b, kv_proxy_string_t *key, outparam_t out) {
  for (unsigned retries = 0;; retries++) {
    if (retries == CAS_MAX_RETRIES) { respond(out, 500, "error: too many cas retries\n"); return; }
    wasi_keyvalue_atomics_own_cas_t cas;
    kv_error_t err;
    if (!wasi_keyvalue_atomics_static_cas_new(b, key, &cas, &err)) { respond_kv_error(out, &err); return; }
    kv_proxy_option_list_u8_t cur;
    if (!wasi_keyvalue_atomics_method_cas_current(wasi_keyvalue_atomics_borrow_cas(cas), &cur, &err)) {
      wasi_keyvalue_atomics_cas_drop_own(cas);
      respond_kv_error(out, &err);
      return;
    }
    int64_t n;
    bool ok = parse_counter(&cur, &n);
    kv_proxy_option_list_u8_free(&cur);
    if (!ok || n == INT64_MAX) {
      wasi_keyvalue_atomics_cas_drop_own(cas);
      respond(out, 500, "error: value is not a decimal counter\n");
      return;
    }
    n++;
    char num[32];
    int len = snprintf(num, sizeof num, "%lld", (long long)n);
    kv_proxy_list_u8_t value = {(uint8_t *)num, (size_t)len};
    wasi_keyvalue_atomics_cas_error_t cerr;
    if (wasi_keyvalue_atomics_swap(cas, &value, &cerr)) {  // swap consumes `cas`
      char count[16], body[32];
      snprintf(count, sizeof count, "%u", retries);
      snprintf(body, sizeof body, "%s\n", num);
      fields_t headers = wasi_http_types_constructor_fields();
      header_add(headers, "x-retries", count);
      send(out, 200, headers, "text/plain", (const uint8_t *)body, strlen(body));
      return;
    }
    if (cerr.tag == WASI_KEYVALUE_ATOMICS_CAS_ERROR_CAS_FAILED) {
      wasi_keyvalue_atomics_cas_drop_own(cerr.val.cas_failed);
      continue;
    }
    respond_kv_error(out, &cerr.val.store_error);
    return;
  }
}

static void route_list(bucket_t b, const char *query, outparam_t out) {
  char *cursor = query_param(query, "cursor");
  kv_proxy_string_t c = str(cursor ? cursor : "");
  wasi_keyvalue_store_key_response_t resp;
  kv_error_t err;
  bool ok = wasi_keyvalue_store_method_bucket_list_keys(b, cursor ? &c : NULL, &resp, &err);
  free(cursor);
  if (!ok) { respond_kv_error(out, &err); return; }
  buf_t body = {0};
  for (size_t i = 0; i < resp.keys.len; i++) {
    buf_add(&body, resp.keys.ptr[i].ptr, resp.keys.ptr[i].len);
    buf_str(&body, "\n");
  }
  fields_t headers = wasi_http_types_constructor_fields();
  bool header_ok = true;
  if (resp.cursor.is_some) {
    wasi_http_types_field_name_t n = str("x-cursor");
    wasi_http_types_field_value_t v = {resp.cursor.val.ptr, resp.cursor.val.len};
    wasi_http_types_header_error_t herr;
    header_ok = wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(headers), &n, &v, &herr);
  }
  if (header_ok) {
    send(out, 200, headers, "text/plain", body.ptr, body.len);
  } else {
    wasi_http_types_fields_drop_own(headers);
    respond(out, 500, "error: the store's cursor is not a valid header value\n");
  }
  free(body.ptr);
  wasi_keyvalue_store_key_response_free(&resp);
}

static void route_set_many(bucket_t b, const buf_t *body, outparam_t out) {
  // Lines `k=v`, pointing into the body; empty lines are skipped.
  size_t lines = 1;
  for (size_t i = 0; i < body->len; i++) lines += body->ptr[i] == '\n';
  kv_proxy_list_tuple2_string_list_u8_t kvs = {calloc(lines, sizeof(kv_proxy_tuple2_string_list_u8_t)), 0};
  if (!kvs.ptr) __builtin_trap();
  for (size_t start = 0; start < body->len;) {
    uint8_t *line = body->ptr + start;
    uint8_t *nl = memchr(line, '\n', body->len - start);
    size_t len = nl ? (size_t)(nl - line) : body->len - start;
    start += len + 1;
    if (len == 0) continue;
    uint8_t *eq = memchr(line, '=', len);
    if (!eq) {
      free(kvs.ptr);
      respond(out, 400, "bad line (want k=v)\n");
      return;
    }
    kvs.ptr[kvs.len++] = (kv_proxy_tuple2_string_list_u8_t){{line, (size_t)(eq - line)}, {eq + 1, len - (size_t)(eq - line) - 1}};
  }
  kv_error_t err;
  bool ok = wasi_keyvalue_batch_set_many(b, &kvs, &err);
  free(kvs.ptr);
  if (!ok) { respond_kv_error(out, &err); return; }
  respond(out, 200, "ok\n");
}

static void route_get_many(bucket_t b, const char *query, outparam_t out) {
  char *keys = query_param(query, "keys");
  kv_proxy_list_string_t list;
  split_keys(keys, &list);
  kv_proxy_list_tuple2_string_option_list_u8_t got;
  kv_error_t err;
  bool ok = wasi_keyvalue_batch_get_many(b, &list, &got, &err);
  free(list.ptr);
  free(keys);
  if (!ok) { respond_kv_error(out, &err); return; }
  buf_t body = {0};
  for (size_t i = 0; i < got.len; i++) {
    buf_add(&body, got.ptr[i].f0.ptr, got.ptr[i].f0.len);
    if (got.ptr[i].f1.is_some) {
      buf_str(&body, "=");
      buf_add(&body, got.ptr[i].f1.val.ptr, got.ptr[i].f1.val.len);
    } else {
      buf_str(&body, "!");
    }
    buf_str(&body, "\n");
  }
  send(out, 200, wasi_http_types_constructor_fields(), "text/plain", body.ptr, body.len);
  free(body.ptr);
  kv_proxy_list_tuple2_string_option_list_u8_free(&got);
}

static void route_delete_many(bucket_t b, const char *query, outparam_t out) {
  char *keys = query_param(query, "keys");
  kv_proxy_list_string_t list;
  split_keys(keys, &list);
  kv_error_t err;
  bool ok = wasi_keyvalue_batch_delete_many(b, &list, &err);
  free(list.ptr);
  free(keys);
  if (!ok) { respond_kv_error(out, &err); return; }
  respond(out, 200, "ok\n");
}

enum route { NONE, GET, SET, DELETE, EXISTS, INCR, CAS_INCR, LIST, SET_MANY, GET_MANY, DELETE_MANY };

void exports_wasi_http_incoming_handler_handle(request_t req, outparam_t out) {
  char *method = request_method(req), *target = request_path(req);
  char *query = strchr(target, '?');
  if (query) *query++ = 0;
  const char *path = target, *key = NULL;
  enum route route = NONE;
  bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
  if (get && (key = after(path, "/get/"))) route = GET;
  else if (!strcmp(method, "PUT") && (key = after(path, "/set/"))) route = SET;
  else if (!strcmp(method, "DELETE") && (key = after(path, "/delete/"))) route = DELETE;
  else if (get && (key = after(path, "/exists/"))) route = EXISTS;
  else if (post && (key = after(path, "/incr/"))) route = INCR;
  else if (post && (key = after(path, "/cas-incr/"))) route = CAS_INCR;
  else if (get && !strcmp(path, "/list")) route = LIST;
  else if (post && !strcmp(path, "/set-many")) route = SET_MANY;
  else if (get && !strcmp(path, "/get-many")) route = GET_MANY;
  else if (post && !strcmp(path, "/delete-many")) route = DELETE_MANY;

  buf_t body = {0};
  if (route == NONE) {
    respond(out, 404, "no route\n");
  } else if ((route == SET || route == SET_MANY) && !read_body(req, &body)) {
    respond(out, 400, "error: cannot read the request body\n");
  } else {
    char *store = query_param(query, "store");
    kv_proxy_string_t name = str(store ? store : "default");
    wasi_keyvalue_store_own_bucket_t bucket;
    kv_error_t err;
    bool opened = wasi_keyvalue_store_open(&name, &bucket, &err);
    free(store);
    if (!opened) {
      respond_kv_error(out, &err);
    } else {
      bucket_t b = wasi_keyvalue_store_borrow_bucket(bucket);
      kv_proxy_string_t k = str(key ? key : "");
      switch (route) {
        case GET: route_get(b, &k, out); break;
        case SET: route_set(b, &k, &body, out); break;
        case DELETE: route_delete(b, &k, out); break;
        case EXISTS: route_exists(b, &k, out); break;
        case INCR: route_incr(b, &k, query, out); break;
        case CAS_INCR: route_cas_incr(b, &k, out); break;
        case LIST: route_list(b, query, out); break;
        case SET_MANY: route_set_many(b, &body, out); break;
        case GET_MANY: route_get_many(b, query, out); break;
        case DELETE_MANY: route_delete_many(b, query, out); break;
        case NONE: break;
      }
      wasi_keyvalue_store_bucket_drop_own(bucket);
    }
  }
  free(body.ptr);
  free(method);
  free(target);
  wasi_http_types_incoming_request_drop_own(req);
}
