//! `wasmcell serve` end to end: real HTTP over 127.0.0.1, wasi:http guests built from C, every
//! limit, isolation between requests, outbound allow-list, graceful drain, metrics, and WAGI.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::services::{HttpResponse, http_request};
use crate::{Cell, guests};

/// A running `wasmcell serve`; stopped (SIGKILL) on drop unless stopped gracefully first.
pub struct Served {
    child: Child,
    pub addr: String,
    _cell: Cell,
}

impl Served {
    pub fn start(file: &str, flags: &[&str]) -> Served {
        let cell = Cell::new();
        let mut c = cell.command();
        c.args(["serve", "--addr", "127.0.0.1:0"]).args(flags).arg(file);
        Served::spawn(c, cell)
    }

    /// Spawns a prepared `wasmcell serve` command and waits for its address.
    pub fn spawn(mut c: std::process::Command, cell: Cell) -> Served {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        // The first stdout line is `serving FILE on http://ADDR`.
        let mut stdout = child.stdout.take().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let Some(addr) = line.rsplit("http://").next().filter(|_| line.starts_with("serving")) else {
            let _ = child.kill();
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("serve did not start: {line}\n{err}");
        };
        Served { addr: addr.trim().to_string(), child, _cell: cell }
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[], b"")
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        http_request(&self.addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn metrics(&self, metrics_addr: &str) -> String {
        http_request(metrics_addr, "GET", "/metrics", &[], b"").unwrap().text()
    }

    /// The metrics once the live-instance gauge is back to 0: an instance is counted until its store
    /// is gone, which is just after its response reached the client. Fails after 5 s.
    pub fn metrics_when_idle(&self, metrics_addr: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let m = self.metrics(metrics_addr);
            if metric(&m, "wasmcell_live_instances") == 0.0 {
                return m;
            }
            assert!(Instant::now() < deadline, "instances still live 5 s after the last response:\n{m}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits; returns the exit code and stderr.
    pub fn terminate(mut self) -> (i32, String) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (status.code().unwrap_or(-1), err)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The value of a counter or gauge line `NAME{LABELS} VALUE` in a Prometheus text.
pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

#[test]
fn hello_over_http1_and_h2c_with_a_fresh_instance_per_request() {
    let s = Served::start(guests::HTTP_HELLO, &[]);
    let r = s.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello from wasi:http\n");
    // HTTP/2 over cleartext (prior knowledge), through curl.
    let out = std::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_version} %{http_code}", &format!("http://{}/", s.addr)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from wasi:http\n\n2 200");

    let counter = Served::start(guests::HTTP_COUNTER, &[]);
    for _ in 0..5 {
        assert_eq!(counter.get("/").text(), "1\n", "state leaked between requests");
    }
}

#[test]
fn bodies_stream_both_ways() {
    let s = Served::start(guests::HTTP_ECHO, &["--max-body", "64M"]);
    let body: Vec<u8> = (0..20u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let dir = crate::scratch();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::write(&input, &body).unwrap();
    // curl reads and writes at once, as the guest does: 20 MiB cannot sit in socket buffers.
    let out = std::process::Command::new("curl")
        .args(["-s", "-H", "Expect:", "-D", "-", "-o"])
        .arg(&output)
        .arg("--data-binary")
        .arg(format!("@{}", input.display()))
        .arg(format!("http://{}/some/path?x=1", s.addr))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-method: post") && head.contains("x-path: /some/path?x=1"), "{head}");
    let echoed = std::fs::read(&output).unwrap();
    assert!(echoed == body, "echoed {} bytes, sent {}", echoed.len(), body.len());
}

#[test]
fn a_trap_costs_only_its_own_request() {
    let metrics = free_addr();
    let s = Served::start(guests::HTTP_TRAP, &["--metrics-addr", &metrics]);
    for _ in 0..3 {
        let r = s.get("/");
        assert_eq!(r.status, 500);
        assert!(r.text().contains("trap"), "{}", r.text());
    }
    assert_eq!(metric(&s.metrics(&metrics), "wasmcell_traps_total"), 3.0);
    // The host is unharmed: a well-behaved app on the same binary keeps answering alongside.
    let hello = Served::start(guests::HTTP_HELLO, &[]);
    assert_eq!(hello.get("/").status, 200);
    assert_eq!(s.get("/").status, 500);
}

#[test]
fn timeouts_and_memory_caps_are_per_request() {
    let metrics = free_addr();
    let spin = Served::start(guests::HTTP_SPIN, &["--timeout", "1s", "--metrics-addr", &metrics]);
    let started = Instant::now();
    let r = spin.get("/");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // Two spinning requests at once both end at their deadline; the server stays responsive.
    let a = std::thread::spawn({
        let addr = spin.addr.clone();
        move || http_request(&addr, "GET", "/", &[], b"").unwrap().status
    });
    assert_eq!(spin.get("/").status, 504);
    assert_eq!(a.join().unwrap(), 504);
    assert_eq!(metric(&spin.metrics(&metrics), "wasmcell_timeouts_total"), 3.0);

    let hog = Served::start(guests::HTTP_MEMHOG, &["--memory", "32M", "--metrics-addr", &free_addr()]);
    let r = hog.get("/");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("memory limit"), "{}", r.text());
    assert_eq!(hog.get("/").status, 500, "the next request gets a fresh instance and its own cap");
}

#[test]
fn request_bodies_over_the_limit_get_413() {
    let s = Served::start(guests::HTTP_ECHO, &["--max-body", "1K"]);
    assert_eq!(s.request("POST", "/", &[], &[b'a'; 1000]).status, 200);
    assert_eq!(s.request("POST", "/", &[], &[b'a'; 2048]).status, 413);
    // Without a Content-Length (chunked), the limit holds while streaming.
    let mut stream = TcpStream::connect(&s.addr).unwrap();
    write!(stream, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    for _ in 0..4 {
        write!(stream, "200\r\n{}\r\n", "b".repeat(0x200)).unwrap();
    }
    write!(stream, "0\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    // A guest that streams its answer has sent 200 before the body passes the limit: then the
    // answer is cut off instead (no complete echo, no final chunk).
    let complete = answer.ends_with("0\r\n\r\n") && answer.matches('b').count() >= 2048;
    assert!(answer.starts_with("HTTP/1.1 413") || (answer.starts_with("HTTP/1.1 200") && !complete), "{answer}");
}

#[test]
fn requests_beyond_concurrency_wait_and_only_a_full_queue_gets_503() {
    let metrics = free_addr();
    let s = Served::start(guests::HTTP_SLOW, &["--max-concurrency", "2", "--max-queue", "2", "--metrics-addr", &metrics]);
    let spawn = |n: usize| -> Vec<std::thread::JoinHandle<u16>> {
        (0..n)
            .map(|_| {
                let addr = s.addr.clone();
                std::thread::spawn(move || http_request(&addr, "GET", "/?ms=1500", &[], b"").unwrap().status)
            })
            .collect()
    };
    // Four: two run, two wait; all succeed.
    let statuses: Vec<u16> = spawn(4).into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(statuses, vec![200; 4]);
    // Six: two run, two wait, two are refused.
    let handles = spawn(6);
    std::thread::sleep(Duration::from_millis(500));
    let m = s.metrics(&metrics);
    assert_eq!(metric(&m, "wasmcell_live_instances"), 2.0, "{m}");
    assert_eq!(metric(&m, "wasmcell_queue_depth"), 2.0, "{m}");
    let mut statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 200, 200, 503, 503]);
    let m = s.metrics_when_idle(&metrics);
    assert_eq!(metric(&m, "wasmcell_rejected_total"), 2.0);
    assert_eq!(metric(&m, "wasmcell_http_requests_total{status=\"200\"}"), 8.0);
    assert_eq!(metric(&m, "wasmcell_http_requests_total{status=\"503\"}"), 2.0);
    assert_eq!(metric(&m, "wasmcell_live_instances"), 0.0);
    assert!(m.contains("wasmcell_http_request_duration_seconds_bucket"), "{m}");
}

/// A tiny upstream answering every request with `upstream ok`.
fn upstream() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nupstream ok\n");
        }
    });
    addr
}

#[test]
fn outbound_http_is_denied_unless_allowed() {
    let up = upstream();
    let url = format!("http://{up}/x");
    let denied = Served::start(guests::HTTP_FETCH, &[]);
    let r = denied.request("GET", "/", &[("x-fetch-url", &url)], b"");
    assert_eq!((r.status, r.text()), (502, "error: HTTP-request-denied\n".to_string()));

    let allowed = Served::start(guests::HTTP_FETCH, &["--allow-outbound", &format!("http://{up}")]);
    let r = allowed.request("GET", "/", &[("x-fetch-url", &url)], b"");
    assert_eq!((r.status, r.text()), (200, "upstream ok\n".to_string()));
    // Another port on the same host is still denied.
    let other = format!("http://127.0.0.1:{}/x", free_addr().rsplit(':').next().unwrap());
    let r = allowed.request("GET", "/", &[("x-fetch-url", &other)], b"");
    assert_eq!(r.text(), "error: HTTP-request-denied\n");
    let bad = Cell::new().run(&["serve", "--allow-outbound", "example.com", guests::HTTP_FETCH]);
    bad.expect_code(125).expect_error_line("--allow-outbound");
}

#[test]
fn sigterm_drains_requests_in_flight_then_exits_0() {
    let s = Served::start(guests::HTTP_SLOW, &["--drain-timeout", "10s"]);
    let addr = s.addr.clone();
    let slow = std::thread::spawn(move || {
        let r = http_request(&addr, "GET", "/?ms=1500", &[], b"").unwrap();
        (r.status, r.text())
    });
    std::thread::sleep(Duration::from_millis(300));
    let addr = s.addr.clone();
    let started = Instant::now();
    let (code, stderr) = s.terminate();
    assert_eq!(code, 0, "{stderr}");
    assert!(started.elapsed() >= Duration::from_millis(900), "exited before the request finished");
    assert_eq!(slow.join().unwrap(), (200, "slow done\n".to_string()));
    assert!(TcpStream::connect(&addr).is_err(), "still accepting after shutdown");
}

#[test]
fn env_and_wagi_modules() {
    let s = Served::start(guests::HTTP_ENV, &["--env", "GREETING=hi"]);
    assert_eq!(s.get("/").text(), "hi\n");
    let s = Served::start(guests::HTTP_ENV, &[]);
    assert_eq!(s.get("/").text(), "unset\n", "no environment unless granted");

    // A WASI preview 1 module answers CGI-style: the plain C programs `run` takes.
    let hello = Served::start(guests::HELLO_C, &[]);
    let r = hello.get("/");
    assert_eq!((r.status, r.text()), (200, "hello from C\n".to_string()));
    let cat = Served::start(guests::CAT_C, &[]);
    assert_eq!(cat.request("POST", "/", &[], b"echo me").text(), "echo me");
    let env = Served::start(guests::ENV_C, &[]);
    let text = env.get("/a/b?c=d").text();
    assert!(text.contains("REQUEST_METHOD=GET\n") && text.contains("PATH_INFO=/a/b\n") && text.contains("QUERY_STRING=c=d\n"), "{text}");
}

#[test]
fn bad_serve_input() {
    let cell = Cell::new();
    cell.run(&["serve", guests::HELLO_COMPONENT]).expect_code(126).expect_error_line("wasi:http/incoming-handler");
    cell.run(&["serve", "/no/such/file.wasm"]).expect_code(127);
    cell.run(&["serve", "--max-concurrency", "0", guests::HTTP_HELLO]).expect_code(125);
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    cell.run(&["serve", "--addr", &addr, guests::HTTP_HELLO]).expect_code(125).expect_error_line("cannot listen");
}

#[test]
fn serve_an_image_reference() {
    let registry = crate::services::registry::Registry::start();
    let cell = Cell::new();
    let image = format!("{}/team/hello-http:1", registry.addr());
    cell.run(&["push", guests::HTTP_HELLO, &image]).expect_ok();
    let config = crate::services::check("skopeo", crate::services::skopeo(&["inspect", "--raw", "--config", &format!("docker://{image}")]));
    let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
    let exports = config["component"]["exports"].to_string();
    assert!(exports.contains("wasi:http/incoming-handler@0.2"), "{exports}");
    let s = Served::start(&image, &[]);
    assert_eq!(s.get("/").text(), "hello from wasi:http\n");
}

#[test]
fn the_instance_pool_shrinks_to_what_the_host_can_reserve() {
    // 1000 instances of 128 MiB want ~128 GiB of address space; with a 16 GiB address-space limit
    // the pool is halved until it fits, and serving works the same.
    let cell = Cell::new();
    let mut c = cell.command();
    c.args(["serve", "--addr", "127.0.0.1:0", "--max-concurrency", "1000", guests::HTTP_HELLO]);
    // SAFETY: setrlimit in the child before exec; async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        c.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 16 << 30, rlim_max: 16 << 30 };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let served = Served::spawn(c, cell);
    assert_eq!(served.get("/").status, 200, "serving under a 16 GiB address-space limit");
    let (_, err) = served.terminate();
    assert!(err.contains("could only reserve a pool of"), "{err}");
}

/// Reads until the server closes the connection (or `limit` passes); tells how long it took.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(start.elapsed()),
            Err(_) => return None,
        }
    }
}

#[test]
fn half_sent_requests_cannot_hold_the_server() {
    // Slowloris: clients that send half a request line, or nothing, used to hold their connection (and
    // a file descriptor) for ever. Now the header timeout closes them, and while they are open the
    // connection cap keeps them from taking every socket.
    let s = Served::start(guests::HTTP_HELLO, &["--header-timeout", "1s", "--max-connections", "4"]);
    let mut slow: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&s.addr).unwrap()).collect();
    for c in &mut slow[..2] {
        c.write_all(b"GET / HT").unwrap();
    }
    // A healthy client arriving behind them is answered once they are cut off.
    let addr = s.addr.clone();
    let healthy = std::thread::spawn(move || {
        let start = Instant::now();
        (crate::services::http_get(&addr, "/", &[]).status, start.elapsed())
    });
    for c in &mut slow {
        let took = closed_within(c, Duration::from_secs(10)).expect("a half-sent request was never cut off");
        assert!(took < Duration::from_secs(5), "cut off after {took:?}");
    }
    let (status, took) = healthy.join().unwrap();
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(8), "the healthy request waited {took:?}");
    // An idle keep-alive connection closes after the same timeout.
    let mut idle = TcpStream::connect(&s.addr).unwrap();
    idle.write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr).as_bytes()).unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(10)).expect("an idle keep-alive connection stayed open");
    assert!(took < Duration::from_secs(5), "idle connection closed after {took:?}");
}

#[test]
fn a_client_that_never_reads_its_response_is_cut_off() {
    // The echo guest streams the body back; a client that sends and never reads used to hold the
    // instance for ever. Now a write that waits longer than --write-timeout ends the connection.
    let metrics = free_addr();
    let s = Served::start(guests::HTTP_ECHO, &["--write-timeout", "1s", "--metrics-addr", &metrics]);
    let mut c = TcpStream::connect(&s.addr).unwrap();
    let body = vec![b'x'; 16 << 20];
    let head = format!("POST / HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n", s.addr, body.len());
    c.write_all(head.as_bytes()).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let sender = std::thread::spawn(move || {
        let _ = c.write_all(&body); // blocks once nobody reads the echo; fails when the server closes
        c
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut saw_live = false;
    loop {
        let live = metric(&s.metrics(&metrics), "wasmcell_live_instances");
        saw_live |= live > 0.0;
        if saw_live && live == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the instance of a client that never reads is still live (saw live: {saw_live})");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(sender.join().unwrap());
    assert_eq!(s.get("/").status, 200, "the server goes on");
}

#[test]
fn a_slow_request_body_counts_against_the_wagi_timeout() {
    // One instance slot, and a client that declares a body and sends a little of it: the slot used to be
    // held for as long as the client stayed connected. Now the body's read time counts against
    // --timeout, the slow client gets 504, and the next request is served.
    let s = Served::start(guests::CAT_C, &["--timeout", "1s", "--max-concurrency", "1"]);
    let mut slow = TcpStream::connect(&s.addr).unwrap();
    slow.write_all(format!("POST / HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\n\r\nonly this", s.addr).as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let r = s.request("POST", "/", &[], b"next");
    assert_eq!((r.status, r.text()), (200, "next".to_string()));
    assert!(start.elapsed() < Duration::from_secs(5), "the next request waited {:?}", start.elapsed());
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = vec![0u8; 64];
    let n = slow.read(&mut answer).unwrap_or(0);
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 504"), "{:?}", String::from_utf8_lossy(&answer[..n]));
}

/// `kB` of a `/proc/PID/status` line (`VmRSS`, `VmHWM`).
fn status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap()
}

/// Healthy requests answered (all 200, or it panics) by `clients` threads in `window`.
fn healthy_rate(addr: &str, clients: usize, window: Duration) -> f64 {
    let counts: Vec<_> = (0..clients)
        .map(|_| {
            let addr = addr.to_string();
            std::thread::spawn(move || {
                let (start, mut n) = (Instant::now(), 0u32);
                while start.elapsed() < window {
                    let r = http_request(&addr, "GET", "/", &[], b"").unwrap();
                    assert_eq!(r.status, 200, "a healthy request failed: {}", r.text());
                    n += 1;
                }
                n
            })
        })
        .collect();
    counts.into_iter().map(|c| c.join().unwrap()).sum::<u32>() as f64 / window.as_secs_f64()
}

/// Eight connections of looping, trapping and memory-hogging requests beside healthy ones on the same
/// server. Spinning guests yielded at every epoch tick, yet starved the healthy ones (3% of their
/// rate; wasmtime's own yield wakes at once and tokio polls sockets only every 61 task polls). Now
/// they yield behind the sockets and take turns in the slow lane (engine/wasmtime/pacing.rs).
#[test]
fn healthy_requests_keep_their_pace_beside_spinning_trapping_and_memhog_ones() {
    let s = Served::start(guests::HTTP_MIXED, &["--timeout", "1s", "--memory", "64M"]);
    let window = Duration::from_secs(3);
    healthy_rate(&s.addr, 2, Duration::from_millis(500)); // warm
    let baseline = healthy_rate(&s.addr, 2, window);
    let rss_before = status_kib(s.pid(), "VmRSS");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hostile: Vec<_> = (0..8)
        .map(|i| {
            let (addr, stop) = (s.addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                for path in ["/spin", "/trap", "/memhog"].iter().cycle().skip(i % 3) {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let r = http_request(&addr, "GET", path, &[], b"");
                    statuses.push((*path, r.map(|r| r.status).map_err(|e| e.to_string())));
                }
                statuses
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let under_load = healthy_rate(&s.addr, 2, window);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hostile {
        for (path, status) in h.join().unwrap() {
            // A memory hog that is still short of its cap at the deadline times out.
            let want: &[u16] = match path {
                "/spin" => &[504],
                "/trap" => &[500],
                _ => &[500, 504],
            };
            assert!(status.as_ref().is_ok_and(|s| want.contains(s)), "{path}: {status:?}");
        }
    }
    let share = under_load / baseline;
    eprintln!("healthy: {baseline:.0} req/s alone, {under_load:.0} req/s beside 8 hostile connections ({:.0}%)", 100.0 * share);
    // bench/soak measures the real target (>= 80%, release build, wrk); a debug build sharing the
    // machine with other tests gets a margin. Before the fix this was 3%.
    assert!(share >= 0.4, "healthy requests kept {:.0}% of their rate", 100.0 * share);
    let rss_after = status_kib(s.pid(), "VmRSS");
    assert!(rss_after < rss_before + (128 << 10), "RSS grew from {rss_before} to {rss_after} kB");
}

/// Header maps are host memory a guest makes through wasi:http, outside its linear memory: 100,000
/// resources of up to 128 KiB each were 12.8 GB under `--memory 64M`. Each map now holds at most
/// 64 KiB and the table as many as fit in the cap, so the guest traps with the host near its cap.
#[test]
fn header_maps_count_against_the_memory_cap() {
    let s = Served::start(guests::HTTP_MIXED, &["--memory", "64M", "--timeout", "60s"]);
    let r = s.get("/headers");
    assert_eq!(r.status, 500, "the guest filled header maps to the end: {}", r.text());
    let hwm = status_kib(s.pid(), "VmHWM");
    assert!(hwm < 400 << 10, "serve's peak RSS was {} MiB for one request under --memory 64M", hwm >> 10);
    assert_eq!(s.get("/").status, 200, "the server goes on");
}

/// CPU ticks (user + system) of each serving thread of `pid`, in thread-id order.
fn serving_thread_ticks(pid: i32) -> Vec<u64> {
    let mut ticks = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("wasmcell-serve") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
        // The fields after the parenthesised name: utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        let tid: u32 = task.file_name().to_string_lossy().parse().unwrap();
        ticks.push((tid, fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()));
    }
    ticks.sort_unstable();
    ticks.into_iter().map(|(_, t)| t).collect()
}

/// Sixteen keep-alive connections opened at once are served by both serving threads. Every thread
/// accepts from the one socket, and the one that woke first used to take the whole burst and keep it
/// (here: 3 rounds of 16 connections opened in a loop; before the fix a round had 0 ticks on one thread)
/// (all 16 on one of two threads in three of five `wrk` runs): half the server's cores idle, and under
/// hostile load the healthy connections stuck with the spinning guests (serve/src/spread.rs).
#[test]
fn connections_opened_at_once_are_spread_over_the_serving_threads() {
    let s = Served::start(guests::HTTP_HELLO, &["--threads", "2"]);
    let started = Instant::now();
    while serving_thread_ticks(s.pid()).len() < 2 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10)); // the address is printed before they start
    }
    for round in 0..3 {
        let before = serving_thread_ticks(s.pid());
        assert_eq!(before.len(), 2, "serving threads: {before:?}");
        // A burst, as wrk or a connection pool opens them; then requests on each for a second (at least
        // 150: enough work to tell on a fast machine as on a slow one).
        let conns: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(&s.addr).unwrap()).collect();
        let burst = Instant::now();
        let clients: Vec<_> = conns
            .into_iter()
            .map(|mut c| {
                std::thread::spawn(move || {
                    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let mut buf = Vec::new();
                    let mut sent = 0;
                    while sent < 150 || burst.elapsed() < Duration::from_secs(1) {
                        sent += 1;
                        c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
                        // hello's answer is chunked: it ends with the last chunk.
                        buf.clear();
                        let mut chunk = [0u8; 4096];
                        while !buf.ends_with(b"\r\n0\r\n\r\n") {
                            let n = c.read(&mut chunk).unwrap();
                            assert!(n > 0, "the server closed a keep-alive connection");
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        assert!(buf.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf));
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let after = serving_thread_ticks(s.pid());
        let used: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let total: u64 = used.iter().sum();
        assert!(total >= 20, "round {round}: too little work to tell ({used:?} ticks)");
        let least = *used.iter().min().unwrap() as f64 / total as f64;
        assert!(least >= 0.2, "round {round}: one thread did {:.0}% of the work ({used:?} ticks)", 100.0 * (1.0 - least));
    }
}
