//! `wasmcell push`: publish a wasm file as a CNCF Wasm OCI artifact, or push a stored image.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use wasmcell_oci::image::{self, Descriptor, build_artifact};
use wasmcell_oci::registry::Client;
use wasmcell_oci::{Error, Reference};
use wasmcell_runtime::engine::EngineChoice;
use wasmcell_runtime::inspect::Input;

use super::Format;
use crate::images::{self, RegistryFlags};

/// Push FILE (a .wasm or .wat module or component) to IMAGE as a Wasm OCI artifact, or, given
/// only IMAGE, push that image from the local store. The artifact is also stored and named
/// locally. Blobs the registry already has are not sent again.
#[derive(Args, Debug)]
pub struct PushCommand {
    #[command(flatten)]
    registry: RegistryFlags,

    /// Add a manifest annotation (repeatable), e.g. org.opencontainers.image.source=https://...
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,

    /// After the push, sign the pushed digest with this private key (as `wasmcell sign --key KEY`).
    #[arg(long = "sign", value_name = "KEY")]
    sign: Option<PathBuf>,

    /// Also compile the image for this machine's engine (serve's for a wasi:http service, run's
    /// otherwise) and attach the code to the image as a signed OCI referrer: a node whose engine
    /// matches and whose signature policy trusts the key then starts it without compiling. Needs --sign.
    #[arg(long, requires = "sign")]
    precompile: bool,

    /// Output format (json prints what was transferred).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,

    /// FILE IMAGE, or IMAGE alone for a stored image.
    #[arg(value_name = "[FILE] IMAGE", num_args = 1..=2, required = true)]
    args: Vec<String>,
}

/// What `push` prints: the push's report, and the signature when `--sign` was given.
#[derive(serde::Serialize)]
struct Pushed<'a> {
    #[serde(flatten)]
    push: &'a wasmcell_oci::registry::PushReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    signed: Option<&'a wasmcell_oci::trust::SignReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    precompiled: Option<&'a images::Attached>,
}

impl PushCommand {
    pub fn execute(self) -> Result<()> {
        let (file, image) = match self.args.as_slice() {
            [image] => (None, image.as_str()),
            [file, image] => (Some(PathBuf::from(file)), image.as_str()),
            _ => unreachable!("clap bounds the argument count"),
        };
        let reference = images::parse_ref(image)?;
        let store = images::store()?;
        let name = reference.to_string();
        if let Some(file) = &file {
            self.store_artifact(&store, file, &reference)?;
        }
        let record = store
            .get_name(&name)?
            .ok_or_else(|| Error::ImageNotFound(format!("{name} is not in the local store (give a FILE to push, or pull/tag it first)")))?;
        // Other names of the same image on the same registry: their repositories can lend blobs.
        let mount_from: Vec<Reference> = store
            .names()?
            .into_iter()
            .filter(|(n, r)| *n != name && r.manifest == record.manifest)
            .filter_map(|(n, _)| n.parse().ok())
            .collect();
        // The key opens before anything is uploaded: a wrong password fails first.
        let key = self.sign.as_deref().map(super::key::private_key).transpose()?;
        // So does a compile: nothing is uploaded for an image whose code cannot be made.
        let code = self.precompile.then(|| images::compile_image(&store, &reference, &record, EngineChoice::Auto)).transpose()?;
        let client = Client::new(images::options(&self.registry, !self.quiet && self.format == Format::Text), &reference)?;
        let (report, signed, attached) = images::tokio()?.block_on(async {
            let report = client.push(&store, &record, &reference, &mount_from).await?;
            let signed = match &key {
                Some(key) => Some(client.sign(&reference, &report.digest, key).await?),
                None => None,
            };
            let attached = match (&code, &key) {
                (Some(code), Some(key)) => Some(images::attach_code(&client, &reference, &record.target, code, key).await?),
                _ => None,
            };
            Ok::<_, Error>((report, signed, attached))
        })?;
        // Kept beside the local image too, so `run` under a policy that requires the key accepts it.
        if let Some(s) = &signed
            && record.target.digest == s.digest
        {
            let _lock = store.lock_shared()?;
            wasmcell_oci::trust::keep(&store, &reference, &s.digest, &s.attachment)?;
        }
        let output = Pushed { push: &report, signed: signed.as_ref(), precompiled: attached.as_ref() };
        super::print_report(self.format, self.quiet, &output, || {
            let mut line = format!(
                "{}: pushed {}, {} blobs uploaded ({} bytes), {} mounted, {} already there",
                report.reference, report.digest, report.blobs_uploaded, report.bytes_uploaded, report.blobs_mounted, report.blobs_present
            );
            if let Some(s) = &signed {
                line.push_str(&format!("; signed with key sha256:{} ({})", s.key_fingerprint, s.signature));
            }
            if let Some(a) = &attached {
                line.push_str(&format!("; {}", a.describe()));
            }
            line
        })
    }

    /// Builds the artifact for `file`, stores its blobs and names it `reference` locally.
    fn store_artifact(&self, store: &wasmcell_oci::Store, file: &std::path::Path, reference: &Reference) -> Result<()> {
        let input = Input::read(file)?;
        if input.precompiled {
            return Err(wasmcell_runtime::Error::NotRunnable(format!(
                "{}: is a precompiled artifact (native code for this machine); push the .wasm",
                file.display()
            ))
            .into());
        }
        let mut annotations = BTreeMap::new();
        for a in &self.annotations {
            let (k, v) = a
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| wasmcell_runtime::Error::Config(format!("--annotation {a:?} is not KEY=VALUE")))?;
            annotations.insert(k.to_string(), v.to_string());
        }
        let title = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "module.wasm".into());
        let title = if title.ends_with(".wat") { title.trim_end_matches(".wat").to_string() + ".wasm" } else { title };
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let artifact = build_artifact(&input.bytes, &title, &annotations, &created)?;
        let _lock = store.lock_shared()?;
        store.put(&input.bytes, Some(&artifact.layer.digest))?;
        store.put(&artifact.config, None)?;
        let digest = store.put(&artifact.manifest, None)?;
        let target = Descriptor {
            media_type: image::OCI_MANIFEST.into(),
            digest: digest.clone(),
            size: artifact.manifest.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        };
        store.set_name(&reference.to_string(), target, digest).context("failed to name the artifact")?;
        Ok(())
    }
}
