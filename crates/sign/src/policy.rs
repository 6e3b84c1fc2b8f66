//! containers-policy.json: which images are trusted, as `man 5 containers-policy.json` and containers/image
//! (`signature/policy_config.go`, `policy_config_sigstore.go`, `policy_reference_match.go`) define it.
//!
//! ```json
//! {"default": [{"type": "reject"}],
//!  "transports": {"docker": {
//!     "registry.example/team": [{"type": "sigstoreSigned", "keyPath": "/etc/keys/team.pub"}],
//!     "*.internal.example":    [{"type": "insecureAcceptAnything"}]}}}
//! ```
//!
//! Parsing is as strict as containers/image: `default` is required, requirement lists must not be empty,
//! unknown members, unknown requirement or identity types and duplicate keys are errors. Scopes of
//! transports other than `docker` are parsed and kept but never consulted (this crate only evaluates
//! images from registries).
//!
//! Requirements:
//! * `insecureAcceptAnything`, `reject`: as named.
//! * `sigstoreSigned` with exactly one of `keyPath`, `keyPaths`, `keyData` (base64 of a PEM public key),
//!   `keyDatas`, `fulcio`, `pki`; and an optional `signedIdentity` (default `matchRepoDigestOrExact`).
//!   `keyPath`s must be absolute (the policy does not say what a relative path would be relative to); they
//!   are read when the requirement is evaluated, so a missing key file rejects the images of its scope
//!   only. `keyData` keys are parsed with the policy. `fulcio` and `pki` (certificates) and the
//!   `rekorPublicKey*` members (transparency-log proofs) parse, but a requirement using them rejects every
//!   image with "not supported": accepting without the check they ask for would weaken the policy.
//! * `signedBy` (GPG) and `signedBaseLayer` parse (so a system policy that uses them for some registries is
//!   still usable for the others) and reject every image of their scope with "not supported".
//!
//! Scope lookup for a `docker` image follows containers/image exactly: the most specific of
//! `host[:port]/repo:tag` (or `@digest`), `host[:port]/repo`, its parent namespaces, `host[:port]`,
//! `*.sub.domain`, `*.domain`, …, then the transport's `""` scope, then `default`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::{Deserializer, Error as _, MapAccess, Visitor};

use crate::attachment::SignatureLayer;
use crate::error::{Error, Result, shown, shown_err};
use crate::key::{PublicKey, read_limited};
use crate::payload::{Payload, check_digest};
use crate::reference::{Named, is_domain, parse_canonical, parse_full, parse_normalized};

/// The largest policy file [`Policy::load`] reads.
pub const POLICY_FILE_LIMIT: usize = 1024 * 1024;

/// The transport whose scopes are evaluated.
pub const DOCKER_TRANSPORT: &str = "docker";

/// A parsed containers-policy.json.
#[derive(Debug, Clone)]
pub struct Policy {
    default: Vec<Requirement>,
    transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

/// One requirement of a scope; an image must satisfy all of its scope's requirements.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Requirement {
    InsecureAcceptAnything,
    Reject,
    SigstoreSigned(SigstoreSigned),
    /// A GPG `signedBy` requirement: parsed, never satisfied.
    SignedBy,
    /// A `signedBaseLayer` requirement: parsed, never satisfied.
    SignedBaseLayer,
}

/// A `sigstoreSigned` requirement.
#[derive(Debug, Clone, PartialEq)]
pub struct SigstoreSigned {
    /// The trusted keys: one of them must verify a signature.
    pub keys: Vec<KeySource>,
    pub signed_identity: SignedIdentity,
    /// Set when the requirement asks for something this crate cannot check (Fulcio, PKI, Rekor): then it
    /// rejects every image, naming this.
    pub unsupported: Option<&'static str>,
}

/// Where a trusted key comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// `keyPath`/`keyPaths`: an absolute path, read at evaluation.
    Path(PathBuf),
    /// `keyData`/`keyDatas`: parsed with the policy.
    Key(PublicKey),
}

/// What the signed `docker-reference` must be, relative to the image being checked (`signedIdentity`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SignedIdentity {
    /// The default. A tagged image: the signed reference must be exactly the image's; an image by digest:
    /// the signed reference must be of the same repository (and not name-only).
    MatchRepoDigestOrExact,
    /// The same repository, any tag or digest.
    MatchRepository,
    /// Exactly the image's reference (neither side name-only).
    MatchExact,
    /// Exactly this reference, whatever the image's (neither name-only).
    ExactReference(String),
    /// This repository, whatever the image's.
    ExactRepository(String),
    /// The image's reference with `prefix` replaced by `signed_prefix` (when it starts with `prefix` at a
    /// `/` boundary), then `matchRepoDigestOrExact`.
    RemapIdentity { prefix: String, signed_prefix: String },
}

/// The image being checked, as the registry client knows it. [`ImageIdentity::parse`] fills it from a
/// reference; constructed by hand, `registry` is `host[:port]` and `repository` its path
/// (`index.docker.io` and a one-component Docker Hub path are normalized as docker does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageIdentity {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<hex>` when the image was named by digest.
    pub digest: Option<String>,
}

impl ImageIdentity {
    /// Parses a docker reference (`busybox`, `host:5000/ns/app:v1`, `host/app@sha256:…`), normalized as
    /// containers/image does (`busybox` is `docker.io/library/busybox`). Neither tag nor digest is kept as
    /// such: the scope lookup then uses `:latest`, as the docker transport does.
    pub fn parse(reference: &str) -> Result<ImageIdentity> {
        let named = parse_normalized(reference)?;
        Ok(ImageIdentity { registry: named.domain, repository: named.path, tag: named.tag, digest: named.digest })
    }

    /// `host[:port]/repository`, normalized.
    pub fn name(&self) -> String {
        let (domain, path) = self.normalized();
        format!("{domain}/{path}")
    }

    fn normalized(&self) -> (String, String) {
        let domain = if self.registry == "index.docker.io" { "docker.io" } else { &self.registry };
        let path = if domain == "docker.io" && !self.repository.contains('/') {
            format!("library/{}", self.repository)
        } else {
            self.repository.clone()
        };
        (domain.to_owned(), path)
    }

    fn named(&self) -> Result<Named> {
        let (domain, path) = self.normalized();
        let mut remainder = path;
        if let Some(tag) = &self.tag {
            remainder = format!("{remainder}:{tag}");
        }
        if let Some(digest) = &self.digest {
            remainder = format!("{remainder}@{digest}");
        }
        parse_full(&format!("{domain}/{remainder}"), &domain, &remainder)
    }

    /// The docker transport's scopes for this image, most specific first (without `""`).
    pub fn scopes(&self) -> Vec<String> {
        let name = self.name();
        let mut scopes = Vec::new();
        match (&self.tag, &self.digest) {
            (None, None) => scopes.push(format!("{name}:latest")),
            (tag, digest) => {
                scopes.extend(tag.iter().map(|t| format!("{name}:{t}")));
                scopes.extend(digest.iter().map(|d| format!("{name}@{d}")));
            }
        }
        let mut namespace = name.as_str();
        loop {
            scopes.push(namespace.to_owned());
            match namespace.rfind('/') {
                Some(slash) => namespace = &namespace[..slash],
                None => break,
            }
        }
        // the host without its port, then its wildcarded parent domains
        let mut host = namespace.split(':').next().unwrap_or(namespace);
        while let Some(dot) = host.find('.') {
            host = &host[dot + 1..];
            scopes.push(format!("*.{host}"));
        }
        scopes
    }
}

impl std::fmt::Display for ImageIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Which part of the policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `transports.<transport>.<scope>` (`scope` may be `""`, the transport's default).
    Transport { transport: String, scope: String },
    /// The top-level `default`.
    Default,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Transport { transport, scope } if scope.is_empty() => write!(f, "{transport} transport default"),
            Scope::Transport { transport, scope } => write!(f, "{transport} scope \"{}\"", shown(scope)),
            Scope::Default => f.write_str("default"),
        }
    }
}

/// An accepted image: the scope that decided and what each of its requirements accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub scope: Scope,
    pub accepted: Vec<Acceptance>,
}

/// What one requirement accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acceptance {
    InsecureAcceptAnything,
    /// A signature that verified with the key of this fingerprint ([`PublicKey::fingerprint`]) and named
    /// this docker reference.
    Signed {
        key_fingerprint: String,
        docker_reference: String,
    },
}

impl std::fmt::Display for Acceptance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Acceptance::InsecureAcceptAnything => f.write_str("accepted without a signature (insecureAcceptAnything)"),
            Acceptance::Signed { key_fingerprint, docker_reference } => {
                write!(f, "signed as \"{}\" by key sha256:{key_fingerprint}", shown(docker_reference))
            }
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "accepted by policy {}", self.scope)?;
        for (i, a) in self.accepted.iter().enumerate() {
            write!(f, "{} {a}", if i == 0 { ":" } else { ";" })?;
        }
        Ok(())
    }
}

/// A refused image: the scope that decided and why, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (policy {scope})")]
pub struct Rejection {
    pub scope: Scope,
    pub reason: Reason,
}

/// Why an image was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    #[error("rejected by policy (reject)")]
    Rejected,
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error("a signature was required, but no signature exists")]
    NoSignature,
    #[error("signature does not verify with any trusted key")]
    NotVerified,
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
    #[error("signature is for another image digest {0}")]
    OtherDigest(String),
    #[error("signed identity \"{signed}\" does not match {expected}")]
    IdentityMismatch { signed: String, expected: String },
    /// A trusted key could not be read or parsed.
    #[error("{0}")]
    Key(String),
    /// The image's own name or digest is malformed.
    #[error("{0}")]
    Image(String),
    #[error("none of the {count} signatures was accepted; the first: {first}")]
    NoneAccepted { count: usize, first: Box<Reason> },
}

impl Policy {
    /// Parses a policy document (see the module documentation). Keys given by `keyData` are parsed now;
    /// `keyPath` files are not read until evaluation.
    pub fn parse(bytes: &[u8]) -> Result<Policy> {
        if bytes.len() > POLICY_FILE_LIMIT {
            return Err(Error::Policy(format!("larger than {POLICY_FILE_LIMIT} bytes")));
        }
        let raw: RawPolicy = serde_json::from_slice(bytes).map_err(|e| Error::Policy(shown_err(e)))?;
        let default = convert_list(raw.default, "default")?;
        let mut transports = BTreeMap::new();
        for (transport, scopes) in raw.transports.map(|t| t.0).unwrap_or_default() {
            let mut converted = BTreeMap::new();
            for (scope, list) in scopes.0 {
                let at = format!("transports.{}.\"{}\"", shown(&transport), shown(&scope));
                converted.insert(scope, convert_list(list, &at)?);
            }
            transports.insert(transport, converted);
        }
        Ok(Policy { default, transports })
    }

    /// A policy whose default is `default` and that has no transport scopes (what `wasmcell verify --key`
    /// checks against: one `sigstoreSigned` requirement).
    pub fn with_default(default: Vec<Requirement>) -> Policy {
        Policy { default, transports: BTreeMap::new() }
    }

    /// Whether evaluating `image` will look at signatures (its scope has a `sigstoreSigned` requirement):
    /// when not, a caller need not fetch them.
    pub fn needs_signatures(&self, image: &ImageIdentity) -> bool {
        self.requirements_for(image).iter().any(|r| matches!(r, Requirement::SigstoreSigned(_)))
    }

    /// Reads and parses a policy file (at most [`POLICY_FILE_LIMIT`] bytes).
    pub fn load(path: &Path) -> Result<Policy> {
        Policy::parse(&read_limited(path, "policy file", POLICY_FILE_LIMIT)?)
    }

    /// The requirements that apply to `image` (pulled over the docker transport).
    pub fn requirements_for(&self, image: &ImageIdentity) -> &[Requirement] {
        self.scope_for(image).1
    }

    /// The scope that applies to `image` and its requirements.
    pub fn scope_for(&self, image: &ImageIdentity) -> (Scope, &[Requirement]) {
        if let Some(scopes) = self.transports.get(DOCKER_TRANSPORT) {
            for scope in image.scopes().into_iter().chain([String::new()]) {
                if let Some(list) = scopes.get(&scope) {
                    return (Scope::Transport { transport: DOCKER_TRANSPORT.to_owned(), scope }, list);
                }
            }
        }
        (Scope::Default, &self.default)
    }

    /// Decides whether `image`, whose manifest has digest `manifest_digest` (computed by the caller from
    /// the manifest bytes), may be used given the `signatures` found in its attachment: every requirement of
    /// its scope must accept (see [`SigstoreSigned`] for when a signature counts).
    pub fn evaluate(&self, image: &ImageIdentity, manifest_digest: &str, signatures: &[SignatureLayer]) -> Result<Verdict, Rejection> {
        let (scope, requirements) = self.scope_for(image);
        let reject = |reason| Rejection { scope: scope.clone(), reason };
        check_digest(manifest_digest).map_err(|e| reject(Reason::Image(e.to_string())))?;
        if let Some(digest) = &image.digest
            && digest != manifest_digest
        {
            return Err(reject(Reason::Image(format!(
                "manifest digest {manifest_digest} does not match the reference's {}",
                shown(digest)
            ))));
        }
        let intended = image.named().map_err(|e| reject(Reason::Image(e.to_string())))?;
        let mut accepted = Vec::new();
        for requirement in requirements {
            match requirement {
                Requirement::InsecureAcceptAnything => accepted.push(Acceptance::InsecureAcceptAnything),
                Requirement::Reject => return Err(reject(Reason::Rejected)),
                Requirement::SignedBy => return Err(reject(Reason::Unsupported("GPG signatures (signedBy)"))),
                Requirement::SignedBaseLayer => return Err(reject(Reason::Unsupported("signedBaseLayer requirements"))),
                Requirement::SigstoreSigned(s) => accepted.push(s.check(&intended, manifest_digest, signatures).map_err(reject)?),
            }
        }
        Ok(Verdict { scope, accepted })
    }
}

impl SigstoreSigned {
    /// Accepted when at least one signature verifies with one of the keys, its payload names
    /// `manifest_digest`, and its docker-reference satisfies [`SigstoreSigned::signed_identity`]. The checks
    /// run in containers/image's order (the payload is parsed only once its signature verified).
    fn check(&self, intended: &Named, manifest_digest: &str, signatures: &[SignatureLayer]) -> Result<Acceptance, Reason> {
        if let Some(what) = self.unsupported {
            return Err(Reason::Unsupported(what));
        }
        let mut keys = Vec::with_capacity(self.keys.len());
        for source in &self.keys {
            match source {
                KeySource::Key(key) => keys.push(key.clone()),
                KeySource::Path(path) => keys.push(PublicKey::from_file(path).map_err(|e| Reason::Key(e.to_string()))?),
            }
        }
        let mut reasons = Vec::new();
        for signature in signatures {
            match self.check_one(&keys, intended, manifest_digest, signature) {
                Ok(acceptance) => return Ok(acceptance),
                Err(reason) => reasons.push(reason),
            }
        }
        match reasons.len() {
            0 => Err(Reason::NoSignature),
            1 => Err(reasons.remove(0)),
            count => Err(Reason::NoneAccepted { count, first: Box::new(reasons.remove(0)) }),
        }
    }

    fn check_one(
        &self,
        keys: &[PublicKey],
        intended: &Named,
        manifest_digest: &str,
        signature: &SignatureLayer,
    ) -> Result<Acceptance, Reason> {
        if signature.signature_b64.is_empty() {
            return Err(Reason::InvalidSignature("missing signature annotation".into()));
        }
        let mut verified = None;
        for key in keys {
            match key.verify(&signature.payload, &signature.signature_b64) {
                Ok(()) => {
                    verified = Some(key);
                    break;
                }
                Err(Error::BadSignature) => {}
                Err(e) => return Err(Reason::InvalidSignature(e.to_string())),
            }
        }
        let key = verified.ok_or(Reason::NotVerified)?;
        let payload = Payload::parse(&signature.payload).map_err(|e| Reason::InvalidSignature(e.to_string()))?;
        if payload.manifest_digest != manifest_digest {
            return Err(Reason::OtherDigest(payload.manifest_digest));
        }
        if !self.signed_identity.matches(intended, &payload.docker_reference) {
            return Err(Reason::IdentityMismatch {
                signed: shown(&payload.docker_reference),
                expected: self.signed_identity.describe(intended),
            });
        }
        Ok(Acceptance::Signed { key_fingerprint: key.fingerprint(), docker_reference: payload.docker_reference })
    }
}

impl SignedIdentity {
    fn matches(&self, intended: &Named, signed: &str) -> bool {
        let Ok(signature) = parse_normalized(signed) else { return false };
        match self {
            SignedIdentity::MatchRepoDigestOrExact => match_repo_digest_or_exact(intended, &signature),
            SignedIdentity::MatchRepository => signature.name() == intended.name(),
            SignedIdentity::MatchExact => {
                !intended.is_name_only() && !signature.is_name_only() && signature.to_string() == intended.to_string()
            }
            SignedIdentity::ExactReference(reference) => match parse_normalized(reference) {
                Ok(reference) => !reference.is_name_only() && !signature.is_name_only() && signature.to_string() == reference.to_string(),
                Err(_) => false,
            },
            SignedIdentity::ExactRepository(repository) => {
                parse_normalized(repository).is_ok_and(|repository| signature.name() == repository.name())
            }
            SignedIdentity::RemapIdentity { prefix, signed_prefix } => match remap(intended, prefix, signed_prefix) {
                Some(remapped) => match_repo_digest_or_exact(&remapped, &signature),
                None => false,
            },
        }
    }

    /// What a signed reference should have been, for a rejection message.
    fn describe(&self, intended: &Named) -> String {
        let by_default = |named: &Named| {
            if named.tag.is_some() { format!("\"{named}\"") } else { format!("repository \"{}\"", named.name()) }
        };
        match self {
            SignedIdentity::MatchRepoDigestOrExact => by_default(intended),
            SignedIdentity::MatchRepository => format!("repository \"{}\"", intended.name()),
            SignedIdentity::MatchExact => format!("\"{intended}\""),
            SignedIdentity::ExactReference(reference) => format!("\"{}\" (exactReference)", shown(reference)),
            SignedIdentity::ExactRepository(repository) => format!("repository \"{}\" (exactRepository)", shown(repository)),
            SignedIdentity::RemapIdentity { prefix, signed_prefix } => match remap(intended, prefix, signed_prefix) {
                Some(remapped) => format!("{} (remapIdentity)", by_default(&remapped)),
                None => format!("\"{intended}\" remapped (remapIdentity failed)"),
            },
        }
    }
}

fn match_repo_digest_or_exact(intended: &Named, signature: &Named) -> bool {
    if signature.is_name_only() {
        return false;
    }
    if intended.tag.is_some() {
        signature.to_string() == intended.to_string()
    } else if intended.digest.is_some() {
        signature.name() == intended.name()
    } else {
        false
    }
}

/// The intended reference rewritten by `remapIdentity`: unchanged when its name does not start with
/// `prefix` at a `/` boundary; `None` when the rewritten text is not a canonical reference.
fn remap(intended: &Named, prefix: &str, signed_prefix: &str) -> Option<Named> {
    let name = intended.name();
    let matches = name == prefix || (name.starts_with(prefix) && name.as_bytes().get(prefix.len()) == Some(&b'/'));
    if !matches {
        return Some(intended.clone());
    }
    parse_canonical(&intended.to_string().replacen(prefix, signed_prefix, 1)).ok()
}

// ---- parsing ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Vec<RawRequirement>,
    #[serde(default)]
    transports: Option<StrictMap<StrictMap<Vec<RawRequirement>>>>,
}

#[derive(Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum RawRequirement {
    #[serde(rename = "insecureAcceptAnything")]
    InsecureAcceptAnything {},
    #[serde(rename = "reject")]
    Reject {},
    #[serde(rename = "signedBy", rename_all = "camelCase")]
    SignedBy {
        key_type: String,
        key_path: Option<String>,
        key_paths: Option<Vec<String>>,
        key_data: Option<String>,
        signed_identity: Option<RawIdentity>,
    },
    #[serde(rename = "signedBaseLayer", rename_all = "camelCase")]
    SignedBaseLayer { base_layer_identity: RawIdentity },
    #[serde(rename = "sigstoreSigned", rename_all = "camelCase")]
    SigstoreSigned {
        key_path: Option<String>,
        key_paths: Option<Vec<String>>,
        key_data: Option<String>,
        key_datas: Option<Vec<String>>,
        fulcio: Option<serde_json::Map<String, serde_json::Value>>,
        pki: Option<serde_json::Map<String, serde_json::Value>>,
        rekor_public_key_path: Option<String>,
        rekor_public_key_paths: Option<Vec<String>>,
        rekor_public_key_data: Option<String>,
        rekor_public_key_datas: Option<Vec<String>>,
        signed_identity: Option<RawIdentity>,
    },
}

#[derive(Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum RawIdentity {
    #[serde(rename = "matchRepoDigestOrExact")]
    MatchRepoDigestOrExact {},
    #[serde(rename = "matchRepository")]
    MatchRepository {},
    #[serde(rename = "matchExact")]
    MatchExact {},
    #[serde(rename = "exactReference", rename_all = "camelCase")]
    ExactReference { docker_reference: String },
    #[serde(rename = "exactRepository", rename_all = "camelCase")]
    ExactRepository { docker_repository: String },
    #[serde(rename = "remapIdentity", rename_all = "camelCase")]
    RemapIdentity { prefix: String, signed_prefix: String },
}

/// A JSON object whose duplicate keys are an error (containers/image's "paranoid" decoding).
struct StrictMap<V>(BTreeMap<String, V>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for StrictMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct StrictVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for StrictVisitor<V> {
            type Value = StrictMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(A::Error::custom(format!("duplicate key \"{}\"", shown(&key))));
                    }
                    let value = map.next_value()?;
                    out.insert(key, value);
                }
                Ok(StrictMap(out))
            }
        }
        deserializer.deserialize_map(StrictVisitor(std::marker::PhantomData))
    }
}

fn convert_list(list: Vec<RawRequirement>, at: &str) -> Result<Vec<Requirement>> {
    if list.is_empty() {
        return Err(Error::Policy(format!("{at}: the list of requirements must not be empty")));
    }
    list.into_iter().map(|r| convert(r).map_err(|m| Error::Policy(format!("{at}: {m}")))).collect()
}

fn convert(raw: RawRequirement) -> std::result::Result<Requirement, String> {
    Ok(match raw {
        RawRequirement::InsecureAcceptAnything {} => Requirement::InsecureAcceptAnything,
        RawRequirement::Reject {} => Requirement::Reject,
        RawRequirement::SignedBy { key_type, key_path, key_paths, key_data, signed_identity } => {
            if !["GPGKeys", "signedByGPGKeys", "X509Certificates", "signedByX509CAs"].contains(&key_type.as_str()) {
                return Err(format!("signedBy: unknown keyType \"{}\"", shown(&key_type)));
            }
            let sources = [key_path.is_some(), key_paths.is_some(), key_data.is_some()];
            if sources.iter().filter(|s| **s).count() != 1 {
                return Err("signedBy: exactly one of keyPath, keyPaths and keyData must be specified".into());
            }
            signed_identity.map(convert_identity).transpose()?;
            Requirement::SignedBy
        }
        RawRequirement::SignedBaseLayer { base_layer_identity } => {
            convert_identity(base_layer_identity)?;
            Requirement::SignedBaseLayer
        }
        RawRequirement::SigstoreSigned {
            key_path,
            key_paths,
            key_data,
            key_datas,
            fulcio,
            pki,
            rekor_public_key_path,
            rekor_public_key_paths,
            rekor_public_key_data,
            rekor_public_key_datas,
            signed_identity,
        } => {
            let given = [key_path.is_some(), key_paths.is_some(), key_data.is_some(), key_datas.is_some(), fulcio.is_some(), pki.is_some()];
            if given.iter().filter(|g| **g).count() != 1 {
                return Err("sigstoreSigned: exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki must be specified".into());
            }
            let mut keys = Vec::new();
            let paths: Vec<String> = key_path.into_iter().chain(non_empty("keyPaths", key_paths)?).collect();
            for path in paths {
                if !Path::new(&path).is_absolute() {
                    return Err(format!("sigstoreSigned: keyPath \"{}\" is not an absolute path", shown(&path)));
                }
                keys.push(KeySource::Path(PathBuf::from(path)));
            }
            for data in key_data.into_iter().chain(non_empty("keyDatas", key_datas)?) {
                let pem = STANDARD.decode(data.trim()).map_err(|e| format!("sigstoreSigned: keyData is not base64: {}", shown_err(e)))?;
                keys.push(KeySource::Key(PublicKey::from_pem(&pem).map_err(|e| format!("sigstoreSigned: keyData: {e}"))?));
            }
            let rekor = rekor_public_key_path.is_some()
                || rekor_public_key_paths.is_some()
                || rekor_public_key_data.is_some()
                || rekor_public_key_datas.is_some();
            let unsupported = if fulcio.is_some() {
                Some("Fulcio certificates (sigstoreSigned.fulcio)")
            } else if pki.is_some() {
                Some("X.509 certificates (sigstoreSigned.pki)")
            } else if rekor {
                Some("Rekor transparency-log proofs (sigstoreSigned.rekorPublicKey…)")
            } else {
                None
            };
            let signed_identity = signed_identity.map(convert_identity).transpose()?.unwrap_or(SignedIdentity::MatchRepoDigestOrExact);
            Requirement::SigstoreSigned(SigstoreSigned { keys, signed_identity, unsupported })
        }
    })
}

fn non_empty(what: &str, list: Option<Vec<String>>) -> std::result::Result<Vec<String>, String> {
    match list {
        Some(list) if list.is_empty() => Err(format!("sigstoreSigned: {what} must not be empty")),
        list => Ok(list.unwrap_or_default()),
    }
}

fn convert_identity(raw: RawIdentity) -> std::result::Result<SignedIdentity, String> {
    Ok(match raw {
        RawIdentity::MatchRepoDigestOrExact {} => SignedIdentity::MatchRepoDigestOrExact,
        RawIdentity::MatchRepository {} => SignedIdentity::MatchRepository,
        RawIdentity::MatchExact {} => SignedIdentity::MatchExact,
        RawIdentity::ExactReference { docker_reference } => {
            let named = parse_normalized(&docker_reference).map_err(|e| format!("exactReference: {e}"))?;
            if named.is_name_only() {
                return Err(format!("exactReference: \"{}\" has neither a tag nor a digest", shown(&docker_reference)));
            }
            SignedIdentity::ExactReference(docker_reference)
        }
        RawIdentity::ExactRepository { docker_repository } => {
            parse_normalized(&docker_repository).map_err(|e| format!("exactRepository: {e}"))?;
            SignedIdentity::ExactRepository(docker_repository)
        }
        RawIdentity::RemapIdentity { prefix, signed_prefix } => {
            for p in [&prefix, &signed_prefix] {
                if !valid_remap_prefix(p) {
                    return Err(format!("remapIdentity: prefix \"{}\" is not valid", shown(p)));
                }
            }
            SignedIdentity::RemapIdentity { prefix, signed_prefix }
        }
    })
}

/// containers/image's `validateIdentityRemappingPrefix`: a `host[:port]`, or a name (no tag or digest)
/// that starts with one.
fn valid_remap_prefix(prefix: &str) -> bool {
    if is_domain(prefix) {
        return true;
    }
    match prefix.split_once('/') {
        Some((domain, path)) => is_domain(domain) && parse_full(prefix, domain, path).is_ok_and(|n| n.is_name_only()),
        None => false,
    }
}

#[cfg(test)]
mod tests;
