//! Where wasmcell keeps its state: one home directory, `WASMCELL_HOME`, defaulting like podman does
//! (`/var/lib/wasmcell` for root, `$XDG_DATA_HOME/wasmcell` or `~/.local/share/wasmcell` otherwise).
//!
//! Layout below the home (each owner documents its own part):
//! - `cache/compiled/`: the compiled-code cache ([`crate::cache`]).
//! - `kv/APP.redb`: each application's embedded key-value stores ([`crate::kv`]).

use std::path::{Path, PathBuf};

/// The resolved home directory. Nothing is created until an owner needs its part.
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Resolves the home from the environment (see the module docs).
    pub fn from_env() -> Home {
        if let Some(dir) = std::env::var_os("WASMCELL_HOME").filter(|d| !d.is_empty()) {
            return Home::at(dir);
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc_geteuid() } == 0 {
            return Home::at("/var/lib/wasmcell");
        }
        if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            return Home::at(PathBuf::from(dir).join("wasmcell"));
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
        Home::at(PathBuf::from(home).join(".local/share/wasmcell"))
    }

    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the embedded key-value databases.
    pub fn kv_dir(&self) -> PathBuf {
        self.root.join("kv")
    }

    /// The directory of the compiled-code cache.
    pub fn compiled_cache(&self) -> PathBuf {
        self.root.join("cache").join("compiled")
    }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
