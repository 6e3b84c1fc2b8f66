//! `wasmcell inspect`: what a wasm file is, without running it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use wasmcell_runtime::inspect::{self, Input};

use super::Format;

/// Show what FILE is (module or component, WASI version, imports, exports), or what a stored
/// IMAGE is (format, manifest, config, layers, annotations).
#[derive(Args, Debug)]
pub struct InspectCommand {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// The module or component (.wasm or .wat), or an image in the local store.
    #[arg(value_name = "FILE|IMAGE")]
    file: PathBuf,
}

impl InspectCommand {
    pub fn execute(self) -> Result<()> {
        let arg = self.file.to_string_lossy().into_owned();
        if !crate::images::looks_like_file(&arg) {
            return self.inspect_image(&arg);
        }
        let input = Input::read(&self.file)?;
        if input.precompiled {
            return Err(wasmcell_runtime::Error::NotRunnable(format!(
                "{}: is a precompiled artifact; inspect the .wasm it was compiled from",
                self.file.display()
            ))
            .into());
        }
        let info = inspect::inspect(&input.bytes)?;
        let mut out = std::io::stdout().lock();
        match self.format {
            Format::Json => {
                serde_json::to_writer_pretty(&mut out, &info)?;
                writeln!(out)?;
            }
            Format::Text => {
                let kind = match info.kind {
                    inspect::WasmKind::Module => "module",
                    inspect::WasmKind::Component => "component",
                };
                writeln!(out, "file:     {}", self.file.display())?;
                writeln!(out, "kind:     {kind}")?;
                let also: Vec<&str> = info.wasi_versions.iter().rev().skip(1).map(String::as_str).collect();
                if also.is_empty() {
                    writeln!(out, "wasi:     {}", info.wasi)?;
                } else {
                    writeln!(out, "wasi:     {} (and {})", info.wasi, also.join(", "))?;
                }
                writeln!(out, "size:     {} bytes", info.size)?;
                writeln!(out, "sha256:   {}", info.sha256)?;
                let proposals = if info.proposals.is_empty() { "none (MVP)".to_string() } else { info.proposals.join(", ") };
                writeln!(out, "uses:     {proposals}")?;
                writeln!(out, "imports:  {}", info.imports.len())?;
                for i in &info.imports {
                    writeln!(out, "  {:<9} {}", i.kind, i.name)?;
                }
                writeln!(out, "exports:  {}", info.exports.len())?;
                for e in &info.exports {
                    writeln!(out, "  {:<9} {}", e.kind, e.name)?;
                }
            }
        }
        out.flush()?;
        Ok(())
    }

    fn inspect_image(&self, arg: &str) -> Result<()> {
        use wasmcell_oci::image::{self, Content};
        use wasmcell_oci::store::MAX_MANIFEST_BYTES;
        let reference = crate::images::parse_ref(arg)?;
        let store = crate::images::store()?;
        let name = reference.to_string();
        let record = store.get_name(&name)?.ok_or_else(|| wasmcell_oci::Error::ImageNotFound(name.clone()))?;
        let manifest_bytes = store.read_small(&record.manifest, MAX_MANIFEST_BYTES)?;
        let Content::Manifest(manifest) = Content::parse(&manifest_bytes, None)? else {
            return Err(wasmcell_oci::Error::InvalidImage("stored manifest is an index".into()).into());
        };
        let config_bytes = store.read_small(&manifest.config.digest, MAX_MANIFEST_BYTES)?;
        let config: serde_json::Value = serde_json::from_slice(&config_bytes).unwrap_or(serde_json::Value::Null);
        let img = image::classify(manifest.clone(), &config_bytes, record.target.digest != record.manifest)?;
        let report = serde_json::json!({
            "name": name,
            "kind": img.kind,
            "digest": record.target.digest,
            "mediaType": record.target.media_type,
            "manifestDigest": record.manifest,
            "os": img.os,
            "architecture": img.architecture,
            "manifest": manifest,
            "config": config,
            "updated": record.updated,
        });
        let mut out = std::io::stdout().lock();
        match self.format {
            Format::Json => {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            }
            Format::Text => {
                writeln!(out, "image:     {name}")?;
                writeln!(out, "kind:      {}", img.kind)?;
                writeln!(out, "digest:    {}", record.target.digest)?;
                if record.target.digest != record.manifest {
                    writeln!(out, "manifest:  {} (picked from the index)", record.manifest)?;
                }
                writeln!(out, "platform:  {}/{}", img.os, img.architecture)?;
                writeln!(out, "config:    {} {}", manifest.config.media_type, manifest.config.digest)?;
                writeln!(out, "layers:    {}", manifest.layers.len())?;
                for l in &manifest.layers {
                    let title = l.annotations.get(image::TITLE_ANNOTATION).map(|t| format!(" {t}")).unwrap_or_default();
                    writeln!(out, "  {} {} {} bytes{title}", l.media_type, l.digest, l.size)?;
                }
                if let Some(c) = img.wasm_config.as_ref().and_then(|c| c.component.as_ref()) {
                    writeln!(out, "exports:   {}", c.exports.join(", "))?;
                    writeln!(out, "imports:   {}", c.imports.join(", "))?;
                }
                if !img.entrypoint.is_empty() || !img.cmd.is_empty() {
                    writeln!(out, "command:   {}", img.entrypoint.iter().chain(&img.cmd).cloned().collect::<Vec<_>>().join(" "))?;
                }
                for (k, v) in &manifest.annotations {
                    writeln!(out, "annotation: {k}={v}")?;
                }
            }
        }
        Ok(())
    }
}
