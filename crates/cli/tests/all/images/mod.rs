//! Images end to end: push, pull, run by reference, the three formats, the store, save/load, auth,
//! and bad input, against a real registry (Debian's docker-registry), skopeo and containerd.

mod auth;
mod bad;
mod fault;
mod formats;
pub(crate) mod layout;
pub(crate) mod precompiled;
pub(crate) mod sign;
mod store;

use std::path::Path;

use serde_json::Value;

use crate::services::registry::Registry;
use crate::services::{self, skopeo};
use crate::{Cell, guests};

/// `wasmcell ... --format json`, parsed.
pub fn json(cell: &Cell, args: &[&str]) -> Value {
    let out = cell.run(args);
    out.expect_ok();
    serde_json::from_str(out.stdout().trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stdout()))
}

/// The blobs in a cell's store.
pub fn blob_count(cell: &Cell) -> usize {
    std::fs::read_dir(cell.home().join("store/blobs/sha256")).map(|d| d.count()).unwrap_or(0)
}

/// Fetches a registry's raw manifest with skopeo (the second client reads what we wrote).
pub fn skopeo_manifest(reference: &str) -> Value {
    let out = services::check("skopeo inspect --raw", skopeo(&["inspect", "--raw", &format!("docker://{reference}")]));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn push_then_run_by_reference_pulls_and_runs() {
    let registry = Registry::start();
    let cell = Cell::new();
    let image = format!("{}/team/hello:1.0", registry.addr());

    let pushed = json(
        &cell,
        &["push", guests::HELLO_C, &image, "--annotation", "org.opencontainers.image.source=https://example.com/hello", "--format", "json"],
    );
    assert_eq!(pushed["blobs_uploaded"], 2, "{pushed}");

    // What skopeo sees is the CNCF Wasm artifact.
    let manifest = skopeo_manifest(&image);
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.wasm.config.v0+json");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/wasm");
    assert_eq!(layers[0]["annotations"]["org.opencontainers.image.title"], "hello.wasm");
    assert_eq!(layers[0]["digest"], layout::digest(&read(Path::new(guests::HELLO_C))));
    assert_eq!(manifest["annotations"]["org.opencontainers.image.source"], "https://example.com/hello");
    assert!(manifest["annotations"]["org.opencontainers.image.created"].is_string());
    let config = services::check("skopeo inspect --config", skopeo(&["inspect", "--raw", "--config", &format!("docker://{image}")]));
    let config: Value = serde_json::from_slice(&config.stdout).unwrap();
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["os"], "wasip1");
    assert_eq!(config["layerDigests"][0], layers[0]["digest"]);

    // A fresh machine: run by reference pulls (--pull missing is the default) and runs.
    let other = Cell::new();
    other.run(&["run", "--pull", "never", &image]).expect_code(127).expect_error_line("not in the local store");
    let out = other.run(&["run", &image]);
    out.expect_ok();
    assert_eq!(out.stdout(), "hello from C\n");
    // Stored now: --pull never runs it, and a re-pull moves no blob bytes.
    assert_eq!(other.run(&["run", "--pull", "never", &image]).expect_ok().stdout(), "hello from C\n");
    let again = json(&other, &["pull", &image, "--format", "json"]);
    assert_eq!((again["blobs_fetched"].as_u64(), again["bytes_fetched"].as_u64()), (Some(0), Some(0)), "{again}");
    assert_eq!(again["blobs_present"], 2);
    // --pull always goes to the registry again, still moving nothing it has.
    assert_eq!(other.run(&["run", "--pull", "always", &image]).expect_ok().stdout(), "hello from C\n");

    // Pushing again sends nothing the registry has.
    let repushed = json(&cell, &["push", &image, "--format", "json"]);
    assert_eq!((repushed["blobs_uploaded"].as_u64(), repushed["blobs_present"].as_u64()), (Some(0), Some(2)), "{repushed}");

    // Images arguments are passed; the image's env is none (deny by default) unless given.
    let args_image = format!("{}/team/env:1", registry.addr());
    cell.run(&["push", guests::ENV_C, &args_image]).expect_ok();
    let out = other.run(&["run", &args_image]);
    out.expect_ok();
    let with_env = other.run(&["run", "--env", "X=1", &args_image]);
    with_env.expect_ok();
    assert!(with_env.stdout().contains("X=1"), "{}", with_env.stdout());
    assert!(!out.stdout().contains("X=1"), "{}", out.stdout());
}

#[test]
fn pull_never_runs_the_stored_image_and_never_connects() {
    // The tag moves in the registry after this node stored it: `--pull never` must run what is stored
    // (it used to pull the new image and run that), and must not need the registry at all.
    let registry = Registry::start();
    let cell = Cell::new();
    let image = format!("{}/team/pinned:1", registry.addr());
    cell.run(&["push", guests::HELLO_C, &image]).expect_ok();
    let node = Cell::new();
    node.run(&["pull", &image]).expect_ok();
    cell.run(&["push", guests::ENV_C, &image]).expect_ok();
    assert_eq!(node.run(&["run", "--pull", "never", &image]).expect_ok().stdout(), "hello from C\n");
    drop(registry);
    assert_eq!(node.run(&["run", "--pull", "never", &image]).expect_ok().stdout(), "hello from C\n");
}

#[test]
fn component_artifact_records_its_world() {
    let registry = Registry::start();
    let cell = Cell::new();
    let image = format!("{}/team/hello-component:1", registry.addr());
    cell.run(&["push", guests::HELLO_COMPONENT, &image]).expect_ok();
    let config = services::check("skopeo", skopeo(&["inspect", "--raw", "--config", &format!("docker://{image}")]));
    let config: Value = serde_json::from_slice(&config.stdout).unwrap();
    assert_eq!(config["os"], "wasip2");
    let exports: Vec<&str> = config["component"]["exports"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(exports.iter().any(|e| e.starts_with("wasi:cli/run@0.2")), "{exports:?}");
    let imports = config["component"]["imports"].as_array().unwrap();
    assert!(imports.iter().any(|i| i.as_str().unwrap().starts_with("wasi:cli/stdout@0.2")), "{imports:?}");
    let other = Cell::new();
    assert_eq!(other.run(&["run", &image]).expect_ok().stdout(), "hello from C\n");
    let inspect = json(&other, &["inspect", &image, "--format", "json"]);
    assert_eq!(inspect["kind"], "artifact");
    assert_eq!(inspect["os"], "wasip2");
}

#[test]
fn skopeo_copies_what_wasmcell_pushed_and_wasmcell_pulls_what_skopeo_copied() {
    let registry = Registry::start();
    let cell = Cell::new();
    let image = format!("{}/team/hello:1", registry.addr());
    cell.run(&["push", guests::HELLO_C, &image]).expect_ok();
    let dir = crate::scratch();
    let oci = format!("oci:{}:hello", dir.path().join("copy").display());
    services::check("skopeo copy out", skopeo(&["copy", &format!("docker://{image}"), &oci]));
    let copied = format!("{}/elsewhere/hello:2", registry.addr());
    services::check("skopeo copy in", skopeo(&["copy", &oci, &format!("docker://{copied}")]));
    let other = Cell::new();
    assert_eq!(other.run(&["run", &copied]).expect_ok().stdout(), "hello from C\n");
    let pulled = json(&other, &["inspect", &copied, "--format", "json"]);
    assert_eq!(pulled["digest"], json(&cell, &["inspect", &image, "--format", "json"])["digest"], "same bytes, same digest");
}

#[test]
fn tag_push_mounts_blobs_across_repositories() {
    let registry = Registry::start();
    let cell = Cell::new();
    let a = format!("{}/team/a:1", registry.addr());
    let b = format!("{}/team/b:1", registry.addr());
    cell.run(&["push", guests::HELLO_C, &a]).expect_ok();
    cell.run(&["tag", &a, &b]).expect_ok();
    let pushed = json(&cell, &["push", &b, "--format", "json"]);
    assert_eq!((pushed["blobs_mounted"].as_u64(), pushed["blobs_uploaded"].as_u64()), (Some(2), Some(0)), "{pushed}");
    assert_eq!(skopeo_manifest(&b), skopeo_manifest(&a));
}

#[test]
fn images_rmi_prune_and_check() {
    let registry = Registry::start();
    let cell = Cell::new();
    let a = format!("{}/team/a:1", registry.addr());
    cell.run(&["push", guests::HELLO_C, &a]).expect_ok();
    cell.run(&["tag", &a, "localhost/copy:2"]).expect_ok();
    let list = json(&cell, &["images", "--format", "json"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec![a.as_str(), "localhost/copy:2"]);
    assert_eq!(list[0]["kind"], "artifact");
    assert_eq!(list[0]["digest"], list[1]["digest"]);
    let text = cell.run(&["images"]).expect_ok().stdout();
    assert!(text.starts_with("NAME") && text.contains("artifact"), "{text}");
    assert_eq!(blob_count(&cell), 3, "config, layer, manifest stored once for both names");

    cell.run(&["rmi", &a]).expect_ok();
    assert_eq!(blob_count(&cell), 3, "still named localhost/copy:2");
    cell.run(&["rmi", "localhost/copy:2"]).expect_ok();
    assert_eq!(blob_count(&cell), 0, "rmi removed the content no name needs");
    cell.run(&["rmi", "localhost/copy:2"]).expect_code(127).expect_error_line("image not found");
    cell.run(&["tag", "localhost/nothing:1", "localhost/x:1"]).expect_code(127);

    // prune removes what nothing names (a leftover ingest here) and check verifies the rest.
    cell.run(&["pull", &a]).expect_ok();
    std::fs::write(cell.home().join("store/ingest/blob-left.part"), b"half").unwrap();
    let pruned = json(&cell, &["prune", "--format", "json"]);
    assert_eq!(pruned["ingests_removed"], 1);
    assert_eq!(pruned["blobs_removed"], 0);
    let check = json(&cell, &["system", "check", "--format", "json"]);
    assert_eq!(check["blobs"], 3);
    assert_eq!(check["corrupt"].as_array().unwrap().len(), 0);
}

#[test]
fn save_and_load_round_trip() {
    let registry = Registry::start();
    let cell = Cell::new();
    let image = format!("{}/team/hello:1", registry.addr());
    cell.run(&["push", guests::HELLO_C, &image]).expect_ok();
    let dir = crate::scratch();
    let tar = dir.path().join("hello.tar");
    cell.run(&["save", "-o", tar.to_str().unwrap(), &image]).expect_ok();
    // skopeo reads the archive as an OCI archive too.
    let inspected = services::check("skopeo inspect oci-archive", skopeo(&["inspect", "--raw", &format!("oci-archive:{}", tar.display())]));
    let manifest: Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.wasm.config.v0+json");

    let other = Cell::new();
    let out = other.run(&["load", "-i", tar.to_str().unwrap()]);
    out.expect_ok();
    assert!(out.stdout().contains(&image), "{}", out.stdout());
    assert_eq!(other.run(&["run", "--pull", "never", &image]).expect_ok().stdout(), "hello from C\n");

    // A truncated archive is refused and leaves no name behind.
    let bytes = read(&tar);
    let cut = dir.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let third = Cell::new();
    third.run(&["load", "-i", cut.to_str().unwrap()]).expect_code(125);
    assert_eq!(third.run(&["images", "-q"]).expect_ok().stdout(), "");
}

#[test]
fn saved_archive_imports_into_containerd_with_its_full_name() {
    let registry = Registry::start();
    let cell = Cell::new();
    let artifact = format!("{}/team/hello:1", registry.addr());
    cell.run(&["push", guests::HELLO_C, &artifact]).expect_ok();
    let compat = formats::push_compat_image(&registry, "team/compat:1", guests::HELLO_C);
    cell.run(&["pull", &compat]).expect_ok();
    let dir = crate::scratch();
    let tar = dir.path().join("images.tar");
    cell.run(&["save", "-o", tar.to_str().unwrap(), &artifact, &compat]).expect_ok();

    let containerd = services::containerd::Containerd::start();
    // containerd 1.6 cannot unpack application/wasm layers into a snapshot, so import without
    // unpacking; the shim reads wasm layers from the content store.
    let out = containerd.ctr(&["images", "import", "--all-platforms", "--no-unpack", tar.to_str().unwrap()]);
    assert!(out.status.success(), "ctr import failed: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let out = containerd.ctr(&["images", "ls", "-q"]);
    let names = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(names.lines().any(|l| l == artifact), "{names}");
    assert!(names.lines().any(|l| l == compat), "{names}");
    // The content containerd holds is ours, byte for byte.
    let out = containerd.ctr(&["content", "ls", "-q"]);
    let content = String::from_utf8_lossy(&out.stdout).into_owned();
    let layer = layout::digest(&read(Path::new(guests::HELLO_C)));
    assert!(content.contains(&layer), "{content}");
}
