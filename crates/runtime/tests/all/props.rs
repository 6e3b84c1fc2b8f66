//! Property tests of the sandbox flags' parsers (`policy.rs`): `--dir`, `-v`, `--net`, `--allow-outbound`,
//! `--kv`, sizes and durations. Each runs `wasmcell_props::cases` cases on arbitrary text and on
//! near-valid text: an error is one short line; what is accepted keeps the parser's invariants and reads
//! back to the same value from its canonical form.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;
use wasmcell_props::{DEFAULT_CASES, check, mutated, one_line, text};
use wasmcell_runtime::SandboxPolicy;
use wasmcell_runtime::policy::{self, KvBackend, KvGrant, Mount, NetRule, NetworkPolicy, OutboundRule, PortRange};

fn path() -> impl Strategy<Value = String> {
    "/?[a-z0-9._-]{1,10}(/[a-zA-Z0-9._ -]{1,10}){0,3}"
}

/// Arbitrary text, a near miss of `valid`, or `valid` itself.
fn input(valid: impl Strategy<Value = String> + 'static) -> impl Strategy<Value = String> {
    let valid = valid.boxed();
    prop_oneof![2 => text(), 3 => mutated(valid.clone()), 1 => valid]
}

fn parsed<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what} does not parse back: {e}")))
}

#[test]
fn dir_flags() {
    let valid = (path(), proptest::option::of(path())).prop_map(|(h, g)| g.map_or(h.clone(), |g| format!("{h}::{g}")));
    check("--dir", DEFAULT_CASES, input(valid), |spec| match Mount::parse_dir(&spec) {
        Err(e) => one_line(&e),
        Ok(m) => {
            let host = m.host.to_str().expect("utf-8, as given").to_string();
            prop_assert!(!host.is_empty() && !m.guest.is_empty() && !host.contains("::") && !m.read_only, "{m:?}");
            prop_assert!(spec == format!("{host}::{}", m.guest) || (spec == host && spec == m.guest), "{spec:?} -> {m:?}");
            // HOST::GUEST reads back unless HOST ends in `:` (then only HOST alone, GUEST being HOST, can).
            let canonical = if host.ends_with(':') { host.clone() } else { format!("{host}::{}", m.guest) };
            prop_assert_eq!(parsed(Mount::parse_dir(&canonical), &canonical)?, m);
            Ok(())
        }
    });
}

#[test]
fn volume_flags() {
    let valid = (path(), path(), proptest::sample::select(&["", ":ro", ":rw"][..])).prop_map(|(h, g, o)| format!("{h}:/{g}{o}"));
    check("-v", DEFAULT_CASES, input(valid), |spec| match Mount::parse_volume(&spec) {
        Err(e) => one_line(&e),
        Ok(m) => {
            let host = m.host.to_str().expect("utf-8, as given").to_string();
            prop_assert!(!host.is_empty() && !host.contains(':') && !m.guest.contains(':') && m.guest.starts_with('/'), "{m:?}");
            let canonical = format!("{host}:{}{}", m.guest, if m.read_only { ":ro" } else { "" });
            prop_assert_eq!(parsed(Mount::parse_volume(&canonical), &canonical)?, m);
            Ok(())
        }
    });
}

/// A rule and ways of writing it: the address or block, then nothing, `:PORT`, `:FIRST-LAST` or `:*`.
fn net_rule() -> impl Strategy<Value = (NetRule, String)> {
    let ip = prop_oneof![any::<[u8; 4]>().prop_map(IpAddr::from), any::<[u8; 16]>().prop_map(IpAddr::from)];
    let ports = prop_oneof![
        Just(PortRange::ANY),
        any::<u16>().prop_map(|p| PortRange { first: p, last: p }),
        any::<(u16, u16)>().prop_map(|(a, b)| PortRange { first: a.min(b), last: a.max(b) })
    ];
    (ip, any::<u8>(), any::<bool>(), ports, any::<bool>()).prop_map(|(ip, prefix, block, ports, bare)| {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let addr = if block { format!("{ip}/{}", prefix % (max + 1)) } else { ip.to_string() };
        let net = addr.parse::<ipnet::IpNet>().unwrap_or_else(|_| ipnet::IpNet::from(ip)).trunc();
        let port = match ports {
            PortRange::ANY => "*".to_string(),
            PortRange { first, last } if first == last => first.to_string(),
            PortRange { first, last } => format!("{first}-{last}"),
        };
        let spec = match (ip.is_ipv4(), bare && ports == PortRange::ANY) {
            (_, true) => addr,
            (true, false) => format!("{addr}:{port}"),
            (false, false) => format!("[{addr}]:{port}"),
        };
        (NetRule { net, ports }, spec)
    })
}

#[test]
fn net_flags() {
    let valid = net_rule().prop_map(|(_, s)| s);
    check("--net", DEFAULT_CASES, prop_oneof![input(valid), Just("*".to_string())], |spec| match NetRule::parse_all(&spec) {
        Err(e) => one_line(&e),
        Ok(rules) => {
            prop_assert_eq!(rules.len(), if spec == "*" { 2 } else { 1 });
            for rule in rules {
                prop_assert!(rule.ports.first <= rule.ports.last && rule.net == rule.net.trunc(), "{rule:?}");
                prop_assert_eq!(parsed(rule.to_string().parse::<NetRule>(), &rule.to_string())?, rule);
            }
            Ok(())
        }
    });
}

#[test]
fn well_formed_net_rules_grant_what_they_say() {
    check("--net (well-formed)", DEFAULT_CASES, net_rule(), |(rule, spec)| {
        let got = spec.parse::<NetRule>().map_err(|e| TestCaseError::fail(format!("{spec:?} refused: {e}")))?;
        prop_assert_eq!(got, rule);
        let allow = NetworkPolicy { allow: vec![got], name_lookup: false };
        prop_assert!(allow.allows(SocketAddr::new(rule.net.network(), rule.ports.last), false));
        prop_assert!(allow.allows(SocketAddr::new(rule.net.broadcast(), rule.ports.first), false));
        Ok(())
    });
}

fn outbound_valid() -> impl Strategy<Value = String> {
    let scheme = proptest::sample::select(&["http", "https", "*", "HTTP"][..]);
    let host = prop_oneof![
        "[a-zA-Z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]{1,8}){0,3}",
        "\\*(\\.[a-z]{1,8}){1,2}",
        Just("*".to_string()),
        any::<[u8; 16]>().prop_map(|b| format!("[{}]", std::net::Ipv6Addr::from(b))),
    ];
    let port = proptest::option::of(prop_oneof![any::<u16>().prop_map(|p| p.to_string()), Just("*".to_string())]);
    (scheme, host, port).prop_map(|(s, h, p)| format!("{s}://{h}{}", p.map(|p| format!(":{p}")).unwrap_or_default()))
}

#[test]
fn allow_outbound_flags() {
    check("--allow-outbound", DEFAULT_CASES, input(outbound_valid()), |spec| match spec.parse::<OutboundRule>() {
        Err(e) => one_line(&e),
        Ok(r) => {
            prop_assert!(matches!(r.scheme.as_str(), "http" | "https" | "*"), "{r:?}");
            prop_assert!(!r.host.is_empty() && !r.host.contains(|c: char| c.is_ascii_uppercase() || c == '/' || c == '@'), "{r:?}");
            let host = if r.host.contains(':') { format!("[{}]", r.host) } else { r.host.clone() };
            let port = r.port.map_or("*".to_string(), |p| p.to_string());
            let canonical = format!("{}://{host}:{port}", r.scheme);
            prop_assert_eq!(&parsed(canonical.parse::<OutboundRule>(), &canonical)?, &r);
            if let (false, false, Some(p)) = (r.scheme == "*", r.host.contains('*'), r.port) {
                prop_assert!(r.allows(&r.scheme, &host, p), "{r:?} does not allow what it names");
            }
            Ok(())
        }
    });
}

#[test]
fn kv_flags() {
    let backend =
        proptest::sample::select(&["", "=embedded", "=memory", "=redis://u:SECRETPW@h:6379/0", "=rediss://:SECRETPW@h", "=redix://h"][..]);
    let valid = ("[A-Za-z0-9_-][A-Za-z0-9._-]{0,70}", backend).prop_map(|(n, b)| format!("{n}{b}"));
    check("--kv", DEFAULT_CASES, input(valid), |spec| {
        // NAME=SCHEME://[USER]:SECRETPW@HOST, the password written once: no message or log shows it.
        let url = spec.split_once('=').map(|(_, url)| url).unwrap_or_default();
        let quiet = spec.matches("SECRETPW").count() == 1
            && url
                .split_once("://")
                .is_some_and(|(scheme, rest)| scheme.bytes().all(|b| b.is_ascii_lowercase()) && rest.contains("SECRETPW@"));
        match spec.parse::<KvGrant>() {
            Err(e) => {
                prop_assert!(!quiet || !e.to_string().contains("SECRETPW"), "password in {e}");
                one_line(&e)
            }
            Ok(g) => {
                prop_assert!(policy::check_name("key-value store", &g.name).is_ok(), "{g:?}");
                let backend = match &g.backend {
                    KvBackend::Embedded => "embedded".to_string(),
                    KvBackend::Memory => "memory".to_string(),
                    KvBackend::Redis { url } => {
                        prop_assert!(url.starts_with("redis://") || url.starts_with("rediss://"));
                        url.clone()
                    }
                };
                prop_assert_eq!(parsed(format!("{}={backend}", g.name).parse::<KvGrant>(), "NAME=BACKEND")?, g.clone());
                let logged = format!("{:?}", SandboxPolicy { kv: vec![g], ..SandboxPolicy::default() }.redacted());
                prop_assert!(!quiet || !logged.contains("SECRETPW"), "password in {logged}");
                Ok(())
            }
        }
    });
}

#[test]
fn sizes() {
    let unit = proptest::sample::select(&["", "b", "k", "K", "kb", "KiB", "m", "MB", "mib", "g", "G", "GiB"][..]);
    let valid = (any::<u64>().prop_map(|n| n >> (n % 64)), unit).prop_map(|(n, u)| format!("{n}{u}"));
    check("sizes", DEFAULT_CASES, input(valid), |s| match policy::parse_size(&s) {
        Err(e) => one_line(&e),
        Ok(n) => {
            let t = s.trim();
            let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
            let mult = match t[digits.len()..].to_ascii_lowercase().as_str() {
                "" | "b" => 1u64,
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                _ => 1 << 30,
            };
            prop_assert_eq!(digits.parse::<u64>().ok().and_then(|d| d.checked_mul(mult)), Some(n));
            prop_assert_eq!(parsed(policy::parse_size(&n.to_string()), "the byte count")?, n);
            Ok(())
        }
    });
}

#[test]
fn durations() {
    let unit = proptest::sample::select(&["", "s", "ms", "m", "h"][..]);
    let number = prop_oneof![any::<u32>().prop_map(|n| n.to_string()), (0f64..2e9).prop_map(|f| f.to_string()), "0\\.0{0,12}[0-9]"];
    let valid = (number, unit).prop_map(|(n, u)| format!("{n}{u}"));
    check("durations", DEFAULT_CASES, input(valid), |s| match policy::parse_duration(&s) {
        Err(e) => one_line(&e),
        Ok(d) => {
            prop_assert!(!d.is_zero() && d <= Duration::from_secs(1_000_000_000), "{s:?} -> {d:?}");
            let again = parsed(policy::parse_duration(&format!("{}s", d.as_secs_f64())), "the seconds")?;
            prop_assert!(again.abs_diff(d) <= Duration::from_micros(1), "{d:?} reads back as {again:?}");
            Ok(())
        }
    });
}
