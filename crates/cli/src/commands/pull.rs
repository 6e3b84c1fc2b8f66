//! `wasmcell pull`: fetch an image from a registry into the local store.

use anyhow::Result;
use clap::Args;
use wasmcell_oci::launch::Launch;
use wasmcell_oci::registry::PullReport;
use wasmcell_oci::{Digest, Reference, Store};
use wasmcell_runtime::inspect::Input;
use wasmcell_sign::Policy;

use super::{EngineFlag, Format};
use crate::images::{self, Origin, RegistryFlags, TrustFlags};

/// Pull IMAGE from its registry. Blobs already stored are not fetched again; every byte is
/// checked against its digest before it becomes visible in the store. When the signature policy
/// requires a signer for the image, the precompiled code attached to it for this node's engine is
/// taken into the compiled-code cache too (if that signer's key signed it), so the first start does
/// not compile.
#[derive(Args, Debug)]
pub struct PullCommand {
    #[command(flatten)]
    registry: RegistryFlags,

    #[command(flatten)]
    trust: TrustFlags,

    /// The engine to take precompiled code for (what `run` and `serve` will use).
    #[command(flatten)]
    engine: EngineFlag,

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

/// What `pull` did: the transfer, and the precompiled code it took, if any.
#[derive(serde::Serialize)]
struct Pulled {
    #[serde(flatten)]
    report: PullReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    precompiled: Option<Digest>,
}

impl PullCommand {
    pub fn execute(self) -> Result<()> {
        let reference = images::parse_ref(&self.image)?;
        let store = images::store()?;
        let policy = images::policy(&self.trust)?;
        let report = images::pull(&store, &reference, &self.registry, policy.clone(), !self.quiet && self.format == Format::Text)?;
        let precompiled = policy.and_then(|policy| self.take_code(&store, &reference, policy));
        let pulled = Pulled { report, precompiled };
        super::print_report(self.format, self.quiet, &pulled, || {
            let report = &pulled.report;
            let mut line = format!(
                "{}: pulled {} ({}), {} blobs fetched ({} bytes), {} already stored",
                report.reference, report.digest, report.kind, report.blobs_fetched, report.bytes_fetched, report.blobs_present
            );
            if let Some(verified) = report.verified.as_deref().filter(|v| v.contains("signed as")) {
                line = format!("{line}; {verified}");
            }
            if let Some(code) = &pulled.precompiled {
                line = format!("{line}; precompiled code {code} cached");
            }
            line
        })
    }

    /// Takes the image's precompiled code for the engine `run`/`serve` would start it on into the
    /// cache (see `images::take_precompiled`). The image is pulled already: what goes wrong here
    /// only means its first start compiles.
    fn take_code(&self, store: &Store, reference: &Reference, policy: std::sync::Arc<Policy>) -> Option<Digest> {
        let taken = (|| {
            let record = store.get_name(&reference.to_string())?.ok_or_else(|| anyhow::anyhow!("{reference} is not stored"))?;
            let launch = Launch::from_store(store, reference, &record)?;
            let input = Input::read(&launch.wasm)?;
            let engine = images::default_engine_for(&input, self.engine.choice, true)?;
            let mut origin = Origin {
                reference: reference.clone(),
                digest: record.target.digest.clone(),
                connect: true,
                flags: self.registry.clone(),
                policy: Some(policy),
                prefetched: None,
            };
            let taken = images::take_precompiled(&engine, &input, Some(&mut origin), "its first start compiles it");
            engine.wait_for_cache_writes();
            Ok::<_, anyhow::Error>(taken)
        })();
        taken.unwrap_or_else(|e| {
            tracing::info!(image = %reference, "no precompiled code taken: {e:#}");
            None
        })
    }
}
