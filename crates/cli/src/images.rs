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
use wasmcell_oci::{Reference, Store, precompiled, trust};
use wasmcell_runtime::WasmtimeEngine;
use wasmcell_runtime::home::Home;
use wasmcell_runtime::inspect::Input;
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

/// What `run` and `serve` were asked to run.
pub struct Target {
    /// The wasm file to load.
    pub path: PathBuf,
    /// What the image's config says, when the target is an image.
    pub launch: Option<Launch>,
    /// Where the image came from, for the precompiled code that may travel beside it.
    pub origin: Option<Origin>,
}

/// An image's registry, digest and the trust in force, for what is looked up beside it.
pub struct Origin {
    pub reference: Reference,
    /// The image's top-level digest (what its signatures and referrers name).
    pub digest: wasmcell_oci::Digest,
    /// The pull policy lets the command talk to the registry.
    pub connect: bool,
    pub flags: RegistryFlags,
    pub policy: Option<Arc<Policy>>,
    /// The precompiled code looked for while the image downloaded, if it was.
    pub prefetched: Option<Prefetched>,
}

/// A lookup of precompiled code made while its image downloaded (its wasm was not read yet), of the
/// image `subject`: for the engine fingerprint of a wasm without the async ABI, or, when the image
/// has code only for other engines, of one with it (WASI 0.3).
pub struct Prefetched {
    pub fingerprint: String,
    pub subject: wasmcell_oci::Digest,
    pub found: std::result::Result<precompiled::Trusted, precompiled::NotUsed>,
}

/// A `run`/`serve` target: a file path as is, or an image resolved (and pulled per `policy`)
/// into the wasm file to load and what its config says. An image that downloads brings the
/// precompiled code for `engine` along, where the policy allows (see [`take_precompiled`]).
pub fn resolve_target(
    target: &str,
    policy: PullPolicy,
    flags: &RegistryFlags,
    trust: &TrustFlags,
    engine: &WasmtimeEngine,
) -> Result<Target> {
    if looks_like_file(target) {
        return Ok(Target { path: PathBuf::from(target), launch: None, origin: None });
    }
    let reference = parse_ref(target)?;
    let signature_policy = self::policy(trust)?;
    let (launch, digest, prefetched) = resolve(&reference, policy, flags, signature_policy.clone(), engine)?;
    let connect = policy != PullPolicy::Never;
    let origin = Origin { reference, digest, connect, flags: flags.clone(), policy: signature_policy, prefetched };
    Ok(Target { path: launch.wasm.clone(), launch: Some(launch), origin: Some(origin) })
}

/// Finds `reference` in the store (pulling it as `policy` says), checks it against the signature
/// policy with the signatures stored beside it (an image pulled or loaded before the policy existed
/// is judged too), and resolves what to run; with the image's digest, and the precompiled code for
/// `engine` looked for while it downloaded.
fn resolve(
    reference: &Reference,
    policy: PullPolicy,
    flags: &RegistryFlags,
    signature_policy: Option<Arc<Policy>>,
    engine: &WasmtimeEngine,
) -> Result<(Launch, wasmcell_oci::Digest, Option<Prefetched>)> {
    let store = store()?;
    let name = reference.to_string();
    let mut prefetched = None;
    let record = match (policy, store.get_name(&name)?) {
        (PullPolicy::Never, None) => {
            return Err(wasmcell_oci::Error::ImageNotFound(format!("{name} (not in the local store, and --pull never)")).into());
        }
        // What is stored is what runs: `never` never connects, and `missing` only when it must.
        (PullPolicy::Never | PullPolicy::Missing, Some(record)) => record,
        _ => {
            prefetched = pull_with_code(&store, reference, flags, signature_policy.clone(), engine)?;
            store.get_name(&name)?.ok_or_else(|| wasmcell_oci::Error::ImageNotFound(name.clone()))?
        }
    };
    if let Some(signature_policy) = &signature_policy {
        let verdict = trust::check_stored(&store, signature_policy, reference, &record)?;
        tracing::debug!(image = %name, "{verdict}");
    }
    Ok((Launch::from_store(&store, reference, &record)?, record.target.digest.clone(), prefetched))
}

/// Pulls `reference` (see [`pull`]) and, while its layers download, looks for the precompiled code
/// `engine` would take for it, when the policy lets precompiled code be looked for at all, the image's
/// wasm is a layer (so its digest is known before it is read) and the cache has no code for it yet.
fn pull_with_code(
    store: &Store,
    reference: &Reference,
    flags: &RegistryFlags,
    signature_policy: Option<Arc<Policy>>,
    engine: &WasmtimeEngine,
) -> Result<Option<Prefetched>> {
    let code_policy = signature_policy.clone().filter(|p| signers_required(p, reference));
    let mut options = options(flags, true);
    options.policy = signature_policy;
    let client = Client::new(options, reference)?;
    let beside = |resolved: registry::Resolved| {
        let client = &client;
        let code_policy = code_policy.as_deref();
        async move {
            let (policy, wasm) = (code_policy?, resolved.wasm?);
            let (fingerprint, cached) = engine.plain_code(&wasm.sha256());
            if cached {
                return None;
            }
            let found = client.trusted_code(reference, &resolved.digest, &wasm, &fingerprint, policy).await;
            // Code only for other engines: perhaps for the async ABI's (a WASI 0.3 component's).
            if let Err(precompiled::NotUsed { found: false, other_engines: 1.., .. }) = &found
                && let Ok((concurrent, false)) = engine.async_abi_code(&wasm.sha256())
            {
                let again = client.trusted_code(reference, &resolved.digest, &wasm, &concurrent, policy).await;
                if !matches!(again, Err(precompiled::NotUsed { found: false, .. })) {
                    return Some(Prefetched { fingerprint: concurrent, subject: resolved.digest, found: again });
                }
            }
            Some(Prefetched { fingerprint, subject: resolved.digest, found })
        }
    };
    let (_, prefetched) = tokio()?.block_on(client.pull_with(store, reference, beside))?;
    Ok(prefetched)
}

/// Whether `policy` requires a signer for `image`: only then is precompiled code looked for (its
/// referrer must be signed by a key the policy trusts).
fn signers_required(policy: &Policy, image: &Reference) -> bool {
    trust::identity(image).is_ok_and(|i| policy.needs_signatures(&i))
}

/// Before an image's first start on this engine (nothing in the compiled-code cache): takes the
/// precompiled code attached to the image in its registry, when the signature policy trusts its
/// signer and it was compiled for this engine and this wasm (`wasmcell_oci::precompiled`): the
/// code looked for while the image downloaded, else looked for now. Otherwise says why, ending with
/// `otherwise` (what happens instead), and the load compiles as usual. The code taken, whose cache
/// write may still be under way (see `WasmtimeEngine::wait_for_cache_writes`).
pub fn take_precompiled(
    engine: &WasmtimeEngine,
    input: &Input,
    origin: Option<&mut Origin>,
    otherwise: &str,
) -> Option<wasmcell_oci::Digest> {
    let origin = origin?;
    if input.precompiled || !matches!(engine.is_cached(input), Ok(false)) {
        return None;
    }
    let image = origin.reference.clone();
    let Some(policy) = origin.policy.clone().filter(|p| signers_required(p, &image)) else {
        tracing::info!(%image, "no signature policy requires a signer for this image: precompiled code is not looked for");
        return None;
    };
    if !origin.connect {
        tracing::info!(%image, "--pull never: precompiled code is not looked for");
        return None;
    }
    let started = std::time::Instant::now();
    let found = (|| {
        let fingerprint = engine.code_fingerprint(input).map_err(|e| e.to_string())?;
        let wasm = wasmcell_oci::Digest::from_sha256(input.sha256());
        let fetched = origin.prefetched.take().filter(|p| p.fingerprint == fingerprint && p.subject == origin.digest);
        let (trusted, when) = match fetched {
            Some(p) => (p.found, "fetched while the image downloaded"),
            None => {
                let client = Client::new(options(&origin.flags, false), &image).map_err(|e| e.to_string())?;
                let runtime = tokio().map_err(|e| e.to_string())?;
                (runtime.block_on(client.trusted_code(&image, &origin.digest, &wasm, &fingerprint, &policy)), "fetched")
            }
        };
        let trusted = trusted.map_err(precompiled::NotUsed::into_line)?;
        if trusted.config.wasm != wasm {
            return Err(format!("warning: precompiled code {} was compiled from {}, not {wasm}", trusted.digest, trusted.config.wasm));
        }
        let (digest, bytes, verdict) = (trusted.digest, trusted.bytes.len(), trusted.verdict);
        engine.adopt_code(input, trusted.bytes).map_err(|e| format!("warning: precompiled code {digest}: {e}"))?;
        tracing::info!(%image, code = %digest, bytes, elapsed = ?started.elapsed(), "using precompiled code ({verdict}; {when})");
        Ok::<_, String>(digest)
    })();
    match found {
        Ok(digest) => return Some(digest),
        // Code that exists but may not run is worth a line on stderr; none at all is the usual case.
        Err(why) if why.starts_with("warning: ") => eprintln!("wasmcell: {why}; {otherwise}"),
        Err(why) => tracing::info!(%image, "{why}; {otherwise}"),
    }
    None
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

/// The engine an image's wasm runs on by default, which is what `push --precompile` compiles for
/// and `pull` fetches code for: `serve`'s for a wasi:http service, `run`'s otherwise (their settings
/// differ, so their code does); with the compiled-code cache when `cache`.
pub fn default_engine_for(input: &Input, choice: wasmcell_runtime::engine::EngineChoice, cache: bool) -> Result<WasmtimeEngine> {
    let serves = wasmcell_runtime::inspect::inspect(&input.bytes).is_ok_and(|info| info.serves_http());
    if serves {
        let cache = cache.then(|| wasmcell_runtime::cache::Cache::new(Home::from_env().compiled_cache()));
        let options = crate::commands::serve::engine_options(choice, 1, crate::commands::serve::DEFAULT_MEMORY, cache);
        return Ok(WasmtimeEngine::new(options)?);
    }
    crate::commands::engine(choice, cache, None, false)
}

/// Compiles the wasm of the stored image `record` (named `reference`) for [`default_engine_for`].
pub fn compile_image(
    store: &Store,
    reference: &Reference,
    record: &wasmcell_oci::store::ImageRecord,
    choice: wasmcell_runtime::engine::EngineChoice,
) -> Result<precompiled::Code> {
    let launch = Launch::from_store(store, reference, record)?;
    let input = Input::read(&launch.wasm)?;
    let engine = default_engine_for(&input, choice, false)?;
    let (bytes, fingerprint) = engine.compile_code(&input)?;
    let config = precompiled::CodeConfig { fingerprint, wasm: wasmcell_oci::Digest::of(&input.bytes), engine: engine.describe() };
    Ok(precompiled::Code { config, bytes })
}

/// What attaching precompiled code did: the referrer and its signature.
#[derive(serde::Serialize)]
pub struct Attached {
    #[serde(flatten)]
    pub code: precompiled::PushedCode,
    pub signed: trust::SignReport,
}

impl Attached {
    /// The report's words, for a command's text line.
    pub fn describe(&self) -> String {
        let listing = match self.code.listing {
            precompiled::Listing::ReferrersApi => "listed by the referrers API".to_string(),
            precompiled::Listing::FallbackTag => format!("listed by tag {}", precompiled::fallback_tag(&self.code.subject)),
        };
        format!(
            "precompiled code {} for engine {} ({} bytes, {listing}), signed with key sha256:{}",
            self.code.digest,
            &self.code.fingerprint[..16.min(self.code.fingerprint.len())],
            self.code.bytes,
            self.signed.key_fingerprint
        )
    }
}

/// Attaches `code` to the image `subject` in `reference`'s repository and signs the referrer with `key`.
pub async fn attach_code(
    client: &Client,
    reference: &Reference,
    subject: &wasmcell_oci::image::Descriptor,
    code: &precompiled::Code,
    key: &wasmcell_sign::PrivateKey,
) -> std::result::Result<Attached, wasmcell_oci::Error> {
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let pushed = client.push_code(reference, subject, code, &created).await?;
    let signed = client.sign(&reference.with_digest(&pushed.digest), &pushed.digest, key).await?;
    Ok(Attached { code: pushed, signed })
}
