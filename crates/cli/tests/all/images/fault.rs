//! A fault-injecting HTTP proxy in front of a real registry: requests whose path contains a
//! pattern get a canned answer (a status, or a body) a set number of times; everything else is
//! forwarded unchanged. This is how tests get 5xx storms, oversized manifests and unknown media
//! types out of a registry that would never produce them itself.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub enum Answer {
    Status(u16),
    Body { content_type: String, body: Vec<u8> },
}

struct Rule {
    method: &'static str,
    path_contains: String,
    answer: Answer,
    /// How many more times; `usize::MAX` for always.
    remaining: usize,
}

pub struct FaultProxy {
    pub addr: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    hits: Arc<Mutex<Vec<String>>>,
}

impl FaultProxy {
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, h, upstream) = (rules.clone(), hits.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (r, h, upstream) = (r.clone(), h.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &upstream, &r, &h);
                });
            }
        });
        FaultProxy { addr, rules, hits }
    }

    /// Answers `method` requests whose path contains `pattern` with `answer`, `times` times.
    pub fn fail(&self, method: &'static str, pattern: &str, answer: Answer, times: usize) {
        self.rules.lock().unwrap().push(Rule { method, path_contains: pattern.to_string(), answer, remaining: times });
    }

    /// Request lines of the requests that got a canned answer.
    pub fn faults_served(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

fn serve(mut client: TcpStream, upstream: &str, rules: &Mutex<Vec<Rule>>, hits: &Mutex<Vec<String>>) -> std::io::Result<()> {
    // Read the request head, then the body its Content-Length announces.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let first = text.lines().next().unwrap_or_default().to_string();
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or_default().to_string());
    let length: usize = text
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    client.read_exact(&mut body)?;

    let canned = {
        let mut rules = rules.lock().unwrap();
        rules.iter_mut().find(|r| r.method == method && path.contains(&r.path_contains) && r.remaining > 0).map(|r| {
            r.remaining = r.remaining.saturating_sub(1);
            r.answer.clone()
        })
    };
    if let Some(answer) = canned {
        hits.lock().unwrap().push(first.clone());
        let response = match answer {
            Answer::Status(code) => format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes(),
            Answer::Body { content_type, body } => {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                if method != "HEAD" {
                    r.extend_from_slice(&body);
                }
                r
            }
        };
        client.write_all(&response)?;
        return Ok(());
    }
    // Forward with Connection: close, and relay the answer until the upstream closes.
    let mut up = TcpStream::connect(upstream)?;
    let mut forwarded = String::new();
    for line in text.trim_end().lines() {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("host:") {
            continue;
        }
        forwarded.push_str(line);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str(&format!("Host: {upstream}\r\nConnection: close\r\n\r\n"));
    up.write_all(forwarded.as_bytes())?;
    up.write_all(&body)?;
    std::io::copy(&mut up, &mut client)?;
    Ok(())
}
