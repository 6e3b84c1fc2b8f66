//! `containerd-shim-wasmcell-v1`: containerd's shim for wasm containers (all of it in `wasmcell-shim`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

wasmcell_runtime::disable_transparent_huge_pages_before_main!();

fn main() {
    wasmcell_shim::main()
}
