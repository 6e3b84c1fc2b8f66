//! Precompiled code beside an image (`push --precompile`, `compile IMAGE --push`) against a real
//! registry (Debian's distribution 2.8, which has no referrers API: the `sha256-<hex>` fallback tag).
//! A node whose signature policy trusts the signer starts on that code without compiling; every other
//! case is tried and must compile instead, with the reason on stderr: code re-signed by someone else,
//! a trusted signature on code made for another image, an `insecureAcceptAnything` policy, another
//! engine.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use wasmcell_sign::{Payload, PrivateKey, SignatureLayer, build_manifest, signature_tag};

use super::sign::{PASSWORD, generate_key};
use crate::serve::Served;
use crate::services::registry::Registry;
use crate::services::{http_get, http_request};
use crate::{Cell, guests};

/// What a node logs: whether code was taken, and every compile or cache lookup.
const LOG: &str = "wasmcell_runtime=debug,wasmcell=info";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn policy_file(dir: &Path, name: &str, policy: Value) -> PathBuf {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
    path
}

/// Everything rejected but `registry`, whose images need a signature by `public`.
fn trusting(dir: &Path, registry: &str, public: &Path) -> PathBuf {
    let name = format!("trust-{}", public.file_stem().unwrap().to_str().unwrap());
    policy_file(
        dir,
        &name,
        json!({"default": [{"type": "reject"}], "transports": {"docker": {registry: [{"type": "sigstoreSigned", "keyPath": public}]}}}),
    )
}

/// What whoever can push to `repo` may do: replace the signature of the precompiled code `code` with
/// one made with `key` (not the one the nodes trust).
pub(crate) fn forge_code_signature(registry: &Registry, repo: &str, code: &str, key: &Path) {
    let attacker = PrivateKey::from_file(key, PASSWORD.as_bytes()).unwrap();
    let forged = SignatureLayer::sign(&attacker, &Payload::new(&format!("{}/{repo}@{code}", registry.addr()), code).unwrap());
    let attachment = build_manifest(None, &[forged]).unwrap();
    for blob in &attachment.blobs {
        super::sign::put_blob(registry, repo, &blob.bytes);
    }
    super::sign::put_manifest(registry, repo, &signature_tag(code).unwrap(), &attachment.manifest);
}

pub(crate) fn push_precompiled(publisher: &Cell, file: &str, image: &str, key: &Path) -> Value {
    let out = publisher.run_env(
        &[("WASMCELL_PASSWORD", PASSWORD)],
        &["push", "--precompile", "--sign", key.to_str().unwrap(), file, image, "--format", "json"],
    );
    out.expect_ok();
    serde_json::from_str(out.stdout().trim()).unwrap()
}

/// Serves `image` on a node with a home of its own under `policy`: the first answer's status and
/// everything serve wrote to stderr.
fn serve_once(image: &str, policy: &Path, flags: &[&str]) -> (u16, String) {
    let node = Cell::new();
    let mut c = node.command();
    c.env("WASMCELL_LOG", LOG)
        .args(["serve", "--addr", "127.0.0.1:0", "--signature-policy", policy.to_str().unwrap()])
        .args(flags)
        .arg(image);
    let served = Served::spawn(c, node);
    let status = served.get("/").status;
    let (_, err) = served.terminate();
    (status, err)
}

/// The entries of the fallback index of `subject` in `repo`.
fn fallback_index(registry: &Registry, repo: &str, subject: &str) -> Value {
    let resp = http_get(&registry.addr(), &format!("/v2/{repo}/manifests/{}", subject.replacen(':', "-", 1)), &[("Accept", OCI_INDEX)]);
    assert_eq!(resp.status, 200, "no fallback index for {subject}: {}", resp.text());
    resp.json()
}

fn put_index(registry: &Registry, repo: &str, tag: &str, index: &Value) {
    let resp = http_request(
        &registry.addr(),
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", OCI_INDEX)],
        &serde_json::to_vec(index).unwrap(),
    )
    .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
}

fn took_the_code(err: &str, code: &str) -> bool {
    err.contains("using precompiled code") && err.contains(code) && err.contains("adopted precompiled code") && !err.contains("compiler=")
}

#[test]
fn a_node_that_trusts_the_signer_starts_on_the_precompiled_code_without_compiling() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let publisher = Cell::new();
    let (key, public) = generate_key(&publisher, dir.path(), "team");
    let addr = registry.addr();
    let service = format!("{addr}/team/hello-http:1.0");
    let pushed = push_precompiled(&publisher, guests::HTTP_HELLO, &service, &key);
    let subject = pushed["digest"].as_str().unwrap().to_string();
    let code = pushed["precompiled"]["digest"].as_str().unwrap().to_string();
    assert_eq!(pushed["precompiled"]["listing"], "fallback-tag", "{pushed}");
    assert_eq!(pushed["precompiled"]["subject"], subject.as_str(), "{pushed}");
    let index = fallback_index(&registry, "team/hello-http", &subject);
    assert_eq!(index["manifests"][0]["digest"], code.as_str(), "{index}");
    assert_eq!(index["manifests"][0]["artifactType"], "application/vnd.wasmcell.precompiled.v1", "{index}");
    let policy = trusting(dir.path(), &addr, &public);

    let (status, err) = serve_once(&service, &policy, &[]);
    assert_eq!(status, 200, "{err}");
    assert!(took_the_code(&err, &code), "the node compiled instead of taking the code:\n{err}");
    // A node without the image fetches the code while the image downloads.
    assert!(err.contains("fetched while the image downloaded"), "{err}");
    // `pull` takes the code into the cache: the first start neither fetches nor compiles.
    let node = Cell::new();
    let out = node.run(&["pull", "--signature-policy", policy.to_str().unwrap(), &service, "--format", "json"]);
    out.expect_ok();
    let pulled: Value = serde_json::from_str(out.stdout().trim()).unwrap();
    assert_eq!(pulled["precompiled"], code.as_str(), "{pulled}");
    let mut c = node.command();
    c.env("WASMCELL_LOG", LOG).args(["serve", "--addr", "127.0.0.1:0", "--signature-policy", policy.to_str().unwrap(), &service]);
    let served = Served::spawn(c, node);
    assert_eq!(served.get("/").status, 200);
    let (_, err) = served.terminate();
    assert!(err.contains("cache hit") && !err.contains("using precompiled code") && !err.contains("compiler="), "{err}");
    // Another pool size and memory cap are still the same engine.
    let (status, err) = serve_once(&service, &policy, &["--max-concurrency", "8", "--memory", "64M"]);
    assert_eq!(status, 200, "{err}");
    assert!(took_the_code(&err, &code), "{err}");

    // A command image gets `run`'s engine's code.
    let command = format!("{addr}/team/hello:1.0");
    let pushed = push_precompiled(&publisher, guests::HELLO_C, &command, &key);
    let command_code = pushed["precompiled"]["digest"].as_str().unwrap().to_string();
    let node = Cell::new();
    let out = node.run_env(&[("WASMCELL_LOG", LOG)], &["run", "--signature-policy", policy.to_str().unwrap(), &command]);
    out.expect_ok();
    assert_eq!(out.stdout(), "hello from C\n");
    assert!(took_the_code(&out.stderr(), &command_code), "{}", out.stderr());
    // ... and left it in the cache: the next run neither fetches nor compiles.
    let out = node.run_env(&[("WASMCELL_LOG", LOG)], &["run", "--signature-policy", policy.to_str().unwrap(), &command]);
    out.expect_ok();
    let err = out.stderr();
    assert!(err.contains("cache hit") && !err.contains("using precompiled code") && !err.contains("compiler="), "{err}");
    // An image already stored whose code is not cached: the code is looked for before the start.
    node.run(&["cache", "clean"]).expect_ok();
    let out = node.run_env(&[("WASMCELL_LOG", LOG)], &["run", "--signature-policy", policy.to_str().unwrap(), &command]);
    out.expect_ok();
    assert!(took_the_code(&out.stderr(), &command_code), "{}", out.stderr());
    assert!(!out.stderr().contains("while the image downloaded"), "{}", out.stderr());
    // With --no-cache the code is taken all the same, and nothing is written.
    let fresh = Cell::new();
    let out = fresh.run_env(&[("WASMCELL_LOG", LOG)], &["run", "--no-cache", "--signature-policy", policy.to_str().unwrap(), &command]);
    out.expect_ok();
    assert!(took_the_code(&out.stderr(), &command_code), "{}", out.stderr());
    let written = std::fs::read_dir(fresh.home().join("cache/compiled")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(written, 0, "--no-cache wrote the cache");

    // `compile IMAGE --push` attaches it again: one entry per engine fingerprint, the newest.
    let out = publisher
        .run_env(&[("WASMCELL_PASSWORD", PASSWORD)], &["compile", "--push", "--sign", key.to_str().unwrap(), &service, "--format", "json"]);
    out.expect_ok();
    let again: Value = serde_json::from_str(out.stdout().trim()).unwrap();
    let index = fallback_index(&registry, "team/hello-http", &subject);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
    assert_eq!(index["manifests"][0]["digest"], again["digest"], "{index}");
    // Without a key there is nothing a node would trust: refused before anything is compiled.
    publisher.run(&["push", "--precompile", guests::HTTP_HELLO, &service]).expect_code(125);
}

#[test]
fn precompiled_code_is_used_only_when_a_trusted_key_signed_it_for_this_image_and_engine() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let publisher = Cell::new();
    let (key, public) = generate_key(&publisher, dir.path(), "team");
    let (other_key, _) = generate_key(&publisher, dir.path(), "other");
    let addr = registry.addr();
    let image = format!("{addr}/team/app:1.0");
    let pushed = push_precompiled(&publisher, guests::HTTP_HELLO, &image, &key);
    let subject = pushed["digest"].as_str().unwrap().to_string();
    let code = pushed["precompiled"]["digest"].as_str().unwrap().to_string();
    let policy = trusting(dir.path(), &addr, &public);
    let compiled_here = |err: &str, why: &str| {
        assert!(err.contains(why), "expected {why:?}:\n{err}");
        assert!(!err.contains("using precompiled code") && err.contains("compiler="), "the node did not compile:\n{err}");
    };

    // A policy that accepts images without signatures does not make native code trusted.
    let anything = policy_file(dir.path(), "anything", json!({"default": [{"type": "insecureAcceptAnything"}]}));
    let (status, err) = serve_once(&image, &anything, &[]);
    assert_eq!(status, 200, "{err}");
    compiled_here(&err, "no signature policy requires a signer");

    // Another engine: code for Cranelift is not for Winch.
    let (status, err) = serve_once(&image, &policy, &["--engine", "winch"]);
    assert_eq!(status, 200, "{err}");
    compiled_here(&err, "is for this engine");

    // The trusted signature on this code, listed for another image of the same repository.
    let other = format!("{addr}/team/app:2.0");
    let other_subject = publisher.run(&["push", guests::HTTP_ECHO, &other, "--format", "json"]);
    other_subject.expect_ok();
    let other_subject: Value = serde_json::from_str(other_subject.stdout().trim()).unwrap();
    let other_subject = other_subject["digest"].as_str().unwrap().to_string();
    let index = fallback_index(&registry, "team/app", &subject);
    put_index(&registry, "team/app", &other_subject.replacen(':', "-", 1), &index);
    // (the image itself signed, so the node gets as far as the code)
    let out = publisher.run_env(&[("WASMCELL_PASSWORD", PASSWORD)], &["sign", "--key", key.to_str().unwrap(), &other]);
    out.expect_ok();
    let (status, err) = serve_once(&other, &policy, &[]);
    assert_eq!(status, 200, "{err}");
    compiled_here(&err, &format!("it was made for image {subject}, not {other_subject}"));

    // Whoever can push to the registry replaces the code's signature with one of their own.
    forge_code_signature(&registry, "team/app", &code, &other_key);
    let (status, err) = serve_once(&image, &policy, &[]);
    assert_eq!(status, 200, "{err}");
    compiled_here(&err, "does not verify with any trusted key");
    let line = err.lines().find(|l| l.starts_with("wasmcell: warning: precompiled code of") && l.ends_with("compiling here"));
    let line = line.unwrap_or_else(|| panic!("no warning line:\n{err}"));
    assert!(line.contains(&format!("of {image} not used: {code}: ")) && line.matches("team/app").count() == 1, "{line}");
}

/// A WASI 0.3 component's code is for the engine of the async ABI, not the plain one: a node finds it
/// while the image downloads too (before its wasm is read and scanned), and starts on it.
#[test]
fn a_wasi_0_3_components_precompiled_code_is_fetched_while_the_image_downloads() {
    let Some(service) = crate::wasi_testsuite::p3_test("http-service") else {
        eprintln!("wasi 0.3: SKIPPED, no ../shared/wasi-testsuite.tar.gz (or $WASMCELL_WASI_TESTSUITE)");
        return;
    };
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let publisher = Cell::new();
    let (key, public) = generate_key(&publisher, dir.path(), "team");
    let image = format!("{}/team/p3-service:1", registry.addr());
    let pushed = push_precompiled(&publisher, service.to_str().unwrap(), &image, &key);
    let code = pushed["precompiled"]["digest"].as_str().unwrap().to_string();
    let policy = trusting(dir.path(), &registry.addr(), &public);
    let (status, err) = serve_once(&image, &policy, &[]);
    assert_eq!(status, 200, "{err}");
    assert!(took_the_code(&err, &code), "the node compiled instead of taking the code:\n{err}");
    assert!(err.contains("fetched while the image downloaded"), "{err}");
}
