//! The crate's one error type, and how a message quotes text it did not write.
//!
//! Every message is one line of bounded length: input a stranger controls (a payload, a manifest, a policy
//! file, a key file) is quoted through [`shown`], which escapes control characters and keeps at most
//! [`SHOWN_CHARS`] characters of it. A caller can branch on the variant: a wrong password
//! ([`Error::WrongPassword`]) is not a corrupt key, a signature that does not verify
//! ([`Error::BadSignature`]) is not one that cannot be decoded ([`Error::SignatureEncoding`]).

use std::path::PathBuf;

/// Everything that can go wrong in this crate. A policy's *rejection* of an image is not an error: it is a
/// [`crate::Rejection`], returned by [`crate::Policy::evaluate`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The private key file is not an encrypted sigstore/cosign private key this crate can read.
    #[error("invalid private key: {0}")]
    PrivateKey(String),
    /// The private key's secretbox did not open: the password is wrong (or the ciphertext was altered).
    #[error("wrong password for the private key (the encrypted key did not decrypt)")]
    WrongPassword,
    /// The public key is not a `PUBLIC KEY` PEM block holding an ECDSA P-256 key.
    #[error("invalid public key: {0}")]
    PublicKey(String),
    /// The signature is not base64 of a DER ECDSA signature.
    #[error("invalid signature encoding: {0}")]
    SignatureEncoding(String),
    /// The signature is well formed but does not verify with this key over this payload.
    #[error("signature does not verify with this key")]
    BadSignature,
    /// The simple-signing payload is malformed or not a cosign container image signature.
    #[error("invalid signature payload: {0}")]
    Payload(String),
    /// A manifest digest is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid manifest digest \"{0}\": expected sha256: and 64 lowercase hex digits")]
    Digest(String),
    /// The signature attachment manifest (`sha256-<hex>.sig`) or one of its blobs is malformed.
    #[error("invalid signature attachment: {0}")]
    Attachment(String),
    /// A docker reference (in a policy or an image identity) does not parse.
    #[error("invalid image reference \"{reference}\": {reason}")]
    Reference { reference: String, reason: &'static str },
    /// The containers-policy.json document is malformed or uses something this crate refuses.
    #[error("invalid policy: {0}")]
    Policy(String),
    /// A file (policy, key) could not be read.
    #[error("cannot read {what} {}: {source}", shown(&.path.to_string_lossy()))]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file (policy, key) is larger than this crate reads.
    #[error("{what} {} is larger than {limit} bytes", shown(&.path.to_string_lossy()))]
    TooLarge { what: &'static str, path: PathBuf, limit: usize },
    /// The operating system's random number generator failed.
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The most characters of one quoted piece of input a message shows.
pub const SHOWN_CHARS: usize = 200;

/// `text` as a message quotes it: control characters and Unicode line separators escaped as Rust does
/// (`\n`, `\u{2028}`), at most [`SHOWN_CHARS`] characters, a longer text keeping its start and its end
/// around a `…`.
pub fn shown(text: &str) -> String {
    let chars: Vec<char> = text
        .chars()
        .flat_map(|c| if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') { c.escape_debug().collect::<Vec<_>>() } else { vec![c] })
        .collect();
    if chars.len() <= SHOWN_CHARS {
        return String::from_iter(chars);
    }
    let half = SHOWN_CHARS / 2;
    format!("{}…{}", String::from_iter(&chars[..half]), String::from_iter(&chars[chars.len() - half..]))
}

/// [`shown`] of anything printable (a serde error, which quotes its input).
pub(crate) fn shown_err(error: impl std::fmt::Display) -> String {
    shown(&error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_and_bounds() {
        assert_eq!(shown("a\nb\u{2028}"), "a\\nb\\u{2028}");
        let long = "x".repeat(1000) + "END";
        let s = shown(&long);
        assert!(s.chars().count() <= SHOWN_CHARS + 1, "{}", s.len());
        assert!(s.ends_with("END"));
        let e = Error::Io { what: "key file", path: PathBuf::from("/a\nb"), source: std::io::Error::from(std::io::ErrorKind::NotFound) };
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}
