//! The formats wasmcell reads besides its own: compat images (the .wasm inside a rootfs layer),
//! runwasi's wasm-layer images, and indexes with a wasm platform among others. Each is written
//! as an OCI layout by hand, copied into the registry by skopeo, then pulled and run by wasmcell.

use serde_json::json;

use super::layout::{self, Layout};
use super::skopeo_manifest;
use crate::services::registry::Registry;
use crate::services::{self, skopeo};
use crate::{Cell, guests};

/// Copies `layout:tag` into the registry as `repo_tag` with skopeo; returns the full reference.
pub fn skopeo_push(layout: &Layout, tag: &str, registry: &Registry, repo_tag: &str) -> String {
    let reference = format!("{}/{repo_tag}", registry.addr());
    let src = format!("oci:{}:{tag}", layout.dir.display());
    services::check("skopeo copy", skopeo(&["copy", "--all", &src, &format!("docker://{reference}")]));
    reference
}

/// A compat image (linux/amd64 config, marked by the compat annotation) whose rootfs holds
/// `/app/hello.wasm` and a data file; pushed with skopeo.
pub fn push_compat_image(registry: &Registry, repo_tag: &str, wasm_path: &str) -> String {
    let dir = crate::scratch().keep();
    let mut l = Layout::new(&dir);
    let wasm = std::fs::read(wasm_path).unwrap();
    let layer = layout::tar_gz(&[("app/hello.wasm", &wasm), ("etc/greeting", b"hi from the rootfs\n")]);
    let m = l.manifest(
        layout::compat_config("linux", "amd64", &["/app/hello.wasm"], &["FROM_IMAGE=yes"]),
        "application/vnd.oci.image.config.v1+json",
        &[("application/vnd.oci.image.layer.v1.tar+gzip", layer)],
        json!({"module.wasm.image/variant": "compat"}),
    );
    l.tag(&m, "compat", None);
    skopeo_push(&l, "compat", registry, repo_tag)
}

#[test]
fn compat_image_runs_with_its_rootfs_read_only_at_root() {
    let registry = Registry::start();
    let image = push_compat_image(&registry, "team/compat:1", guests::HELLO_C);
    let cell = Cell::new();
    assert_eq!(cell.run(&["run", &image]).expect_ok().stdout(), "hello from C\n");
    let info = super::json(&cell, &["inspect", &image, "--format", "json"]);
    assert_eq!(info["kind"], "compat");

    // The rootfs is the guest's / (read-only) and the image's Env is applied.
    let fs_image = push_compat_image(&registry, "team/compat-fs:1", guests::FS_C);
    let out = cell.run(&["run", &fs_image, "read", "/etc/greeting"]);
    out.expect_ok();
    assert_eq!(out.stdout(), "ok: hi from the rootfs\n\n");
    let out = cell.run(&["run", &fs_image, "write", "/etc/new", "x"]);
    out.expect_code(1);
    assert!(out.stdout().starts_with("denied: /etc/new"), "{}", out.stdout());
    let env_image = push_compat_image(&registry, "team/compat-env:1", guests::ENV_C);
    let out = cell.run(&["run", &env_image]).expect_ok().stdout();
    assert!(out.contains("FROM_IMAGE=yes\n"), "{out}");
    let out = cell.run(&["run", "--env", "FROM_IMAGE=overridden", &env_image]).expect_ok().stdout();
    assert!(out.contains("FROM_IMAGE=overridden\n") && !out.contains("FROM_IMAGE=yes"), "{out}");
}

#[test]
fn wasm_layer_image_and_wasm_platform_from_an_index() {
    let registry = Registry::start();
    let dir = crate::scratch();
    let mut l = Layout::new(dir.path());
    let component = std::fs::read(guests::HELLO_COMPONENT).unwrap();
    // runwasi's format: an ordinary config with architecture wasm, a component layer.
    let wasm_layer = l.manifest(
        json!({"architecture": "wasm", "os": "wasip2", "config": {"Entrypoint": ["hello.wasm"]}, "rootfs": {"type": "layers", "diff_ids": []}}),
        "application/vnd.oci.image.config.v1+json",
        &[("application/vnd.bytecodealliance.wasm.component.layer.v0+wasm", component)],
        serde_json::Value::Null,
    );
    l.tag(&wasm_layer, "wasm-layer", None);
    // An index whose linux/amd64 entry is an ordinary image and whose wasi entry is a compat one.
    let linux = l.manifest(
        layout::compat_config("linux", "amd64", &["/bin/true"], &[]),
        "application/vnd.oci.image.config.v1+json",
        &[("application/vnd.oci.image.layer.v1.tar+gzip", layout::tar_gz(&[("bin/true", b"\x7fELF")]))],
        serde_json::Value::Null,
    );
    let wasi = l.manifest(
        layout::compat_config("wasip1", "wasm", &["/hello.wasm"], &[]),
        "application/vnd.oci.image.config.v1+json",
        &[("application/vnd.oci.image.layer.v1.tar+gzip", layout::tar_gz(&[("hello.wasm", &std::fs::read(guests::HELLO_C).unwrap())]))],
        serde_json::Value::Null,
    );
    let index = l.index(&[(linux, "linux", "amd64"), (wasi.clone(), "wasip1", "wasm")]);
    l.tag(&index, "multi", None);

    let cell = Cell::new();
    let wl = skopeo_push(&l, "wasm-layer", &registry, "team/wasm-layer:1");
    assert_eq!(cell.run(&["run", &wl]).expect_ok().stdout(), "hello from C\n");
    assert_eq!(super::json(&cell, &["inspect", &wl, "--format", "json"])["kind"], "wasm-layer");

    let multi = skopeo_push(&l, "multi", &registry, "team/multi:1");
    assert_eq!(skopeo_manifest(&multi)["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(cell.run(&["run", &multi]).expect_ok().stdout(), "hello from C\n");
    let info = super::json(&cell, &["inspect", &multi, "--format", "json"]);
    assert_eq!(info["manifestDigest"], wasi["digest"], "picked the wasm platform");
    assert_eq!(info["digest"], index["digest"]);
}
