//! The sandbox policy: what a guest is granted, as plain serde data.
//!
//! Architecture Invariant: this is the only description of a guest's capabilities. Every entry point
//! (CLI flags, an image's config, an OCI runtime spec) is translated into a [`SandboxPolicy`] and the
//! engine grants exactly what it says, nothing else. [`SandboxPolicy::default`] grants nothing: no
//! arguments, no environment, no files, no network, no limits beyond the engine's own.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Everything a guest may use. `Default` grants nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxPolicy {
    /// The guest's argv, including argv[0].
    pub args: Vec<String>,
    /// The guest's whole environment, in order.
    pub env: Vec<(String, String)>,
    /// Host directories the guest may see.
    pub mounts: Vec<Mount>,
    /// Sockets the guest may open (wasi:sockets).
    pub network: NetworkPolicy,
    /// Origins outbound HTTP requests (wasi:http/outgoing-handler) may go to. Empty: none.
    pub http_outbound: Vec<OutboundRule>,
    /// Resource limits.
    pub limits: Limits,
    /// The application's name: what its key-value data is kept under, so two applications never
    /// see each other's keys.
    pub app: String,
    /// Key-value stores the guest may open (wasi:keyvalue). Empty: none.
    pub kv: Vec<KvGrant>,
}

impl SandboxPolicy {
    /// A copy fit for logs: Redis URLs without their passwords.
    pub fn redacted(&self) -> SandboxPolicy {
        let mut p = self.clone();
        for g in &mut p.kv {
            if let KvBackend::Redis { url } = &mut g.backend {
                *url = crate::kv::redact(url);
            }
        }
        p
    }
}

/// A key-value store the guest may open, and what backs it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvGrant {
    pub name: String,
    pub backend: KvBackend,
}

/// Where a granted store keeps its data.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum KvBackend {
    /// The embedded database under the home (the default): durable, one file per application.
    Embedded,
    /// Process memory: gone when the process exits.
    Memory,
    /// A Redis server, `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` (or `rediss://`).
    Redis { url: String },
}

/// A name for stores and applications: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.`.
pub fn check_name(what: &str, name: &str) -> Result<(), ParseError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(bad(format!("invalid {what} name `{name}`: use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with .)"))) }
}

impl FromStr for KvGrant {
    type Err = ParseError;

    /// `NAME` (embedded), `NAME=embedded`, `NAME=memory`, `NAME=redis://…` or `NAME=rediss://…`.
    fn from_str(spec: &str) -> Result<KvGrant, ParseError> {
        let (name, backend) = match spec.split_once('=') {
            None => (spec, KvBackend::Embedded),
            Some((name, "embedded")) => (name, KvBackend::Embedded),
            Some((name, "memory")) => (name, KvBackend::Memory),
            Some((name, url)) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                (name, KvBackend::Redis { url: url.to_string() })
            }
            Some((_, other)) => {
                return Err(bad(format!(
                    "invalid key-value backend `{}`: use embedded, memory, redis://… or rediss://…",
                    crate::kv::redact(other)
                )));
            }
        };
        check_name("key-value store", name)?;
        Ok(KvGrant { name: name.to_string(), backend })
    }
}

/// A host directory made visible to the guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    pub host: PathBuf,
    pub guest: String,
    #[serde(default)]
    pub read_only: bool,
}

/// Error from parsing a user-written policy element; the message is one line meant for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// The longest message, in characters: a message quotes what was typed, which may be any length.
const MAX_MESSAGE_CHARS: usize = 500;

/// A message quoting the user's input, made one line (control characters and line separators escaped,
/// `\n`) and bounded (a long one keeps its start and its end, where the reason is).
fn bad(msg: impl Into<String>) -> ParseError {
    let escaped: Vec<char> = msg
        .into()
        .chars()
        .flat_map(|c| if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') { c.escape_debug().collect() } else { vec![c] })
        .collect();
    let keep = MAX_MESSAGE_CHARS / 2;
    if escaped.len() <= MAX_MESSAGE_CHARS {
        return ParseError(escaped.into_iter().collect());
    }
    let (start, end) = (&escaped[..keep], &escaped[escaped.len() - keep..]);
    ParseError(start.iter().chain(['…'].iter()).chain(end).collect())
}

impl Mount {
    /// Parses wasmtime's `--dir` syntax: `HOST[::GUEST]` (GUEST defaults to HOST).
    pub fn parse_dir(spec: &str) -> Result<Mount, ParseError> {
        let (host, guest) = match spec.split_once("::") {
            Some((h, g)) => (h, g),
            None => (spec, spec),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(bad(format!("invalid --dir `{spec}`: expected HOST[::GUEST]")));
        }
        Ok(Mount { host: host.into(), guest: guest.into(), read_only: false })
    }

    /// Parses docker's `-v/--volume` syntax: `HOST:GUEST[:ro|:rw]`, GUEST absolute.
    pub fn parse_volume(spec: &str) -> Result<Mount, ParseError> {
        let err = || bad(format!("invalid volume `{spec}`: expected HOST:GUEST[:ro|:rw]"));
        let parts: Vec<&str> = spec.split(':').collect();
        let (host, guest, read_only) = match parts.as_slice() {
            [h, g] => (*h, *g, false),
            [h, g, "ro"] => (*h, *g, true),
            [h, g, "rw"] => (*h, *g, false),
            [_, _, opt] => {
                return Err(bad(format!("invalid volume `{spec}`: unknown option `{opt}` (use ro or rw)")));
            }
            _ => return Err(err()),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(err());
        }
        if !guest.starts_with('/') {
            return Err(bad(format!("invalid volume `{spec}`: the guest path `{guest}` must be absolute")));
        }
        Ok(Mount { host: host.into(), guest: guest.into(), read_only })
    }
}

/// Which sockets a guest may open. `Default` allows none, and no name lookup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkPolicy {
    /// Addresses the guest may connect to or bind (TCP and UDP).
    pub allow: Vec<NetRule>,
    /// Whether `wasi:sockets/ip-name-lookup` is available.
    pub name_lookup: bool,
}

/// One entry of the network allow-list: an address or CIDR block and a port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRule {
    pub net: IpNet,
    pub ports: PortRange,
}

/// An inclusive port range; `0..=65535` is "any port".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange { first: 0, last: u16::MAX };

    fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl NetworkPolicy {
    /// Whether the guest may use `addr` as a remote (connect, send) or local (bind) address.
    ///
    /// An implicit bind to the unspecified address on port 0 (what the OS does before a connect) is
    /// allowed whenever anything is allowed at all: it grants nothing by itself.
    pub fn allows(&self, addr: SocketAddr, implicit_bind: bool) -> bool {
        if self.allow.is_empty() {
            return false;
        }
        if implicit_bind && addr.ip().is_unspecified() && addr.port() == 0 {
            return true;
        }
        let ip = canonical_ip(addr.ip());
        self.allow.iter().any(|rule| rule.net.contains(&ip) && rule.ports.contains(addr.port()))
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl NetRule {
    /// The rules one `--net` value grants: `*` is every IPv4 and every IPv6 address, any port; anything
    /// else is one rule.
    pub fn parse_all(spec: &str) -> Result<Vec<NetRule>, ParseError> {
        if spec == "*" {
            let any = |net: &str| NetRule { net: net.parse().expect("a valid block"), ports: PortRange::ANY };
            return Ok(vec![any("0.0.0.0/0"), any("::/0")]);
        }
        Ok(vec![spec.parse()?])
    }
}

impl FromStr for NetRule {
    type Err = ParseError;

    /// `ADDR`, `ADDR/PREFIX`, either followed by `:PORT`, `:FIRST-LAST` or `:*`; IPv6 with a port is
    /// bracketed (`[::1]:8080`). `*` alone means any address and port.
    fn from_str(spec: &str) -> Result<NetRule, ParseError> {
        let err = |why: &str| bad(format!("invalid --net `{spec}`: {why}"));
        if spec == "*" {
            return Err(err("`*` grants several rules (NetRule::parse_all)"));
        }
        let (addr, ports) = if let Some(rest) = spec.strip_prefix('[') {
            let (addr, after) = rest.split_once(']').ok_or_else(|| err("missing `]`"))?;
            match after {
                "" => (addr, None),
                p => (addr, Some(p.strip_prefix(':').ok_or_else(|| err("expected `:PORT` after `]`"))?)),
            }
        } else if spec.matches(':').count() > 1 {
            (spec, None) // bare IPv6 address or block, no port
        } else {
            match spec.split_once(':') {
                Some((a, p)) => (a, Some(p)),
                None => (spec, None),
            }
        };
        let net = if addr.contains('/') {
            addr.parse::<IpNet>().map_err(|_| err("not an address or CIDR block"))?.trunc()
        } else {
            IpNet::from(addr.parse::<IpAddr>().map_err(|_| err("not an address or CIDR block"))?)
        };
        let ports = match ports {
            None | Some("*") => PortRange::ANY,
            Some(p) => {
                let (first, last) = p.split_once('-').unwrap_or((p, p));
                let first: u16 = first.parse().map_err(|_| err("bad port"))?;
                let last: u16 = last.parse().map_err(|_| err("bad port"))?;
                if first > last {
                    return Err(err("port range is reversed"));
                }
                PortRange { first, last }
            }
        };
        Ok(NetRule { net, ports })
    }
}

impl fmt::Display for NetRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports = match self.ports {
            PortRange::ANY => "*".to_string(),
            PortRange { first, last } if first == last => first.to_string(),
            PortRange { first, last } => format!("{first}-{last}"),
        };
        match self.net {
            IpNet::V6(_) => write!(f, "[{}]:{ports}", self.net),
            IpNet::V4(_) => write!(f, "{}:{ports}", self.net),
        }
    }
}

/// One entry of the outbound HTTP allow-list: `scheme://host[:port]`. The scheme is `http`, `https`
/// or `*`; the host is a name, an IP address, `*.suffix` or `*`; the port is a number or `*`, and
/// defaults to the scheme's (80, 443).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundRule {
    pub scheme: String,
    pub host: String,
    /// `None`: any port.
    pub port: Option<u16>,
}

impl FromStr for OutboundRule {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = |why: &str| bad(format!("invalid --allow-outbound `{s}`: {why} (expected scheme://host[:port])"));
        let (scheme, rest) = s.split_once("://").ok_or_else(|| err("missing scheme://"))?;
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https" | "*") {
            return Err(err("the scheme must be http, https or *"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('@') || rest.is_empty() {
            return Err(err("give only a host and a port, no path or user"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, tail) = v6.split_once(']').ok_or_else(|| err("unclosed ["))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err("what is in brackets must be an IPv6 address"));
            }
            let port = match tail {
                "" => None,
                t => Some(t.strip_prefix(':').ok_or_else(|| err("expected `:PORT` after `]`"))?),
            };
            (h.to_string(), port)
        } else {
            let (h, p) = match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            if h.contains(':') || p.is_some_and(|p| p.contains(':')) {
                return Err(err("an IPv6 address goes in brackets, e.g. http://[::1]:8080"));
            }
            let h = h.to_ascii_lowercase();
            if !valid_host_pattern(&h) {
                return Err(err("the host must be a DNS name, an IPv4 address, `*` or `*.suffix`"));
            }
            (h, p)
        };
        let host = host.to_ascii_lowercase();
        let port = match port {
            Some("*") => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| err("the port must be a number or *"))?),
            None => match scheme.as_str() {
                "http" => Some(80),
                "https" => Some(443),
                _ => None,
            },
        };
        Ok(OutboundRule { scheme, host, port })
    }
}

/// `*`, `*.suffix` or a name: dot-separated labels of letters, digits and `-` (not first or last),
/// 1-63 bytes each, 253 in all (an IPv4 address is such a name too).
fn valid_host_pattern(host: &str) -> bool {
    if host == "*" {
        return true;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl OutboundRule {
    /// Whether a request to `scheme://host:port` matches this rule.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let scheme_ok = self.scheme == "*" || self.scheme.eq_ignore_ascii_case(scheme);
        let host_ok = self.host == "*"
            || self.host == host
            || self.host.strip_prefix("*.").is_some_and(|suffix| host.ends_with(&format!(".{suffix}")));
        let port_ok = self.port.is_none_or(|p| p == port);
        scheme_ok && host_ok && port_ok
    }
}

/// Resource limits. `None` means the engine's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Maximum bytes of linear memory per memory; `memory.grow` beyond fails.
    pub memory: Option<u64>,
    /// Wall-clock time after which the guest is stopped.
    pub timeout: Option<Duration>,
    /// Maximum wasm stack in bytes.
    pub max_stack: Option<usize>,
}

/// Parses a size like `64M`, `512k`, `1GiB`, `4096` (binary units; a bare number is bytes).
pub fn parse_size(s: &str) -> Result<u64, ParseError> {
    let err = || bad(format!("invalid size `{s}`: expected a number with an optional K, M or G suffix"));
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| err())?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

/// Parses a duration like `500ms`, `2s`, `1.5s`, `3m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let err = || bad(format!("invalid duration `{s}`: expected e.g. 500ms, 2s, 1.5s, 3m"));
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| err())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(err()),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(err());
    }
    // Under a nanosecond (`0.0000001ms`) is positive but rounds to a zero duration: refused like `0s`.
    let d = Duration::from_secs_f64(secs);
    if d.is_zero() {
        return Err(err());
    }
    Ok(d)
}

/// Checks an environment entry: a non-empty key without `=` or NUL, a value without NUL.
pub fn check_env(key: &str, value: &str) -> Result<(), ParseError> {
    if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
        return Err(bad(format!("invalid environment variable `{key}`")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn outbound_rules() {
        let r: OutboundRule = "http://127.0.0.1:8080".parse().unwrap();
        assert!(r.allows("http", "127.0.0.1", 8080));
        assert!(!r.allows("https", "127.0.0.1", 8080) && !r.allows("http", "127.0.0.1", 8081));
        let r: OutboundRule = "https://*.example.com".parse().unwrap();
        assert!(r.allows("https", "api.example.com", 443) && !r.allows("https", "example.com", 443));
        assert!(!r.allows("https", "api.example.com", 8443));
        let r: OutboundRule = "*://localhost:*".parse().unwrap();
        assert!(r.allows("http", "LOCALHOST", 1) && r.allows("https", "localhost", 65535));
        let r: OutboundRule = "http://[::1]:80".parse().unwrap();
        assert!(r.allows("http", "[::1]", 80));
        for bad in [
            "example.com",
            "ftp://x",
            "http://a/b",
            "http://u@h",
            "http://a*b",
            "http://h:x",
            "http://",
            "http://*.",
            "http://[::1]garbage",
            "http://::1",
            "http://[not-v6]:80",
            "http://a..b",
            "http://-a.b",
            "http://*.*.b",
            "http://h:80:90",
        ] {
            assert!(bad.parse::<OutboundRule>().is_err(), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("12k").unwrap(), 12 << 10);
        assert!(parse_size("M").is_err());
        assert!(parse_size("10X").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("3m").unwrap(), Duration::from_secs(180));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("0.0000001ms").is_err(), "positive, but a zero Duration");
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn messages_are_one_bounded_line() {
        let e = Mount::parse_volume("a\nb").unwrap_err().to_string();
        assert_eq!(e, r"invalid volume `a\nb`: expected HOST:GUEST[:ro|:rw]");
        let e = parse_size(&format!("{}x", "9".repeat(5000))).unwrap_err().to_string();
        assert!(e.chars().count() <= MAX_MESSAGE_CHARS + 1 && e.ends_with("optional K, M or G suffix"), "{e}");
    }

    #[test]
    fn mounts() {
        let m = Mount::parse_dir("/tmp/a::/data").unwrap();
        assert_eq!((m.host.to_str().unwrap(), m.guest.as_str(), m.read_only), ("/tmp/a", "/data", false));
        let m = Mount::parse_dir("/tmp/a").unwrap();
        assert_eq!(m.guest, "/tmp/a");
        let m = Mount::parse_volume("/tmp/a:/data:ro").unwrap();
        assert!(m.read_only);
        assert!(Mount::parse_volume("/tmp/a:data").is_err());
        assert!(Mount::parse_volume("/tmp/a:/data:rx").is_err());
        assert!(Mount::parse_volume("/tmp/a").is_err());
    }

    #[test]
    fn net_rules() {
        let p = NetworkPolicy {
            allow: vec!["127.0.0.1:8080".parse().unwrap(), "10.0.0.0/8:80-443".parse().unwrap(), "[::1]:*".parse().unwrap()],
            name_lookup: false,
        };
        assert!(p.allows("127.0.0.1:8080".parse().unwrap(), false));
        assert!(!p.allows("127.0.0.1:8081".parse().unwrap(), false));
        assert!(p.allows("10.1.2.3:443".parse().unwrap(), false));
        assert!(!p.allows("10.1.2.3:444".parse().unwrap(), false));
        assert!(!p.allows("11.0.0.1:80".parse().unwrap(), false));
        assert!(p.allows("[::1]:9".parse().unwrap(), false));
        assert!(p.allows("[::ffff:127.0.0.1]:8080".parse().unwrap(), false));
        assert!(p.allows("0.0.0.0:0".parse().unwrap(), true));
        assert!(!p.allows("0.0.0.0:0".parse().unwrap(), false));
        let none = NetworkPolicy::default();
        assert!(!none.allows("127.0.0.1:8080".parse().unwrap(), false));
        assert!(!none.allows("0.0.0.0:0".parse().unwrap(), true));
        assert!("10.0.0.0/33".parse::<NetRule>().is_err());
        assert!("1.2.3.4:90-80".parse::<NetRule>().is_err());
        assert!("example.com:80".parse::<NetRule>().is_err());
        assert_eq!("fd00::/8".parse::<NetRule>().unwrap().to_string(), "[fd00::/8]:*");
        // `*` is all addresses of both families.
        let all = NetworkPolicy { allow: NetRule::parse_all("*").unwrap(), name_lookup: false };
        assert!(all.allows("192.0.2.1:443".parse().unwrap(), false));
        assert!(all.allows("[2001:db8::1]:443".parse().unwrap(), false));
    }

    #[test]
    fn default_grants_nothing_and_roundtrips() {
        let p = SandboxPolicy::default();
        assert!(p.args.is_empty() && p.env.is_empty() && p.mounts.is_empty() && p.network.allow.is_empty());
        assert!(!p.network.name_lookup);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<SandboxPolicy>(&json).unwrap(), p);
    }
}
