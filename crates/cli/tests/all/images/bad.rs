//! Bad input: each is a clear one-line error with a documented exit code, nothing is written
//! outside the store, and the store stays consistent (`system check` passes, nothing half-named).

use std::path::Path;

use serde_json::json;

use super::fault::{Answer, FaultProxy};
use super::layout::{self, Layout};
use crate::services::registry::Registry;
use crate::{Cell, guests};

/// After a failed pull: no name, and every stored blob is whole.
fn assert_store_consistent(cell: &Cell) {
    assert_eq!(cell.run(&["images", "-q"]).expect_ok().stdout(), "", "a failed pull left a name behind");
    let check = super::json(cell, &["system", "check", "--format", "json"]);
    assert!(check["corrupt"].as_array().unwrap().is_empty(), "{check}");
    assert!(check["missing"].as_array().unwrap().is_empty(), "{check}");
}

fn push_hello(registry: &Registry, repo: &str) -> (String, String) {
    let cell = Cell::new();
    let image = format!("{}/{repo}", registry.addr());
    cell.run(&["push", guests::HELLO_C, &image]).expect_ok();
    (image, layout::digest(&std::fs::read(guests::HELLO_C).unwrap()))
}

#[test]
fn a_blob_corrupted_in_the_registry_storage_is_refused() {
    let registry = Registry::start();
    let (image, layer) = push_hello(&registry, "team/hello:1");
    // Flip bytes in the registry's own copy of the layer (same size: only the digest can tell).
    let data = registry.blob_data_path(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let cell = Cell::new();
    cell.run(&["pull", &image]).expect_code(125).expect_error_line("digest mismatch");
    assert!(!cell.home().join("store/blobs/sha256").join(&layer[7..]).exists());
    assert_store_consistent(&cell);
    cell.run(&["run", &image]).expect_code(125).expect_error_line("digest mismatch");

    // A truncated blob is refused too.
    std::fs::write(&data, &bytes[..mid]).unwrap();
    cell.run(&["pull", &image]).expect_code(125);
    assert_store_consistent(&cell);
}

#[test]
fn missing_images_and_malformed_references() {
    let registry = Registry::start();
    let cell = Cell::new();
    let missing = format!("{}/team/nothing:1", registry.addr());
    cell.run(&["pull", &missing]).expect_code(127).expect_error_line("not found in registry");
    cell.run(&["run", &missing]).expect_code(127).expect_error_line("not found in registry");
    for bad in ["UPPER/case:1", "a b", "reg.example/x@sha256:abc", "bad//double:1", "x:", "-x"] {
        let out = cell.run(&["pull", bad]);
        out.expect_code(125);
        assert!(out.stderr().contains("invalid reference") || out.stderr().contains("unexpected argument"), "{bad}: {}", out.stderr());
    }
    cell.run(&["run", "UPPER/case:1"]).expect_code(125).expect_error_line("invalid reference");
    assert_store_consistent(&cell);
}

#[test]
fn server_errors_are_retried_then_reported() {
    let registry = Registry::start();
    let (image, layer) = push_hello(&registry, "team/hello:1");
    let proxy = FaultProxy::start(&registry.addr());
    let via_proxy = image.replace(&registry.addr(), &proxy.addr);

    // Two 503s on the layer, then the real thing: the pull succeeds.
    proxy.fail("GET", &format!("/blobs/{layer}"), Answer::Status(503), 2);
    proxy.fail("GET", "/manifests/", Answer::Status(500), 1);
    let cell = Cell::new();
    cell.run(&["pull", &via_proxy]).expect_ok();
    assert_eq!(proxy.faults_served().len(), 3, "{:?}", proxy.faults_served());
    assert_eq!(cell.run(&["run", "--pull", "never", &via_proxy]).expect_ok().stdout(), "hello from C\n");

    // A registry that keeps failing: a clear error after the retries.
    let proxy = FaultProxy::start(&registry.addr());
    let via_proxy = image.replace(&registry.addr(), &proxy.addr);
    proxy.fail("GET", "/blobs/", Answer::Status(502), usize::MAX);
    let cell = Cell::new();
    cell.run(&["pull", &via_proxy]).expect_code(125).expect_error_line("502");
    assert!(proxy.faults_served().len() >= 2, "retried: {:?}", proxy.faults_served());
    assert_store_consistent(&cell);
}

#[test]
fn oversized_manifests_and_unknown_media_types_are_refused() {
    let registry = Registry::start();
    let (image, _) = push_hello(&registry, "team/hello:1");
    let proxy = FaultProxy::start(&registry.addr());
    let via_proxy = image.replace(&registry.addr(), &proxy.addr);

    let mut huge = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 5 << 20));
    huge.extend_from_slice(br#""}}"#);
    proxy.fail("GET", "/manifests/", Answer::Body { content_type: "application/vnd.oci.image.manifest.v1+json".into(), body: huge }, 1);
    let cell = Cell::new();
    cell.run(&["pull", &via_proxy]).expect_code(126).expect_error_line("too large");

    let odd = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.example.thing.v1+json", "layers": []})).unwrap();
    proxy.fail("GET", "/manifests/", Answer::Body { content_type: "application/vnd.example.thing.v1+json".into(), body: odd }, 1);
    cell.run(&["pull", &via_proxy]).expect_code(126).expect_error_line("unsupported media type");

    // An ordinary linux image is not a wasm image.
    let dir = crate::scratch();
    let mut l = Layout::new(dir.path());
    let m = l.manifest(
        layout::compat_config("linux", "amd64", &["/bin/sh"], &[]),
        "application/vnd.oci.image.config.v1+json",
        &[("application/vnd.oci.image.layer.v1.tar+gzip", layout::tar_gz(&[("bin/sh", b"\x7fELF")]))],
        serde_json::Value::Null,
    );
    l.tag(&m, "linux", None);
    let linux = super::formats::skopeo_push(&l, "linux", &registry, "team/linux:1");
    cell.run(&["pull", &linux]).expect_code(126).expect_error_line("not a wasm image");
    assert_store_consistent(&cell);
}

/// A compat image whose only layer is `layer` (raw tar bytes, gzipped here), as a loadable tar.
fn compat_archive(dir: &Path, layer: Vec<u8>, name: &str) -> std::path::PathBuf {
    let mut l = Layout::new(&dir.join("layout"));
    let m = l.manifest(
        layout::compat_config("wasip1", "wasm", &["/hello.wasm"], &[]),
        "application/vnd.oci.image.config.v1+json",
        &[("application/vnd.oci.image.layer.v1.tar+gzip", layout::gzip(&layer))],
        serde_json::Value::Null,
    );
    l.tag(&m, "1", Some(name));
    let tar = dir.join("image.tar");
    l.tar(&tar);
    tar
}

#[test]
fn unsafe_compat_layers_are_refused_and_write_nothing_outside() {
    let hello = std::fs::read(guests::HELLO_C).unwrap();
    let ok = layout::raw_entry("hello.wasm", tar::EntryType::Regular, None, &hello);
    let cases: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        ("dotdot", vec![ok.clone(), layout::raw_entry("../../escaped", tar::EntryType::Regular, None, b"x")], "unsafe layer entry"),
        ("absolute", vec![ok.clone(), layout::raw_entry("/tmp/escaped", tar::EntryType::Regular, None, b"x")], "unsafe layer entry"),
        ("symlink", vec![ok.clone(), layout::raw_entry("etc", tar::EntryType::Symlink, Some("../../.."), b"")], "unsafe layer entry"),
        ("abs-symlink", vec![ok.clone(), layout::raw_entry("etc", tar::EntryType::Symlink, Some("/etc"), b"")], "unsafe layer entry"),
        ("hardlink", vec![ok.clone(), layout::raw_entry("pw", tar::EntryType::Link, Some("../../etc/passwd"), b"")], "unsafe layer entry"),
        ("device", vec![ok.clone(), layout::raw_entry("dev/sda", tar::EntryType::Block, None, b"")], "unsafe layer entry"),
        ("fifo", vec![ok.clone(), layout::raw_entry("pipe", tar::EntryType::Fifo, None, b"")], "unsafe layer entry"),
    ];
    for (what, entries, needle) in cases {
        let dir = crate::scratch();
        let name = format!("localhost/attack/{what}:1");
        let tar = compat_archive(dir.path(), layout::raw_tar(&entries), &name);
        let cell = Cell::new();
        cell.run(&["load", "-i", tar.to_str().unwrap()]).expect_ok();
        cell.run(&["run", &name]).expect_code(126).expect_error_line(needle);
        // Nothing escaped: no file next to the home or the scratch dir, no rootfs left.
        for base in [cell.home(), dir.path()] {
            assert!(!base.parent().unwrap().join("escaped").exists(), "{what}");
        }
        assert!(!Path::new("/tmp/escaped").exists(), "{what}");
        let rootfs = std::fs::read_dir(cell.home().join("store/rootfs")).unwrap().count();
        assert_eq!(rootfs, 0, "{what}: a half-unpacked rootfs is visible");
    }
}

#[test]
fn a_decompression_bomb_is_stopped() {
    // 1.1 GiB of zeros compresses to a few MiB; the unpack limit is 1 GiB.
    let dir = crate::scratch();
    let mut l = Layout::new(&dir.path().join("layout"));
    // Eleven files of 100 MiB of zeros: each under the limit, together over it.
    let bomb = {
        use std::io::Write;
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        let size: u64 = 100 << 20;
        for i in 0..11 {
            let mut h = tar::Header::new_gnu();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append_data(&mut h, format!("zeros{i}"), std::io::Read::take(std::io::repeat(0), size)).unwrap();
        }
        let mut gz = b.into_inner().unwrap();
        gz.flush().unwrap();
        gz.finish().unwrap()
    };
    assert!(bomb.len() < 8 << 20, "{}", bomb.len());
    let m = l.manifest(
        layout::compat_config("wasip1", "wasm", &["/hello.wasm"], &[]),
        "application/vnd.oci.image.config.v1+json",
        &[("application/vnd.oci.image.layer.v1.tar+gzip", bomb)],
        serde_json::Value::Null,
    );
    l.tag(&m, "1", Some("localhost/attack/bomb:1"));
    let tar = dir.path().join("bomb.tar");
    l.tar(&tar);
    let cell = Cell::new();
    cell.run(&["load", "-i", tar.to_str().unwrap()]).expect_ok();
    let started = std::time::Instant::now();
    cell.run(&["run", "localhost/attack/bomb:1"]).expect_code(126).expect_error_line("too large");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert_eq!(std::fs::read_dir(cell.home().join("store/rootfs")).unwrap().count(), 0);
}

#[test]
fn a_registry_that_lies_about_blob_sizes_cannot_fill_the_disk() {
    // The manifest may declare any size; a pull used to stream until the disk was full. Now the sizes
    // are checked before a single layer byte moves: too large, overflowing, or more than the disk holds.
    let registry = Registry::start();
    let (image, _) = push_hello(&registry, "team/hello:1");
    let manifest = super::skopeo_manifest(&image);
    let proxy = FaultProxy::start(&registry.addr());
    let via_proxy = image.replace(&registry.addr(), &proxy.addr);
    let lie = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut m = manifest.clone();
        edit(&mut m);
        let body = serde_json::to_vec(&m).unwrap();
        proxy.fail("GET", "/manifests/", Answer::Body { content_type: "application/vnd.oci.image.manifest.v1+json".into(), body }, 1);
    };
    let cell = Cell::new();
    lie(&|m| m["layers"][0]["size"] = json!(1u64 << 40));
    cell.run(&["pull", &via_proxy]).expect_code(126).expect_error_line("too large");
    lie(&|m| {
        m["layers"][0]["size"] = json!(u64::MAX);
        let again = m["layers"][0].clone();
        m["layers"].as_array_mut().unwrap().push(again);
    });
    cell.run(&["pull", &via_proxy]).expect_code(126).expect_error_line("too large");
    lie(&|m| m["config"]["size"] = json!(1u64 << 30));
    cell.run(&["pull", &via_proxy]).expect_code(126).expect_error_line("config");
    // Allowed by the limit, but no disk here has 1 PiB free.
    lie(&|m| m["layers"][0]["size"] = json!(1u64 << 50));
    cell.run(&["pull", "--max-image-size", "2000000G", &via_proxy]).expect_code(125).expect_error_line("not enough space");
    assert_store_consistent(&cell);
    // The honest image still pulls under a limit it fits.
    cell.run(&["pull", "--max-image-size", "10M", &image]).expect_ok();
}

/// A raw tar whose first entry is a GNU long name of `len` bytes (`././@LongLink`, type `L`), naming
/// the regular file that follows.
fn long_name_tar(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 4096);
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_size(len as u64);
    header.set_mode(0o644);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.resize(out.len() + len, b'a');
    out.resize(out.len().div_ceil(512) * 512, 0);
    let mut file = tar::Header::new_gnu();
    file.set_path("x").unwrap();
    file.set_size(0);
    file.set_mode(0o644);
    file.set_cksum();
    out.extend_from_slice(file.as_bytes());
    out.extend_from_slice(&[0; 1024]);
    out
}

#[test]
fn a_huge_tar_long_name_is_refused_without_being_read() {
    // A 32 MiB GNU long name in a small gzip layer: the tar crate would read it whole into memory (a
    // 600 MiB one took 3.8 GB of RSS) and the error line carried it. Now the header is refused as it
    // passes, with one short line and the not-runnable code.
    let dir = crate::scratch();
    let name = "localhost/bomb/longname:1".to_string();
    let tar = compat_archive(dir.path(), long_name_tar(32 << 20), &name);
    let cell = Cell::new();
    cell.run(&["load", "-i", tar.to_str().unwrap()]).expect_ok();
    let out = cell.run(&["run", &name]);
    out.expect_code(126).expect_error_line("long-name or pax header");
    assert!(out.stderr().len() < 400, "error line of {} bytes", out.stderr().len());
    // The same header at the top of an archive given to `load`.
    let raw = dir.path().join("raw.tar");
    std::fs::write(&raw, long_name_tar(1 << 20)).unwrap();
    let out = cell.run(&["load", "-i", raw.to_str().unwrap()]);
    out.expect_code(126).expect_error_line("long-name or pax header");
}
