//! Paths of the test guests, built from the sources in `c/`, `wat/` and `http/` by `build.rs`:
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
        ];
        let export = b"wasi:http/incoming-handler@0.2.12";
        for path in guests {
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(bytes[..8], [0, b'a', b's', b'm', 0x0d, 0, 1, 0], "{path} is not a component");
            assert!(bytes.windows(export.len()).any(|w| w == export), "{path} does not mention {export:?}");
        }
    }
}
