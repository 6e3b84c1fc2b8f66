//! `wasmcell tag`: give a stored image another name.

use anyhow::Result;
use clap::Args;
use wasmcell_oci::Error;

use crate::images;

/// Name the stored image SOURCE also TARGET (content is shared, not copied).
#[derive(Args, Debug)]
pub struct TagCommand {
    #[arg(value_name = "SOURCE")]
    source: String,
    #[arg(value_name = "TARGET")]
    target: String,
}

impl TagCommand {
    pub fn execute(self) -> Result<()> {
        let source = images::parse_ref(&self.source)?;
        let target = images::parse_ref(&self.target)?;
        let store = images::store()?;
        let record = store.get_name(&source.to_string())?.ok_or_else(|| Error::ImageNotFound(source.to_string()))?;
        store.set_name(&target.to_string(), record.target, record.manifest)?;
        Ok(())
    }
}
