//! `wasmcell inspect`: what a wasm file is, without running it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use wasmcell_runtime::inspect::{self, Input};

use super::Format;

/// Show whether FILE is a module or a component, its WASI version, imports and exports.
#[derive(Args, Debug)]
pub struct InspectCommand {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// The module or component (.wasm or .wat).
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

impl InspectCommand {
    pub fn execute(self) -> Result<()> {
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
                writeln!(out, "wasi:     {}", info.wasi)?;
                writeln!(out, "size:     {} bytes", info.size)?;
                writeln!(out, "sha256:   {}", info.sha256)?;
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
}
