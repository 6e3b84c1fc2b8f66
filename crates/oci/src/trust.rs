//! Image signatures where they travel and where they are kept: the sigstore attachment of a manifest
//! digest (the `sha256-<hex>.sig` tag cosign and containers/image use) fetched from a registry, judged
//! by a containers-policy.json, kept in the store beside the image, and written by `sign`.
//!
//! The bytes (keys, payloads, attachment manifests, policies) are `wasmcell-sign`'s; this module
//! moves them. What is signed is the image's top-level digest: the manifest, or the index a platform
//! manifest was picked from, as cosign signs what a reference resolves to.
//!
//! Every stranger's byte is bounded before it is read: the attachment manifest by the store's
//! manifest limit, each payload by [`wasmcell_sign::PAYLOAD_LIMIT`] and its digest, the number of
//! signatures by [`wasmcell_sign::MAX_LAYERS`].

use std::collections::BTreeMap;

use futures_util::StreamExt;
use wasmcell_sign::{ImageIdentity, Payload, Policy, PrivateKey, SignatureLayer, Verdict, build_manifest, parse_manifest, signature_tag};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{self, Content, Descriptor};
use crate::reference::Reference;
use crate::registry::Client;
use crate::store::{ImageRecord, MAX_MANIFEST_BYTES, Store};

/// The signatures of one digest: the attachment manifest and each signature with its payload.
#[derive(Debug, Clone, Default)]
pub struct Signatures {
    /// The attachment manifest as the registry (or the store) holds it; empty when there is none.
    pub manifest: Vec<u8>,
    /// The attachment's config blob (empty when read from the store, where it is not needed).
    pub config: Vec<u8>,
    pub layers: Vec<SignatureLayer>,
}

/// The most a signature attachment's config blob may be (skopeo and cosign write a few hundred bytes).
const MAX_CONFIG_BYTES: u64 = 64 << 10;

/// What `sign` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SignReport {
    pub reference: String,
    /// The signed digest.
    pub digest: Digest,
    /// Where the signature went: `registry/repository:sha256-<hex>.sig`.
    pub signature: String,
    /// The fingerprint (SHA-256 of the public key's DER) of the signing key.
    pub key_fingerprint: String,
    /// Signatures the attachment holds now (earlier ones are kept).
    pub signatures: usize,
    /// The attachment as uploaded, for [`keep`].
    #[serde(skip)]
    pub attachment: Signatures,
}

/// The image as the policy sees it.
pub fn identity(reference: &Reference) -> Result<ImageIdentity> {
    ImageIdentity::parse(&reference.to_string()).map_err(|e| untrusted(reference, e.to_string()))
}

fn untrusted(reference: &Reference, reason: String) -> Error {
    Error::Untrusted { image: reference.to_string(), reason }
}

/// Judges `digest`, the image `reference` resolved to, by `policy` given its `signatures`.
pub fn evaluate(policy: &Policy, reference: &Reference, digest: &Digest, signatures: &[SignatureLayer]) -> Result<Verdict> {
    let image = identity(reference)?;
    policy.evaluate(&image, &digest.to_string(), signatures).map_err(|rejection| untrusted(reference, rejection.to_string()))
}

/// Refuses `reference` before anything is fetched when its scope says `reject` (no digest needed).
pub fn refuse_early(policy: &Policy, reference: &Reference) -> Result<()> {
    let (scope, requirements) = policy.scope_for(&identity(reference)?);
    if requirements.iter().any(|r| matches!(r, wasmcell_sign::Requirement::Reject)) {
        let rejection = wasmcell_sign::Rejection { scope, reason: wasmcell_sign::Reason::Rejected };
        return Err(untrusted(reference, rejection.to_string()));
    }
    Ok(())
}

/// The store name of the signatures of `digest` in `reference`'s repository (the tag cosign uses).
pub fn signature_name(reference: &Reference, digest: &Digest) -> Result<String> {
    let tag = signature_tag(&digest.to_string()).map_err(|e| Error::InvalidImage(e.to_string()))?;
    Ok(format!("{}:{tag}", reference.name()))
}

/// Whether `name` is a signature attachment's name rather than an image's.
pub fn is_signature_name(name: &str) -> bool {
    name.rsplit_once(':').is_some_and(|(_, tag)| tag.starts_with("sha256-") && tag.ends_with(".sig"))
}

/// The signatures of `record` (named `reference`) kept in the store; none when none were kept.
pub fn stored(store: &Store, reference: &Reference, record: &ImageRecord) -> Result<Signatures> {
    let Some(sig) = store.get_name(&signature_name(reference, &record.target.digest)?)? else {
        return Ok(Signatures::default());
    };
    let manifest = store.read_small(&sig.manifest, MAX_MANIFEST_BYTES)?;
    let refs = parse_manifest(&manifest).map_err(|e| untrusted(reference, e.to_string()))?;
    let mut layers = Vec::with_capacity(refs.len());
    for layer in &refs {
        let digest = parse_digest(reference, &layer.digest)?;
        let payload = store.read_small(&digest, wasmcell_sign::PAYLOAD_LIMIT as u64)?;
        layers.push(layer.with_payload(payload).map_err(|e| untrusted(reference, e.to_string()))?);
    }
    Ok(Signatures { manifest, config: Vec::new(), layers })
}

/// Checks the stored image `record`, named `reference`, against `policy` with the signatures kept
/// beside it: what `run IMAGE` and `serve IMAGE` do before anything runs.
pub fn check_stored(store: &Store, policy: &Policy, reference: &Reference, record: &ImageRecord) -> Result<Verdict> {
    let signatures = if policy.needs_signatures(&identity(reference)?) { stored(store, reference, record)?.layers } else { Vec::new() };
    evaluate(policy, reference, &record.target.digest, &signatures)
}

/// Keeps `signatures` of `digest` in the store, named [`signature_name`] (nothing when there are none).
pub fn keep(store: &Store, reference: &Reference, digest: &Digest, signatures: &Signatures) -> Result<()> {
    if signatures.manifest.is_empty() {
        return Ok(());
    }
    let Content::Manifest(manifest) = Content::parse(&signatures.manifest, None)? else {
        return Err(Error::InvalidImage("a signature attachment is an index".into()));
    };
    for layer in &signatures.layers {
        store.put(&layer.payload, None)?;
    }
    store.put(&signatures.config, Some(&manifest.config.digest))?;
    let manifest_digest = store.put(&signatures.manifest, None)?;
    let target = Descriptor {
        media_type: manifest.media_type.clone().unwrap_or_else(|| image::OCI_MANIFEST.into()),
        digest: manifest_digest.clone(),
        size: signatures.manifest.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    };
    store.set_name(&signature_name(reference, digest)?, target, manifest_digest)
}

fn parse_digest(reference: &Reference, digest: &str) -> Result<Digest> {
    digest.parse().map_err(|_| untrusted(reference, format!("signature layer digest {digest:?} is not sha256")))
}

impl Client {
    /// The signatures of `digest` in `reference`'s repository, from its `.sig` tag; none when the
    /// registry has no such tag.
    pub async fn signatures(&self, reference: &Reference, digest: &Digest) -> Result<Signatures> {
        let tag = signature_tag(&digest.to_string()).map_err(|e| Error::InvalidImage(e.to_string()))?;
        let manifest = match self.get_manifest(reference, &tag).await {
            Ok((bytes, _, _)) => bytes,
            Err(Error::RemoteNotFound { .. }) => return Ok(Signatures::default()),
            Err(e) => return Err(e),
        };
        let refs = parse_manifest(&manifest).map_err(|e| untrusted(reference, e.to_string()))?;
        let Content::Manifest(parsed) = Content::parse(&manifest, None).map_err(|e| untrusted(reference, e.to_string()))? else {
            return Err(untrusted(reference, "the signature attachment is an index".into()));
        };
        if parsed.config.size > MAX_CONFIG_BYTES {
            return Err(untrusted(reference, format!("the signature attachment's config declares {} bytes", parsed.config.size)));
        }
        let config = self.small_blob(reference, &parsed.config.digest, parsed.config.size, "signature config").await?;
        if Digest::of(&config) != parsed.config.digest {
            return Err(untrusted(reference, format!("signature config {} does not match its digest", parsed.config.digest)));
        }
        let mut layers = Vec::with_capacity(refs.len());
        for layer in &refs {
            let payload = self.small_blob(reference, &parse_digest(reference, &layer.digest)?, layer.size, "signature payload").await?;
            layers.push(layer.with_payload(payload).map_err(|e| untrusted(reference, e.to_string()))?);
        }
        Ok(Signatures { manifest, config, layers })
    }

    /// A blob of at most `size` bytes (the caller bounds `size`), read into memory.
    pub(crate) async fn small_blob(&self, reference: &Reference, digest: &Digest, size: u64, what: &str) -> Result<Vec<u8>> {
        let url = format!("{}://{}/v2/{}/blobs/{digest}", self.scheme(reference), reference.registry(), reference.repository());
        let auth = self.authorize(reference, false).await?;
        let mut req = self.http.get(&url);
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let what = format!("{what} {digest} of {reference}");
        let resp = req.send().await.map_err(|e| Error::Registry(format!("GET {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(untrusted(reference, format!("{what}: HTTP {}", resp.status())));
        }
        // Room for what the manifest declares, up to 64 MiB (a declaration is a stranger's word).
        let mut body = Vec::with_capacity(usize::try_from(size.min(64 << 20)).unwrap_or(0));
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Registry(format!("GET {url}: {e}")))?;
            if body.len() as u64 + chunk.len() as u64 > size {
                return Err(untrusted(reference, format!("{what} is larger than the {size} bytes its manifest declares")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The digest `reference` names in the registry now (its own digest, or what its tag points at).
    pub async fn resolve(&self, reference: &Reference) -> Result<Digest> {
        let tag_or_digest = reference
            .digest()
            .map(|d| d.to_string())
            .or_else(|| reference.tag().map(str::to_string))
            .unwrap_or_else(|| "latest".to_string());
        Ok(self.get_manifest(reference, &tag_or_digest).await?.2)
    }

    /// Signs `digest` (what `reference` resolved to) with `key` as cosign does: a simple-signing payload
    /// naming `reference` (with its tag, or `@digest` when it has none) and `digest`, added as a layer to
    /// the `sha256-<hex>.sig` attachment (earlier signatures are kept).
    pub async fn sign(&self, reference: &Reference, digest: &Digest, key: &PrivateKey) -> Result<SignReport> {
        let signed_as = match reference.tag() {
            Some(tag) if reference.digest().is_none() => format!("{}:{tag}", reference.name()),
            _ => format!("{}@{digest}", reference.name()),
        };
        let payload = Payload::new(&signed_as, &digest.to_string()).map_err(|e| Error::InvalidImage(e.to_string()))?;
        let existing = self.signatures(reference, digest).await;
        let existing = match existing {
            Ok(s) if !s.manifest.is_empty() => Some(s),
            Ok(_) => None,
            // An attachment we cannot read is replaced, not appended to (it verified nothing).
            Err(e @ Error::Untrusted { .. }) => {
                tracing::warn!("replacing an unreadable signature attachment: {e}");
                None
            }
            Err(e) => return Err(e),
        };
        let layer = SignatureLayer::sign(key, &payload);
        let attachment = build_manifest(existing.as_ref().map(|s| s.manifest.as_slice()), std::slice::from_ref(&layer))
            .map_err(|e| Error::InvalidImage(e.to_string()))?;
        self.authorize(reference, true).await?;
        let auth = self.registry_auth(reference)?;
        self.oci.store_auth_if_needed(reference.as_oci().resolve_registry(), &auth).await;
        for blob in &attachment.blobs {
            self.upload_blob(reference, &blob.bytes).await?;
        }
        let name = signature_name(reference, digest)?;
        self.put_manifest(name.parse()?, &attachment.manifest, wasmcell_sign::OCI_MANIFEST_MEDIA_TYPE).await?;
        let mut layers = existing.map(|s| s.layers).unwrap_or_default();
        layers.push(layer);
        let config = attachment.blobs.iter().find(|b| b.descriptor.digest == attachment.config.digest).map(|b| b.bytes.clone());
        let signatures = layers.len();
        Ok(SignReport {
            reference: reference.to_string(),
            digest: digest.clone(),
            signature: name,
            key_fingerprint: key.public_key().fingerprint(),
            signatures,
            attachment: Signatures { manifest: attachment.manifest, config: config.unwrap_or_default(), layers },
        })
    }
}
