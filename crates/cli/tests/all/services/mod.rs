//! Real services for end-to-end tests: an OCI registry (`docker-registry`, distribution 2.8) with no auth,
//! htpasswd or token auth, the token server for the latter, containerd 1.6, and `skopeo` as a second client.
//!
//! Everything listens on 127.0.0.1 and lives in a private temp dir. Children are started through one long-lived
//! spawner thread in their own session (`setsid`) with `PR_SET_PDEATHSIG = SIGKILL`, so a crashed or interrupted
//! test run leaves nothing behind; `Drop` stops each service by process group and waits for it.
//!
//! Why a spawner thread: the kernel sends the parent-death signal when the *thread* that forked the child exits,
//! not the process. Tests run on short-lived threads, so a service shared between tests (a `static`) would be
//! killed when the test that happened to start it finished. Forking from a thread that lives as long as the
//! process ties the child's life to the test binary's.
//!
//! See GUIDE.md §4 for the packages this needs (`docker-registry`, `skopeo`, `containerd`, `runc`,
//! `apache2-utils`, `openssl`).

#![allow(dead_code)] // a toolbox for the end-to-end tests; not every helper is used by every build

pub mod containerd;
pub mod cri;
pub mod redis;
pub mod registry;
pub mod token;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// Path of Debian's skopeo.
pub const SKOPEO: &str = "/usr/bin/skopeo";

/// Runs `skopeo --insecure-policy ARGS`.
///
/// Unless the caller passes a `*tls-verify*` flag itself, TLS verification is turned off for the `docker://`
/// references (our registries speak plain HTTP on 127.0.0.1): `--src-tls-verify=false` / `--dest-tls-verify=false`
/// for `copy` (source and destination are the last two arguments) and `--tls-verify=false` for commands that take
/// one image (`inspect`, `delete`, `list-tags`, ...).
pub fn skopeo(args: &[&str]) -> Output {
    let mut full: Vec<String> = vec!["--insecure-policy".into()];
    let caller_chose_tls = args.iter().any(|a| a.contains("tls-verify"));
    match args.split_first() {
        Some((sub, rest)) if !caller_chose_tls => {
            full.push(sub.to_string());
            let docker = |a: Option<&&str>| a.is_some_and(|a| a.starts_with("docker://"));
            if matches!(*sub, "copy" | "sync") {
                if rest.len() >= 2 && docker(rest.get(rest.len() - 2)) {
                    full.push("--src-tls-verify=false".into());
                }
                if docker(rest.last()) {
                    full.push("--dest-tls-verify=false".into());
                }
            } else if docker(rest.last()) {
                full.push("--tls-verify=false".into());
            }
            full.extend(rest.iter().map(|a| a.to_string()));
        }
        _ => full.extend(args.iter().map(|a| a.to_string())),
    }
    Command::new(SKOPEO)
        .args(&full)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("failed to run {SKOPEO} (is Debian's skopeo installed?): {e}"))
}

/// Asserts that a helper command succeeded, printing its streams otherwise; returns it for further checks.
#[track_caller]
pub fn check(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, release it). Callers retry when
/// something else takes it before they bind.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("failed to bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// Spawns `cmd` as a background service: in a new session (its own process group, id = its pid) and with
/// `SIGKILL` as parent-death signal, forked from a thread that lives as long as the test binary.
pub fn spawn_service(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    let setup = move || -> io::Result<()> {
        // Only async-signal-safe calls here: we are between fork and exec.
        // SAFETY: setsid, prctl, getppid and _exit are async-signal-safe and touch no Rust state.
        unsafe {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then nobody would ever signal us.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe calls (see above).
    unsafe {
        cmd.pre_exec(setup);
    }

    type Job = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("services-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("failed to start the spawner thread");
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner.send((cmd, reply_tx)).expect("spawner thread is gone");
    reply_rx.recv().expect("spawner thread is gone")
}

/// Stops a service started by [`spawn_service`]: `SIGTERM` to its process group, up to `grace` for it to exit,
/// then `SIGKILL` to the group; waits for the leader. `grace` zero means `SIGKILL` straight away.
///
/// The leader is only reaped at the very end, so its pid (the group id) cannot be reused by an unrelated process
/// while we signal the group.
pub fn stop_group(child: &mut Child, grace: Duration) {
    let pid = child.id() as libc::pid_t;
    match exited_unreaped(pid) {
        None => return, // already reaped (by an earlier try_wait): its group id may belong to someone else now
        Some(false) if !grace.is_zero() => {
            // SAFETY: plain syscall; the group id is the pid of our own child, which we have not reaped.
            unsafe { libc::kill(-pid, libc::SIGTERM) };
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && exited_unreaped(pid) == Some(false) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Some(_) => {}
    }
    // Also reaches members of the group that outlived the leader.
    // SAFETY: as above.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let _ = child.wait();
}

/// Whether our child `pid` has exited, without reaping it; `None` if it is not our unreaped child any more.
fn exited_unreaped(pid: libc::pid_t) -> Option<bool> {
    // SAFETY: waitid writes into the zeroed siginfo_t we own; WNOWAIT leaves the child waitable.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        if libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) != 0 {
            return None;
        }
        Some(info.si_pid() != 0)
    }
}

/// Polls `ready` every 50 ms until it returns `Some`, or `None` once `timeout` has passed.
pub fn wait_for<T>(timeout: Duration, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = ready() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `Basic base64(user:pass)`, the value of an `Authorization` header.
pub fn basic_auth(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

/// A complete HTTP response (body de-chunked).
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), with a 30 s I/O timeout.
pub fn http_request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: wasmcell-tests\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("malformed HTTP response: {:?}", String::from_utf8_lossy(&raw))))
}

/// `GET path` on `addr`; panics on I/O errors (use [`http_request`] to handle them).
#[track_caller]
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request(addr, "GET", path, headers, b"").unwrap_or_else(|e| panic!("GET http://{addr}{path} failed: {e}"))
}

fn parse_response(raw: &[u8], head: bool) -> Option<HttpResponse> {
    let end = find(raw, b"\r\n\r\n")?;
    let head_text = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let rest = &raw[end + 4..];
    let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_str());
    let body = if head {
        Vec::new()
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        rest.get(..len)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(HttpResponse { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
