//! One module per subcommand: `struct XCommand` (clap flags) + `execute(self)`.

use anyhow::Result;
use wasmcell_runtime::WasmtimeEngine;
use wasmcell_runtime::cache::Cache;
use wasmcell_runtime::engine::{EngineChoice, EngineOptions};
use wasmcell_runtime::home::Home;

pub mod cache;
pub mod compile;
pub mod images;
pub mod inspect;
pub mod key;
pub mod kv;
pub mod load;
pub mod login;
pub mod prune;
pub mod pull;
pub mod push;
pub mod rmi;
pub mod run;
pub mod sandbox;
pub mod save;
pub mod serve;
pub mod sign;
pub mod system;
pub mod tag;

/// Output format of commands that print data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// `--engine`: which compiler makes the guest's code (run, serve, compile).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct EngineFlag {
    /// The compiler: auto (Cranelift's optimized code; on a compiled-code cache miss for an input of
    /// 1 MiB or more, the guest starts on Winch's code while Cranelift compiles in the background),
    /// cranelift (optimizing), winch (baseline: compiles fast, runs slower; no GC, exceptions or tail
    /// calls) or pulley (portable interpreter: no native code generated).
    #[arg(long = "engine", env = "WASMCELL_ENGINE", default_value = "auto", value_name = "ENGINE")]
    pub choice: EngineChoice,
}

/// The engine every command uses, with the compiled-code cache under the home unless disabled.
pub fn engine(choice: EngineChoice, use_cache: bool, max_stack: Option<usize>, allow_precompiled: bool) -> Result<WasmtimeEngine> {
    let cache = use_cache.then(|| Cache::new(Home::from_env().compiled_cache()));
    let mut options = EngineOptions { cache, max_stack, allow_precompiled, single_instance: true, ..Default::default() };
    choice.apply(&mut options);
    Ok(WasmtimeEngine::new(options)?)
}

/// Prints a command's report: JSON on one line, nothing with `quiet`, else the text line.
pub fn print_report(format: Format, quiet: bool, report: &impl serde::Serialize, text: impl FnOnce() -> String) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match (format, quiet) {
        (Format::Json, _) => {
            serde_json::to_writer(&mut out, report)?;
            writeln!(out)?;
        }
        (Format::Text, true) => {}
        (Format::Text, false) => writeln!(out, "{}", text())?,
    }
    Ok(())
}
