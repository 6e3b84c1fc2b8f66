//! The key-value capability end to end: one behavioural suite run against every backend (embedded,
//! memory, a real redis-server), through the C guest `kv.http.wasm` under `wasmcell serve` and the
//! command `kvcmd` under `wasmcell run`; isolation between applications, exact atomics under 64
//! concurrent requests, durability across kill -9, a Redis outage and recovery, and `wasmcell kv`.

use std::time::{Duration, Instant};

use crate::serve::Served;
use crate::services::redis::Redis;
use crate::services::wait_for;
use crate::{Cell, guests};

fn serve_kv(cell: &Cell, flags: &[&str]) -> Served {
    let mut c = cell.command();
    c.args(["serve", "--addr", "127.0.0.1:0"]).args(flags).arg(guests::HTTP_KV);
    Served::spawn(c, Cell::new())
}

fn text(s: &Served, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let r = s.request(method, path, &[], body);
    (r.status, r.text())
}

/// The same checks, whatever backs store `default`.
fn suite(s: &Served, backend: &str) {
    let ok = (200, "ok\n".to_string());
    assert_eq!(text(s, "GET", "/get/missing", b""), (404, "not found\n".into()), "{backend}");
    assert_eq!(text(s, "PUT", "/set/greeting", b"hello"), ok, "{backend}");
    assert_eq!(text(s, "GET", "/get/greeting", b""), (200, "hello".into()), "{backend}");
    assert_eq!(text(s, "GET", "/exists/greeting", b""), (200, "true\n".into()), "{backend}");
    assert_eq!(text(s, "DELETE", "/delete/greeting", b""), ok, "{backend}");
    assert_eq!(text(s, "GET", "/exists/greeting", b""), (200, "false\n".into()), "{backend}");
    // Binary values come back byte for byte.
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    assert_eq!(s.request("PUT", "/set/bin", &[], &binary).status, 200, "{backend}");
    assert_eq!(s.get("/get/bin").body, binary, "{backend}");

    // Counters: increment, then compare-and-swap increments on top.
    assert_eq!(text(s, "POST", "/incr/n?by=5", b""), (200, "5\n".into()), "{backend}");
    assert_eq!(text(s, "POST", "/incr/n?by=-2", b""), (200, "3\n".into()), "{backend}");
    assert_eq!(text(s, "POST", "/cas-incr/n", b""), (200, "4\n".into()), "{backend}");
    assert_eq!(text(s, "GET", "/get/n", b""), (200, "4".into()), "{backend}");
    s.request("PUT", "/set/word", &[], b"abc");
    let (status, body) = text(s, "POST", "/incr/word", b"");
    assert_eq!(status, 500, "{backend}: {body}");
    assert!(body.starts_with("error: other:"), "{backend}: {body}");

    // Batches.
    assert_eq!(text(s, "POST", "/set-many", b"x=1\ny=2\n"), ok, "{backend}");
    assert_eq!(text(s, "GET", "/get-many?keys=x,y,z", b""), (200, "x=1\ny=2\nz!\n".into()), "{backend}");
    assert_eq!(text(s, "POST", "/delete-many?keys=x,y", b""), ok, "{backend}");
    assert_eq!(text(s, "GET", "/get-many?keys=x,y", b""), (200, "x!\ny!\n".into()), "{backend}");

    // Listing follows cursors over more keys than one page holds.
    for chunk in 0..3 {
        let body: String = (0..600).map(|i| format!("k{:05}=v\n", chunk * 600 + i)).collect();
        assert_eq!(text(s, "POST", "/set-many", body.as_bytes()), ok, "{backend}");
    }
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            Some(c) => format!("/list?cursor={c}"),
            None => "/list".to_string(),
        };
        let r = s.get(&path);
        assert_eq!(r.status, 200, "{backend}: {}", r.text());
        listed.extend(r.text().lines().map(str::to_string));
        cursor = r.header("x-cursor").map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    listed.sort();
    listed.dedup();
    let expected: Vec<String> = (0..1800).map(|i| format!("k{i:05}")).chain(["bin", "n", "word"].map(String::from)).collect();
    let mut expected = expected;
    expected.sort();
    assert_eq!(listed, expected, "{backend}");

    // Limits give the guest an error, never the host a crash.
    let long_key = "k".repeat(5000);
    let (status, body) = text(s, "PUT", &format!("/set/{long_key}"), b"v");
    assert!(status == 500 && body.contains("over the limit"), "{backend}: {status} {body}");
    let (status, body) = text(s, "PUT", "/set/big", &vec![b'v'; (1 << 20) + 1]);
    assert!(status == 500 && body.contains("over the limit"), "{backend}: {status} {body}");
    assert_eq!(text(s, "GET", "/get/big", b"").0, 404, "{backend}");

    // Deny by default: a store that was not granted.
    assert_eq!(text(s, "GET", "/get/x?store=secret", b""), (403, "error: access-denied\n".into()), "{backend}");

    // 64 concurrent increments and 64 concurrent compare-and-swap increments are exact.
    let addr = s.addr.clone();
    let threads: Vec<_> = (0..128)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let path = if i % 2 == 0 { "/incr/hits" } else { "/cas-incr/hits" };
                crate::services::http_request(&addr, "POST", path, &[], b"").unwrap().status
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200, "{backend}");
    }
    assert_eq!(text(s, "GET", "/get/hits", b""), (200, "128".into()), "{backend}");
}

#[test]
fn the_same_guest_runs_on_every_backend() {
    let redis = Redis::start();
    let redis_grant = format!("default={}", redis.url());
    for (backend, grant) in [("embedded", "default"), ("memory", "default=memory"), ("redis", redis_grant.as_str())] {
        let cell = Cell::new();
        let s = serve_kv(&cell, &["--kv", grant]);
        suite(&s, backend);
    }
}

#[test]
fn applications_never_see_each_others_keys() {
    let redis = Redis::start();
    let redis_grant = format!("default={}", redis.url());
    for grant in ["default", redis_grant.as_str()] {
        let cell = Cell::new();
        let a = serve_kv(&cell, &["--kv", grant, "--app", "alpha"]);
        let b = serve_kv(&cell, &["--kv", grant, "--app", "beta"]);
        assert_eq!(a.request("PUT", "/set/k", &[], b"from-alpha").status, 200);
        assert_eq!(b.get("/get/k").status, 404, "{grant}: beta sees alpha's key");
        assert_eq!(b.request("PUT", "/set/k", &[], b"from-beta").status, 200);
        assert_eq!(a.get("/get/k").text(), "from-alpha", "{grant}");
        assert_eq!(a.get("/list").text(), "k\n", "{grant}");
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let cell = Cell::new();
    let s = serve_kv(&cell, &["--kv", "default"]);
    let addr = s.addr.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..16)
        .map(|i| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let key = format!("w{i}-{n}");
                    match crate::services::http_request(&addr, "PUT", &format!("/set/{key}"), &[], key.as_bytes()) {
                        Ok(r) if r.status == 200 => acked.push(key),
                        _ => break,
                    }
                    n += 1;
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(s.pid(), libc::SIGKILL) };
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked: Vec<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(acked.len() > 50, "only {} writes were acknowledged before the kill", acked.len());
    drop(s);
    let again = serve_kv(&cell, &["--kv", "default"]);
    let mut lost = Vec::new();
    for key in &acked {
        let r = again.get(&format!("/get/{key}"));
        if r.status != 200 || r.text() != *key {
            lost.push(key.clone());
        }
    }
    assert!(lost.is_empty(), "{} of {} acknowledged writes lost after kill -9: {:?}", lost.len(), acked.len(), &lost[..lost.len().min(5)]);
}

#[test]
fn a_redis_outage_costs_errors_not_the_server_and_heals_itself() {
    let mut redis = Redis::start();
    let cell = Cell::new();
    let s = serve_kv(&cell, &["--kv", &format!("default={}", redis.url())]);
    assert_eq!(s.request("PUT", "/set/k", &[], b"v").status, 200);
    redis.stop();
    let started = Instant::now();
    let r = s.get("/get/k");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().starts_with("error: other: redis"), "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(10), "the guest waited {:?} for a dead Redis", started.elapsed());
    // Serving goes on.
    assert_eq!(s.get("/no-such-route").status, 404);
    redis.restart();
    let healed = wait_for(Duration::from_secs(20), || (s.request("PUT", "/set/k", &[], b"again").status == 200).then_some(()));
    assert!(healed.is_some(), "still failing 20 s after Redis came back: {}", s.get("/get/k").text());
    assert_eq!(s.get("/get/k").text(), "again");
}

#[test]
fn operators_look_inside_with_wasmcell_kv() {
    let redis = Redis::start();
    let cell = Cell::new();
    {
        let s = serve_kv(&cell, &["--kv", "default", "--app", "shop"]);
        assert_eq!(s.request("PUT", "/set/cart", &[], b"3 apples").status, 200);
        // The embedded database admits one process: a clear error while the app runs.
        let busy = cell.run(&["kv", "get", "--app", "shop", "--store", "default", "cart"]);
        busy.expect_code(125);
        assert!(busy.stderr().contains("in use by another wasmcell process"), "{}", busy.stderr());
    }
    let get = |key: &str| cell.run(&["kv", "get", "--app", "shop", "--store", "default", key]);
    assert_eq!(get("cart").expect_code(0).stdout(), "3 apples");
    cell.run(&["kv", "set", "--app", "shop", "--store", "default", "coupon", "SAVE10"]).expect_code(0);
    assert_eq!(cell.run(&["kv", "list", "--app", "shop", "--store", "default"]).expect_code(0).stdout(), "cart\ncoupon\n");
    cell.run(&["kv", "delete", "--app", "shop", "--store", "default", "cart"]).expect_code(0);
    let missing = get("cart");
    missing.expect_code(127);
    assert!(missing.stderr().contains("not found"), "{}", missing.stderr());
    let json = cell.run(&["kv", "get", "--app", "shop", "--store", "default", "--format", "json", "coupon"]);
    assert_eq!(json.expect_code(0).stdout().trim(), r#"{"key":"coupon","value":"SAVE10"}"#);

    // A Redis store can be read while the application serves.
    let grant = format!("default={}", redis.url());
    let s = serve_kv(&cell, &["--kv", &grant, "--app", "shop"]);
    assert_eq!(s.request("POST", "/incr/visits?by=7", &[], b"").status, 200);
    assert_eq!(cell.run(&["kv", "get", "--app", "shop", "--store", &grant, "visits"]).expect_code(0).stdout(), "7");
}

#[test]
fn run_grants_stores_too() {
    let cell = Cell::new();
    let kvcmd = guests::KVCMD_COMPONENT;
    cell.run(&["run", "--kv", "default", kvcmd, "default", "set", "colour", "blue"]).expect_code(0);
    assert_eq!(cell.run(&["run", "--kv", "default", kvcmd, "default", "get", "colour"]).expect_code(0).stdout(), "blue\n");
    assert_eq!(cell.run(&["run", "--kv", "default", kvcmd, "default", "incr", "c", "41"]).expect_code(0).stdout(), "41\n");
    // Not granted: the guest is told access-denied.
    let denied = cell.run(&["run", kvcmd, "default", "get", "colour"]);
    denied.expect_code(1);
    assert!(denied.stderr().contains("error: access-denied"), "{}", denied.stderr());
    // Another application (by name) has its own data.
    let other = cell.run(&["run", "--kv", "default", "--app", "other", kvcmd, "default", "get", "colour"]);
    other.expect_code(1);
    // Bad grants are one-line errors.
    for bad in ["bad name", "x=ftp://host", ".hidden"] {
        let out = cell.run(&["run", "--kv", bad, kvcmd, "default", "list"]);
        out.expect_code(125);
        assert_eq!(out.stderr().lines().count(), 1, "{}", out.stderr());
    }
}

#[test]
fn kv_data_is_not_shared_between_two_files_of_the_same_name() {
    // x/app.wasm and y/app.wasm used to default to one application, `app`, and see each other's keys.
    let cell = Cell::new();
    let dir = tempfile::tempdir().unwrap();
    let copy = |d: &str| {
        let p = dir.path().join(d).join("app.wasm");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::copy(guests::KVCMD_COMPONENT, &p).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (x, y) = (copy("x"), copy("y"));
    cell.run(&["run", "--kv", "default", &x, "default", "set", "secret", "x's"]).expect_code(0);
    assert_eq!(cell.run(&["run", "--kv", "default", &x, "default", "get", "secret"]).expect_code(0).stdout(), "x's\n");
    cell.run(&["run", "--kv", "default", &y, "default", "get", "secret"]).expect_code(1);
    // Naming the same application shares on purpose.
    cell.run(&["run", "--kv", "default", "--app", "shared", &x, "default", "set", "k", "v"]).expect_code(0);
    assert_eq!(cell.run(&["run", "--kv", "default", "--app", "shared", &y, "default", "get", "k"]).expect_code(0).stdout(), "v\n");
}
