//! `wasmcell compile`: precompile a module or component to native code.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use wasmcell_runtime::inspect::Input;
use wasmcell_runtime::{Engine, fsutil};

/// Precompile FILE for this machine; run the result with `wasmcell run --allow-precompiled`.
#[derive(Args, Debug)]
pub struct CompileCommand {
    /// Where to write the artifact (default: FILE with the extension .cwasm).
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,

    #[command(flatten)]
    engine: super::EngineFlag,

    /// The module or component (.wasm or .wat).
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

impl CompileCommand {
    pub fn execute(self) -> Result<()> {
        let out = self.output.clone().unwrap_or_else(|| self.file.with_extension("cwasm"));
        let engine = super::engine(self.engine.choice, false, None, false)?;
        let input = Input::read(&self.file)?;
        let compiled = engine.precompile(&input)?;
        fsutil::atomic_write(&out, &compiled).with_context(|| format!("failed to write {}", out.display()))?;
        Ok(())
    }
}
