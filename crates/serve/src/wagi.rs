//! WAGI: the request as CGI environment variables and stdin, the response from stdout.
//!
//! The module's stdout may start with CGI headers (`Content-Type`, `Status: 404 Not Found`,
//! `Location`, any other header) and a blank line; output without a header block is all body
//! (`text/plain`), so a plain command-line program answers too. A non-zero exit is a 500.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use wasmcell_runtime::Grants;
use wasmcell_runtime::engine::{Failure, RequestLimits, WagiProgram};

use crate::ServeBody;

pub(crate) async fn handle(
    handler: &dyn WagiProgram,
    req: Request<Incoming>,
    peer: SocketAddr,
    local: SocketAddr,
    grants: &Grants,
    limits: RequestLimits,
) -> Result<Response<ServeBody>, Failure> {
    let (parts, body) = req.into_parts();
    let max = limits.max_body.unwrap_or(u64::MAX);
    // Reading the body counts against the request's deadline: a client that sends it slowly must not
    // hold the instance slot for longer than a guest could.
    let started = std::time::Instant::now();
    let collect = Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX)).collect();
    let collected = match limits.timeout {
        Some(t) => tokio::time::timeout(t, collect).await.map_err(|_| Failure::Timeout(t))?,
        None => collect.await,
    };
    let body = match collected {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(Failure::BodyTooLarge(max)),
        Err(e) => return Err(Failure::Host(format!("failed to read the request body: {e}"))),
    };
    let env = cgi_env(&parts, &body, peer, local);
    let left = limits.timeout.map(|t| t.saturating_sub(started.elapsed()));
    let out = handler.handle(body, &env, grants, left).await.map_err(|f| match f {
        Failure::Timeout(_) => Failure::Timeout(limits.timeout.unwrap_or_default()),
        f => f,
    })?;
    if out.exit_code != 0 {
        return Err(Failure::Exit(out.exit_code));
    }
    Ok(parse_output(out.stdout))
}

/// RFC 3875's meta-variables, plus WAGI's `X_FULL_URL` and `X_MATCHED_ROUTE`.
fn cgi_env(parts: &http::request::Parts, body: &Bytes, peer: SocketAddr, local: SocketAddr) -> Vec<(String, String)> {
    let host = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default().to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let mut env = vec![
        ("GATEWAY_INTERFACE".to_string(), "CGI/1.1".to_string()),
        ("SERVER_SOFTWARE".into(), concat!("wasmcell/", env!("CARGO_PKG_VERSION")).into()),
        ("SERVER_PROTOCOL".into(), format!("{:?}", parts.version)),
        ("SERVER_NAME".into(), local.ip().to_string()),
        ("SERVER_PORT".into(), local.port().to_string()),
        ("REQUEST_METHOD".into(), parts.method.to_string()),
        ("SCRIPT_NAME".into(), String::new()),
        ("PATH_INFO".into(), path.clone()),
        ("PATH_TRANSLATED".into(), path.clone()),
        ("QUERY_STRING".into(), query.clone()),
        ("REMOTE_ADDR".into(), peer.ip().to_string()),
        ("REMOTE_HOST".into(), peer.ip().to_string()),
        ("CONTENT_LENGTH".into(), body.len().to_string()),
        ("X_MATCHED_ROUTE".into(), "/...".into()),
        ("X_FULL_URL".into(), format!("http://{host}{path}{}", if query.is_empty() { String::new() } else { format!("?{query}") })),
    ];
    if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        env.push(("CONTENT_TYPE".into(), ct.to_string()));
    }
    for (name, value) in &parts.headers {
        if name == http::header::AUTHORIZATION || name == http::header::CONTENT_TYPE || name == http::header::CONTENT_LENGTH {
            continue;
        }
        if let Ok(v) = value.to_str() {
            env.push((format!("HTTP_{}", name.as_str().to_ascii_uppercase().replace('-', "_")), v.to_string()));
        }
    }
    env
}

/// Splits CGI output into headers and body.
fn parse_output(out: Bytes) -> Response<ServeBody> {
    let (head, body) = split_head(&out);
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed_unsync());
    let mut has_type = false;
    if let Some(head) = head {
        for line in head.lines() {
            let Some((name, value)) = line.split_once(':') else { continue };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("status") {
                let code = value.split_whitespace().next().and_then(|c| c.parse::<u16>().ok());
                if let Some(status) = code.and_then(|c| StatusCode::from_u16(c).ok()) {
                    *resp.status_mut() = status;
                }
                continue;
            }
            if name.eq_ignore_ascii_case("location") && resp.status() == StatusCode::OK {
                *resp.status_mut() = StatusCode::FOUND;
            }
            has_type |= name.eq_ignore_ascii_case("content-type");
            if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                resp.headers_mut().append(n, v);
            }
        }
    }
    if !has_type {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    resp
}

/// The header block (if the output starts with one) and the body.
fn split_head(out: &Bytes) -> (Option<String>, Bytes) {
    let text = &out[..out.len().min(64 << 10)];
    let end = find(text, b"\r\n\r\n").map(|i| (i, 4)).or_else(|| find(text, b"\n\n").map(|i| (i, 2)));
    if let Some((i, sep)) = end
        && let Ok(head) = std::str::from_utf8(&text[..i])
    {
        let looks_like_headers = !head.is_empty()
            && head.lines().all(|l| {
                l.split_once(':').is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            });
        if looks_like_headers {
            return (Some(head.to_string()), out.slice(i + sep..));
        }
    }
    (None, out.clone())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_output() {
        let (head, body) = split_head(&Bytes::from_static(b"Content-Type: text/html\nStatus: 404 Not Found\n\n<p>gone</p>"));
        assert_eq!(head.as_deref(), Some("Content-Type: text/html\nStatus: 404 Not Found"));
        assert_eq!(&body[..], b"<p>gone</p>");
        let (head, body) = split_head(&Bytes::from_static(b"hello from C\n"));
        assert!(head.is_none());
        assert_eq!(&body[..], b"hello from C\n");
        let (head, _) = split_head(&Bytes::from_static(b"not a header line\n\nbody"));
        assert!(head.is_none());
        let resp = parse_output(Bytes::from_static(b"Status: 404 Not Found\r\nX-A: b\r\n\r\nx"));
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()["x-a"], "b");
        assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    }
}
