//! `wasmcell compile`: precompile a module or component to native code, into a file or, with
//! `--push`, beside an image in its registry.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use wasmcell_oci::registry::Client;
use wasmcell_runtime::inspect::Input;
use wasmcell_runtime::{Engine, fsutil};

use super::Format;
use crate::images::{self, RegistryFlags};

/// Precompile FILE for this machine; run the result with `wasmcell run --allow-precompiled`. With
/// --push, compile the stored IMAGE for the engine it runs on by default (serve's for a wasi:http
/// service, run's otherwise) and attach the code to the image in its registry as an OCI referrer
/// signed with --sign's key: a node whose engine matches and whose signature policy trusts that key
/// starts the image without compiling.
#[derive(Args, Debug)]
pub struct CompileCommand {
    /// Where to write the artifact (default: FILE with the extension .cwasm).
    #[arg(short, long, value_name = "OUT", conflicts_with = "push")]
    output: Option<PathBuf>,

    #[command(flatten)]
    engine: super::EngineFlag,

    /// Attach the code to IMAGE in its registry instead of writing a file (needs --sign).
    #[arg(long, requires = "sign")]
    push: bool,

    /// The private key that signs the attached code.
    #[arg(long = "sign", value_name = "KEY", requires = "push")]
    sign: Option<PathBuf>,

    #[command(flatten)]
    registry: RegistryFlags,

    /// Output format of --push's report.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,

    /// The module or component (.wasm or .wat); with --push, a stored image.
    #[arg(value_name = "FILE|IMAGE")]
    file: PathBuf,
}

impl CompileCommand {
    pub fn execute(self) -> Result<()> {
        if self.push {
            return self.push();
        }
        let out = self.output.clone().unwrap_or_else(|| self.file.with_extension("cwasm"));
        let engine = super::engine(self.engine.choice, false, None, false)?;
        let input = Input::read(&self.file)?;
        let compiled = engine.precompile(&input)?;
        fsutil::atomic_write(&out, &compiled).with_context(|| format!("failed to write {}", out.display()))?;
        Ok(())
    }

    fn push(&self) -> Result<()> {
        let reference = images::parse_ref(&self.file.to_string_lossy())?;
        let store = images::store()?;
        let name = reference.to_string();
        let record = store
            .get_name(&name)?
            .ok_or_else(|| wasmcell_oci::Error::ImageNotFound(format!("{name} is not in the local store (pull or push it first)")))?;
        let key = super::key::private_key(self.sign.as_deref().expect("clap requires --sign with --push"))?;
        let code = images::compile_image(&store, &reference, &record, self.engine.choice)?;
        let client = Client::new(images::options(&self.registry, false), &reference)?;
        let attached = images::tokio()?.block_on(images::attach_code(&client, &reference, &record.target, &code, &key))?;
        super::print_report(self.format, self.quiet, &attached, || format!("{name}: {}", attached.describe()))
    }
}
