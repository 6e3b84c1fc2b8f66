//! Paths of the test guests, built from the sources in `c/`, `wat/`, `http/` and `kv/` by `build.rs`:
//! - `<NAME>_C`: the C program as a core module (WASI preview 1),
//! - `<NAME>_COMPONENT`: the same program as a wasi:cli/command component (WASI 0.2, via the adapter),
//! - `<NAME>_WAT`: the WAT source file itself (wasmcell runs the text format directly),
//! - `<NAME>_WASM`: the WAT compiled to binary,
//! - `HTTP_<NAME>`: `http/<name>.c` as a `wasi:http/proxy` component (exports
//!   `wasi:http/incoming-handler@0.2.12`, imports wasi:cli etc. through the reactor adapter):
//!   - `HTTP_HELLO`: 200, `content-type: text/plain`, "hello from wasi:http\n".
//!   - `HTTP_ECHO`: 200, streams the request body back as it arrives, request method and path with
//!     query in `x-method` / `x-path`.
//!   - `HTTP_TRAP`: traps (`unreachable`) before responding.
//!   - `HTTP_SPIN`: loops forever before responding.
//!   - `HTTP_MEMHOG`: allocates and touches 1 MiB after 1 MiB until malloc fails, then traps.
//!   - `HTTP_SLOW`: sleeps `?ms=N` milliseconds (default 1000) on a monotonic-clock pollable, then
//!     200 "slow done\n".
//!   - `HTTP_COUNTER`: 200 with the number of requests the instance has served, "1\n" when fresh.
//!   - `HTTP_FETCH`: GETs the URL in the `x-fetch-url` request header through
//!     wasi:http/outgoing-handler; 200 with the fetched body (upstream status in
//!     `x-upstream-status`), or 502 "error: <error-code case>\n" (e.g. "error: connection-refused\n"),
//!     or 400 when the header is missing or not an http(s) URL.
//!   - `HTTP_ENV`: 200 with the environment variable GREETING and "\n", or "unset\n".
//! - `HTTP_KV`: `kv/kv.c`, a `wasi:http/proxy` component that also imports
//!   `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2`. Every route takes `?store=NAME` (default
//!   `default`) and calls `store::open(NAME)` once the route matched; KEY is the rest of the path,
//!   taken literally; query values are not percent-decoded. A keyvalue error answers 403
//!   "error: access-denied\n", 404 "error: no-such-store\n" or 500 "error: other: MSG\n".
//!   - `GET /get/KEY`: 200 with the value (`application/octet-stream`), or 404 "not found\n".
//!   - `PUT /set/KEY`: stores the whole request body; 200 "ok\n".
//!   - `DELETE /delete/KEY`: 200 "ok\n". `GET /exists/KEY`: 200 "true\n" or "false\n".
//!   - `POST /incr/KEY?by=N`: `atomics::increment` by N (signed decimal, default 1; else 400
//!     "bad by\n"); 200 "<new value>\n".
//!   - `POST /cas-incr/KEY`: `cas::new` + `current` + `swap` of the decimal value plus one (absent is
//!     0), retried while the swap answers `cas-failed`; 200 "<new value>\n" with the number of
//!     retries in `x-retries`. A value that is not a decimal counter: 500 "error: value is not a
//!     decimal counter\n"; after 100000 retries: 500 "error: too many cas retries\n".
//!   - `GET /list?cursor=C`: 200 with the keys of one `list-keys` page, one per line; the next cursor,
//!     if any, in `x-cursor`.
//!   - `POST /set-many`: `batch::set-many` of the body's `k=v` lines (split at the first `=`, empty
//!     lines skipped; a line without `=`: 400); 200 "ok\n".
//!   - `GET /get-many?keys=a,b,c`: `batch::get-many`; 200 with a line per returned key, `k=v` or `k!`
//!     when absent.
//!   - `POST /delete-many?keys=a,b`: `batch::delete-many`; 200 "ok\n".
//!   - anything else: 404 "no route\n" (without opening a store).
//! - `KVCMD_COMPONENT`: `kv/kvcmd.c`, a wasi:cli/command component importing the same keyvalue
//!   interfaces (no `_C` module: it imports keyvalue). `kvcmd STORE get KEY` prints the value and a
//!   newline (absent: "not found" on stderr, exit 1); `set KEY VALUE` prints "ok"; `incr KEY [N]`
//!   prints the new value; `list` prints every key, one per line (following the cursors);
//!   `get-many KEY...` prints `k=v` / `k!` lines. A keyvalue error prints "error: access-denied",
//!   "error: no-such-store" or "error: other: MSG" on stderr; errors and bad usage exit 1.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

#[cfg(test)]
mod tests {
    #[test]
    fn http_guests_are_proxy_components() {
        let guests = [
            super::HTTP_HELLO,
            super::HTTP_ECHO,
            super::HTTP_TRAP,
            super::HTTP_SPIN,
            super::HTTP_MEMHOG,
            super::HTTP_SLOW,
            super::HTTP_COUNTER,
            super::HTTP_FETCH,
            super::HTTP_ENV,
            super::HTTP_KV,
        ];
        let export = b"wasi:http/incoming-handler@0.2.12";
        for path in guests {
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(bytes[..8], [0, b'a', b's', b'm', 0x0d, 0, 1, 0], "{path} is not a component");
            assert!(bytes.windows(export.len()).any(|w| w == export), "{path} does not mention {export:?}");
        }
    }

    #[test]
    fn kv_guests_import_keyvalue() {
        for path in [super::HTTP_KV, super::KVCMD_COMPONENT] {
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(bytes[..8], [0, b'a', b's', b'm', 0x0d, 0, 1, 0], "{path} is not a component");
            for interface in ["store", "atomics", "batch"] {
                let import = format!("wasi:keyvalue/{interface}@0.2.0-draft2");
                assert!(bytes.windows(import.len()).any(|w| w == import.as_bytes()), "{path} does not import {import}");
            }
        }
        let run = b"wasi:cli/run@0.2.12";
        let bytes = std::fs::read(super::KVCMD_COMPONENT).unwrap();
        assert!(bytes.windows(run.len()).any(|w| w == run), "kvcmd does not export wasi:cli/run");
    }
}
