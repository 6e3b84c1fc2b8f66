//! Precompiled code shipped beside an image: native code for one engine fingerprint, attached to the
//! image as an OCI referrer (a manifest whose `subject` is the image's top-level digest), found through
//! the registry's referrers API or, where a registry has none, the `sha256-<hex>` tag whose index lists
//! the referrers (OCI distribution 1.1's fallback).
//!
//! Compiled code runs outside the sandbox, so a node takes it only when all of this holds, in this
//! order, and otherwise says why and compiles: the referrer is signed (its own `sha256-<hex>.sig`
//! attachment, as [`crate::trust`] signs images) by a key the signature policy trusts, an
//! `insecureAcceptAnything` verdict not being enough; its manifest names the image as its subject; its
//! config names the wasm this node will run and this node's engine fingerprint; every blob matches its
//! digest and stays under its limit. wasmtime checks the code's version and settings once more when
//! it loads it. This crate never sees an engine: the caller says which fingerprint it needs.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use wasmcell_sign::{Acceptance, Policy};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{self, Descriptor};
use crate::reference::Reference;
use crate::registry::Client;
use crate::store::MAX_MANIFEST_BYTES;
use crate::trust;

/// The referrer's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.wasmcell.precompiled.v1";
/// Its config: [`CodeConfig`].
pub const CONFIG_TYPE: &str = "application/vnd.wasmcell.precompiled.config.v1+json";
/// Its one layer: the engine's serialized code.
pub const CODE_TYPE: &str = "application/vnd.wasmcell.precompiled.code.v1";
/// The annotation (on the manifest and its referrers-index entry) naming the engine fingerprint.
pub const FINGERPRINT_ANNOTATION: &str = "dev.wasmcell.precompiled.fingerprint";
/// The most compiled code a node downloads (CPython's 18 MB component compiles to 35 MB).
pub const MAX_CODE_BYTES: u64 = 1 << 30;
const MAX_CONFIG_BYTES: u64 = 64 << 10;
/// Referrers of one fingerprint tried before giving up (each costs a signature check).
const MAX_CANDIDATES: usize = 4;

/// What the config blob says: which wasm, compiled for which engine.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CodeConfig {
    /// The engine fingerprint (hex) the code was compiled for; a node uses it only when its own matches.
    pub fingerprint: String,
    /// The SHA-256 of the wasm the code was compiled from.
    pub wasm: Digest,
    /// The engine in words, for people ("wasmtime 48.0.8, cranelift, x86_64").
    pub engine: String,
}

/// Compiled code and what it was compiled from and for.
#[derive(Clone, Debug)]
pub struct Code {
    pub config: CodeConfig,
    pub bytes: Vec<u8>,
}

/// A descriptor as the referrers API lists it (with the referrer's `artifactType`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The referrers index (the API's answer, and the fallback tag's content).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrersIndex {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Referrer>,
}

/// The referrer's manifest: an image manifest with a subject.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CodeManifest {
    schema_version: u32,
    media_type: String,
    artifact_type: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
    subject: Descriptor,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// How a pushed referrer can be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Listing {
    /// The registry's referrers API lists it.
    ReferrersApi,
    /// The registry has no referrers API: the `sha256-<hex>` tag's index lists it.
    FallbackTag,
}

/// What [`Client::push_code`] did.
#[derive(Clone, Debug, Serialize)]
pub struct PushedCode {
    /// The referrer manifest's digest (what `--sign` signs).
    pub digest: Digest,
    /// The image it is attached to.
    pub subject: Digest,
    pub fingerprint: String,
    pub bytes: u64,
    pub listing: Listing,
}

/// Code a node may run, and whose signature let it.
#[derive(Debug)]
pub struct Trusted {
    pub digest: Digest,
    /// What the code's config says it was compiled from and for (checked against what was asked).
    pub config: CodeConfig,
    pub bytes: Vec<u8>,
    /// The policy's verdict, in words (which key signed it).
    pub verdict: String,
}

/// Why no precompiled code was taken: a line for the log. `found` says whether a referrer for this
/// engine existed (then the reason deserves a warning; a missing one is the usual case).
#[derive(Debug)]
pub struct NotUsed {
    pub found: bool,
    /// How many referrers there were for other engines (then code for another flavour of this
    /// engine may be worth a look: the async ABI's).
    pub other_engines: usize,
    pub reason: String,
}

impl NotUsed {
    /// The reason, with `warning: ` before it when code for this engine was found and refused (worth
    /// a line on stderr; none at all is the usual case). It names the image.
    pub fn into_line(self) -> String {
        if self.found { format!("warning: {}", self.reason) } else { self.reason }
    }
}

/// The fallback tag of `subject`: `sha256-<hex>`.
pub fn fallback_tag(subject: &Digest) -> String {
    subject.to_string().replacen(':', "-", 1)
}

impl Client {
    /// Attaches `code` to `subject` (the image's top-level descriptor) in `reference`'s repository,
    /// and lists it in the fallback tag's index when the registry has no referrers API.
    pub async fn push_code(&self, reference: &Reference, subject: &Descriptor, code: &Code, created: &str) -> Result<PushedCode> {
        let config = serde_json::to_vec(&code.config).expect("config serializes");
        let blob = |media_type: &str, bytes: &[u8]| Descriptor {
            media_type: media_type.into(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        };
        let annotations = BTreeMap::from([
            (FINGERPRINT_ANNOTATION.to_string(), code.config.fingerprint.clone()),
            ("org.opencontainers.image.created".to_string(), created.to_string()),
        ]);
        let manifest = CodeManifest {
            schema_version: 2,
            media_type: image::OCI_MANIFEST.into(),
            artifact_type: ARTIFACT_TYPE.into(),
            config: blob(CONFIG_TYPE, &config),
            layers: vec![blob(CODE_TYPE, &code.bytes)],
            subject: Descriptor { platform: None, annotations: BTreeMap::new(), ..subject.clone() },
            annotations: annotations.clone(),
        };
        let manifest = serde_json::to_vec(&manifest).expect("manifest serializes");
        let digest = Digest::of(&manifest);
        self.authorize(reference, true).await?;
        let auth = self.registry_auth(reference)?;
        self.oci.store_auth_if_needed(reference.as_oci().resolve_registry(), &auth).await;
        self.upload_blob(reference, &config).await?;
        self.upload_blob(reference, &code.bytes).await?;
        self.put_manifest(reference.with_digest(&digest), &manifest, image::OCI_MANIFEST).await?;

        let entry = Referrer {
            media_type: image::OCI_MANIFEST.into(),
            digest: digest.clone(),
            size: manifest.len() as u64,
            artifact_type: Some(ARTIFACT_TYPE.into()),
            annotations,
        };
        let listing = match self.referrers_api(reference, &subject.digest).await? {
            Some(listed) if listed.iter().any(|r| r.digest == digest) => Listing::ReferrersApi,
            _ => {
                let tag = fallback_tag(&subject.digest);
                let mut index = match self.get_manifest(reference, &tag).await {
                    Ok((bytes, _, _)) => parse_index(&bytes)?,
                    Err(Error::RemoteNotFound { .. }) => {
                        ReferrersIndex { schema_version: 2, media_type: Some(image::OCI_INDEX.into()), manifests: Vec::new() }
                    }
                    Err(e) => return Err(e),
                };
                // One entry per fingerprint: the new code replaces what was compiled for the same engine.
                index.manifests.retain(|r| r.digest != digest && !same_engine(r, &code.config.fingerprint));
                index.manifests.push(entry);
                index.media_type = Some(image::OCI_INDEX.into());
                let bytes = serde_json::to_vec(&index).expect("index serializes");
                let target: Reference = format!("{}:{tag}", reference.name()).parse()?;
                self.put_manifest(target, &bytes, image::OCI_INDEX).await?;
                Listing::FallbackTag
            }
        };
        Ok(PushedCode {
            digest,
            subject: subject.digest.clone(),
            fingerprint: code.config.fingerprint.clone(),
            bytes: code.bytes.len() as u64,
            listing,
        })
    }

    /// The precompiled-code referrers of `subject` the registry's referrers API lists, `None` when it
    /// has no such API.
    async fn referrers_api(&self, reference: &Reference, subject: &Digest) -> Result<Option<Vec<Referrer>>> {
        let url = format!(
            "{}://{}/v2/{}/referrers/{subject}?artifactType={ARTIFACT_TYPE}",
            self.scheme(reference),
            reference.registry(),
            reference.repository()
        );
        let auth = self.authorize(reference, false).await?;
        let mut req = self.http.get(&url).header("Accept", image::OCI_INDEX);
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.map_err(|e| Error::Registry(format!("GET {url}: {e}")))?;
        let status = resp.status();
        // distribution 2.x answers 404 for a route it does not know; some registries 400 or 405.
        if matches!(status.as_u16(), 400 | 404 | 405) {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Error::Registry(format!("GET {url}: HTTP {status}")));
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Registry(format!("GET {url}: {e}")))?;
            if body.len() as u64 + chunk.len() as u64 > MAX_MANIFEST_BYTES {
                return Err(Error::TooLarge { what: format!("referrers of {subject}"), limit: MAX_MANIFEST_BYTES });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(parse_referrers(&body)?))
    }

    /// The precompiled-code referrers of `subject`: from the referrers API, else the fallback tag.
    pub async fn code_referrers(&self, reference: &Reference, subject: &Digest) -> Result<Vec<Referrer>> {
        match self.referrers_api(reference, subject).await? {
            Some(listed) => Ok(listed),
            None => match self.get_manifest(reference, &fallback_tag(subject)).await {
                Ok((bytes, _, _)) => parse_referrers(&bytes),
                Err(Error::RemoteNotFound { .. }) => Ok(Vec::new()),
                Err(e) => Err(e),
            },
        }
    }

    /// The code compiled from `wasm` for `fingerprint` attached to `subject`, if `policy` trusts its
    /// signer (see the module documentation); else why not.
    pub async fn trusted_code(
        &self,
        reference: &Reference,
        subject: &Digest,
        wasm: &Digest,
        fingerprint: &str,
        policy: &Policy,
    ) -> std::result::Result<Trusted, NotUsed> {
        let referrers = self.code_referrers(reference, subject).await.map_err(|e| NotUsed {
            found: false,
            other_engines: 0,
            reason: format!("precompiled code of {reference} not looked up: {e}"),
        })?;
        let total = referrers.len();
        let candidates: Vec<Referrer> = referrers.into_iter().filter(|r| same_engine(r, fingerprint)).take(MAX_CANDIDATES).collect();
        if candidates.is_empty() {
            let reason = match total {
                0 => format!("{reference} has no precompiled code"),
                n => format!("none of the {n} precompiled codes of {reference} is for this engine (fingerprint {})", short(fingerprint)),
            };
            return Err(NotUsed { found: false, other_engines: total, reason });
        }
        let mut reasons = Vec::new();
        for candidate in &candidates {
            match self.check_code(reference, subject, wasm, fingerprint, policy, candidate).await {
                Ok(trusted) => return Ok(trusted),
                // (a refusal without the image's name: this line names it once)
                Err(Error::Untrusted { reason, .. }) => reasons.push(format!("{}: {}", candidate.digest, crate::error::shown(&reason))),
                Err(e) => reasons.push(format!("{}: {e}", candidate.digest)),
            }
        }
        Err(NotUsed {
            found: true,
            other_engines: total - candidates.len(),
            reason: format!("precompiled code of {reference} not used: {}", reasons.join("; ")),
        })
    }

    async fn check_code(
        &self,
        reference: &Reference,
        subject: &Digest,
        wasm: &Digest,
        fingerprint: &str,
        policy: &Policy,
        candidate: &Referrer,
    ) -> Result<Trusted> {
        let refused = |reason: String| Error::Untrusted { image: reference.to_string(), reason };
        // The signature first: nothing large is fetched for code nobody trusted.
        let at: Reference = format!("{}@{}", reference.name(), candidate.digest).parse()?;
        let signatures = self.signatures(&at, &candidate.digest).await?;
        let verdict = trust::evaluate(policy, &at, &candidate.digest, &signatures.layers)?;
        if !verdict.accepted.iter().any(|a| matches!(a, Acceptance::Signed { .. })) {
            return Err(refused(format!(
                "the policy ({}) accepts it without a signature; precompiled code is native code and needs a signer the policy trusts",
                verdict.scope
            )));
        }
        let (bytes, _, _) = self.get_manifest(reference, &candidate.digest.to_string()).await?;
        let (config_desc, layer) = check_manifest(&bytes, subject).map_err(refused)?;
        let config = self.small_blob(reference, &config_desc.digest, config_desc.size, "precompiled-code config").await?;
        let config = check_config(&config, &config_desc.digest, wasm, fingerprint).map_err(refused)?;
        let code = self.small_blob(reference, &layer.digest, layer.size, "precompiled code").await?;
        if Digest::of(&code) != layer.digest {
            return Err(refused(format!("code {} does not match its digest", layer.digest)));
        }
        Ok(Trusted { digest: candidate.digest.clone(), config, bytes: code, verdict: verdict.to_string() })
    }
}

/// The config and code descriptors of a precompiled-code manifest made for `subject`; why not, in one line.
pub fn check_manifest(bytes: &[u8], subject: &Digest) -> std::result::Result<(Descriptor, Descriptor), String> {
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!("its manifest is larger than {MAX_MANIFEST_BYTES} bytes"));
    }
    let manifest: CodeManifest = serde_json::from_slice(bytes)
        .map_err(|e| format!("malformed precompiled-code manifest: {}", crate::error::shown(&e.to_string())))?;
    if manifest.schema_version != 2 || manifest.artifact_type != ARTIFACT_TYPE {
        return Err(format!("artifactType {:?} is not {ARTIFACT_TYPE}", crate::error::shown(&manifest.artifact_type)));
    }
    if manifest.subject.digest != *subject {
        return Err(format!("it was made for image {}, not {subject}", manifest.subject.digest));
    }
    let [layer] = <[Descriptor; 1]>::try_from(manifest.layers).map_err(|layers| format!("{} layers, not one", layers.len()))?;
    if manifest.config.media_type != CONFIG_TYPE || layer.media_type != CODE_TYPE {
        return Err("its config or layer has an unknown media type".into());
    }
    if manifest.config.size > MAX_CONFIG_BYTES {
        return Err(format!("its config declares {} bytes (at most {MAX_CONFIG_BYTES})", manifest.config.size));
    }
    if layer.size > MAX_CODE_BYTES {
        return Err(format!("its code declares {} bytes (at most {MAX_CODE_BYTES})", layer.size));
    }
    Ok((manifest.config, layer))
}

/// The config blob `bytes` (which its manifest names as `digest`), if it is for `wasm` and `fingerprint`.
pub fn check_config(bytes: &[u8], digest: &Digest, wasm: &Digest, fingerprint: &str) -> std::result::Result<CodeConfig, String> {
    if Digest::of(bytes) != *digest {
        return Err(format!("config {digest} does not match its digest"));
    }
    let config: CodeConfig =
        serde_json::from_slice(bytes).map_err(|e| format!("malformed precompiled-code config: {}", crate::error::shown(&e.to_string())))?;
    if config.wasm != *wasm {
        return Err(format!("it was compiled from {}, not this image's wasm {wasm}", config.wasm));
    }
    if config.fingerprint != fingerprint {
        let theirs = crate::error::shown(short(&config.fingerprint));
        return Err(format!("it was compiled for engine {theirs}, not this one ({})", short(fingerprint)));
    }
    Ok(config)
}

/// The precompiled-code entries of a referrers index (the API's answer or the fallback tag's).
pub fn parse_referrers(bytes: &[u8]) -> Result<Vec<Referrer>> {
    Ok(parse_index(bytes)?.manifests.into_iter().filter(|r| r.artifact_type.as_deref() == Some(ARTIFACT_TYPE)).collect())
}

fn same_engine(referrer: &Referrer, fingerprint: &str) -> bool {
    referrer.annotations.get(FINGERPRINT_ANNOTATION).is_some_and(|f| f == fingerprint)
}

fn short(fingerprint: &str) -> &str {
    fingerprint.get(..16).unwrap_or(fingerprint)
}

fn parse_index(bytes: &[u8]) -> Result<ReferrersIndex> {
    let index: ReferrersIndex =
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidImage(format!("malformed referrers index: {e}")))?;
    if index.schema_version != 2 {
        return Err(Error::InvalidImage(format!("referrers index schema version {} (only 2)", index.schema_version)));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_tag_is_the_digest_with_a_dash() {
        let digest = Digest::of(b"x");
        assert_eq!(fallback_tag(&digest), format!("sha256-{}", &digest.to_string()[7..]));
    }

    #[test]
    fn a_referrers_index_parses_and_keeps_other_types_out_of_the_code_list() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
              {{"mediaType":"{}","digest":"{}","size":3,"artifactType":"{ARTIFACT_TYPE}","annotations":{{"{FINGERPRINT_ANNOTATION}":"ab"}}}},
              {{"mediaType":"{}","digest":"{}","size":3,"artifactType":"application/vnd.dev.sigstore.bundle"}}]}}"#,
            image::OCI_INDEX,
            image::OCI_MANIFEST,
            Digest::of(b"a"),
            image::OCI_MANIFEST,
            Digest::of(b"b"),
        );
        let index = parse_index(json.as_bytes()).unwrap();
        assert_eq!(index.manifests.len(), 2);
        assert!(same_engine(&index.manifests[0], "ab"));
        assert!(!same_engine(&index.manifests[0], "ac"));
        assert!(!same_engine(&index.manifests[1], "ab"));
        assert!(parse_index(br#"{"schemaVersion":1,"manifests":[]}"#).is_err());
        assert!(parse_index(b"[]").is_err());
    }
}
