//! Image signatures that cosign, skopeo and podman (containers/image) write and check: everything about
//! them that touches neither the network nor the image store. The registry client fetches and uploads;
//! this crate makes and judges the bytes.
//!
//! The formats, each in its module:
//!
//! * [`key`]: an ECDSA P-256 key pair as `cosign generate-key-pair` writes it: `cosign.pub`, a `PUBLIC KEY`
//!   PEM (SubjectPublicKeyInfo), and `cosign.key`, an `ENCRYPTED SIGSTORE PRIVATE KEY` PEM whose body is
//!   go-tuf's encrypted-key JSON (scrypt, then NaCl secretbox around the PKCS#8 key). See
//!   [sigstore's cryptoutils](https://github.com/sigstore/sigstore/tree/main/pkg/cryptoutils) and
//!   [go-tuf's `encrypted`](https://github.com/theupdateframework/go-tuf/tree/master/encrypted).
//! * [`payload`]: the "simple signing" JSON a signature signs: the image's manifest digest and the docker
//!   reference it was signed as. See
//!   [cosign's signature spec](https://github.com/sigstore/cosign/blob/main/specs/SIGNATURE_SPEC.md).
//! * [`signature`]: base64 of the DER ECDSA-P256-SHA256 signature over the payload bytes.
//! * [`attachment`]: where signatures live in a registry without the referrers API: an OCI manifest tagged
//!   `sha256-<hex>.sig` beside the image, one layer per signature payload, the signature in the layer's
//!   `dev.cosignproject.cosign/signature` annotation (containers/image's `use-sigstore-attachments`).
//! * [`policy`]: which images to trust: the
//!   [containers-policy.json](https://github.com/containers/image/blob/main/docs/containers-policy.json.5.md)
//!   format with its scopes and `sigstoreSigned` requirements, evaluated as containers/image does.
//!
//! Signing an image (`digest` being the `sha256:` of its manifest):
//!
//! ```
//! use wasmcell_sign::{build_manifest, generate_with_cost, signature_tag, Payload, SignatureLayer};
//! # let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
//! let keys = generate_with_cost(b"password", 1 << 10)?; // real keys: generate(b"password")
//! let payload = Payload::new("registry.example/app:v1", digest)?;
//! let attachment = build_manifest(None, &[SignatureLayer::sign(&keys.private_key, &payload)])?;
//! // upload attachment.blobs, then PUT attachment.manifest at signature_tag(digest)?
//! assert!(signature_tag(digest)?.ends_with(".sig"));
//! # Ok::<(), wasmcell_sign::Error>(())
//! ```
//!
//! Checking one: fetch the `.sig` manifest (a 404 means no signature), [`parse_manifest`] it, fetch each
//! layer's blob and pair it with [`LayerRef::with_payload`], then [`Policy::evaluate`] gives a [`Verdict`]
//! (what was verified, for printing) or a [`Rejection`] (one line: why, and which policy scope decided).
//!
//! Every parser here reads input a stranger controls and is bounded: payloads by [`PAYLOAD_LIMIT`],
//! attachments by [`MAX_LAYERS`], key files by [`KEY_FILE_LIMIT`], the scrypt cost of a private key by
//! [`key::SCRYPT_MAX_N`] and [`key::SCRYPT_MAX_WORK`]. Every error is one line that quotes at most
//! [`error::SHOWN_CHARS`] characters of the input, control characters escaped.

pub mod attachment;
pub mod error;
pub mod key;
pub mod payload;
pub mod policy;
mod reference;
pub mod signature;

pub use attachment::{
    Attachment, Blob, Descriptor, LayerRef, MAX_LAYERS, OCI_CONFIG_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE, SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE, SignatureLayer, build_manifest, parse_manifest, signature_tag,
};
pub use error::{Error, Result};
pub use key::{KEY_FILE_LIMIT, KeyPair, PrivateKey, PublicKey, generate, generate_with_cost};
pub use payload::{PAYLOAD_LIMIT, Payload, check_digest, sha256_digest};
pub use policy::{
    Acceptance, ImageIdentity, KeySource, Policy, Reason, Rejection, Requirement, Scope, SignedIdentity, SigstoreSigned, Verdict,
};
pub use reference::{is_digest, is_path_component, is_tag, split_tag_and_digest};
