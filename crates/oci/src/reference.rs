//! Image references: `[registry/]repository[:tag][@digest]`, normalized the way containerd and
//! docker do (`app` is `docker.io/library/app:latest`). Parsing is oci-spec's; this type adds
//! the checks and names the rest of wasmcell relies on.

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
        let inner = oci_client::Reference::try_from(s).map_err(|e| bad(e.to_string().to_lowercase()))?;
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
