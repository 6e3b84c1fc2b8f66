//! `wasmcell cache`: look at or empty the compiled-code cache.

use anyhow::Result;
use clap::{Args, Subcommand};
use wasmcell_runtime::cache::Cache;
use wasmcell_runtime::home::Home;

/// Manage the compiled-code cache.
#[derive(Args, Debug)]
pub struct CacheCommand {
    #[command(subcommand)]
    action: CacheAction,
}

#[derive(Subcommand, Debug)]
enum CacheAction {
    /// Print the cache directory.
    Dir,
    /// Remove every cached artifact.
    Clean,
}

impl CacheCommand {
    pub fn execute(self) -> Result<()> {
        let cache = Cache::new(Home::from_env().compiled_cache());
        match self.action {
            CacheAction::Dir => println!("{}", cache.dir().display()),
            CacheAction::Clean => {
                let freed = cache.clear()?;
                println!("removed {freed} bytes from {}", cache.dir().display());
            }
        }
        Ok(())
    }
}
