//! Paths of the test guests, built from the sources in `c/` and `wat/` by `build.rs`:
//! - `<NAME>_C`: the C program as a core module (WASI preview 1),
//! - `<NAME>_COMPONENT`: the same program as a wasi:cli/command component (WASI 0.2, via the adapter),
//! - `<NAME>_WAT`: the WAT source file itself (wasmcell runs the text format directly),
//! - `<NAME>_WASM`: the WAT compiled to binary.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
