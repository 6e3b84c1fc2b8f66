//! The registry client: pull into the store, push from it.
//!
//! oci-client does the distribution protocol (Basic and Bearer auth with the WWW-Authenticate
//! challenge, blob streams, upload sessions, cross-repository mounts). Around it this module adds
//! what a pull must guarantee: manifests read under a size limit, every byte checked against its
//! digest while streaming into a store ingest, blobs already stored never fetched again, blobs the
//! registry has never sent again (HEAD), retries with backoff on 5xx and broken connections,
//! errors a user can act on, and progress events.
//!
//! Plain HTTP is used only for loopback registries (`localhost`, `127.0.0.0/8`, `::1`) or with
//! `insecure`; everything else is HTTPS with verified certificates.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::RegistryOperation;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;

use crate::auth::CredentialStore;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{self, Content, Descriptor, Image, Manifest};
use crate::reference::Reference;
use crate::store::{ImageRecord, MAX_MANIFEST_BYTES, Store};
use crate::trust;

/// Progress of one pull or push, for a progress bar. Sent from worker tasks.
#[derive(Clone, Debug)]
pub enum Event {
    /// A blob transfer started (`size` bytes expected).
    Start { digest: Digest, size: u64 },
    /// `bytes` more of it moved.
    Advance { digest: Digest, bytes: u64 },
    /// It finished.
    Done { digest: Digest },
    /// Nothing to move: already stored locally (pull) or already in the registry (push).
    Skip { digest: Digest, size: u64 },
}

pub type ProgressFn = Arc<dyn Fn(Event) + Send + Sync>;

/// How to talk to registries.
#[derive(Clone)]
pub struct Options {
    /// Plain HTTP to any registry (otherwise only to loopback ones).
    pub insecure: bool,
    pub credentials: Arc<CredentialStore>,
    pub progress: Option<ProgressFn>,
    /// Attempts for a request that failed with a 5xx or a broken connection.
    pub attempts: u32,
    /// First retry delay; doubles each time.
    pub backoff: Duration,
    /// Blobs fetched at once.
    pub concurrency: usize,
    /// The most an image's blobs (config and layers, as its manifest declares them) may add up to.
    pub max_image_size: u64,
    /// The signature policy a pull must satisfy before it fetches anything but manifests; none: every
    /// image is accepted (as `insecureAcceptAnything`).
    pub policy: Option<Arc<wasmcell_sign::Policy>>,
}

/// The default of [`Options::max_image_size`]: far above any Wasm image, and far below a full disk.
pub const DEFAULT_MAX_IMAGE_SIZE: u64 = 4 << 30;

impl Options {
    pub fn new(credentials: CredentialStore) -> Options {
        Options {
            insecure: false,
            credentials: Arc::new(credentials),
            progress: None,
            attempts: 4,
            backoff: Duration::from_millis(200),
            concurrency: 4,
            max_image_size: DEFAULT_MAX_IMAGE_SIZE,
            policy: None,
        }
    }
}

/// What a pull knows before its first layer byte (see [`Client::pull_with`]).
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The image's top-level digest: what its signatures and referrers name.
    pub digest: Digest,
    /// The digest of the wasm layer an artifact or wasm-layer image runs (the module or component
    /// itself); `None` for a compat image, whose wasm is a file of its rootfs.
    pub wasm: Option<Digest>,
}

/// What a pull did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PullReport {
    pub reference: String,
    /// The top-level digest (manifest or index).
    pub digest: Digest,
    /// The manifest picked for the wasm platform.
    pub manifest: Digest,
    pub kind: image::ImageKind,
    pub blobs_fetched: u64,
    pub bytes_fetched: u64,
    pub blobs_present: u64,
    /// What the signature policy accepted (who signed it, as what), when there is a policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
}

/// What a push did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PushReport {
    pub reference: String,
    pub digest: Digest,
    pub blobs_uploaded: u64,
    pub bytes_uploaded: u64,
    pub blobs_mounted: u64,
    pub blobs_present: u64,
}

/// A registry client for one command. Holds auth state (tokens) across its requests.
pub struct Client {
    pub(crate) oci: oci_client::Client,
    pub(crate) http: reqwest::Client,
    pub(crate) options: Options,
    /// Authorization header per (registry, repository, operation), as found by the first request.
    auth_headers: Mutex<HashMap<(String, String, bool), Option<String>>>,
}

impl Client {
    /// A client for `reference`'s registry (plain HTTP decided from it and `options.insecure`).
    pub fn new(options: Options, reference: &Reference) -> Result<Client> {
        // rustls needs its crypto provider chosen once per process (ring; see Cargo.toml).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let plain = options.insecure || reference.is_loopback();
        let protocol = if plain { ClientProtocol::HttpsExcept(vec![reference.registry().to_string()]) } else { ClientProtocol::Https };
        let roots = system_roots();
        let config = ClientConfig {
            protocol,
            use_monolithic_push: true,
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(60)),
            tls_certs_only: roots
                .iter()
                .map(|der| oci_client::client::Certificate { encoding: oci_client::client::CertificateEncoding::Der, data: der.clone() })
                .collect(),
            ..Default::default()
        };
        let oci = oci_client::Client::try_from(config).map_err(|e| Error::Registry(e.to_string()))?;
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("wasmcell/", env!("CARGO_PKG_VERSION")));
        if !roots.is_empty() {
            let certs = roots.iter().map(|der| reqwest::Certificate::from_der(der)).collect::<std::result::Result<Vec<_>, _>>();
            http = http.tls_certs_only(certs.map_err(|e| Error::Registry(e.to_string()))?);
        }
        let http = http.build().map_err(|e| Error::Registry(e.to_string()))?;
        Ok(Client { oci, http, options, auth_headers: Mutex::new(HashMap::new()) })
    }

    pub(crate) fn scheme(&self, reference: &Reference) -> &'static str {
        if self.options.insecure || reference.is_loopback() { "http" } else { "https" }
    }

    fn emit(&self, event: Event) {
        if let Some(progress) = &self.options.progress {
            progress(event);
        }
    }

    pub(crate) fn registry_auth(&self, reference: &Reference) -> Result<RegistryAuth> {
        Ok(match self.options.credentials.lookup(reference.registry())? {
            Some(c) => RegistryAuth::Basic(c.username, c.secret.expose().to_string()),
            None => RegistryAuth::Anonymous,
        })
    }

    /// Authenticates for `op` on the reference's repository (challenge, token) once per client,
    /// and returns the Authorization header our own requests send.
    pub(crate) async fn authorize(&self, reference: &Reference, push: bool) -> Result<Option<String>> {
        let key = (reference.registry().to_string(), reference.repository().to_string(), push);
        if let Some(h) = self.auth_headers.lock().unwrap().get(&key) {
            return Ok(h.clone());
        }
        let auth = self.registry_auth(reference)?;
        self.check_token_realm(reference, &auth).await?;
        let op = if push { RegistryOperation::Push } else { RegistryOperation::Pull };
        let token =
            self.retry(|| self.oci.auth(reference.as_oci(), &auth, op)).await.map_err(|e| self.map_err(reference, "authorization", e))?;
        let header = match (token, &auth) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, RegistryAuth::Basic(user, pass)) => {
                use base64::Engine as _;
                Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))))
            }
            (None, _) => None,
        };
        self.auth_headers.lock().unwrap().insert(key, header.clone());
        Ok(header)
    }

    /// Before credentials go anywhere: a registry's Bearer challenge names the token server (`realm`) they
    /// will be sent to. That must be HTTPS, or plain HTTP on the registry's own host when the registry
    /// itself is spoken to over plain HTTP (loopback or `--insecure`); anything else would hand the
    /// password, unencrypted, to whatever host the registry names.
    async fn check_token_realm(&self, reference: &Reference, auth: &RegistryAuth) -> Result<()> {
        if !matches!(auth, RegistryAuth::Basic(..)) {
            return Ok(());
        }
        let base = format!("{}://{}/v2/", self.scheme(reference), reference.registry());
        let resp = match self.http.get(&base).send().await {
            Ok(r) => r,
            // Unreachable: the request that follows reports it (no credentials were sent here).
            Err(_) => return Ok(()),
        };
        let Some(challenge) = resp.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()) else {
            return Ok(());
        };
        let Some(realm) = bearer_realm(challenge) else { return Ok(()) };
        let refused = |why: &str| Error::Unauthorized {
            registry: reference.registry().to_string(),
            reason: format!(
                "its token realm {realm:?} {why}; credentials are sent only over HTTPS, or over plain HTTP to the registry's own host"
            ),
        };
        let url = reqwest::Url::parse(&realm).map_err(|_| refused("is not a URL"))?;
        match url.scheme() {
            "https" => Ok(()),
            "http" => {
                let registry_host = crate::reference::registry_host(reference.registry());
                let same_host = url.host_str().is_some_and(|h| {
                    h.trim_start_matches('[').trim_end_matches(']') == registry_host.trim_start_matches('[').trim_end_matches(']')
                });
                if same_host && self.scheme(reference) == "http" { Ok(()) } else { Err(refused("is plain HTTP on another host")) }
            }
            _ => Err(refused("is neither HTTPS nor HTTP")),
        }
    }

    /// Runs `op` again after a delay while it fails with a 5xx or a broken connection.
    pub(crate) async fn retry<T, F, Fut>(&self, mut op: F) -> std::result::Result<T, OciDistributionError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        let mut delay = self.options.backoff;
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if attempt < self.options.attempts && retryable(&e) => {
                    tracing::debug!(attempt, error = %e, "retrying registry request");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Maps an oci-client error to ours, with the reference and what was being done.
    pub(crate) fn map_err(&self, reference: &Reference, what: &str, e: OciDistributionError) -> Error {
        map_oci_error(reference, what, e, self.options.credentials.lookup(reference.registry()).ok().flatten().is_some())
    }

    // ---- manifests ---------------------------------------------------------------------------

    /// GETs a manifest (by tag or digest) under the size limit, checking its digest.
    /// Returns the bytes, the media type the registry gave, and the digest.
    pub(crate) async fn get_manifest(&self, reference: &Reference, tag_or_digest: &str) -> Result<(Vec<u8>, Option<String>, Digest)> {
        let url =
            format!("{}://{}/v2/{}/manifests/{}", self.scheme(reference), reference.registry(), reference.repository(), tag_or_digest);
        let mut delay = self.options.backoff;
        let mut attempt = 1;
        loop {
            match self.get_manifest_once(reference, &url, tag_or_digest).await {
                Err(Retry(e)) if attempt < self.options.attempts => {
                    tracing::debug!(attempt, error = %e, "retrying manifest request");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                    let _ = e;
                }
                Err(Retry(e)) => return Err(e),
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    async fn get_manifest_once(
        &self,
        reference: &Reference,
        url: &str,
        tag_or_digest: &str,
    ) -> std::result::Result<Result<(Vec<u8>, Option<String>, Digest)>, Retry> {
        let auth = match self.authorize(reference, false).await {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let mut req = self.http.get(url).header("Accept", image::ACCEPT.join(", "));
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Err(Retry(Error::Registry(format!("GET {url}: {}", error_chain(&e))))),
        };
        let status = resp.status();
        if status.is_server_error() {
            return Err(Retry(Error::Registry(format!("GET {url}: HTTP {status}"))));
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Err(Error::RemoteNotFound { what: "manifest", name: reference.to_string() }));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Ok(Err(unauthorized(reference, auth.is_some())));
        }
        if !status.is_success() {
            return Ok(Err(Error::Registry(format!("GET {url}: HTTP {status}"))));
        }
        if resp.content_length().is_some_and(|n| n > MAX_MANIFEST_BYTES) {
            return Ok(Err(Error::TooLarge { what: format!("manifest of {reference}"), limit: MAX_MANIFEST_BYTES }));
        }
        let media_type =
            resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let header_digest = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Err(Retry(Error::Registry(format!("GET {url}: {}", error_chain(&e))))),
            };
            if body.len() as u64 + chunk.len() as u64 > MAX_MANIFEST_BYTES {
                return Ok(Err(Error::TooLarge { what: format!("manifest of {reference}"), limit: MAX_MANIFEST_BYTES }));
            }
            body.extend_from_slice(&chunk);
        }
        let actual = Digest::of(&body);
        // By digest: the content must be exactly that. By tag: the registry's digest header, if
        // any, must agree with what arrived.
        let expected = if tag_or_digest.starts_with("sha256:") { Some(tag_or_digest.to_string()) } else { header_digest };
        if let Some(expected) = expected
            && expected != actual.to_string()
        {
            return Ok(Err(Error::DigestMismatch { what: format!("manifest of {reference}"), expected, actual: actual.to_string() }));
        }
        Ok(Ok((body, media_type, actual)))
    }

    // ---- pull --------------------------------------------------------------------------------

    /// Pulls `reference` into `store` and names it there. Blobs already stored are not fetched.
    pub async fn pull(&self, store: &Store, reference: &Reference) -> Result<PullReport> {
        Ok(self.pull_with(store, reference, |_| std::future::ready(())).await?.0)
    }

    /// [`Self::pull`], running `beside` while the layers download, once the manifests and config say
    /// what the image is (and the signature policy accepted it): for work that needs only the image's
    /// digest, such as fetching what is attached to it. A pull that fails drops it unfinished.
    pub async fn pull_with<T, F: std::future::Future<Output = T>>(
        &self,
        store: &Store,
        reference: &Reference,
        beside: impl FnOnce(Resolved) -> F,
    ) -> Result<(PullReport, T)> {
        let _lock = store.lock_shared()?;
        if let Some(policy) = &self.options.policy {
            trust::refuse_early(policy, reference)?;
        }
        let tag_or_digest = reference
            .digest()
            .map(|d| d.to_string())
            .or_else(|| reference.tag().map(str::to_string))
            .unwrap_or_else(|| "latest".to_string());
        let (top_bytes, top_type, top_digest) = self.get_manifest(reference, &tag_or_digest).await?;
        let content = Content::parse(&top_bytes, top_type.as_deref())?;
        // Before any blob: the signature policy judges the digest the reference resolved to.
        let (signatures, verified) = match &self.options.policy {
            Some(policy) => {
                let signatures = if policy.needs_signatures(&trust::identity(reference)?) {
                    self.signatures(reference, &top_digest).await?
                } else {
                    trust::Signatures::default()
                };
                let verdict = trust::evaluate(policy, reference, &top_digest, &signatures.layers)?;
                (signatures, Some(verdict.to_string()))
            }
            None => (trust::Signatures::default(), None),
        };
        let (top_media_type, manifest_bytes, manifest_digest, from_platform) = match &content {
            Content::Manifest(m) => (
                m.media_type.clone().or(top_type.clone()).unwrap_or_else(|| image::OCI_MANIFEST.into()),
                top_bytes.clone(),
                top_digest.clone(),
                false,
            ),
            Content::Index(index) => {
                let entry = image::choose_platform(index)?;
                let (bytes, _, digest) = self.get_manifest(reference, &entry.digest.to_string()).await?;
                (
                    index.media_type.clone().or(top_type.clone()).unwrap_or_else(|| image::OCI_INDEX.into()),
                    bytes,
                    digest,
                    entry.platform.is_some(),
                )
            }
        };
        let Content::Manifest(manifest) = Content::parse(&manifest_bytes, None)? else {
            return Err(Error::InvalidImage("an index entry points at another index".into()));
        };

        // Before a single layer byte: the sizes the manifest declares must add up, fit the limit and
        // fit the disk (a registry may declare anything, and would otherwise stream until it is full).
        let needed = check_sizes(&manifest, self.options.max_image_size, reference, |d| store.has(d))?;
        check_free_space(store.root(), needed, reference)?;

        let mut report = PullReport {
            reference: reference.to_string(),
            digest: top_digest.clone(),
            manifest: manifest_digest.clone(),
            kind: image::ImageKind::Artifact,
            blobs_fetched: 0,
            bytes_fetched: 0,
            blobs_present: 0,
            verified,
        };
        // Config first: it decides the format, and a bad image fails before its layers download.
        self.fetch_blob(store, reference, &manifest.config, &mut report).await?;
        let config = store.read_small(&manifest.config.digest, MAX_MANIFEST_BYTES)?;
        let image = image::classify(manifest.clone(), &config, from_platform)?;
        report.kind = image.kind;
        let layers = layers_to_fetch(&image);

        let resolved = Resolved { digest: top_digest.clone(), wasm: image.wasm_layer.as_ref().map(|l| l.digest.clone()) };
        let (fetched, beside) = futures_util::join!(self.fetch_layers(store, reference, layers, &mut report), beside(resolved));
        fetched?;

        // Manifests last: an image is named only once everything it needs is stored.
        store.put(&manifest_bytes, Some(&manifest_digest))?;
        store.put(&top_bytes, Some(&top_digest))?;
        trust::keep(store, reference, &top_digest, &signatures)?;
        let target = Descriptor {
            media_type: top_media_type,
            digest: top_digest,
            size: top_bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        };
        store.set_name(&reference.to_string(), target, manifest_digest)?;
        Ok((report, beside))
    }

    /// Fetches `layers` a few at a time (`Options::concurrency`), adding what moved to `report`.
    async fn fetch_layers(&self, store: &Store, reference: &Reference, layers: Vec<Descriptor>, report: &mut PullReport) -> Result<()> {
        let counts = Mutex::new((0u64, 0u64, 0u64));
        let template = PullReport { blobs_fetched: 0, bytes_fetched: 0, blobs_present: 0, ..report.clone() };
        futures_util::stream::iter(layers.into_iter().map(|layer| {
            let counts = &counts;
            let template = &template;
            async move {
                let mut r = template.clone();
                self.fetch_blob(store, reference, &layer, &mut r).await?;
                let mut c = counts.lock().unwrap();
                c.0 += r.blobs_fetched;
                c.1 += r.bytes_fetched;
                c.2 += r.blobs_present;
                Ok::<_, Error>(())
            }
        }))
        .buffer_unordered(self.options.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
        let (f, b, p) = *counts.lock().unwrap();
        report.blobs_fetched += f;
        report.bytes_fetched += b;
        report.blobs_present += p;
        Ok(())
    }

    /// Streams one blob into the store unless it is there, checking size and digest.
    async fn fetch_blob(&self, store: &Store, reference: &Reference, desc: &Descriptor, report: &mut PullReport) -> Result<()> {
        if store.has(&desc.digest) {
            report.blobs_present += 1;
            self.emit(Event::Skip { digest: desc.digest.clone(), size: desc.size });
            return Ok(());
        }
        self.emit(Event::Start { digest: desc.digest.clone(), size: desc.size });
        let auth = self.registry_auth(reference)?;
        self.oci.store_auth_if_needed(reference.as_oci().resolve_registry(), &auth).await;
        let layer = oci_client::manifest::OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.to_string(),
            size: desc.size as i64,
            ..Default::default()
        };
        let what = format!("blob {} of {reference}", desc.digest);
        let mut delay = self.options.backoff;
        let mut attempt = 1;
        loop {
            match self.fetch_blob_once(store, reference, desc, &layer, &what).await {
                Ok(n) => {
                    report.blobs_fetched += 1;
                    report.bytes_fetched += n;
                    self.emit(Event::Done { digest: desc.digest.clone() });
                    return Ok(());
                }
                Err((e, true)) if attempt < self.options.attempts => {
                    tracing::debug!(attempt, error = %e, "retrying blob download");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    async fn fetch_blob_once(
        &self,
        store: &Store,
        reference: &Reference,
        desc: &Descriptor,
        layer: &oci_client::manifest::OciDescriptor,
        what: &str,
    ) -> std::result::Result<u64, (Error, bool)> {
        let fatal = |e: Error| (e, false);
        let stream = match self.oci.pull_blob_stream(reference.as_oci(), layer).await {
            Ok(s) => s,
            Err(e) if retryable(&e) => return Err((self.map_err(reference, what, e), true)),
            Err(e) => return Err(fatal(self.map_err(reference, what, e))),
        };
        if stream.content_length.is_some_and(|n| n > desc.size) {
            return Err(fatal(Error::SizeMismatch { what: what.to_string(), expected: desc.size, actual: stream.content_length.unwrap() }));
        }
        let mut ingest = store.ingest().map_err(fatal)?;
        let mut stream = stream.stream;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // The library's own digest check ends the stream with an error: report ours.
                Err(e) if e.to_string().to_lowercase().contains("digest") => break,
                Err(e) => return Err((Error::Registry(format!("{what}: {}", error_chain(&e))), true)),
            };
            if ingest.len() + chunk.len() as u64 > desc.size {
                return Err(fatal(Error::SizeMismatch {
                    what: what.to_string(),
                    expected: desc.size,
                    actual: ingest.len() + chunk.len() as u64,
                }));
            }
            ingest.write_all(&chunk).map_err(|e| fatal(Error::io("failed to write", store.root().join("ingest"), e)))?;
            self.emit(Event::Advance { digest: desc.digest.clone(), bytes: chunk.len() as u64 });
        }
        let n = ingest.len();
        ingest.commit(Some(&desc.digest), Some(desc.size), what).map_err(fatal)?;
        Ok(n)
    }

    // ---- push --------------------------------------------------------------------------------

    /// Pushes the stored image `record` to `reference`. Blobs the registry has are skipped; blobs
    /// of images that came from another repository of the same registry are mounted from there.
    pub async fn push(&self, store: &Store, record: &ImageRecord, reference: &Reference, mount_from: &[Reference]) -> Result<PushReport> {
        let _lock = store.lock_shared()?;
        let manifest_bytes = store.read_small(&record.manifest, MAX_MANIFEST_BYTES)?;
        let Content::Manifest(manifest) = Content::parse(&manifest_bytes, None)? else {
            return Err(Error::InvalidImage("stored manifest is an index".into()));
        };
        let auth = self.registry_auth(reference)?;
        // Authorize for push up front: bad credentials fail here, before any upload.
        self.authorize(reference, true).await?;
        self.oci.store_auth_if_needed(reference.as_oci().resolve_registry(), &auth).await;
        let mut report = PushReport {
            reference: reference.to_string(),
            digest: record.manifest.clone(),
            blobs_uploaded: 0,
            bytes_uploaded: 0,
            blobs_mounted: 0,
            blobs_present: 0,
        };
        let sources: Vec<&Reference> =
            mount_from.iter().filter(|s| s.registry() == reference.registry() && s.repository() != reference.repository()).collect();
        let blobs: Vec<Descriptor> = manifest.layers.iter().cloned().chain([manifest.config.clone()]).collect();
        for desc in blobs {
            let digest = desc.digest.to_string();
            let exists = self
                .retry(|| self.oci.blob_exists(reference.as_oci(), &digest))
                .await
                .map_err(|e| self.map_err(reference, "blob check", e))?;
            if exists {
                report.blobs_present += 1;
                self.emit(Event::Skip { digest: desc.digest.clone(), size: desc.size });
                continue;
            }
            let mut mounted = false;
            for source in &sources {
                if self.oci.mount_blob(reference.as_oci(), source.as_oci(), &digest).await.is_ok()
                    && self.oci.blob_exists(reference.as_oci(), &digest).await.unwrap_or(false)
                {
                    mounted = true;
                    break;
                }
            }
            if mounted {
                report.blobs_mounted += 1;
                self.emit(Event::Skip { digest: desc.digest.clone(), size: desc.size });
                continue;
            }
            self.emit(Event::Start { digest: desc.digest.clone(), size: desc.size });
            let path = store.blob_path(&desc.digest);
            let data = bytes::Bytes::from(std::fs::read(&path).map_err(|e| Error::io("failed to read", &path, e))?);
            if Digest::of(&data) != desc.digest {
                return Err(Error::Corrupt(format!("blob {} changed on disk; run `wasmcell system check --repair`", desc.digest)));
            }
            self.retry(|| self.oci.push_blob(reference.as_oci(), data.clone(), &digest))
                .await
                .map_err(|e| self.map_err(reference, "blob upload", e))?;
            report.blobs_uploaded += 1;
            report.bytes_uploaded += desc.size;
            self.emit(Event::Advance { digest: desc.digest.clone(), bytes: desc.size });
            self.emit(Event::Done { digest: desc.digest.clone() });
        }
        let media_type = manifest.media_type.clone().unwrap_or_else(|| image::OCI_MANIFEST.to_string());
        let content_type = reqwest::header::HeaderValue::from_str(&media_type)
            .map_err(|_| Error::InvalidImage(format!("bad media type {media_type:?}")))?;
        let body = bytes::Bytes::from(manifest_bytes);
        self.retry(|| self.oci.push_manifest_raw(reference.as_oci(), body.clone(), content_type.clone()))
            .await
            .map_err(|e| self.map_err(reference, "manifest upload", e))?;
        Ok(report)
    }

    /// Uploads `bytes` as a blob of `reference`'s repository unless the registry has it already
    /// (the caller authorized for push).
    pub(crate) async fn upload_blob(&self, reference: &Reference, bytes: &[u8]) -> Result<()> {
        let digest = Digest::of(bytes).to_string();
        let exists =
            self.retry(|| self.oci.blob_exists(reference.as_oci(), &digest)).await.map_err(|e| self.map_err(reference, "blob check", e))?;
        if !exists {
            let data = bytes::Bytes::copy_from_slice(bytes);
            self.retry(|| self.oci.push_blob(reference.as_oci(), data.clone(), &digest))
                .await
                .map_err(|e| self.map_err(reference, "blob upload", e))?;
        }
        Ok(())
    }

    /// PUTs `bytes` as the manifest (or index) `target` names, of `media_type`.
    pub(crate) async fn put_manifest(&self, target: Reference, bytes: &[u8], media_type: &'static str) -> Result<()> {
        let content_type = reqwest::header::HeaderValue::from_static(media_type);
        let body = bytes::Bytes::copy_from_slice(bytes);
        self.retry(|| self.oci.push_manifest_raw(target.as_oci(), body.clone(), content_type.clone()))
            .await
            .map_err(|e| self.map_err(&target, "manifest upload", e))?;
        Ok(())
    }

    /// Checks credentials against the registry (what `login` does before saving them).
    pub async fn check_login(&self, reference: &Reference) -> Result<()> {
        let auth = self.registry_auth(reference)?;
        self.check_token_realm(reference, &auth).await?;
        let base = format!("{}://{}/v2/", self.scheme(reference), reference.registry());
        let token = self
            .retry(|| self.oci.auth(reference.as_oci(), &auth, RegistryOperation::Pull))
            .await
            .map_err(|e| self.map_err(reference, "login", e))?;
        let mut req = self.http.get(&base);
        match (&token, &auth) {
            (Some(t), _) => req = req.bearer_auth(t),
            (None, RegistryAuth::Basic(u, p)) => req = req.basic_auth(u, Some(p)),
            _ => {}
        }
        let resp = req.send().await.map_err(|e| Error::Registry(format!("GET {base}: {}", error_chain(&e))))?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            // A token server may give tokens without checking the repository; /v2/ with a
            // token that has no scope can still say 401 on some registries. The token was issued
            // for valid credentials, which is what login checks.
            reqwest::StatusCode::UNAUTHORIZED if token.is_some() => Ok(()),
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => Err(unauthorized(reference, true)),
            s => Err(Error::Registry(format!("GET {base}: HTTP {s}"))),
        }
    }
}

/// The bytes `manifest`'s blobs that are not stored yet (`present`) will take, after checking that the
/// config is small, the sizes do not overflow, and the whole image stays under `max`.
fn check_sizes(manifest: &Manifest, max: u64, reference: &Reference, present: impl Fn(&Digest) -> bool) -> Result<u64> {
    if manifest.config.size > MAX_MANIFEST_BYTES {
        return Err(Error::TooLarge { what: format!("config of {reference}"), limit: MAX_MANIFEST_BYTES });
    }
    let (mut total, mut needed) = (0u64, 0u64);
    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        total = total
            .checked_add(d.size)
            .filter(|t| *t <= max)
            .ok_or_else(|| Error::TooLarge { what: format!("image {reference}"), limit: max })?;
        if !present(&d.digest) {
            needed += d.size;
        }
    }
    Ok(needed)
}

/// Refuses a pull that cannot fit on the store's file system (keeping 64 MiB spare for everything else).
fn check_free_space(dir: &std::path::Path, needed: u64, reference: &Reference) -> Result<()> {
    const SPARE: u64 = 64 << 20;
    let Some(available) = free_space(dir) else { return Ok(()) };
    if needed.saturating_add(SPARE) > available {
        return Err(Error::NoSpace { what: format!("image {reference}"), path: dir.to_path_buf(), needed, available });
    }
    Ok(())
}

/// Bytes an unprivileged writer may still use on `dir`'s file system (`None` when it cannot be asked).
fn free_space(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is written by statvfs before it is read.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast, reason = "fsblkcnt_t and c_ulong are not u64 on every target")]
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The `realm` of a `Bearer` challenge (`Bearer realm="https://auth/token",service="..."`).
fn bearer_realm(challenge: &str) -> Option<String> {
    let (scheme, params) = challenge.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let at = params.to_ascii_lowercase().find("realm=")?;
    let value = &params[at + "realm=".len()..];
    Some(match value.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap_or_default().to_string(),
        None => value.split(',').next().unwrap_or_default().trim().to_string(),
    })
}

/// The layers a pull must fetch for `image`.
/// The system's trusted root certificates (DER; `SSL_CERT_FILE` / `SSL_CERT_DIR` honoured), read once
/// per process: each HTTP client would otherwise read all of /etc/ssl/certs again (~15 ms each, and
/// a pull makes two). Empty when none could be read: the clients then look for them themselves.
fn system_roots() -> &'static [Vec<u8>] {
    static ROOTS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!("reading the system's root certificates: {e}");
        }
        found.certs.into_iter().map(|c| c.as_ref().to_vec()).collect()
    })
}

fn layers_to_fetch(image: &Image) -> Vec<Descriptor> {
    match image.kind {
        image::ImageKind::Compat => image.rootfs_layers.clone(),
        _ => image.manifest.layers.clone(),
    }
}

/// An error that may go away if tried again.
struct Retry(Error);

fn retryable(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ServerError { code, .. } => *code >= 500,
        OciDistributionError::RequestError(e) => {
            e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.status().is_some_and(|s| s.is_server_error())
        }
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

fn unauthorized(reference: &Reference, had_credentials: bool) -> Error {
    Error::Unauthorized {
        registry: reference.registry().to_string(),
        reason: if had_credentials {
            "the registry refused the credentials".into()
        } else {
            format!("credentials required; run `wasmcell login {}`", reference.registry())
        },
    }
}

fn map_oci_error(reference: &Reference, what: &str, e: OciDistributionError, had_credentials: bool) -> Error {
    match e {
        OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => {
            unauthorized(reference, had_credentials)
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope.errors.iter().map(|e| format!("{:?}", e.code)).collect();
            let message = envelope.errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("; ");
            if codes.iter().any(|c| c.contains("Unknown")) {
                Error::RemoteNotFound { what: "blob", name: format!("{what} ({message})") }
            } else if codes.iter().any(|c| c.contains("Unauthorized") || c.contains("Denied")) {
                unauthorized(reference, had_credentials)
            } else {
                Error::Registry(format!("{what}: {}", message.to_lowercase()))
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => Error::RemoteNotFound { what: "blob", name: what.to_string() },
        OciDistributionError::ServerError { code: 401 | 403, .. } => unauthorized(reference, had_credentials),
        OciDistributionError::ServerError { code, .. } => Error::Registry(format!("{what}: HTTP {code}")),
        OciDistributionError::DigestError(d) => {
            Error::DigestMismatch { what: what.to_string(), expected: String::new(), actual: d.to_string() }
        }
        OciDistributionError::RequestError(r) => match r.status().map(|s| s.as_u16()) {
            Some(401 | 403) => unauthorized(reference, had_credentials),
            Some(404) => Error::RemoteNotFound { what: "blob", name: what.to_string() },
            Some(code) => Error::Registry(format!("{what}: HTTP {code}")),
            None => Error::Registry(format!("{what}: {}", error_chain(&r))),
        },
        other => Error::Registry(format!("{what}: {}", other.to_string().to_lowercase())),
    }
}

/// `e: cause: cause`, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(reference: &str, insecure: bool) -> (Client, Reference) {
        let dir = tempfile::tempdir().unwrap();
        let mut options = Options::new(CredentialStore::new(dir.path().join("auth.json"), None));
        options.insecure = insecure;
        let reference: Reference = reference.parse().unwrap();
        (Client::new(options, &reference).unwrap(), reference)
    }

    #[test]
    fn bearer_realms_are_read_from_challenges() {
        assert_eq!(
            bearer_realm(r#"Bearer realm="https://auth.example/token",service="reg""#).as_deref(),
            Some("https://auth.example/token")
        );
        assert_eq!(bearer_realm(r#"bearer service="reg",realm="http://1.2.3.4/t""#).as_deref(), Some("http://1.2.3.4/t"));
        assert_eq!(bearer_realm("Bearer realm=http://x/t,service=y").as_deref(), Some("http://x/t"));
        assert_eq!(bearer_realm(r#"Basic realm="Registry""#), None);
    }

    #[test]
    fn plain_http_only_for_loopback_or_insecure() {
        for (r, insecure, scheme) in [
            ("127.0.0.1:5000/a:1", false, "http"),
            ("localhost:5000/a:1", false, "http"),
            ("127.1.2.3:5000/a:1", false, "http"),
            ("registry.example.com/a:1", false, "https"),
            ("10.0.0.1:5000/a:1", false, "https"),
            ("docker.io/library/a:1", false, "https"),
            ("registry.example.com/a:1", true, "http"),
        ] {
            let (c, reference) = client(r, insecure);
            assert_eq!(c.scheme(&reference), scheme, "{r} insecure={insecure}");
        }
    }

    #[test]
    fn only_server_errors_and_broken_connections_are_retried() {
        let server = |code| OciDistributionError::ServerError { code, url: String::new(), message: String::new() };
        assert!(retryable(&server(500)) && retryable(&server(503)));
        assert!(!retryable(&server(404)) && !retryable(&server(401)));
        assert!(!retryable(&OciDistributionError::UnauthorizedError { url: String::new() }));
    }
}
