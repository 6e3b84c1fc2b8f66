//! wasmcell's runtime: everything between "here are some wasm bytes and a sandbox policy" and "the guest
//! ran and exited with this status".
//!
//! It owns:
//! - [`policy`]: the sandbox policy, plain serde data. Every entry point (CLI flags, image config, an OCI
//!   runtime spec) is translated into a [`SandboxPolicy`].
//! - [`grants`]: the one place a guest is granted anything, from the policy ([`Grants`]).
//! - [`engine`]: the engine seam ([`Engine`], [`Program`], [`Guest`]) and its wasmtime implementation.
//! - [`cache`]: the on-disk compiled-code cache, keyed by input digest and engine compatibility hash.
//! - [`instance`]: the instance lifecycle (create, start, kill, wait) that `run`, `serve` and the
//!   containerd shim drive.
//! - [`inspect`]: reading a wasm binary's kind, WASI version, imports and exports without compiling it.
//!
//! It knows nothing of clap, HTTP or containerd.

pub mod cache;
pub mod engine;
mod error;
pub mod grants;
pub use wasmcell_fsutil as fsutil;
pub mod home;
pub mod inspect;
pub mod instance;
pub mod kv;
pub mod policy;

pub use engine::{Engine, Guest, HttpProgram, Program, WagiProgram, WasmtimeEngine};
pub use error::{Error, Result};
pub use grants::Grants;
pub use instance::{ExitStatus, Instance, Stdio, StdioSpec};
pub use policy::SandboxPolicy;

/// Turns transparent huge pages off for the calling process; every wasmcell binary calls it first thing in
/// `main`. mimalloc asks for huge pages on its arenas, so each first touch of an arena chunk faulted in and
/// cleared 2 MiB. Measured: a shim running one sleeping guest had 12.7 MiB of anonymous memory with them,
/// 1.5 MiB without (bench/shim); a fresh wasi:http instance took 14.6 us with them and 10.5 us without
/// (mean of four alternating runs of the instance-cost example). wasmtime's linear memories never asked
/// for huge pages, so guests lose nothing.
pub fn disable_transparent_huge_pages() {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Declares, in a binary crate, a constructor that calls [`disable_transparent_huge_pages`] before
/// anything in the process allocates: mimalloc reserves its first arena (with `MADV_HUGEPAGE`) and std
/// allocates before `main`, so a call in `main` came after the first 2 MiB page was faulted in. The
/// containerd shim forks its server from `start`, which then inherited that page: 4.1 MiB of anonymous
/// memory in an idle shim, measured. (A constructor of priority 200 runs before the unprioritized ones,
/// mimalloc's among them.)
#[macro_export]
macro_rules! disable_transparent_huge_pages_before_main {
    () => {
        #[used]
        #[unsafe(link_section = ".init_array.00200")]
        static DISABLE_TRANSPARENT_HUGE_PAGES: extern "C" fn() = {
            extern "C" fn disable() {
                $crate::disable_transparent_huge_pages()
            }
            disable
        };
    };
}
