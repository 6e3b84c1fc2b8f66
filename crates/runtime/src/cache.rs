//! The on-disk compiled-code cache.
//!
//! An entry is keyed by the SHA-256 of the input bytes and the engine's compatibility fingerprint (for
//! wasmtime: its version, compiler settings and CPU features), so a new engine or another CPU never loads
//! stale code. Entries are written atomically ([`crate::fsutil::atomic_write`]) and carry a trailer with
//! their length and SHA-256: a truncated or corrupted entry is detected, removed and recompiled, never
//! executed.
//!
//! Layout: `<home>/cache/compiled/<key>.bin`, where the file is `payload || sha256(payload) || len: u64
//! LE || MAGIC`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::fsutil;

const MAGIC: &[u8; 8] = b"WCELAOT1";
const TRAILER: usize = 32 + 8 + 8;

/// A directory of compiled artifacts.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
}

/// What a lookup found.
pub enum Lookup {
    Hit(Vec<u8>),
    Miss,
    /// The entry existed but failed verification; it has been removed.
    Corrupt,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache key for `input` compiled by an engine whose fingerprint is `engine`.
    pub fn key(input: &[u8], engine: &[u8; 32]) -> String {
        Cache::key_of(&Sha256::digest(input).into(), engine)
    }

    /// [`Cache::key`] of the input whose SHA-256 is `input`.
    pub fn key_of(input: &[u8; 32], engine: &[u8; 32]) -> String {
        let mut h = Sha256::new();
        h.update(b"wasmcell-compiled-v1\0");
        h.update(engine);
        h.update(input);
        hex::encode(h.finalize())
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.bin"))
    }

    /// Reads and verifies an entry.
    pub fn get(&self, key: &str) -> Lookup {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(_) => return Lookup::Miss,
        };
        match verify(bytes) {
            Some(payload) => Lookup::Hit(payload),
            None => {
                tracing::warn!(path = %path.display(), "compiled-code cache entry is corrupt; recompiling");
                let _ = std::fs::remove_file(&path);
                Lookup::Corrupt
            }
        }
    }

    /// Stores an entry atomically.
    pub fn put(&self, key: &str, payload: &[u8]) -> std::io::Result<()> {
        let digest = Sha256::digest(payload);
        fsutil::atomic_write_with(&self.path(key), |f| {
            use std::io::Write;
            let mut w = std::io::BufWriter::new(f);
            w.write_all(payload)?;
            w.write_all(&digest)?;
            w.write_all(&(payload.len() as u64).to_le_bytes())?;
            w.write_all(MAGIC)?;
            w.flush()
        })
    }

    /// Removes every entry; returns how many bytes were freed.
    pub fn clear(&self) -> std::io::Result<u64> {
        let mut freed = 0;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(entry.path())?;
        }
        Ok(freed)
    }
}

fn verify(mut bytes: Vec<u8>) -> Option<Vec<u8>> {
    if bytes.len() < TRAILER {
        return None;
    }
    let t = bytes.len() - TRAILER;
    let (digest, rest) = bytes[t..].split_at(32);
    let (len, magic) = rest.split_at(8);
    if magic != MAGIC || u64::from_le_bytes(len.try_into().ok()?) != t as u64 {
        return None;
    }
    if Sha256::digest(&bytes[..t]).as_slice() != digest {
        return None;
    }
    bytes.truncate(t);
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let key = Cache::key(b"wasm", &[7; 32]);
        assert_ne!(key, Cache::key(b"wasm", &[8; 32]), "engine fingerprint is part of the key");
        assert_eq!(key, Cache::key_of(&Sha256::digest(b"wasm").into(), &[7; 32]), "the same key from the input's digest");
        assert!(matches!(cache.get(&key), Lookup::Miss));
        cache.put(&key, b"compiled code").unwrap();
        match cache.get(&key) {
            Lookup::Hit(b) => assert_eq!(b, b"compiled code"),
            _ => panic!("expected a hit"),
        }
        // Flip one payload byte: detected and removed.
        let path = cache.path(&key);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(cache.get(&key), Lookup::Corrupt));
        assert!(!path.exists());
        // Truncation: detected.
        cache.put(&key, b"compiled code").unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(matches!(cache.get(&key), Lookup::Corrupt));
    }
}
