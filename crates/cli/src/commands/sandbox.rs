//! The sandbox flags `run` and `serve` share, and how an image's config joins the policy.
//! Everything here only builds the `SandboxPolicy`; the runtime grants what it says.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use wasmcell_runtime::policy::{self, Mount, NetRule};
use wasmcell_runtime::{Error, SandboxPolicy};

use wasmcell_oci::launch::Launch;

/// What the guest is granted. Nothing unless asked.
#[derive(Args, Debug, Clone, Default)]
pub struct SandboxFlags {
    /// Set an environment variable (KEY=VALUE), or copy KEY from the host's environment.
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,

    /// Read environment variables from a file (docker's format: KEY=VALUE or KEY per line, # comments).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,

    /// Grant a host directory, read-write, at GUEST (default: the same path), wasmtime's syntax.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    pub dir: Vec<String>,

    /// Grant a host directory at the absolute guest path GUEST, docker's syntax; `:ro` makes it read-only.
    #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro]")]
    pub volume: Vec<String>,

    /// Allow sockets (wasi:sockets) to these addresses: ADDR or CIDR with an optional :PORT, :FIRST-LAST
    /// or :* (IPv6 bracketed: [::1]:8080); comma-separated or repeated. `*` allows everything.
    #[arg(long = "net", value_name = "ALLOW", value_delimiter = ',')]
    pub net: Vec<String>,

    /// Allow name lookups (wasi:sockets/ip-name-lookup).
    #[arg(long = "allow-name-lookup")]
    pub allow_name_lookup: bool,

    /// Cap each linear memory of the instance (e.g. 64M); memory.grow beyond it fails.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,

    /// Maximum wasm stack (e.g. 1M); deeper recursion traps.
    #[arg(long = "max-stack", value_name = "SIZE")]
    pub max_stack: Option<String>,

    /// Grant the key-value store NAME (wasi:keyvalue): NAME (embedded, durable), NAME=memory,
    /// NAME=redis://HOST[:PORT][/DB]; repeatable. Any other store answers access-denied.
    #[arg(long = "kv", value_name = "NAME[=BACKEND]")]
    pub kv: Vec<String>,

    /// The application's name, which its key-value data is kept under [default: the file's
    /// name without .wasm, or the image's repository].
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,
}

impl SandboxFlags {
    /// Adds the flags' grants and limits to `p` (after an image's, so flags win).
    pub fn apply(&self, p: &mut SandboxPolicy) -> Result<()> {
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
        for k in &self.kv {
            let grant = k.parse::<policy::KvGrant>().map_err(config)?;
            p.kv.retain(|g| g.name != grant.name);
            p.kv.push(grant);
        }
        if let Some(app) = &self.app {
            policy::check_name("application", app).map_err(config)?;
            p.app = app.clone();
        }
        p.limits.memory = self.memory.as_deref().map(policy::parse_size).transpose().map_err(config)?;
        p.limits.max_stack = self
            .max_stack
            .as_deref()
            .map(|s| policy::parse_size(s).map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
            .transpose()
            .map_err(config)?;
        Ok(())
    }
}

/// The application name of a target when `--app` does not give one: a file's name without `.wasm`,
/// an image's repository path (`/` as `-`), cut to the characters a name may have.
pub fn default_app(target: &str, image: Option<&Launch>) -> String {
    let base = match image {
        Some(_) => {
            let repo = target.split('@').next().unwrap_or(target);
            let repo = match repo.rfind(':') {
                Some(i) if !repo[i..].contains('/') => &repo[..i],
                _ => repo,
            };
            // Drop a registry host (the first component when it has a dot, a colon or is localhost).
            let mut parts: Vec<&str> = repo.split('/').collect();
            if parts.len() > 1 && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost") {
                parts.remove(0);
            }
            parts.join("-")
        }
        None => {
            let name = std::path::Path::new(target).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.strip_suffix(".wasm").unwrap_or(&name).to_string()
        }
    };
    let mut app: String =
        base.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).take(64).collect();
    while app.starts_with('.') {
        app.remove(0);
    }
    if app.is_empty() { "app".into() } else { app }
}

/// Opens every granted key-value store now, so a store that cannot be opened (its file in use,
/// a malformed URL) is a clear error at start instead of a guest's first failure.
pub fn open_stores(p: &SandboxPolicy) -> Result<()> {
    let home = wasmcell_runtime::home::Home::from_env();
    for grant in &p.kv {
        wasmcell_runtime::kv::open(&home, &p.app, grant)
            .map_err(|e| Error::Config(format!("cannot open key-value store `{}`: {e}", grant.name)))?;
    }
    Ok(())
}

/// An image's Env, and a compat image's rootfs read-only at `/`.
pub fn apply_image(p: &mut SandboxPolicy, img: &Launch) -> Result<()> {
    for e in &img.env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        policy::check_env(k, v).map_err(config).context("invalid Env in the image config")?;
        p.env.retain(|(key, _)| key != k);
        p.env.push((k.to_string(), v.to_string()));
    }
    if let Some(rootfs) = &img.rootfs {
        p.mounts.push(Mount { host: rootfs.clone(), guest: "/".into(), read_only: true });
    }
    Ok(())
}

pub fn config(e: policy::ParseError) -> anyhow::Error {
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
