//! `wasmcell run`: run a WASI module or component in a deny-by-default sandbox.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use wasmcell_runtime::inspect::Input;
use wasmcell_runtime::policy::{self, Mount, NetRule};
use wasmcell_runtime::{Engine, Error, Instance, SandboxPolicy, Stdio};

use crate::exit;

/// Run a WASI module or component (binary or .wat) with FILE's ARGS as its argv[1..].
///
/// Nothing is granted unless asked: no environment, no files, no network.
#[derive(Args, Debug)]
#[command(after_help = exit::TABLE)]
pub struct RunCommand {
    /// Set an environment variable (KEY=VALUE), or copy KEY from the host's environment.
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,

    /// Read environment variables from a file (docker's format: KEY=VALUE or KEY per line, # comments).
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,

    /// Grant a host directory, read-write, at GUEST (default: the same path), wasmtime's syntax.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dir: Vec<String>,

    /// Grant a host directory at the absolute guest path GUEST, docker's syntax; `:ro` makes it read-only.
    #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro]")]
    volume: Vec<String>,

    /// Allow sockets (wasi:sockets) to these addresses: ADDR or CIDR with an optional :PORT, :FIRST-LAST
    /// or :* (IPv6 bracketed: [::1]:8080); comma-separated or repeated. `*` allows everything.
    #[arg(long = "net", value_name = "ALLOW", value_delimiter = ',')]
    net: Vec<String>,

    /// Allow name lookups (wasi:sockets/ip-name-lookup).
    #[arg(long = "allow-name-lookup")]
    allow_name_lookup: bool,

    /// Cap each linear memory of the instance (e.g. 64M); memory.grow beyond it fails.
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,

    /// Stop the guest after this long (e.g. 500ms, 2s, 1m).
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,

    /// Maximum wasm stack (e.g. 1M); deeper recursion traps.
    #[arg(long = "max-stack", value_name = "SIZE")]
    max_stack: Option<String>,

    /// Neither read nor write the compiled-code cache.
    #[arg(long = "no-cache")]
    no_cache: bool,

    /// Allow running precompiled artifacts from `wasmcell compile` (they are trusted native code).
    #[arg(long = "allow-precompiled")]
    allow_precompiled: bool,

    /// The module or component to run (.wasm, .wat, or with --allow-precompiled a .cwasm).
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// Arguments passed to the guest.
    #[arg(value_name = "ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

impl RunCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let policy = self.policy()?;
        let engine = super::engine(!self.no_cache, policy.limits.max_stack, self.allow_precompiled)?;
        let input = Input::read(&self.file)?;
        let program = engine.load(&input)?;
        let wasmtime = engine.wasmtime().clone();
        let instance = Instance::create(&program, move || wasmtime.increment_epoch(), &policy, &Stdio::inherit())?;
        let status = instance.run()?;
        Ok(exit::guest_code(status.code))
    }

    /// Translates the flags into the sandbox policy: the only thing the runtime is given.
    fn policy(&self) -> Result<SandboxPolicy> {
        let mut p = SandboxPolicy::default();
        let argv0 = self.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        p.args = std::iter::once(argv0).chain(self.args.iter().cloned()).collect();
        for file in &self.env_file {
            let text = std::fs::read_to_string(file).map_err(|e| Error::Config(format!("cannot read env file {}: {e}", file.display())))?;
            for line in text.lines() {
                let line = line.trim_start();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                push_env(&mut p.env, line)?;
            }
        }
        for e in &self.env {
            push_env(&mut p.env, e)?;
        }
        for d in &self.dir {
            p.mounts.push(Mount::parse_dir(d).map_err(config)?);
        }
        for v in &self.volume {
            p.mounts.push(Mount::parse_volume(v).map_err(config)?);
        }
        for n in &self.net {
            p.network.allow.push(n.parse::<NetRule>().map_err(config)?);
        }
        p.network.name_lookup = self.allow_name_lookup;
        p.limits.memory = self.memory.as_deref().map(policy::parse_size).transpose().map_err(config)?;
        p.limits.timeout = self.timeout.as_deref().map(policy::parse_duration).transpose().map_err(config)?;
        p.limits.max_stack = self
            .max_stack
            .as_deref()
            .map(|s| policy::parse_size(s).map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
            .transpose()
            .map_err(config)?;
        tracing::debug!(policy = %serde_json::to_string(&p).unwrap_or_default(), "sandbox policy");
        Ok(p)
    }
}

fn config(e: policy::ParseError) -> anyhow::Error {
    Error::Config(e.to_string()).into()
}

/// `KEY=VALUE` sets; a bare `KEY` copies the host's value and is skipped when the host has none
/// (docker's behaviour). A later entry for the same key replaces an earlier one.
fn push_env(env: &mut Vec<(String, String)>, spec: &str) -> Result<()> {
    let (key, value) = match spec.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => match std::env::var(spec) {
            Ok(v) => (spec.to_string(), v),
            Err(_) => return Ok(()),
        },
    };
    policy::check_env(&key, &value).map_err(config).context("invalid --env")?;
    env.retain(|(k, _)| *k != key);
    env.push((key, value));
    Ok(())
}
