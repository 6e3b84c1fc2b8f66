//! Image references: `[registry/]repository[:tag][@digest]`, normalized the way containerd and
//! docker do (`app` is `docker.io/library/app:latest`). The grammar is distribution's, as oci-spec's
//! parser reads it (split the same way; its regex is not used: compiling it took ~50 ms of every
//! image command's start), with the checks and names the rest of wasmcell relies on.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::Error;

/// A parsed, normalized image reference.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    inner: oci_client::Reference,
}

impl Reference {
    /// The registry host (and port), e.g. `127.0.0.1:5000` or `docker.io`.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path inside the registry, e.g. `team/app`.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The digest, when the reference pins one.
    pub fn digest(&self) -> Option<Digest> {
        self.inner.digest().and_then(|d| d.parse().ok())
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The same repository at another digest.
    pub fn with_digest(&self, digest: &Digest) -> Reference {
        Reference {
            inner: oci_client::Reference::with_digest(self.registry().to_string(), self.repository().to_string(), digest.to_string()),
        }
    }

    /// Whether the registry is on this machine (`localhost`, `127.0.0.0/8`, `::1`): the only
    /// registries spoken to over plain HTTP unless the user says `--insecure`.
    pub fn is_loopback(&self) -> bool {
        let host = registry_host(self.registry());
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The oci-client view of this reference.
    pub fn as_oci(&self) -> &oci_client::Reference {
        &self.inner
    }
}

/// The host part of `host[:port]` or `[v6]:port`.
pub fn registry_host(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::InvalidReference { input: s.to_string(), reason };
        if s.is_empty() {
            return Err(bad("empty reference".into()));
        }
        if s.len() > 4096 {
            return Err(bad("longer than 4096 characters".into()));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters".into()));
        }
        let inner = parse(s).map_err(|reason| bad(reason.into()))?;
        if let Some(comp) = inner.repository().split('/').find(|c| !wasmcell_sign::is_path_component(c)) {
            return Err(bad(format!(
                "repository component {comp:?} must be lower-case letters and digits separated by '.', '_', '__' or '-'"
            )));
        }
        if let Some(d) = inner.digest() {
            d.parse::<Digest>().map_err(|_| bad(format!("unsupported digest {d}")))?;
        }
        Ok(Reference { inner })
    }
}

/// `s` as oci-spec's `Reference::try_from` reads it: `name[:tag][@digest]` where the name is an
/// optional `host[:port]/` and `/`-separated path components; a first component that has no `.` or
/// `:` and is not `localhost` is a path (the registry is `docker.io`, and a one-component path on it
/// gets `library/`); no tag and no digest means `latest`.
fn parse(s: &str) -> Result<oci_client::Reference, &'static str> {
    const NAME_TOTAL_LENGTH_MAX: usize = 255;
    let (name, tag, digest) = wasmcell_sign::split_tag_and_digest(s);
    let components: Vec<&str> = name.split('/').collect();
    let path_from = |i: usize| components.len() > i && components[i..].iter().all(|c| wasmcell_sign::is_path_component(c));
    if !(path_from(0) || (is_host_port(components[0]) && path_from(1))) {
        return Err("invalid reference format");
    }
    if tag.is_some_and(|t| !wasmcell_sign::is_tag(t)) || digest.is_some_and(|d| !wasmcell_sign::is_digest(d)) {
        return Err("invalid reference format");
    }
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest.to_string()),
        _ => ("docker.io", name.to_string()),
    };
    let registry = if registry == "index.docker.io" { "docker.io" } else { registry };
    let repository = if registry == "docker.io" && !repository.contains('/') { format!("library/{repository}") } else { repository };
    if repository.len() > NAME_TOTAL_LENGTH_MAX {
        return Err("repository name must not be more than 255 characters");
    }
    if let Some(d) = digest {
        let want = match d.split_once(':').map(|(algorithm, _)| algorithm) {
            Some("sha256") => 64,
            Some("sha384") => 96,
            Some("sha512") => 128,
            _ => return Err("unsupported digest algorithm"),
        };
        if d.len() - d.find(':').map_or(0, |i| i + 1) != want {
            return Err("invalid checksum digest length");
        }
    }
    let (registry, tag, digest) = (registry.to_string(), tag.map(str::to_string), digest.map(str::to_string));
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(registry, repository, tag, digest),
        (None, Some(digest)) => oci_client::Reference::with_digest(registry, repository, digest),
        (tag, None) => oci_client::Reference::with_tag(registry, repository, tag.unwrap_or_else(|| "latest".into())),
    })
}

/// `host[:port]` as the reference grammar has it: `.`-separated `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?`
/// labels, a port of digits.
fn is_host_port(s: &str) -> bool {
    let (host, port) = s.split_once(':').unwrap_or((s, "0"));
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    };
    !port.is_empty() && port.bytes().all(|c| c.is_ascii_digit()) && host.split('.').all(label)
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        let r: Reference = "127.0.0.1:5000/team/app:1.0".parse().unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "team/app");
        assert_eq!(r.tag(), Some("1.0"));
        assert!(r.is_loopback());
        let r: Reference = "app".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/app:latest");
        assert!(!r.is_loopback());
        assert!("localhost:5000/a".parse::<Reference>().unwrap().is_loopback());
        let d = Digest::of(b"x");
        let r: Reference = format!("localhost/a@{d}").parse().unwrap();
        assert_eq!(r.digest(), Some(d));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "UPPER/case", "a b", "a:", "a@sha256:abc", "a/../b", "a\nb", ":tag", "a@md5:0", "a/B", "a/-b", "a/b..c"] {
            let e = bad.parse::<Reference>().unwrap_err();
            assert!(matches!(e, Error::InvalidReference { .. }), "{bad}: {e}");
        }
    }
}
