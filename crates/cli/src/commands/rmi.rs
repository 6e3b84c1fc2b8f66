//! `wasmcell rmi`: remove image names, then the content no name needs any more.

use anyhow::Result;
use clap::Args;
use wasmcell_oci::Error;

use crate::images;

/// Remove IMAGE names from the local store. Blobs still used by another name stay.
#[derive(Args, Debug)]
pub struct RmiCommand {
    /// The names to remove.
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

impl RmiCommand {
    pub fn execute(self) -> Result<()> {
        let store = images::store()?;
        let mut removed = Vec::new();
        for image in &self.images {
            let reference = images::parse_ref(image)?;
            if !store.remove_name(&reference.to_string())? {
                return Err(Error::ImageNotFound(reference.to_string()).into());
            }
            removed.push(reference.to_string());
        }
        store.prune()?;
        for r in removed {
            println!("untagged: {r}");
        }
        Ok(())
    }
}
