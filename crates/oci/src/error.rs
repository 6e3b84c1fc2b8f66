//! The one error type of the images crate. Callers branch on the variant (the CLI maps
//! them to exit codes in one table); messages are lower-case, one line, no trailing period. What a
//! message quotes (a reference, a path, a media type, a layer's entry name: often a stranger's input)
//! passes through [`shown`], so a message stays one line of bounded length whatever the input.

use std::path::PathBuf;

/// Everything that can go wrong with references, registries, layers and the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed image reference or digest.
    #[error("invalid reference {:?}: {}", shown(input), shown(reason))]
    InvalidReference { input: String, reason: String },
    /// The image (or blob, or manifest) is not in the local store.
    #[error("image not found: {}", shown(.0))]
    ImageNotFound(String),
    /// The registry says the manifest or blob does not exist (404).
    #[error("{what} not found in registry: {}", shown(name))]
    RemoteNotFound { what: &'static str, name: String },
    /// The registry refused the credentials (401/403).
    #[error("authentication failed for {}: {}", shown(registry), shown(reason))]
    Unauthorized { registry: String, reason: String },
    /// The registry (or the network on the way) failed; retried before giving up.
    #[error("registry error: {}", shown(.0))]
    Registry(String),
    /// Content did not match its digest: tampering or corruption.
    #[error("digest mismatch for {}: expected {}, got {}", shown(what), shown(expected), shown(actual))]
    DigestMismatch { what: String, expected: String, actual: String },
    /// Content did not have the size its descriptor promised.
    #[error("size mismatch for {}: expected {expected} bytes, got {actual}", shown(what))]
    SizeMismatch { what: String, expected: u64, actual: u64 },
    /// A manifest, config or layer over its size limit.
    #[error("{} is too large: over the limit of {limit} bytes", shown(what))]
    TooLarge { what: String, limit: u64 },
    /// The store's file system has less room than an image needs.
    #[error("not enough space for {} in {}: {needed} bytes needed, {available} available", shown(what), shown(&path.to_string_lossy()))]
    NoSpace { what: String, path: PathBuf, needed: u64, available: u64 },
    /// Layers (or another archive) with more entries than allowed.
    #[error("too many entries in {}: over the limit of {limit}", shown(what))]
    TooManyEntries { what: String, limit: u64 },
    /// A media type this tool does not understand.
    #[error("unsupported media type {:?}", shown(.0))]
    UnsupportedMediaType(String),
    /// An image whose manifest or config breaks the format's rules.
    #[error("invalid image: {}", shown(.0))]
    InvalidImage(String),
    /// A layer that tries to write outside its root, or holds what a rootfs must not.
    #[error("unsafe layer entry {:?}: {}", shown(path), shown(reason))]
    UnsafeLayer { path: String, reason: String },
    /// Credentials could not be read or stored.
    #[error("credentials: {}", shown(.0))]
    Credentials(String),
    /// A file or directory operation failed.
    #[error("{context} {}: {}", shown(&path.to_string_lossy()), shown(&source.to_string()))]
    Io { context: &'static str, path: PathBuf, source: std::io::Error },
    /// The signature policy refused the image: no signature where one is required, one that does not
    /// verify, names another image or digest, or a `reject` scope.
    #[error("{}: refused by the signature policy: {}", shown(image), shown(reason))]
    Untrusted { image: String, reason: String },
    /// The store itself is damaged (found by `check`).
    #[error("store is damaged: {}", shown(.0))]
    Corrupt(String),
}

impl Error {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { context, path: path.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The most characters of one quoted string an error message shows.
pub const SHOWN_CHARS: usize = 400;

/// `text` as an error message quotes it: with `{}`, control characters and line separators escaped
/// (`\n`); with `{:?}`, quoted and escaped as Rust does; either way at most [`SHOWN_CHARS`] characters,
/// a longer one keeping its start and its end around a `…`.
pub fn shown(text: &str) -> Shown<'_> {
    Shown(text)
}

/// See [`shown`].
pub struct Shown<'a>(&'a str);

impl Shown<'_> {
    fn write(&self, f: &mut std::fmt::Formatter<'_>, escape: fn(char) -> bool) -> std::fmt::Result {
        let chars: Vec<char> = self
            .0
            .chars()
            .flat_map(|c| if escape(c) || matches!(c, '\u{2028}' | '\u{2029}') { c.escape_debug().collect() } else { vec![c] })
            .collect();
        if chars.len() <= SHOWN_CHARS {
            return f.write_str(&String::from_iter(chars));
        }
        let half = SHOWN_CHARS / 2;
        write!(f, "{}…{}", String::from_iter(&chars[..half]), String::from_iter(&chars[chars.len() - half..]))
    }
}

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write(f, char::is_control)
    }
}

impl std::fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"")?;
        self.write(f, |c| c.is_control() || c == '"' || c == '\\')?;
        f.write_str("\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_quote_input_on_one_bounded_line() {
        let e = Error::UnsupportedMediaType(format!("a\nb{}", "x".repeat(5000)));
        let msg = e.to_string();
        assert!(msg.starts_with(r#"unsupported media type "a\nb"#) && !msg.contains('\n'), "{msg}");
        assert!(msg.chars().count() < SHOWN_CHARS + 40 && msg.contains('…'), "{msg}");
        let e = Error::io("failed to create", "/x/a\nb", std::io::Error::other("two\nlines"));
        assert_eq!(e.to_string(), r"failed to create /x/a\nb: two\nlines");
        assert_eq!(format!("{:?}", shown("say \"hi\"\\")), r#""say \"hi\"\\""#);
    }
}
