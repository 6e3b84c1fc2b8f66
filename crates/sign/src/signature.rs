//! Signing and verifying payload bytes: ECDSA P-256 over SHA-256, the signature ASN.1 DER encoded and then
//! standard base64 (with padding): the value of the `dev.cosignproject.cosign/signature` annotation.
//!
//! Verification accepts both low-S and high-S signatures, as Go's `ecdsa.VerifyASN1` (which cosign and
//! containers/image use) does; signing is deterministic (RFC 6979).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};

use crate::error::{Error, Result, shown_err};
use crate::key::{PrivateKey, PublicKey};

/// The longest base64 signature [`PublicKey::verify`] decodes: a DER P-256 signature is at most 72 bytes
/// (96 base64 characters); this leaves room and no more.
pub const SIGNATURE_B64_LIMIT: usize = 256;

impl PrivateKey {
    /// Signs `payload` (the exact bytes that will be stored as the signature layer): the base64 of the DER
    /// ECDSA-P256-SHA256 signature.
    pub fn sign(&self, payload: &[u8]) -> String {
        let signature: Signature = SigningKey::from(&self.key).sign(payload);
        STANDARD.encode(signature.to_der().as_bytes())
    }
}

impl PublicKey {
    /// Checks that `signature_b64` (standard base64 of a DER ECDSA signature, at most
    /// [`SIGNATURE_B64_LIMIT`] characters) is this key's signature of `payload`. A signature that cannot be
    /// decoded is [`Error::SignatureEncoding`]; one that decodes but does not verify is
    /// [`Error::BadSignature`].
    pub fn verify(&self, payload: &[u8], signature_b64: &str) -> Result<()> {
        let signature = decode_signature(signature_b64)?;
        VerifyingKey::from(&self.key).verify(payload, &signature).map_err(|_| Error::BadSignature)
    }
}

pub(crate) fn decode_signature(signature_b64: &str) -> Result<Signature> {
    if signature_b64.len() > SIGNATURE_B64_LIMIT {
        return Err(Error::SignatureEncoding(format!(
            "{} characters, more than the {SIGNATURE_B64_LIMIT} of an ECDSA P-256 signature",
            signature_b64.len()
        )));
    }
    let der = STANDARD.decode(signature_b64).map_err(|e| Error::SignatureEncoding(format!("not base64: {}", shown_err(e))))?;
    Signature::from_der(&der).map_err(|_| Error::SignatureEncoding("not a DER ECDSA P-256 signature".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::tests::{other_keys, test_keys};

    #[test]
    fn sign_verify_round_trip_and_failures() {
        let keys = test_keys();
        let public = PublicKey::from_pem(keys.public_pem.as_bytes()).unwrap();
        let private = PrivateKey::decrypt(keys.private_pem.as_bytes(), b"pw").unwrap();
        let sig = private.sign(b"payload");
        public.verify(b"payload", &sig).unwrap();
        assert!(matches!(public.verify(b"payloaD", &sig), Err(Error::BadSignature)));
        let other = other_keys().private_key.public_key();
        assert!(matches!(other.verify(b"payload", &sig), Err(Error::BadSignature)));
        assert!(matches!(public.verify(b"payload", "not base64!"), Err(Error::SignatureEncoding(_))));
        assert!(matches!(public.verify(b"payload", "aGVsbG8="), Err(Error::SignatureEncoding(_))));
        let long = "A".repeat(SIGNATURE_B64_LIMIT + 4);
        assert!(public.verify(b"payload", &long).unwrap_err().to_string().contains("more than"));
    }

    #[test]
    fn high_s_signatures_verify_as_in_go() {
        let keys = test_keys();
        let public = keys.private_key.public_key();
        let sig = decode_signature(&keys.private_key.sign(b"payload")).unwrap();
        let (r, s) = sig.split_scalars();
        let flipped = Signature::from_scalars(r, -*s).unwrap();
        assert_ne!(flipped, sig);
        let b64 = STANDARD.encode(flipped.to_der().as_bytes());
        public.verify(b"payload", &b64).unwrap();
    }
}
