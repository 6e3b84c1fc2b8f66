//! Docker references as distribution/reference parses them (the grammar of its `regexp.go`), for the
//! policy's identity rules: `ParseNormalizedNamed` (short names expand to `docker.io/library/…`) and
//! `ParseNamed` (the canonical form only).

use crate::error::{Error, Result, shown};

const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// A parsed reference: `domain/path[:tag][@digest]`, always with its domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Named {
    /// `domain/path`, as `reference.Named.Name()`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }
}

impl std::fmt::Display for Named {
    /// The full form, as `reference.Named.String()`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn bad(reference: &str, reason: &'static str) -> Error {
    Error::Reference { reference: shown(reference), reason }
}

/// `reference.ParseNormalizedNamed`: `busybox` is `docker.io/library/busybox`, `index.docker.io` is
/// `docker.io`; a first component is a domain if it has a `.` or a `:`, is `localhost`, or has an
/// uppercase letter.
pub(crate) fn parse_normalized(s: &str) -> Result<Named> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(s, "cannot specify 64-byte hexadecimal strings"));
    }
    let (mut domain, mut remainder) = match s.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" || first.to_lowercase() != first => {
            (first.to_owned(), rest.to_owned())
        }
        _ => ("docker.io".to_owned(), s.to_owned()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".to_owned();
    }
    if domain == "docker.io" && !remainder.contains('/') {
        remainder = format!("library/{remainder}");
    }
    let remote_name = remainder.split(['@']).next().unwrap_or("");
    let remote_name = remote_name.split(':').next().unwrap_or("");
    if remote_name.to_lowercase() != remote_name {
        return Err(bad(s, "repository name must be lowercase"));
    }
    parse_full(s, &domain, &remainder)
}

/// `reference.ParseNamed`: like [`parse_normalized`] but `s` must already be in the canonical form.
pub(crate) fn parse_canonical(s: &str) -> Result<Named> {
    let named = parse_normalized(s)?;
    if named.to_string() != s {
        return Err(bad(s, "repository name must be canonical"));
    }
    Ok(named)
}

/// `name[:tag][@digest]` split into its parts, unchecked: the digest after the first `@`, the tag
/// after the last `:` that no `/` follows (so `host:5000/app` has none).
pub fn split_tag_and_digest(s: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    match rest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag), digest),
        _ => (rest, None, digest),
    }
}

pub(crate) fn parse_full(original: &str, domain: &str, remainder: &str) -> Result<Named> {
    let (path, tag, digest) = split_tag_and_digest(remainder);
    if !is_domain(domain) {
        return Err(bad(original, "invalid domain"));
    }
    if path.is_empty() || !path.split('/').all(is_path_component) {
        return Err(bad(original, "invalid reference format"));
    }
    if domain.len() + 1 + path.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(bad(original, "repository name must not be more than 255 characters"));
    }
    if let Some(tag) = tag
        && !is_tag(tag)
    {
        return Err(bad(original, "invalid tag"));
    }
    if let Some(digest) = digest
        && !is_digest(digest)
    {
        return Err(bad(original, "invalid digest"));
    }
    Ok(Named { domain: domain.to_owned(), path: path.to_owned(), tag: tag.map(str::to_owned), digest: digest.map(str::to_owned) })
}

/// Whether `s` is one component of a repository path, by the distribution spec's grammar
/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` (also the image store's check of references).
pub fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

/// `host[:port]`, host a dotted name of `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?` components or `[ipv6]`.
pub(crate) fn is_domain(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return false };
        if v6.is_empty() || !v6.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    if s.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        })
}

/// Whether `s` is a tag: `[\w][\w.-]{0,127}` (`\w` ASCII, as in distribution's grammar).
pub fn is_tag(s: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = s.as_bytes();
    !b.is_empty() && b.len() <= 128 && word(b[0]) && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// Whether `s` is a digest by the grammar: `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`.
pub fn is_digest(s: &str) -> bool {
    let Some((algorithm, hex)) = s.split_once(':') else { return false };
    hex.len() >= 32
        && hex.bytes().all(|c| c.is_ascii_hexdigit())
        && algorithm.split(['-', '_', '+', '.']).all(|c| {
            let b = c.as_bytes();
            !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(|x| x.is_ascii_alphanumeric())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        let cases = [
            ("busybox", "docker.io/library/busybox"),
            ("busybox:1", "docker.io/library/busybox:1"),
            ("index.docker.io/busybox", "docker.io/library/busybox"),
            ("user/app", "docker.io/user/app"),
            ("localhost/app", "localhost/app"),
            ("127.0.0.1:5000/test/img:v1", "127.0.0.1:5000/test/img:v1"),
            ("[::1]:5000/a@sha256:0123456789abcdef0123456789abcdef", "[::1]:5000/a@sha256:0123456789abcdef0123456789abcdef"),
            ("Reg.example/a_b/c--d/e.f:T-1", "Reg.example/a_b/c--d/e.f:T-1"),
            ("UPPER/x", "UPPER/x"),
        ];
        for (input, want) in cases {
            assert_eq!(parse_normalized(input).unwrap().to_string(), want, "{input}");
        }
        for bad in ["", "a/UPPER", "docker.io/Busybox", "a//b", "a/b:", "a/-b", "a/b@sha256:12", "x.io:/a", "a/b:-x", &"a".repeat(300)] {
            assert!(parse_normalized(bad).is_err(), "{bad}");
        }
        assert!(parse_canonical("busybox").is_err());
        parse_canonical("docker.io/library/busybox").unwrap();
        let n = parse_normalized("r.example/a/b:t").unwrap();
        assert_eq!(n.name(), "r.example/a/b");
        assert!(!n.is_name_only());
    }
}
