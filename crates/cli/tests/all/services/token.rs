//! A small Bearer token server for the distribution token flow ("Docker Registry v2 authentication"), so tests can
//! run a registry with `auth.token`: the registry answers 401 with `WWW-Authenticate: Bearer realm=..,service=..,
//! scope=..`, the client fetches a JWT here with its credentials, then retries with `Authorization: Bearer JWT`.
//!
//! - `GET /token?service=S&scope=repository:NAME:pull,push[&scope=...]` with HTTP Basic auth, or the OAuth2 form
//!   `POST /token` (`grant_type=password&username=..&password=..&scope=..&service=..`).
//! - Right credentials: 200 `{"token": JWT, "access_token": JWT, "expires_in": 300}` granting every requested scope.
//!   Wrong, missing or anonymous credentials: 401.
//! - JWTs are RS256, signed with a key made at start by the `openssl` CLI; the self-signed certificate is the
//!   registry's `rootcertbundle`. The header's `kid` is the libtrust key id of that key, which is how distribution
//!   2.8 finds the verification key when the token carries no `x5c` chain.
//!
//! One thread accepts; each connection gets its own thread and one request (`Connection: close`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The `service` the registry is configured with and tokens are issued for (the JWT `aud`).
pub const SERVICE: &str = "wasmcell-test-registry";
/// The token issuer (the JWT `iss`), which the registry checks.
pub const ISSUER: &str = "wasmcell-test-token-issuer";
/// Lifetime of a token, in seconds.
pub const EXPIRES_IN: u64 = 300;

/// A running token server; stopped (and its key deleted) on drop.
pub struct TokenServer {
    addr: String,
    dir: tempfile::TempDir,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

struct State {
    user: String,
    pass: String,
    key: PathBuf,
    kid: String,
    issued: AtomicUsize,
    refused: AtomicUsize,
    scopes: Mutex<Vec<String>>,
}

impl TokenServer {
    /// Starts a token server on 127.0.0.1 that gives tokens to `user`/`pass` only.
    pub fn start(user: &str, pass: &str) -> TokenServer {
        let dir = tempfile::Builder::new().prefix("wasmcell-token-").tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650"])
            .args(["-subj", "/CN=wasmcell-test-token-issuer"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdin(Stdio::null())
            .output()
            .expect("failed to run openssl (is it installed?)");
        super::check("openssl req -x509 -newkey rsa:2048", out);
        // The libtrust key id: sha256 of the DER SubjectPublicKeyInfo, first 240 bits, base32, groups of 4.
        let spki = Command::new("openssl").args(["pkey", "-pubout", "-outform", "DER", "-in"]).arg(&key).output().unwrap();
        let spki = super::check("openssl pkey -pubout -outform DER", spki).stdout;
        let kid = libtrust_key_id(&spki);

        let listener = TcpListener::bind("127.0.0.1:0").expect("failed to bind the token server");
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State {
            user: user.to_string(),
            pass: pass.to_string(),
            key,
            kid,
            issued: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            scopes: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("token-server".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let state = state.clone();
                        let _ = std::thread::Builder::new().name("token-conn".into()).spawn(move || serve(&state, conn));
                    }
                })
                .unwrap()
        };
        TokenServer { addr, dir, state, stop, accept: Some(accept) }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The token endpoint, `http://127.0.0.1:PORT/token`: the registry's `auth.token.realm`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn service(&self) -> &'static str {
        SERVICE
    }

    pub fn issuer(&self) -> &'static str {
        ISSUER
    }

    /// PEM certificate of the signing key: the registry's `auth.token.rootcertbundle`.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The `kid` put in every token header.
    pub fn key_id(&self) -> &str {
        &self.state.kid
    }

    /// How many tokens were issued so far.
    pub fn issued(&self) -> usize {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// How many requests were refused (401 or 400) so far.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Every scope granted so far, in order, as requested (`repository:NAME:pull,push`).
    pub fn scopes(&self) -> Vec<String> {
        self.state.scopes.lock().unwrap().clone()
    }

    /// Issues a token directly, as a successful request would (counts in [`issued`](Self::issued)).
    pub fn token_for(&self, scopes: &[&str]) -> String {
        issue(&self.state, SERVICE, &scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// libtrust's key id (the format distribution 2.8 matches a JWT `kid` against): sha256 of the DER
/// SubjectPublicKeyInfo, truncated to 30 bytes, base32 (RFC 4648, no padding), 12 groups of 4 joined by `:`.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let b32 = base32(&digest[..30]);
    b32.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(":")
}

/// RFC 4648 base32, without padding.
fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in data {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// Makes and signs a JWT granting `scopes` (`type:name:actions`), and counts it.
fn issue(state: &State, service: &str, scopes: &[String]) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            // NAME may itself contain ':' (e.g. a registry host:port), so split off the first and last parts.
            let (ty, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
            Some(serde_json::json!({ "type": ty, "name": name, "actions": actions }))
        })
        .collect();
    let n = state.issued.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let header = serde_json::json!({ "typ": "JWT", "alg": "RS256", "kid": state.kid });
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": state.user,
        "aud": service,
        "exp": now + EXPIRES_IN,
        // a little slack for clock skew between "now" here and in the registry
        "nbf": now - 10,
        "iat": now,
        "jti": format!("wasmcell-test-{}-{n}-{nanos}", std::process::id()),
        "access": access,
    });
    let signing_input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let signature = openssl_sign(&state.key, signing_input.as_bytes());
    state.scopes.lock().unwrap().extend(scopes.iter().cloned());
    format!("{signing_input}.{}", b64url(&signature))
}

/// RSASSA-PKCS1-v1_5 with SHA-256 (JWS `RS256`) by `openssl dgst -sha256 -sign`.
fn openssl_sign(key: &Path, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to run openssl");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = super::check("openssl dgst -sha256 -sign", child.wait_with_output().unwrap());
    out.stdout
}

struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn serve(state: &State, mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(30)));
    let Some(req) = read_request(&mut conn) else {
        let _ = respond(&mut conn, 400, &[], r#"{"details":"malformed request"}"#);
        return;
    };
    let (status, extra, body) = handle(state, &req);
    let _ = respond(&mut conn, status, &extra, &body);
}

fn handle(state: &State, req: &Request) -> (u16, Vec<(&'static str, String)>, String) {
    let refuse = |status: u16, why: &str| {
        state.refused.fetch_add(1, Ordering::SeqCst);
        let extra = if status == 401 { vec![("WWW-Authenticate", r#"Basic realm="wasmcell-test-token""#.to_string())] } else { vec![] };
        (status, extra, serde_json::json!({ "details": why }).to_string())
    };
    if req.path != "/token" {
        return (404, vec![], r#"{"details":"not found"}"#.to_string());
    }
    // Parameters: the query string for GET; the form body (and query) for the OAuth2 POST.
    let mut params = req.query.clone();
    let mut creds = basic_credentials(req.header("authorization"));
    match req.method.as_str() {
        "GET" => {}
        "POST" => {
            let form = parse_query(std::str::from_utf8(&req.body).unwrap_or(""));
            let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            if get("grant_type").as_deref() == Some("password")
                && let (Some(u), Some(p)) = (get("username"), get("password"))
            {
                creds = Some((u, p));
            }
            params.extend(form);
        }
        _ => return (405, vec![], r#"{"details":"method not allowed"}"#.to_string()),
    }
    let Some((user, pass)) = creds else { return refuse(401, "authentication required") };
    if user != state.user || pass != state.pass {
        return refuse(401, "invalid username or password");
    }
    let service = params.iter().find(|(k, _)| k == "service").map(|(_, v)| v.clone()).unwrap_or_else(|| SERVICE.to_string());
    // `scope` may repeat, and one value may hold several space-separated scopes (OAuth2 style).
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect::<Vec<_>>())
        .collect();
    if scopes.iter().any(|s| s.split(':').count() < 3) {
        return refuse(400, "malformed scope");
    }
    let token = issue(state, &service, &scopes);
    let body = serde_json::json!({ "token": token, "access_token": token, "expires_in": EXPIRES_IN });
    (200, vec![], body.to_string())
}

fn basic_credentials(header: Option<&str>) -> Option<(String, String)> {
    let (scheme, value) = header?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn read_request(conn: &mut TcpStream) -> Option<Request> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = super::find(&raw, b"\r\n\r\n") {
            break i;
        }
        if raw.len() > 64 * 1024 {
            return None;
        }
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = std::str::from_utf8(&raw[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let len =
        headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.parse::<usize>().ok()).unwrap_or(0);
    if len > 1024 * 1024 {
        return None;
    }
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&buf[..n]);
    }
    body.truncate(len);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Some(Request { method, path: percent_decode(path), query: parse_query(query), headers, body })
}

fn respond(conn: &mut TcpStream, status: u16, extra: &[(&str, String)], body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Unknown",
    };
    let mut head =
        format!("HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

/// `a=1&b=x%3Ay` (also form bodies, `+` for space) into pairs.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::{basic_auth, http_get, http_request};

    #[test]
    fn base32_matches_rfc4648_vectors() {
        // RFC 4648 §10, without the padding.
        for (input, want) in
            [("", ""), ("f", "MY"), ("fo", "MZXQ"), ("foo", "MZXW6"), ("foob", "MZXW6YQ"), ("fooba", "MZXW6YTB"), ("foobar", "MZXW6YTBOI")]
        {
            assert_eq!(base32(input.as_bytes()), want, "{input:?}");
        }
        let kid = libtrust_key_id(b"anything");
        assert_eq!(kid.len(), 12 * 4 + 11, "{kid}");
        assert_eq!(kid.split(':').count(), 12, "{kid}");
    }

    #[test]
    fn token_server_grants_scopes_to_the_right_user_only() {
        let ts = TokenServer::start("alice", "s3cret");
        let path = format!("/token?service={SERVICE}&scope=repository%3Awasmcell%2Fhello%3Apull%2Cpush");

        let anonymous = http_get(ts.addr(), &path, &[]);
        assert_eq!(anonymous.status, 401, "{}", anonymous.text());
        let wrong = http_get(ts.addr(), &path, &[("Authorization", &basic_auth("alice", "nope"))]);
        assert_eq!(wrong.status, 401, "{}", wrong.text());
        let stranger = http_get(ts.addr(), &path, &[("Authorization", &basic_auth("bob", "s3cret"))]);
        assert_eq!(stranger.status, 401, "{}", stranger.text());
        assert_eq!(ts.issued(), 0);
        assert_eq!(ts.refused(), 3);

        let ok = http_get(ts.addr(), &path, &[("Authorization", &basic_auth("alice", "s3cret"))]);
        assert_eq!(ok.status, 200, "{}", ok.text());
        let json = ok.json();
        let token = json["token"].as_str().unwrap();
        assert_eq!(json["access_token"].as_str(), Some(token));
        assert_eq!(json["expires_in"], 300);
        assert_eq!(ts.issued(), 1);
        assert_eq!(ts.scopes(), ["repository:wasmcell/hello:pull,push"]);

        // The JWT: RS256 with the libtrust kid, and the claims distribution checks.
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{token}");
        let decode = |s: &str| -> serde_json::Value {
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap()
        };
        let header = decode(parts[0]);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], ts.key_id());
        let claims = decode(parts[1]);
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["aud"], SERVICE);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["access"], serde_json::json!([{ "type": "repository", "name": "wasmcell/hello", "actions": ["pull", "push"] }]));
        assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());

        // The signature verifies with the certificate's public key.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("input"), format!("{}.{}", parts[0], parts[1])).unwrap();
        std::fs::write(dir.path().join("sig"), base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        let pubkey = Command::new("openssl").args(["x509", "-pubkey", "-noout", "-in"]).arg(ts.cert_path()).output().unwrap();
        std::fs::write(dir.path().join("pub.pem"), crate::services::check("openssl x509 -pubkey", pubkey).stdout).unwrap();
        let verify = Command::new("openssl")
            .current_dir(dir.path())
            .args(["dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig", "input"])
            .output()
            .unwrap();
        crate::services::check("openssl dgst -verify", verify);

        // The OAuth2 password grant works too, with several scopes in one value.
        let form = format!(
            "grant_type=password&username=alice&password=s3cret&service={SERVICE}&scope=repository%3Aa%3Apull+repository%3Ab%3Apull%2Cpush"
        );
        let posted =
            http_request(ts.addr(), "POST", "/token", &[("Content-Type", "application/x-www-form-urlencoded")], form.as_bytes()).unwrap();
        assert_eq!(posted.status, 200, "{}", posted.text());
        assert_eq!(ts.issued(), 2);
        assert_eq!(ts.scopes()[1..], ["repository:a:pull", "repository:b:pull,push"]);
    }
}
