//! `wasmcell prune`: remove content no image name needs.

use std::io::Write;

use anyhow::Result;
use clap::Args;

use super::Format;
use crate::images;

/// Remove blobs no name reaches, unpacked rootfs trees of removed images, and leftovers of
/// interrupted pulls. Waits for running pulls and pushes to finish.
#[derive(Args, Debug)]
pub struct PruneCommand {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

impl PruneCommand {
    pub fn execute(self) -> Result<()> {
        let report = images::store()?.prune()?;
        let mut out = std::io::stdout().lock();
        match self.format {
            Format::Json => {
                serde_json::to_writer(&mut out, &report)?;
                writeln!(out)?;
            }
            Format::Text => writeln!(
                out,
                "removed {} blobs ({}), {} unpacked trees, {} interrupted ingests",
                report.blobs_removed,
                super::images::human(report.bytes_removed),
                report.rootfs_removed,
                report.ingests_removed
            )?,
        }
        Ok(())
    }
}
