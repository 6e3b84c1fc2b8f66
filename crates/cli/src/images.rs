//! What the image subcommands share: the store under the home, registry options from flags,
//! progress bars, and turning an image into something `run` can hand to the runtime.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use wasmcell_oci::auth::CredentialStore;
use wasmcell_oci::image::{self, Content, ImageKind};
use wasmcell_oci::registry::{self, Client, Event, Options, PullReport};
use wasmcell_oci::store::{ImageRecord, MAX_MANIFEST_BYTES};
use wasmcell_oci::{Reference, Store};
use wasmcell_runtime::home::Home;

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

/// Pulls `reference` into the store.
pub fn pull(store: &Store, reference: &Reference, flags: &RegistryFlags, progress: bool) -> Result<PullReport> {
    let client = Client::new(options(flags, progress), reference)?;
    let report = tokio()?.block_on(client.pull(store, reference))?;
    Ok(report)
}

/// An image resolved for running: the wasm to load and what the image says about running it.
pub struct Runnable {
    /// The module or component file (a blob in the store, or a file in the unpacked rootfs).
    pub wasm: PathBuf,
    /// argv[0] and the image's default arguments (Entrypoint + Cmd after the module).
    pub argv0: String,
    pub default_args: Vec<String>,
    /// KEY=VALUE from the image config.
    pub env: Vec<String>,
    /// The unpacked rootfs of a compat image, mounted read-only at `/`.
    pub rootfs: Option<PathBuf>,
}

/// A `run`/`serve` target: a file path as is, or an image resolved (and pulled per `policy`)
/// into the wasm file to load and what its config says.
pub fn resolve_target(target: &str, policy: PullPolicy, flags: &RegistryFlags) -> Result<(PathBuf, Option<Runnable>)> {
    if looks_like_file(target) {
        return Ok((PathBuf::from(target), None));
    }
    let runnable = resolve(&parse_ref(target)?, policy, flags)?;
    Ok((runnable.wasm.clone(), Some(runnable)))
}

/// Finds `reference` in the store (pulling it as `policy` says) and resolves what to run.
pub fn resolve(reference: &Reference, policy: PullPolicy, flags: &RegistryFlags) -> Result<Runnable> {
    let store = store()?;
    let name = reference.to_string();
    let record = match (policy, store.get_name(&name)?) {
        (PullPolicy::Never, None) => {
            return Err(wasmcell_oci::Error::ImageNotFound(format!("{name} (not in the local store, and --pull never)")).into());
        }
        // What is stored is what runs: `never` never connects, and `missing` only when it must.
        (PullPolicy::Never | PullPolicy::Missing, Some(record)) => record,
        _ => {
            pull(&store, reference, flags, true)?;
            store.get_name(&name)?.ok_or_else(|| wasmcell_oci::Error::ImageNotFound(name.clone()))?
        }
    };
    runnable(&store, reference, &record)
}

/// Classifies a stored image and prepares its wasm (unpacking a compat rootfs once).
pub fn runnable(store: &Store, reference: &Reference, record: &ImageRecord) -> Result<Runnable> {
    let _lock = store.lock_shared()?;
    let manifest_bytes = store.read_small(&record.manifest, MAX_MANIFEST_BYTES)?;
    let Content::Manifest(manifest) = Content::parse(&manifest_bytes, None)? else {
        return Err(wasmcell_oci::Error::InvalidImage("stored manifest is an index".into()).into());
    };
    let config = store.read_small(&manifest.config.digest, MAX_MANIFEST_BYTES)?;
    let from_index = record.target.digest != record.manifest;
    let img = image::classify(manifest, &config, from_index)?;
    let base = reference.repository().rsplit('/').next().unwrap_or("app").to_string();
    match img.kind {
        ImageKind::Artifact | ImageKind::WasmLayer => {
            let layer = img.wasm_layer.as_ref().expect("wasm images have a wasm layer");
            let argv0 = layer.annotations.get(image::TITLE_ANNOTATION).cloned().unwrap_or(base);
            // Entrypoint beyond the module, then Cmd, are the default arguments (runwasi's reading).
            let mut default_args: Vec<String> = img.entrypoint.iter().skip(1).cloned().collect();
            default_args.extend(img.cmd.iter().cloned());
            Ok(Runnable { wasm: store.blob_path(&layer.digest), argv0, default_args, env: img.env, rootfs: None })
        }
        ImageKind::Compat => {
            let rootfs = store.rootfs_path(&record.manifest);
            if !rootfs.exists() {
                let paths: Vec<PathBuf> = img.rootfs_layers.iter().map(|l| store.blob_path(&l.digest)).collect();
                let layers: Vec<wasmcell_oci::unpack::Layer<'_>> = img
                    .rootfs_layers
                    .iter()
                    .zip(&paths)
                    .map(|(l, p)| wasmcell_oci::unpack::Layer { path: p, media_type: &l.media_type })
                    .collect();
                if let Err(e) = wasmcell_oci::unpack::unpack_rootfs(&layers, &rootfs, &Default::default()) {
                    // Another run may have unpacked it at the same moment.
                    if !rootfs.exists() {
                        return Err(e.into());
                    }
                }
            }
            let mut argv = img.entrypoint.iter().chain(img.cmd.iter()).cloned();
            let module = argv.next().ok_or_else(|| wasmcell_oci::Error::InvalidImage("no Entrypoint or Cmd".into()))?;
            let argv: Vec<String> = argv.collect();
            let wasm = contained(&rootfs, &module)?;
            let default_args = argv;
            Ok(Runnable { wasm, argv0: module, default_args, env: img.env, rootfs: Some(rootfs) })
        }
    }
}

/// The host path of `guest_path` inside `rootfs`, refusing anything that resolves outside it.
fn contained(rootfs: &std::path::Path, guest_path: &str) -> Result<PathBuf> {
    let root = rootfs.canonicalize().with_context(|| format!("failed to open {}", rootfs.display()))?;
    let candidate = root.join(guest_path.trim_start_matches('/'));
    let resolved = candidate
        .canonicalize()
        .map_err(|_| wasmcell_oci::Error::InvalidImage(format!("the image's entrypoint {guest_path:?} is not in its rootfs")))?;
    if !resolved.starts_with(&root) {
        return Err(wasmcell_oci::Error::InvalidImage(format!("the image's entrypoint {guest_path:?} resolves outside its rootfs")).into());
    }
    Ok(resolved)
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
