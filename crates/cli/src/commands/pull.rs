//! `wasmcell pull`: fetch an image from a registry into the local store.

use anyhow::Result;
use clap::Args;

use super::Format;
use crate::images::{self, RegistryFlags, TrustFlags};

/// Pull IMAGE from its registry. Blobs already stored are not fetched again; every byte is
/// checked against its digest before it becomes visible in the store.
#[derive(Args, Debug)]
pub struct PullCommand {
    #[command(flatten)]
    registry: RegistryFlags,

    #[command(flatten)]
    trust: TrustFlags,

    /// Output format (json prints what was transferred).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,

    /// The image reference, e.g. 127.0.0.1:5000/team/app:1.0 or name@sha256:...
    #[arg(value_name = "IMAGE")]
    image: String,
}

impl PullCommand {
    pub fn execute(self) -> Result<()> {
        let reference = images::parse_ref(&self.image)?;
        let store = images::store()?;
        let policy = images::policy(&self.trust)?;
        let report = images::pull(&store, &reference, &self.registry, policy, !self.quiet && self.format == Format::Text)?;
        super::print_report(self.format, self.quiet, &report, || {
            let mut line = format!(
                "{}: pulled {} ({}), {} blobs fetched ({} bytes), {} already stored",
                report.reference, report.digest, report.kind, report.blobs_fetched, report.bytes_fetched, report.blobs_present
            );
            if let Some(verified) = report.verified.as_deref().filter(|v| v.contains("signed as")) {
                line = format!("{line}; {verified}");
            }
            line
        })
    }
}
