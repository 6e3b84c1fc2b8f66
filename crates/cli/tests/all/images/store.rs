//! The store under concurrency and crashes: two pulls of one image at once, and a pull killed
//! with SIGKILL at a random moment, leave a consistent store.

use std::time::Duration;

use crate::Cell;
use crate::services::registry::Registry;

/// A valid 24 MiB module (one big custom section of random bytes), so a pull takes a while.
fn big_module(path: &std::path::Path) {
    let mut payload = vec![0u8; 24 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in payload.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let name = b"bench";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    wasm.push(0);
    let mut n = section.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            wasm.push(byte);
            break;
        }
        wasm.push(byte | 0x80);
    }
    wasm.extend_from_slice(&section);
    std::fs::write(path, wasm).unwrap();
}

#[test]
fn concurrent_pulls_and_a_killed_pull_leave_the_store_consistent() {
    let registry = Registry::start();
    let dir = crate::scratch();
    let big = dir.path().join("big.wasm");
    big_module(&big);
    let pusher = Cell::new();
    let image = format!("{}/team/big:1", registry.addr());
    pusher.run(&["push", big.to_str().unwrap(), &image]).expect_ok();

    // Two pulls at once into one store.
    let cell = Cell::new();
    let mut a = cell.command().args(["pull", "-q", &image]).spawn().unwrap();
    let mut b = cell.command().args(["pull", "-q", &image]).spawn().unwrap();
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let check = super::json(&cell, &["system", "check", "--format", "json"]);
    assert!(check["corrupt"].as_array().unwrap().is_empty() && check["missing"].as_array().unwrap().is_empty(), "{check}");
    assert_eq!(super::blob_count(&cell), 3);

    // SIGKILL pulls at several moments; after each the store checks clean, and nothing
    // half-written is visible under a digest name.
    for delay_ms in [5u64, 30, 120, 400] {
        let cell = Cell::new();
        let mut child = cell.command().args(["pull", "-q", &image]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let check = super::json(&cell, &["system", "check", "--format", "json"]);
        assert!(check["corrupt"].as_array().unwrap().is_empty(), "after {delay_ms} ms: {check}");
        assert!(check["missing"].as_array().unwrap().is_empty(), "after {delay_ms} ms: {check}");
        // The interrupted pull resumes cleanly, and prune clears its leftovers.
        cell.run(&["pull", "-q", &image]).expect_ok();
        cell.run(&["prune"]).expect_ok();
        assert_eq!(std::fs::read_dir(cell.home().join("store/ingest")).unwrap().count(), 0);
        let check = super::json(&cell, &["system", "check", "--format", "json"]);
        assert_eq!(check["blobs"], 3, "{check}");
    }
}
