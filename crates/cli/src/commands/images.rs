//! `wasmcell images`: list the images in the local store.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use wasmcell_oci::image::Content;
use wasmcell_oci::store::MAX_MANIFEST_BYTES;

use super::Format;
use crate::images;

/// List stored images: name, digest, format, size and when the name was set.
#[derive(Args, Debug)]
pub struct ImagesCommand {
    /// Output format (json: one array of objects).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Print only the names.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(serde::Serialize)]
struct Row {
    name: String,
    digest: String,
    manifest: String,
    kind: String,
    size: u64,
    updated: String,
}

impl ImagesCommand {
    pub fn execute(self) -> Result<()> {
        let store = images::store()?;
        let mut rows = Vec::new();
        for (name, record) in store.names()? {
            // Signatures kept beside an image (`…:sha256-<hex>.sig`) are not images.
            if wasmcell_oci::trust::is_signature_name(&name) {
                continue;
            }
            let (kind, size) = describe(&store, &name, &record);
            rows.push(Row {
                name,
                digest: record.target.digest.to_string(),
                manifest: record.manifest.to_string(),
                kind,
                size,
                updated: record.updated,
            });
        }
        let mut out = std::io::stdout().lock();
        if self.format == Format::Json {
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
            return Ok(());
        }
        if self.quiet {
            for r in &rows {
                writeln!(out, "{}", r.name)?;
            }
            return Ok(());
        }
        let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(4);
        writeln!(out, "{:<width$}  {:<12}  {:<10}  {:>10}  UPDATED", "NAME", "DIGEST", "KIND", "SIZE")?;
        for r in &rows {
            let short = r.digest.strip_prefix("sha256:").unwrap_or(&r.digest);
            writeln!(
                out,
                "{:<width$}  {:<12}  {:<10}  {:>10}  {}",
                r.name,
                &short[..12.min(short.len())],
                r.kind,
                human(r.size),
                r.updated
            )?;
        }
        Ok(())
    }
}

/// The image's format and total size (manifest, config and layers), or "?" when damaged.
fn describe(store: &wasmcell_oci::Store, name: &str, record: &wasmcell_oci::store::ImageRecord) -> (String, u64) {
    let Ok(bytes) = store.read_small(&record.manifest, MAX_MANIFEST_BYTES) else { return ("damaged".into(), 0) };
    let Ok(Content::Manifest(m)) = Content::parse(&bytes, None) else { return ("damaged".into(), 0) };
    let size = bytes.len() as u64 + m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>();
    let kind = store
        .read_small(&m.config.digest, MAX_MANIFEST_BYTES)
        .ok()
        .and_then(|c| wasmcell_oci::image::classify(m, &c, record.target.digest != record.manifest).ok())
        .map_or_else(
            || {
                tracing::debug!(name, "unclassifiable image");
                "unknown".to_string()
            },
            |i| i.kind.to_string(),
        );
    (kind, size)
}

pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}
