//! Link order of the release binaries. `scripts/build-release` sets WASMCELL_LINK_ORDER to
//! `link-order.txt`: the functions a shim (and `wasmcell run`) executes, in the order they first run,
//! recorded by `scripts/gen-link-order`. lld places them together at the start of .text, so a running
//! shim touches a few MiB of its binary's code instead of pages scattered over all 22 MiB (the kernel
//! maps 64 KiB around each first touch). Names the build does not have are ignored, so a stale list
//! costs locality, never correctness.
fn main() {
    println!("cargo:rerun-if-env-changed=WASMCELL_LINK_ORDER");
    if let Ok(path) = std::env::var("WASMCELL_LINK_ORDER")
        && !path.is_empty()
    {
        println!("cargo:rerun-if-changed={path}");
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={path}");
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
