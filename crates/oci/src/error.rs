//! The one error type of the images crate. Callers branch on the variant (the CLI maps
//! them to exit codes in one table); messages are lower-case, one line, no trailing period.

use std::path::PathBuf;

/// Everything that can go wrong with references, registries, layers and the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed image reference or digest.
    #[error("invalid reference {input:?}: {reason}")]
    InvalidReference { input: String, reason: String },
    /// The image (or blob, or manifest) is not in the local store.
    #[error("image not found: {0}")]
    ImageNotFound(String),
    /// The registry says the manifest or blob does not exist (404).
    #[error("{what} not found in registry: {name}")]
    RemoteNotFound { what: &'static str, name: String },
    /// The registry refused the credentials (401/403).
    #[error("authentication failed for {registry}: {reason}")]
    Unauthorized { registry: String, reason: String },
    /// The registry (or the network on the way) failed; retried before giving up.
    #[error("registry error: {0}")]
    Registry(String),
    /// Content did not match its digest: tampering or corruption.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    /// Content did not have the size its descriptor promised.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },
    /// A manifest, config or layer over its size limit.
    #[error("{what} is too large: over the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    /// The store's file system has less room than an image needs.
    #[error("not enough space for {what} in {}: {needed} bytes needed, {available} available", path.display())]
    NoSpace { what: String, path: PathBuf, needed: u64, available: u64 },
    /// Layers (or another archive) with more entries than allowed.
    #[error("too many entries in {what}: over the limit of {limit}")]
    TooManyEntries { what: String, limit: u64 },
    /// A media type this tool does not understand.
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    /// An image whose manifest or config breaks the format's rules.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// A layer that tries to write outside its root, or holds what a rootfs must not.
    #[error("unsafe layer entry {path:?}: {reason}")]
    UnsafeLayer { path: String, reason: String },
    /// Credentials could not be read or stored.
    #[error("credentials: {0}")]
    Credentials(String),
    /// A file or directory operation failed.
    #[error("{context} {}: {source}", path.display())]
    Io { context: &'static str, path: PathBuf, source: std::io::Error },
    /// The store itself is damaged (found by `check`).
    #[error("store is damaged: {0}")]
    Corrupt(String),
}

impl Error {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { context, path: path.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
