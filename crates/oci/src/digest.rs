//! Content digests (`sha256:<64 hex>`), and a writer that hashes what passes through it.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::Error;

/// A validated sha256 content digest. The only algorithm the store names blobs by.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest { hex: hex::encode(Sha256::digest(bytes)) }
    }

    /// The digest whose SHA-256 is `sha256`.
    pub fn from_sha256(sha256: &[u8; 32]) -> Self {
        Digest { hex: hex::encode(sha256) }
    }

    /// The SHA-256 itself.
    pub fn sha256(&self) -> [u8; 32] {
        let mut out = [0; 32];
        hex::decode_to_slice(&self.hex, &mut out).expect("a validated digest is 64 hex characters");
        out
    }

    /// The 64 lower-case hex characters, without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters, as `images` shows them.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidReference { input: s.to_string(), reason: reason.to_string() };
        let (alg, hex) = s.split_once(':').ok_or_else(|| bad("a digest is ALGORITHM:HEX"))?;
        if alg != "sha256" {
            return Err(bad("only sha256 digests are supported"));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad("a sha256 digest has 64 lower-case hex characters"));
        }
        Ok(Digest { hex: hex.to_string() })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes and counts bytes as they stream past.
#[derive(Default, Clone)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest { hex: hex::encode(self.sha.finalize()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d = Digest::of(b"");
        assert_eq!(d.to_string(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        for bad in ["sha256:abc", "md5:e3b0", "e3b0c44298fc", "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
        let sha: [u8; 32] = Sha256::digest(b"").into();
        assert_eq!(d.sha256(), sha);
        assert_eq!(Digest::from_sha256(&sha), d);
    }

    #[test]
    fn hasher_matches_one_shot() {
        let mut h = Hasher::default();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.len(), 11);
        assert_eq!(h.finish(), Digest::of(b"hello world"));
    }
}
