// wasi:keyvalue@0.2.0-draft2 from a command (world kv-command in wit/world.wit; wasi:cli comes from the
// jco command adapter): `kvcmd STORE OP ARGS...` opens STORE and runs one operation.
//   get KEY          prints the value and "\n"; "not found" on stderr and exit 1 when absent
//   set KEY VALUE    prints "ok"
//   incr KEY [N]     atomics::increment by N (signed decimal, default 1); prints the new value
//   list             prints every key (all pages), one per line
//   get-many KEY...  batch::get-many; prints "KEY=VALUE" for a present key, "KEY!" for an absent one
// A keyvalue error prints "error: access-denied", "error: no-such-store" or "error: other: MSG" on
// stderr and exits 1; so does a usage error (with the adapter a command exits only 0 or 1).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_command.h"

typedef wasi_keyvalue_store_borrow_bucket_t bucket_t;
typedef wasi_keyvalue_store_error_t kv_error_t;

static kv_command_string_t str(const char *s) {
  return (kv_command_string_t){(uint8_t *)s, strlen(s)};
}

// Reports a wasi:keyvalue error on stderr (and frees it); returns the exit status.
static int fail(kv_error_t *e) {
  switch (e->tag) {
    case WASI_KEYVALUE_STORE_ERROR_ACCESS_DENIED:
      fputs("error: access-denied\n", stderr);
      break;
    case WASI_KEYVALUE_STORE_ERROR_NO_SUCH_STORE:
      fputs("error: no-such-store\n", stderr);
      break;
    case WASI_KEYVALUE_STORE_ERROR_OTHER:
      fprintf(stderr, "error: other: %.*s\n", (int)e->val.other.len, (const char *)e->val.other.ptr);
      break;
    default:
      fputs("error: other: \n", stderr);
      break;
  }
  wasi_keyvalue_store_error_free(e);
  return 1;
}

static int usage(void) {
  fputs("usage: kvcmd STORE get KEY | set KEY VALUE | incr KEY [N] | list | get-many KEY...\n", stderr);
  return 1;
}

static int op_get(bucket_t b, const char *key) {
  kv_command_string_t k = str(key);
  kv_command_option_list_u8_t v;
  kv_error_t err;
  if (!wasi_keyvalue_store_method_bucket_get(b, &k, &v, &err)) return fail(&err);
  if (!v.is_some) {
    fputs("not found\n", stderr);
    return 1;
  }
  bool ok = fwrite(v.val.ptr, 1, v.val.len, stdout) == v.val.len && putchar('\n') != EOF;
  kv_command_option_list_u8_free(&v);
  return ok ? 0 : 1;
}

static int op_set(bucket_t b, const char *key, const char *value) {
  kv_command_string_t k = str(key);
  kv_command_list_u8_t v = {(uint8_t *)value, strlen(value)};
  kv_error_t err;
  if (!wasi_keyvalue_store_method_bucket_set(b, &k, &v, &err)) return fail(&err);
  puts("ok");
  return 0;
}

static int op_incr(bucket_t b, const char *key, const char *by) {
  int64_t delta = 1;
  if (by) {
    char *end;
    errno = 0;
    long long x = strtoll(by, &end, 10);
    if (!*by || errno || *end) {
      fprintf(stderr, "kvcmd: bad increment %s\n", by);
      return 1;
    }
    delta = x;
  }
  kv_command_string_t k = str(key);
  int64_t n;
  kv_error_t err;
  if (!wasi_keyvalue_atomics_increment(b, &k, delta, &n, &err)) return fail(&err);
  printf("%lld\n", (long long)n);
  return 0;
}

static int op_list(bucket_t b) {
  kv_command_option_string_t cursor = {false};
  for (;;) {
    wasi_keyvalue_store_key_response_t resp;
    kv_error_t err;
    bool ok = wasi_keyvalue_store_method_bucket_list_keys(b, cursor.is_some ? &cursor.val : NULL, &resp, &err);
    kv_command_option_string_free(&cursor);
    if (!ok) return fail(&err);
    for (size_t i = 0; i < resp.keys.len; i++)
      printf("%.*s\n", (int)resp.keys.ptr[i].len, (const char *)resp.keys.ptr[i].ptr);
    kv_command_list_string_free(&resp.keys);
    cursor = resp.cursor;  // owned now; freed after the next call
    if (!cursor.is_some) return 0;
  }
}

static int op_get_many(bucket_t b, int n, char **keys) {
  kv_command_list_string_t list = {calloc(n ? n : 1, sizeof(kv_command_string_t)), (size_t)n};
  if (!list.ptr) abort();
  for (int i = 0; i < n; i++) list.ptr[i] = str(keys[i]);
  kv_command_list_tuple2_string_option_list_u8_t got;
  kv_error_t err;
  bool ok = wasi_keyvalue_batch_get_many(b, &list, &got, &err);
  free(list.ptr);
  if (!ok) return fail(&err);
  for (size_t i = 0; i < got.len; i++) {
    fwrite(got.ptr[i].f0.ptr, 1, got.ptr[i].f0.len, stdout);
    if (got.ptr[i].f1.is_some) {
      putchar('=');
      fwrite(got.ptr[i].f1.val.ptr, 1, got.ptr[i].f1.val.len, stdout);
    } else {
      putchar('!');
    }
    putchar('\n');
  }
  kv_command_list_tuple2_string_option_list_u8_free(&got);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) return usage();
  const char *op = argv[2];
  int nargs = argc - 3;
  bool known = (!strcmp(op, "get") && nargs == 1) || (!strcmp(op, "set") && nargs == 2) ||
               (!strcmp(op, "incr") && (nargs == 1 || nargs == 2)) || (!strcmp(op, "list") && nargs == 0) ||
               (!strcmp(op, "get-many") && nargs >= 1);
  if (!known) return usage();

  kv_command_string_t name = str(argv[1]);
  wasi_keyvalue_store_own_bucket_t bucket;
  kv_error_t err;
  if (!wasi_keyvalue_store_open(&name, &bucket, &err)) return fail(&err);
  bucket_t b = wasi_keyvalue_store_borrow_bucket(bucket);
  int status;
  if (!strcmp(op, "get")) status = op_get(b, argv[3]);
  else if (!strcmp(op, "set")) status = op_set(b, argv[3], argv[4]);
  else if (!strcmp(op, "incr")) status = op_incr(b, argv[3], nargs == 2 ? argv[4] : NULL);
  else if (!strcmp(op, "list")) status = op_list(b);
  else status = op_get_many(b, nargs, argv + 3);
  wasi_keyvalue_store_bucket_drop_own(bucket);
  if (fflush(stdout) != 0) status = 1;
  return status;
}
