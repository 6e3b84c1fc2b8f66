//! What the image subcommands share: the store under the home, registry options from flags,
//! progress bars, and finding (pulling per the policy) the image `run`/`serve` launch; what an image
//! launches is `wasmcell_oci::launch`, shared with the shim.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use wasmcell_oci::auth::CredentialStore;
use wasmcell_oci::launch::Launch;
use wasmcell_oci::registry::{self, Client, Event, Options, PullReport};
use wasmcell_oci::{Reference, Store, trust};
use wasmcell_runtime::home::Home;
use wasmcell_sign::Policy;

/// The image store under the home.
pub fn store() -> Result<Store> {
    Ok(Store::open(Home::from_env().root().join("store"))?)
}

/// Credentials: `wasmcell login`'s file under the home, then the docker config.
pub fn credentials() -> CredentialStore {
    CredentialStore::from_env(Home::from_env().root())
}

/// Flags every command that talks to a registry takes.
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryFlags {
    /// Use plain HTTP for this registry even though it is not on loopback (HTTP is always used for
    /// localhost and 127.0.0.0/8).
    #[arg(long)]
    pub insecure: bool,

    /// The most an image may declare for its config and layers together (e.g. 500M, 8G); larger
    /// images are refused before anything is downloaded [default: 4G].
    #[arg(long = "max-image-size", value_name = "SIZE", value_parser = parse_size_flag)]
    pub max_image_size: Option<u64>,
}

fn parse_size_flag(s: &str) -> std::result::Result<u64, String> {
    wasmcell_runtime::policy::parse_size(s).map_err(|e| e.to_string())
}

/// The flags of commands that must honour the signature policy (pull, run IMAGE, serve IMAGE).
#[derive(Args, Debug, Clone, Default)]
pub struct TrustFlags {
    /// The signature policy (containers-policy.json, podman's format) images must satisfy before anything
    /// is fetched or run [default: $WASMCELL_HOME/policy.json, else /etc/containers/policy.json, else
    /// every image is accepted].
    #[arg(long = "signature-policy", value_name = "FILE")]
    pub signature_policy: Option<PathBuf>,
}

/// Where the signature policy comes from when no flag names it, first found first.
pub fn policy_paths() -> [PathBuf; 2] {
    [Home::from_env().root().join("policy.json"), PathBuf::from("/etc/containers/policy.json")]
}

/// The signature policy in force: the flag's file, else the first of [`policy_paths`] that exists,
/// else none (every image accepted, as before there were policies).
pub fn policy(flags: &TrustFlags) -> Result<Option<Arc<Policy>>> {
    let path = match &flags.signature_policy {
        Some(path) => path.clone(),
        None => match policy_paths().into_iter().find(|p| p.exists()) {
            Some(path) => path,
            None => return Ok(None),
        },
    };
    let policy = Policy::load(&path).with_context(|| format!("signature policy {}", path.display()))?;
    Ok(Some(Arc::new(policy)))
}

/// When `run` pulls an image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// Pull only when the image is not in the local store.
    #[default]
    Missing,
    /// Always pull (blobs already stored are not fetched again).
    Always,
    /// Never pull; fail when the image is not stored.
    Never,
}

/// A tokio runtime for a command's registry work.
pub fn tokio() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("failed to start the async runtime")
}

/// Registry options for `flags`; progress bars go to stderr when `progress` and it is a terminal.
pub fn options(flags: &RegistryFlags, progress: bool) -> Options {
    let mut options = Options::new(credentials());
    options.insecure = flags.insecure;
    if let Some(max) = flags.max_image_size {
        options.max_image_size = max;
    }
    if progress && std::io::stderr().is_terminal() {
        options.progress = Some(progress_bars());
    }
    options
}

/// Progress bars, one per blob, drawn on stderr.
fn progress_bars() -> registry::ProgressFn {
    let multi = MultiProgress::new();
    let bars: Mutex<HashMap<String, ProgressBar>> = Mutex::new(HashMap::new());
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
        .expect("valid template")
        .progress_chars("=> ");
    Arc::new(move |event| {
        let mut bars = bars.lock().unwrap();
        match event {
            Event::Start { digest, size } => {
                let bar = multi.add(ProgressBar::new(size));
                bar.set_style(style.clone());
                bar.set_prefix(digest.short().to_string());
                bars.insert(digest.to_string(), bar);
            }
            Event::Advance { digest, bytes } => {
                if let Some(bar) = bars.get(&digest.to_string()) {
                    bar.inc(bytes);
                }
            }
            Event::Done { digest } => {
                if let Some(bar) = bars.remove(&digest.to_string()) {
                    bar.finish_and_clear();
                }
            }
            Event::Skip { .. } => {}
        }
    })
}

/// Pulls `reference` into the store, if `policy` accepts it.
pub fn pull(
    store: &Store,
    reference: &Reference,
    flags: &RegistryFlags,
    policy: Option<Arc<Policy>>,
    progress: bool,
) -> Result<PullReport> {
    let mut options = options(flags, progress);
    options.policy = policy;
    let client = Client::new(options, reference)?;
    let report = tokio()?.block_on(client.pull(store, reference))?;
    Ok(report)
}

/// A `run`/`serve` target: a file path as is, or an image resolved (and pulled per `policy`)
/// into the wasm file to load and what its config says.
pub fn resolve_target(target: &str, policy: PullPolicy, flags: &RegistryFlags, trust: &TrustFlags) -> Result<(PathBuf, Option<Launch>)> {
    if looks_like_file(target) {
        return Ok((PathBuf::from(target), None));
    }
    let launch = resolve(&parse_ref(target)?, policy, flags, trust)?;
    Ok((launch.wasm.clone(), Some(launch)))
}

/// Finds `reference` in the store (pulling it as `policy` says), checks it against the signature
/// policy with the signatures stored beside it (an image pulled or loaded before the policy existed
/// is judged too), and resolves what to run.
pub fn resolve(reference: &Reference, policy: PullPolicy, flags: &RegistryFlags, trust: &TrustFlags) -> Result<Launch> {
    let signature_policy = self::policy(trust)?;
    let store = store()?;
    let name = reference.to_string();
    let record = match (policy, store.get_name(&name)?) {
        (PullPolicy::Never, None) => {
            return Err(wasmcell_oci::Error::ImageNotFound(format!("{name} (not in the local store, and --pull never)")).into());
        }
        // What is stored is what runs: `never` never connects, and `missing` only when it must.
        (PullPolicy::Never | PullPolicy::Missing, Some(record)) => record,
        _ => {
            pull(&store, reference, flags, signature_policy.clone(), true)?;
            store.get_name(&name)?.ok_or_else(|| wasmcell_oci::Error::ImageNotFound(name.clone()))?
        }
    };
    if let Some(signature_policy) = &signature_policy {
        let verdict = trust::check_stored(&store, signature_policy, reference, &record)?;
        tracing::debug!(image = %name, "{verdict}");
    }
    Ok(Launch::from_store(&store, reference, &record)?)
}

/// Whether `arg` names a file rather than an image: it exists, or looks like a path.
pub fn looks_like_file(arg: &str) -> bool {
    let p = std::path::Path::new(arg);
    p.exists()
        || arg.starts_with('/')
        || arg.starts_with("./")
        || arg.starts_with("../")
        || [".wasm", ".wat", ".cwasm", ".wast"].iter().any(|ext| arg.ends_with(ext))
}

/// Parses a reference, with the CLI's error.
pub fn parse_ref(s: &str) -> Result<Reference> {
    Ok(s.parse::<Reference>()?)
}
