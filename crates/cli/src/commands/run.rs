//! `wasmcell run`: run a WASI module or component in a deny-by-default sandbox.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use wasmcell_runtime::inspect::Input;
use wasmcell_runtime::policy::{self, Mount, NetRule};
use wasmcell_runtime::{Engine, Error, Instance, SandboxPolicy, Stdio};

use crate::exit;
use crate::images::{self, PullPolicy, RegistryFlags, Runnable};

/// Run a WASI module or component (a file: binary or .wat; or an image reference) with ARGS as
/// its argv[1..].
///
/// Nothing is granted unless asked: no environment, no files, no network. An image brings its
/// own environment (Env) and default arguments (Cmd); a compat image's rootfs is mounted
/// read-only at /.
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

    /// When to pull an IMAGE: missing (not in the local store), always, never.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing, value_name = "WHEN")]
    pull: PullPolicy,

    #[command(flatten)]
    registry: RegistryFlags,

    /// The module or component to run: a file (.wasm, .wat, or with --allow-precompiled a
    /// .cwasm), or an image reference such as 127.0.0.1:5000/team/app:1.0.
    #[arg(value_name = "FILE|IMAGE")]
    target: String,

    /// Arguments passed to the guest.
    #[arg(value_name = "ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

impl RunCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let (path, image) = if images::looks_like_file(&self.target) {
            (PathBuf::from(&self.target), None)
        } else {
            let reference = images::parse_ref(&self.target)?;
            let runnable = images::resolve(&reference, self.pull, &self.registry)?;
            (runnable.wasm.clone(), Some(runnable))
        };
        let policy = self.policy(&path, image.as_ref())?;
        let engine = super::engine(!self.no_cache, policy.limits.max_stack, self.allow_precompiled)?;
        let input = Input::read(&path)?;
        let program = engine.load(&input)?;
        let wasmtime = engine.wasmtime().clone();
        let instance = Instance::create(&program, move || wasmtime.increment_epoch(), &policy, &Stdio::inherit())?;
        let status = instance.run()?;
        Ok(exit::guest_code(status.code))
    }

    /// Translates the flags into the sandbox policy: the only thing the runtime is given.
    /// An image contributes its argv[0], default arguments (replaced by ARGS when given),
    /// environment (under the flags'), and a compat image its rootfs, read-only at `/`.
    fn policy(&self, path: &std::path::Path, image: Option<&Runnable>) -> Result<SandboxPolicy> {
        let mut p = SandboxPolicy::default();
        let argv0 = match image {
            Some(img) => img.argv0.clone(),
            None => path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        let args = match image {
            Some(img) if self.args.is_empty() => img.default_args.clone(),
            _ => self.args.clone(),
        };
        p.args = std::iter::once(argv0).chain(args).collect();
        if let Some(img) = image {
            for e in &img.env {
                let (k, v) = e.split_once('=').unwrap_or((e, ""));
                policy::check_env(k, v).map_err(config).context("invalid Env in the image config")?;
                p.env.retain(|(key, _)| key != k);
                p.env.push((k.to_string(), v.to_string()));
            }
            if let Some(rootfs) = &img.rootfs {
                p.mounts.push(Mount { host: rootfs.clone(), guest: "/".into(), read_only: true });
            }
        }
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
