//! `wasmcell sign` and `wasmcell verify`: sigstore signatures of images in a registry, as cosign
//! writes and checks them (the `sha256-<hex>.sig` attachment).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use wasmcell_oci::registry::Client;
use wasmcell_oci::trust::{self, SignReport};
use wasmcell_oci::{Digest, Reference};
use wasmcell_sign::{KeySource, Policy, PublicKey, Requirement, SignedIdentity, SigstoreSigned};

use super::Format;
use crate::images::{self, RegistryFlags};

/// Sign IMAGE in its registry with the private key KEY: a simple-signing payload naming IMAGE and the
/// digest it resolves to, signed with ECDSA P-256, attached at the `sha256-<hex>.sig` tag as cosign and
/// skopeo do (earlier signatures are kept). The key's password: WASMCELL_PASSWORD, or a prompt.
#[derive(Args, Debug)]
pub struct SignCommand {
    #[command(flatten)]
    registry: RegistryFlags,

    /// The private key (from `wasmcell key generate` or `cosign generate-key-pair`).
    #[arg(long, value_name = "KEY")]
    key: PathBuf,

    /// Output format (json prints the digest, the signature's tag and the key's fingerprint).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,

    /// The image, e.g. 127.0.0.1:5000/team/app:1.0.
    #[arg(value_name = "IMAGE")]
    image: String,
}

impl SignCommand {
    pub fn execute(self) -> Result<()> {
        let reference = images::parse_ref(&self.image)?;
        let key = super::key::private_key(&self.key)?;
        let client = Client::new(images::options(&self.registry, false), &reference)?;
        let report = images::tokio()?.block_on(async {
            let digest = client.resolve(&reference).await?;
            client.sign(&reference, &digest, &key).await
        })?;
        print_signed(self.format, self.quiet, &report)
    }
}

/// Prints what `sign` (or `push --sign`) did.
pub fn print_signed(format: Format, quiet: bool, report: &SignReport) -> Result<()> {
    super::print_report(format, quiet, report, || {
        format!("{}: signed {} with key sha256:{} ({})", report.reference, report.digest, report.key_fingerprint, report.signature)
    })
}

/// Verify IMAGE's signature in its registry with the public key KEY: some signature of the digest IMAGE
/// resolves to must verify with KEY, name that digest and name IMAGE (a podman `sigstoreSigned`
/// requirement with `matchRepoDigestOrExact`). Exits 122 when none does.
#[derive(Args, Debug)]
pub struct VerifyCommand {
    #[command(flatten)]
    registry: RegistryFlags,

    /// The public key (PEM), e.g. cosign.pub.
    #[arg(long, value_name = "KEY")]
    key: PathBuf,

    /// Output format (json prints the digest, the key's fingerprint and the signed reference).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,

    /// The image, e.g. 127.0.0.1:5000/team/app:1.0.
    #[arg(value_name = "IMAGE")]
    image: String,
}

#[derive(serde::Serialize)]
struct Verified {
    reference: String,
    digest: Digest,
    key_fingerprint: String,
    /// The docker reference the signature names.
    signed_reference: String,
    /// Signatures the attachment holds (one verified).
    signatures: usize,
}

impl VerifyCommand {
    pub fn execute(self) -> Result<()> {
        let reference: Reference = images::parse_ref(&self.image)?;
        let key = PublicKey::from_file(&self.key)?;
        let policy = Policy::with_default(vec![Requirement::SigstoreSigned(SigstoreSigned {
            keys: vec![KeySource::Key(key)],
            signed_identity: SignedIdentity::MatchRepoDigestOrExact,
            unsupported: None,
        })]);
        let client = Client::new(images::options(&self.registry, false), &reference)?;
        let (digest, signatures) = images::tokio()?.block_on(async {
            let digest = client.resolve(&reference).await?;
            let signatures = client.signatures(&reference, &digest).await?;
            Ok::<_, wasmcell_oci::Error>((digest, signatures))
        })?;
        let verdict = trust::evaluate(&policy, &reference, &digest, &signatures.layers)?;
        // The one requirement is sigstoreSigned, which accepts only a signature.
        let (key_fingerprint, docker_reference) = match verdict.accepted.into_iter().next() {
            Some(wasmcell_sign::Acceptance::Signed { key_fingerprint, docker_reference }) => (key_fingerprint, docker_reference),
            _ => (String::new(), String::new()),
        };
        let report = Verified {
            reference: reference.to_string(),
            digest,
            key_fingerprint,
            signed_reference: docker_reference,
            signatures: signatures.layers.len(),
        };
        super::print_report(self.format, self.quiet, &report, || {
            format!(
                "{}: verified {}: signed as {} by key sha256:{}",
                report.reference, report.digest, report.signed_reference, report.key_fingerprint
            )
        })
    }
}
