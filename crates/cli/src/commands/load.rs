//! `wasmcell load`: read an OCI image-layout tar into the store.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::images;

/// Load images from an OCI image-layout tar (from `wasmcell save`, `skopeo copy ... oci-archive:`
/// or `ctr images export`). Every blob is checked against its digest.
#[derive(Args, Debug)]
pub struct LoadCommand {
    /// Read from FILE instead of standard input.
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,

    /// Name the (only) image in the archive, e.g. when it carries no name.
    #[arg(long, value_name = "IMAGE")]
    name: Option<String>,
}

impl LoadCommand {
    pub fn execute(self) -> Result<()> {
        let store = images::store()?;
        let name = self.name.as_deref().map(images::parse_ref).transpose()?;
        let loaded = match &self.input {
            Some(path) => {
                let file = std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
                wasmcell_oci::layout::load(&store, std::io::BufReader::new(file), name.as_ref())?
            }
            None => wasmcell_oci::layout::load(&store, std::io::stdin().lock(), name.as_ref())?,
        };
        for l in loaded {
            println!("loaded image: {} ({})", l.name, l.digest);
        }
        Ok(())
    }
}
