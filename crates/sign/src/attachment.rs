//! The signature attachment: an OCI image manifest tagged `sha256-<hex>.sig` in the signed image's
//! repository, whose layers are simple-signing payloads, each carrying its signature in the
//! `dev.cosignproject.cosign/signature` annotation. cosign and containers/image
//! (`use-sigstore-attachments: true`) both write and read it:
//!
//! ```json
//! {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
//!  "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:…","size":233},
//!  "layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"sha256:…","size":250,
//!             "annotations":{"dev.cosignproject.cosign/signature":"MEUCIQ…"}}]}
//! ```
//!
//! Writing: [`build_manifest`] takes the manifest already at the tag (if any), keeps its layers, appends
//! the new signatures that are not already there (same media type, digest, size and annotations, as
//! containers/image compares) and writes a new config whose `rootfs.diff_ids` list the layer digests
//! (cosign's empty-image config). The caller uploads [`Attachment::blobs`], then PUTs
//! [`Attachment::manifest`] at [`signature_tag`].
//!
//! Reading: [`parse_manifest`] lists the simple-signing layers (others are skipped) with their digest,
//! size and signature; the caller fetches each blob and turns it into a [`SignatureLayer`] with
//! [`LayerRef::with_payload`], which checks the blob against the descriptor.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result, shown, shown_err};
use crate::key::PrivateKey;
use crate::payload::{PAYLOAD_LIMIT, Payload, check_digest, sha256_digest};

/// Media type of a signature layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation holding a layer's base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Media type of the attachment manifest (send it as `Content-Type` on PUT and in `Accept` on GET).
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the attachment's config blob.
pub const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The most layers (signatures) an attachment may have, read or written.
pub const MAX_LAYERS: usize = 64;

/// The tag of `manifest_digest`'s signature attachment: `sha256:<hex>` becomes `sha256-<hex>.sig`.
pub fn signature_tag(manifest_digest: &str) -> Result<String> {
    check_digest(manifest_digest)?;
    Ok(format!("{}.sig", manifest_digest.replacen(':', "-", 1)))
}

/// One signature: the payload bytes exactly as stored, the base64 signature over them, and any other
/// annotations of its layer (cosign may add a certificate or a Rekor bundle; they are kept, not checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    pub payload: Vec<u8>,
    pub signature_b64: String,
    /// Annotations other than [`SIGNATURE_ANNOTATION`].
    pub annotations: BTreeMap<String, String>,
}

impl SignatureLayer {
    /// Signs `payload` with `key`.
    pub fn sign(key: &PrivateKey, payload: &Payload) -> SignatureLayer {
        let payload = payload.to_bytes();
        let signature_b64 = key.sign(&payload);
        SignatureLayer { payload, signature_b64, annotations: BTreeMap::new() }
    }

    /// The layer's descriptor: media type, `sha256:` digest and size of the payload.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::of(SIMPLE_SIGNING_MEDIA_TYPE, &self.payload)
    }

    fn all_annotations(&self) -> BTreeMap<String, String> {
        let mut all = self.annotations.clone();
        all.insert(SIGNATURE_ANNOTATION.to_owned(), self.signature_b64.clone());
        all
    }
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor { media_type: media_type.to_owned(), digest: sha256_digest(bytes), size: bytes.len() as u64 }
    }
}

/// A blob to upload (to `/v2/<name>/blobs/uploads/`) before the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub descriptor: Descriptor,
    pub bytes: Vec<u8>,
}

/// What [`build_manifest`] made.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The manifest to PUT at [`signature_tag`] with `Content-Type:` [`OCI_MANIFEST_MEDIA_TYPE`].
    pub manifest: Vec<u8>,
    /// Its descriptor (the digest the registry will answer with).
    pub manifest_descriptor: Descriptor,
    /// The config blob, which [`Attachment::blobs`] also holds.
    pub config: Descriptor,
    /// The blobs to upload first: the config and each new payload (the existing layers are already there).
    pub blobs: Vec<Blob>,
    /// How many of the given signatures were new (the others were already in the attachment); with 0 the
    /// caller may skip the upload.
    pub added: usize,
}

/// The attachment manifest holding `existing`'s layers (the manifest bytes now at the tag, if any) and the
/// `signatures` not already among them. Refuses a malformed existing manifest and more than [`MAX_LAYERS`]
/// layers in all.
pub fn build_manifest(existing: Option<&[u8]>, signatures: &[SignatureLayer]) -> Result<Attachment> {
    let mut layers: Vec<Value> = match existing {
        None => Vec::new(),
        Some(bytes) => existing_layers(bytes)?,
    };
    let mut blobs = Vec::new();
    let mut added = 0;
    for signature in signatures {
        let descriptor = signature.descriptor();
        let annotations = signature.all_annotations();
        if layers.iter().any(|layer| same_layer(layer, &descriptor, &annotations)) {
            continue;
        }
        if layers.len() >= MAX_LAYERS {
            return Err(Error::Attachment(format!("more than {MAX_LAYERS} signatures in one attachment")));
        }
        layers.push(json!({
            "mediaType": descriptor.media_type,
            "digest": descriptor.digest,
            "size": descriptor.size,
            "annotations": annotations,
        }));
        blobs.push(Blob { descriptor, bytes: signature.payload.clone() });
        added += 1;
    }
    let diff_ids: Vec<&Value> = layers.iter().map(|l| &l["digest"]).collect();
    // cosign's config: go-containerregistry's empty image with one history entry per appended layer
    let history: Vec<Value> = layers.iter().map(|_| json!({"created": "0001-01-01T00:00:00Z"})).collect();
    let config_bytes = serde_json::to_vec(&json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": history,
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }))
    .expect("config serializes");
    let config = Descriptor::of(OCI_CONFIG_MEDIA_TYPE, &config_bytes);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
        "layers": layers,
    }))
    .expect("manifest serializes");
    blobs.insert(0, Blob { descriptor: config.clone(), bytes: config_bytes });
    let manifest_descriptor = Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, &manifest);
    Ok(Attachment { manifest, manifest_descriptor, config, blobs, added })
}

fn same_layer(layer: &Value, descriptor: &Descriptor, annotations: &BTreeMap<String, String>) -> bool {
    let their: Option<BTreeMap<String, String>> = match layer.get("annotations") {
        None | Some(Value::Null) => Some(BTreeMap::new()),
        Some(v) => serde_json::from_value(v.clone()).ok(),
    };
    layer.get("mediaType").and_then(Value::as_str) == Some(&descriptor.media_type)
        && layer.get("digest").and_then(Value::as_str) == Some(&descriptor.digest)
        && layer.get("size").and_then(Value::as_u64) == Some(descriptor.size)
        && their.as_ref() == Some(annotations)
}

/// The existing manifest's layers, kept verbatim (other members of each descriptor included).
fn existing_layers(bytes: &[u8]) -> Result<Vec<Value>> {
    let manifest = parse_raw(bytes)?;
    for layer in &manifest.layers {
        check_descriptor(layer)?;
    }
    Ok(manifest.layers.into_iter().map(Value::Object).collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    layers: Vec<Map<String, Value>>,
}

fn parse_raw(bytes: &[u8]) -> Result<RawManifest> {
    let manifest: RawManifest = serde_json::from_slice(bytes).map_err(|e| Error::Attachment(format!("manifest JSON: {}", shown_err(e))))?;
    if manifest.schema_version != 2 {
        return Err(Error::Attachment(format!("schemaVersion {} is not 2", manifest.schema_version)));
    }
    if let Some(media_type) = &manifest.media_type
        && media_type != OCI_MANIFEST_MEDIA_TYPE
    {
        return Err(Error::Attachment(format!("manifest media type \"{}\" is not {OCI_MANIFEST_MEDIA_TYPE}", shown(media_type))));
    }
    if manifest.layers.len() > MAX_LAYERS {
        return Err(Error::Attachment(format!("{} layers, more than {MAX_LAYERS}", manifest.layers.len())));
    }
    Ok(manifest)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

fn check_descriptor(layer: &Map<String, Value>) -> Result<RawDescriptor> {
    let descriptor: RawDescriptor = serde_json::from_value(Value::Object(layer.clone()))
        .map_err(|e| Error::Attachment(format!("layer descriptor: {}", shown_err(e))))?;
    Ok(descriptor)
}

/// A signature layer as the attachment manifest describes it; fetch its blob by `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// `sha256:<hex>` of the payload blob.
    pub digest: String,
    /// The payload's declared size (at most [`PAYLOAD_LIMIT`]).
    pub size: u64,
    pub signature_b64: String,
    /// Annotations other than [`SIGNATURE_ANNOTATION`].
    pub annotations: BTreeMap<String, String>,
}

impl LayerRef {
    /// The signature with its fetched payload, after checking that the payload has the declared size
    /// and digest.
    pub fn with_payload(&self, payload: Vec<u8>) -> Result<SignatureLayer> {
        if payload.len() as u64 != self.size {
            return Err(Error::Attachment(format!(
                "payload blob {} is {} bytes, the manifest says {}",
                self.digest,
                payload.len(),
                self.size
            )));
        }
        let digest = sha256_digest(&payload);
        if digest != self.digest {
            return Err(Error::Attachment(format!("payload blob {} has digest {digest}", self.digest)));
        }
        Ok(SignatureLayer { payload, signature_b64: self.signature_b64.clone(), annotations: self.annotations.clone() })
    }
}

/// The simple-signing layers of an attachment manifest (the caller bounds the manifest's size; this bounds
/// the layers to [`MAX_LAYERS`] and each declared payload to [`PAYLOAD_LIMIT`]). Layers of other media types
/// and layers without a signature annotation are skipped, as they cannot be signatures; a malformed
/// descriptor or a digest other than sha256 is an error.
pub fn parse_manifest(bytes: &[u8]) -> Result<Vec<LayerRef>> {
    let manifest = parse_raw(bytes)?;
    let mut found = Vec::new();
    for layer in &manifest.layers {
        let descriptor = check_descriptor(layer)?;
        if descriptor.media_type != SIMPLE_SIGNING_MEDIA_TYPE {
            continue;
        }
        check_digest(&descriptor.digest).map_err(|_| {
            Error::Attachment(format!("layer digest \"{}\" is not sha256: and 64 lowercase hex", shown(&descriptor.digest)))
        })?;
        if descriptor.size > PAYLOAD_LIMIT as u64 {
            return Err(Error::Attachment(format!(
                "signature payload {} declares {} bytes, more than {PAYLOAD_LIMIT}",
                descriptor.digest, descriptor.size
            )));
        }
        let mut annotations = descriptor.annotations.unwrap_or_default();
        let Some(signature_b64) = annotations.remove(SIGNATURE_ANNOTATION) else {
            continue;
        };
        found.push(LayerRef { digest: descriptor.digest, size: descriptor.size, signature_b64, annotations });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::tests::test_keys;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn layer(reference: &str) -> SignatureLayer {
        SignatureLayer::sign(&test_keys().private_key, &Payload::new(reference, DIGEST).unwrap())
    }

    #[test]
    fn tag() {
        assert_eq!(signature_tag(DIGEST).unwrap(), format!("sha256-{}.sig", &DIGEST[7..]));
        assert!(signature_tag("sha256:../../x").is_err());
    }

    #[test]
    fn build_then_parse_round_trips() {
        let a = layer("r.example/app:v1");
        let att = build_manifest(None, std::slice::from_ref(&a)).unwrap();
        assert_eq!(att.added, 1);
        assert_eq!(att.blobs.len(), 2);
        assert_eq!(att.blobs[0].descriptor, att.config);
        assert_eq!(att.blobs[1].bytes, a.payload);
        let config: Value = serde_json::from_slice(&att.blobs[0].bytes).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], a.descriptor().digest.as_str());
        assert_eq!(config["rootfs"]["type"], "layers");
        let manifest: Value = serde_json::from_slice(&att.manifest).unwrap();
        assert_eq!(manifest["mediaType"], OCI_MANIFEST_MEDIA_TYPE);
        assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG_MEDIA_TYPE);
        assert_eq!(att.manifest_descriptor.digest, sha256_digest(&att.manifest));
        let refs = parse_manifest(&att.manifest).unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].with_payload(a.payload.clone()).unwrap(), a);
        assert!(refs[0].with_payload(b"other".to_vec()).is_err());
        let mut same_size = a.payload.clone();
        same_size[0] = b' ';
        assert!(refs[0].with_payload(same_size).unwrap_err().to_string().contains("has digest"));
    }

    #[test]
    fn appending_keeps_and_dedups() {
        let a = layer("r.example/app:v1");
        let b = layer("r.example/app:v2");
        let first = build_manifest(None, std::slice::from_ref(&a)).unwrap();
        let second = build_manifest(Some(&first.manifest), &[a.clone(), b.clone()]).unwrap();
        assert_eq!(second.added, 1);
        assert_eq!(second.blobs.len(), 2, "config and b only");
        let refs = parse_manifest(&second.manifest).unwrap();
        assert_eq!(refs.iter().map(|r| r.digest.clone()).collect::<Vec<_>>(), [a.descriptor().digest, b.descriptor().digest]);
        let third = build_manifest(Some(&second.manifest), &[a, b]).unwrap();
        assert_eq!(third.added, 0);
        assert_eq!(third.manifest, second.manifest);
    }

    #[test]
    fn parse_skips_foreign_layers_and_bounds_sizes() {
        let sig = layer("r.example/app:v1");
        let d = sig.descriptor();
        let manifest = json!({
            "schemaVersion": 2,
            "config": {"mediaType": OCI_CONFIG_MEDIA_TYPE, "digest": DIGEST, "size": 2},
            "layers": [
                {"mediaType": "application/vnd.dsse.envelope.v1+json", "digest": DIGEST, "size": 10},
                {"mediaType": SIMPLE_SIGNING_MEDIA_TYPE, "digest": d.digest, "size": d.size},
                {"mediaType": SIMPLE_SIGNING_MEDIA_TYPE, "digest": d.digest, "size": d.size,
                 "annotations": {SIGNATURE_ANNOTATION: sig.signature_b64, "dev.sigstore.cosign/bundle": "{}"}},
            ],
        });
        let refs = parse_manifest(&serde_json::to_vec(&manifest).unwrap()).unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].annotations.keys().collect::<Vec<_>>(), ["dev.sigstore.cosign/bundle"]);
        let big = json!({"schemaVersion": 2, "layers": [{"mediaType": SIMPLE_SIGNING_MEDIA_TYPE, "digest": DIGEST, "size": 1 << 30}]});
        assert!(parse_manifest(&serde_json::to_vec(&big).unwrap()).unwrap_err().to_string().contains("more than"));
        let many: Vec<Value> = (0..65).map(|_| json!({"mediaType": "x", "digest": DIGEST, "size": 1})).collect();
        let many = json!({"schemaVersion": 2, "layers": many});
        assert!(parse_manifest(&serde_json::to_vec(&many).unwrap()).unwrap_err().to_string().contains("65 layers"));
        let docker = json!({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json", "layers": []});
        assert!(parse_manifest(&serde_json::to_vec(&docker).unwrap()).is_err());
        let v1 = json!({"schemaVersion": 1, "layers": []});
        assert!(parse_manifest(&serde_json::to_vec(&v1).unwrap()).is_err());
    }
}
