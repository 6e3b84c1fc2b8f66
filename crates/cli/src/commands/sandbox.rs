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
            p.network.allow.extend(NetRule::parse_all(n).map_err(config)?);
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

/// The application name of a target when `--app` does not give one: readable (a file's name without
/// `.wasm`; an image's registry and repository) and made unique by a digest of what it names (the
/// file's absolute path; the image's full repository name), so that two different files or images never
/// share key-value data unless the operator names the same `--app`.
pub fn default_app(target: &str, is_image: bool) -> String {
    // Parsed only for an image: the reference grammar is a regex whose first use costs tens of
    // milliseconds, a `run` of a file must not pay it (bench/run-startup).
    let reference = if is_image { target.parse::<wasmcell_oci::Reference>().ok() } else { None };
    let (readable, identity) = match reference {
        Some(r) => (format!("{}-{}", r.registry(), r.repository()), format!("{}/{}", r.registry(), r.repository())),
        None => {
            let path = std::path::Path::new(target);
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| std::path::absolute(path).unwrap_or(path.to_path_buf()));
            (name.strip_suffix(".wasm").unwrap_or(&name).to_string(), absolute.to_string_lossy().into_owned())
        }
    };
    let mut app: String =
        readable.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).take(48).collect();
    while app.starts_with('.') {
        app.remove(0);
    }
    let digest = wasmcell_oci::Digest::of(identity.as_bytes());
    format!("{}-{}", if app.is_empty() { "app" } else { &app }, &digest.hex()[..12])
}

/// The policy with its key-value stores opened (a store that cannot be opened is an error now).
pub fn grants(p: SandboxPolicy) -> Result<wasmcell_runtime::Grants> {
    let stores = wasmcell_runtime::kv::Stores::new(wasmcell_runtime::home::Home::from_env());
    Ok(wasmcell_runtime::Grants::new(p, &stores)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_images_and_files_get_different_applications() {
        let a = default_app("a.io/team/app:1", true);
        let b = default_app("b.io/team/app:1", true);
        assert_ne!(a, b);
        assert!(a.starts_with("a.io-team-app-"), "{a}");
        // Tags and digests of one repository are one application.
        assert_eq!(a, default_app("a.io/team/app:2", true));
        let dir = tempfile::tempdir().unwrap();
        for d in ["x", "y"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
            std::fs::write(dir.path().join(d).join("app.wasm"), b"").unwrap();
        }
        let x = default_app(dir.path().join("x/app.wasm").to_str().unwrap(), false);
        let y = default_app(dir.path().join("y/app.wasm").to_str().unwrap(), false);
        assert_ne!(x, y);
        assert!(x.starts_with("app-") && y.starts_with("app-"), "{x} {y}");
        // The same file, named another way, is the same application.
        let again = default_app(dir.path().join("x/../x/app.wasm").to_str().unwrap(), false);
        assert_eq!(x, again);
    }
}
