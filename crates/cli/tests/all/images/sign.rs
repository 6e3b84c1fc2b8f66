//! Signed images: `key generate`, `push --sign`, `sign`, `verify`, and the signature policy that
//! `pull`, `run IMAGE` and `serve IMAGE` enforce, against a real registry; every way a signature can
//! lie is tried (another digest, another image, a tampered payload, a wrong key, none at all, a huge
//! or malformed layer), and `save`/`load` must carry signatures to a node without the registry.
//!
//! Debian's skopeo 1.9 cannot take part: its containers/image is built with sigstore disabled
//! ("Debian-local change: sigstore disabled" on `--sign-by-sigstore-private-key` and on a
//! `sigstoreSigned` policy), so the cross-check of the formats is OpenSSL (`signatures_interoperate_with_openssl_both_ways`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use wasmcell_sign::{Payload, PrivateKey, SignatureLayer, build_manifest, signature_tag};

use super::{blob_count, json as json_of};
use crate::services::registry::Registry;
use crate::services::{http_get, http_request};
use crate::{Cell, guests};

/// The exit code of an image the signature policy refused.
const UNTRUSTED: i32 = 122;
pub(crate) const PASSWORD: &str = "correct horse";

/// A key pair made by `wasmcell key generate` in `dir`: (private, public).
pub(crate) fn generate_key(cell: &Cell, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    let out = cell.run_env(
        &[("WASMCELL_PASSWORD", PASSWORD)],
        &["key", "generate", "--output-key-prefix", prefix.to_str().unwrap(), "--format", "json"],
    );
    out.expect_ok();
    let report: Value = serde_json::from_str(out.stdout().trim()).unwrap();
    let (private, public) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
    assert_eq!(report["private_key"], private.to_str().unwrap());
    (private, public)
}

/// A policy file: everything rejected but `registry`, which needs a signature by `public`.
fn require_key(dir: &Path, registry: &str, public: &Path) -> PathBuf {
    let policy = json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {registry: [{"type": "sigstoreSigned", "keyPath": public}]}}
    });
    let path = dir.join(format!("policy-{}.json", public.file_stem().unwrap().to_str().unwrap()));
    std::fs::write(&path, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
    path
}

fn push_signed(cell: &Cell, file: &str, image: &str, key: &Path) -> Value {
    let out = cell.run_env(&[("WASMCELL_PASSWORD", PASSWORD)], &["push", "--sign", key.to_str().unwrap(), file, image, "--format", "json"]);
    out.expect_ok();
    serde_json::from_str(out.stdout().trim()).unwrap()
}

/// `PUT` of a manifest (bytes as given) at `tag` of `repo`.
pub(crate) fn put_manifest(registry: &Registry, repo: &str, tag: &str, bytes: &[u8]) {
    let addr = registry.addr();
    let resp = http_request(
        &addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        bytes,
    )
    .unwrap();
    assert_eq!(resp.status, 201, "PUT manifest {repo}:{tag}: {}", resp.text());
}

/// Uploads a blob to `repo` (POST, then PUT with the digest).
pub(crate) fn put_blob(registry: &Registry, repo: &str, bytes: &[u8]) {
    let addr = registry.addr();
    let started = http_request(&addr, "POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"").unwrap();
    assert_eq!(started.status, 202, "{}", started.text());
    let location = started.header("location").unwrap().to_string();
    let path = location.split_once(&addr).map_or(location.as_str(), |(_, p)| p);
    let sep = if path.contains('?') { '&' } else { '?' };
    let digest = super::layout::digest(bytes);
    let done =
        http_request(&addr, "PUT", &format!("{path}{sep}digest={digest}"), &[("Content-Type", "application/octet-stream")], bytes).unwrap();
    assert_eq!(done.status, 201, "{}", done.text());
}

/// Attaches `signatures` as the `.sig` of `digest` in `repo`, replacing what is there: how a hostile
/// registry (or whoever can push to it) would lie.
fn attach(registry: &Registry, repo: &str, digest: &str, signatures: &[SignatureLayer]) {
    let attachment = build_manifest(None, signatures).unwrap();
    for blob in &attachment.blobs {
        put_blob(registry, repo, &blob.bytes);
    }
    put_manifest(registry, repo, &signature_tag(digest).unwrap(), &attachment.manifest);
}

fn private_key(path: &Path) -> PrivateKey {
    PrivateKey::from_file(path, PASSWORD.as_bytes()).unwrap()
}

#[test]
fn a_policy_that_requires_a_key_admits_only_images_that_key_signed() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let publisher = Cell::new();
    let (key, public) = generate_key(&publisher, dir.path(), "team");
    let (_, other_public) = generate_key(&publisher, dir.path(), "other");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the private key must be 0600");
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"), "{pem}");
    assert!(std::fs::read_to_string(&public).unwrap().starts_with("-----BEGIN PUBLIC KEY-----"));

    let signed = format!("{}/team/hello:1.0", registry.addr());
    let unsigned = format!("{}/team/unsigned:1.0", registry.addr());
    let pushed = push_signed(&publisher, guests::HELLO_C, &signed, &key);
    let digest = pushed["digest"].as_str().unwrap().to_string();
    assert_eq!(pushed["signed"]["digest"], digest.as_str(), "{pushed}");
    publisher.run(&["push", guests::HELLO_C, &unsigned]).expect_ok();

    // verify: the right key, printing who and what; a wrong key or no signature is 122.
    let verified = json_of(&publisher, &["verify", "--key", public.to_str().unwrap(), &signed, "--format", "json"]);
    assert_eq!(verified["digest"], digest.as_str());
    assert_eq!(verified["signed_reference"], signed.as_str());
    assert_eq!(verified["key_fingerprint"], pushed["signed"]["key_fingerprint"]);
    publisher
        .run(&["verify", "--key", other_public.to_str().unwrap(), &signed])
        .expect_code(UNTRUSTED)
        .expect_error_line("does not verify with any trusted key");
    publisher.run(&["verify", "--key", public.to_str().unwrap(), &unsigned]).expect_code(UNTRUSTED).expect_error_line("no signature");

    // A node with the policy: the signed image pulls and runs, the unsigned one is refused before any
    // blob is fetched, and nothing is stored under its name.
    let policy = require_key(dir.path(), &registry.addr(), &public);
    let node = Cell::new();
    let policy_flag = ["--signature-policy", policy.to_str().unwrap()];
    let out = node.run(&[&["pull"][..], &policy_flag, &[&signed, "--format", "json"]].concat());
    out.expect_ok();
    let report: Value = serde_json::from_str(out.stdout().trim()).unwrap();
    assert!(report["verified"].as_str().unwrap().contains("signed as"), "{report}");
    let before = blob_count(&node);
    node.run(&[&["pull"][..], &policy_flag, &[&unsigned]].concat())
        .expect_code(UNTRUSTED)
        .expect_error_line("refused by the signature policy: a signature was required, but no signature exists");
    assert_eq!(blob_count(&node), before, "a refused pull stored blobs");
    assert!(!node.run(&["images", "-q"]).stdout().contains("unsigned"), "a refused image got a name");
    let run = node.run(&[&["run"][..], &policy_flag, &[&signed]].concat());
    run.expect_ok();
    assert_eq!(run.stdout(), "hello from C\n");
    node.run(&[&["run"][..], &policy_flag, &[&unsigned]].concat()).expect_code(UNTRUSTED).expect_error_line("no signature exists");
    // Another registry falls to the default scope: reject.
    node.run(&[&["pull"][..], &policy_flag, &["localhost:1/x:1"]].concat()).expect_code(UNTRUSTED).expect_error_line("rejected by policy");

    // The policy under the home applies without a flag, also to an image stored before it existed.
    let early = Cell::new();
    early.run(&["pull", &unsigned]).expect_ok();
    std::fs::copy(&policy, early.home().join("policy.json")).unwrap();
    early.run(&["run", "--pull", "never", &unsigned]).expect_code(UNTRUSTED).expect_error_line("no signature exists");
    // A policy that requires another key refuses the signed image too.
    let other_policy = require_key(dir.path(), &registry.addr(), &other_public);
    node.run(&["run", "--signature-policy", other_policy.to_str().unwrap(), &signed])
        .expect_code(UNTRUSTED)
        .expect_error_line("does not verify with any trusted key");

    // `sign` adds a signature to what a tag points at, keeping the earlier one.
    let out = publisher.run_env(&[("WASMCELL_PASSWORD", PASSWORD)], &["sign", "--key", key.to_str().unwrap(), &unsigned]);
    out.expect_ok();
    node.run(&[&["pull"][..], &policy_flag, &[&unsigned]].concat()).expect_ok();
}

#[test]
fn signatures_that_lie_are_refused() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let publisher = Cell::new();
    let (key, public) = generate_key(&publisher, dir.path(), "team");
    let signer = private_key(&key);
    let addr = registry.addr();
    let image = format!("{addr}/team/app:1.0");
    let digest = publisher.run(&["push", guests::HELLO_C, &image, "--format", "json"]);
    let digest: Value = serde_json::from_str(digest.stdout().trim()).unwrap();
    let digest = digest["digest"].as_str().unwrap().to_string();
    let other = json_of(&publisher, &["push", guests::ENV_C, &format!("{addr}/team/app:2.0"), "--format", "json"]);
    let other_digest = other["digest"].as_str().unwrap().to_string();
    let policy = require_key(dir.path(), &addr, &public);
    let node = Cell::new();
    let pull = |what: &str| {
        let out = node.run(&["pull", "--signature-policy", policy.to_str().unwrap(), &image]);
        out.expect_code(UNTRUSTED);
        let err = out.stderr();
        assert!(err.contains(what), "expected {what:?}: {err}");
        out.expect_error_line("refused by the signature policy");
        assert_eq!(blob_count(&node), 0, "a refused pull stored blobs");
    };
    let good = |reference: &str, digest: &str| SignatureLayer::sign(&signer, &Payload::new(reference, digest).unwrap());

    // A valid signature, of the other image's digest, attached to this one.
    attach(&registry, "team/app", &digest, &[good(&image, &other_digest)]);
    pull("signature is for another image digest");
    // A valid signature of this digest that names another image.
    attach(&registry, "team/app", &digest, &[good(&format!("{addr}/team/evil:1.0"), &digest)]);
    pull("does not match");
    // A signed payload changed afterwards (the digest inside swapped back to ours).
    let mut tampered = good(&image, &other_digest);
    tampered.payload = Payload::new(&image, &digest).unwrap().to_bytes();
    attach(&registry, "team/app", &digest, &[tampered]);
    pull("does not verify");
    // Base64 that is not, and a correctly signed payload that is not JSON.
    let mut not_base64 = good(&image, &digest);
    not_base64.signature_b64 = "!!not base64!!".into();
    attach(&registry, "team/app", &digest, &[not_base64]);
    pull("invalid signature");
    let payload = b"{\"critical\": not json".to_vec();
    let garbage = SignatureLayer { signature_b64: signer.sign(&payload), payload, annotations: Default::default() };
    attach(&registry, "team/app", &digest, &[garbage]);
    pull("invalid signature payload");
    // A signature layer that declares a huge payload: refused before it is fetched.
    let sig_path = format!("/v2/team/app/manifests/{}", signature_tag(&digest).unwrap());
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    let mut huge = http_get(&addr, &sig_path, &accept).json();
    huge["layers"][0]["size"] = json!(1u64 << 40);
    put_manifest(&registry, "team/app", &signature_tag(&digest).unwrap(), &serde_json::to_vec(&huge).unwrap());
    pull("declares");
    // The real signature beside the lies: accepted (one good signature is enough, as in containers/image).
    attach(&registry, "team/app", &digest, &[good(&format!("{addr}/team/evil:1.0"), &digest), good(&image, &digest)]);
    node.run(&["pull", "--signature-policy", policy.to_str().unwrap(), &image]).expect_ok();
    // ... and kept: the stored image runs under the policy without the registry.
    drop(registry);
    let out = node.run(&["run", "--pull", "never", "--signature-policy", policy.to_str().unwrap(), &image]);
    out.expect_ok();
    assert_eq!(out.stdout(), "hello from C\n");
}

#[test]
fn bad_keys_passwords_and_policies_are_one_line_errors() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let cell = Cell::new();
    let (key, public) = generate_key(&cell, dir.path(), "team");
    let image = format!("{}/team/app:1.0", registry.addr());
    // A wrong password: nothing is pushed.
    cell.run_env(&[("WASMCELL_PASSWORD", "wrong")], &["push", "--sign", key.to_str().unwrap(), guests::HELLO_C, &image])
        .expect_code(125)
        .expect_error_line("wrong password");
    assert_eq!(http_get(&registry.addr(), "/v2/team/app/tags/list", &[]).status, 404, "pushed despite a wrong password");
    // No password and no terminal.
    cell.run(&["sign", "--key", key.to_str().unwrap(), &image]).expect_code(125).expect_error_line("WASMCELL_PASSWORD");
    // A key file that is not one, and one that does not exist.
    cell.run(&["verify", "--key", key.to_str().unwrap(), &image]).expect_code(125).expect_error_line("invalid public key");
    cell.run(&["verify", "--key", "/nonexistent.pub", &image]).expect_code(127).expect_error_line("nonexistent.pub");
    // key generate does not overwrite.
    cell.run_env(
        &[("WASMCELL_PASSWORD", PASSWORD)],
        &["key", "generate", "--output-key-prefix", dir.path().join("team").to_str().unwrap()],
    )
    .expect_code(125)
    .expect_error_line("--force");
    // Policies that do not parse, or name what cannot be checked.
    for (name, text) in [
        ("truncated", "{\"default\": [".to_string()),
        ("unknown-type", r#"{"default":[{"type":"trustMe"}]}"#.to_string()),
        ("no-default", r#"{"transports":{}}"#.to_string()),
        ("relative-key", r#"{"default":[{"type":"sigstoreSigned","keyPath":"key.pub"}]}"#.to_string()),
    ] {
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, text).unwrap();
        let out = cell.run(&["pull", "--signature-policy", path.to_str().unwrap(), &image]);
        out.expect_code(125).expect_error_line("invalid policy");
    }
    let _ = public;
}

#[test]
fn save_and_load_carry_signatures_to_a_node_without_the_registry() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let publisher = Cell::new();
    let (key, public) = generate_key(&publisher, dir.path(), "team");
    let image = format!("{}/team/hello:1.0", registry.addr());
    push_signed(&publisher, guests::HELLO_C, &image, &key);
    let policy = require_key(dir.path(), &registry.addr(), &public);

    // Pulled under the policy: the signature is kept and saved along.
    let online = Cell::new();
    online.run(&["pull", "--signature-policy", policy.to_str().unwrap(), &image]).expect_ok();
    let tar = dir.path().join("hello.tar");
    online.run(&["save", "-o", tar.to_str().unwrap(), &image]).expect_ok();
    drop(registry);
    let offline = Cell::new();
    offline.run(&["load", "-i", tar.to_str().unwrap()]).expect_ok();
    let out = offline.run(&["run", "--pull", "never", "--signature-policy", policy.to_str().unwrap(), &image]);
    out.expect_ok();
    assert_eq!(out.stdout(), "hello from C\n");
    assert_eq!(offline.run(&["images", "-q"]).stdout().lines().count(), 1, "signatures are not listed as images");

    // Saved from a node that kept no signature: refused offline.
    let unsigned_tar = dir.path().join("unsigned.tar");
    let plain = Cell::new();
    plain.run(&["load", "-i", tar.to_str().unwrap()]).expect_ok();
    let sig_name = offline.run(&["images", "--format", "json"]);
    assert!(!sig_name.stdout().contains(".sig"), "{}", sig_name.stdout());
    // Drop the signature by re-tagging into a repository it was not saved for.
    let renamed = image.replace("team/hello", "team/copy");
    plain.run(&["tag", &image, &renamed]).expect_ok();
    plain.run(&["save", "-o", unsigned_tar.to_str().unwrap(), &renamed]).expect_ok();
    let stranger = Cell::new();
    stranger.run(&["load", "-i", unsigned_tar.to_str().unwrap()]).expect_ok();
    stranger
        .run(&["run", "--pull", "never", "--signature-policy", policy.to_str().unwrap(), &renamed])
        .expect_code(UNTRUSTED)
        .expect_error_line("no signature exists");
}

/// Runs `openssl ARGS` and returns its stdout (the test command installs Debian's openssl).
fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl").args(args).stdin(std::process::Stdio::null()).output().expect("failed to run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The formats against a second, independent implementation: OpenSSL. A key and a signature OpenSSL
/// made verify in wasmcell; the key and the signature wasmcell made (as they sit in the registry) verify
/// in OpenSSL. (skopeo cannot be the second implementation here: see the module comment.)
#[test]
fn signatures_interoperate_with_openssl_both_ways() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let cell = Cell::new();
    let addr = registry.addr();

    // OpenSSL signs; wasmcell verifies.
    let image = format!("{addr}/team/by-openssl:1.0");
    let pushed = json_of(&cell, &["push", guests::HELLO_C, &image, "--format", "json"]);
    let digest = pushed["digest"].as_str().unwrap().to_string();
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &path("ossl.pem")]);
    openssl(&["ec", "-in", &path("ossl.pem"), "-pubout", "-out", &path("ossl.pub")]);
    let payload = Payload::new(&image, &digest).unwrap().to_bytes();
    std::fs::write(path("payload.json"), &payload).unwrap();
    let der = openssl(&["dgst", "-sha256", "-sign", &path("ossl.pem"), &path("payload.json")]);
    let layer = SignatureLayer { payload, signature_b64: b64.encode(&der), annotations: Default::default() };
    attach(&registry, "team/by-openssl", &digest, &[layer]);
    let verified = json_of(&cell, &["verify", "--key", &path("ossl.pub"), &image, "--format", "json"]);
    assert_eq!(verified["digest"], digest.as_str(), "{verified}");

    // wasmcell signs; OpenSSL reads the public key and verifies the signature fetched from the registry.
    let (key, public) = generate_key(&cell, dir.path(), "team");
    let signed = format!("{addr}/team/by-wasmcell:1.0");
    let pushed = push_signed(&cell, guests::HELLO_C, &signed, &key);
    let digest = pushed["digest"].as_str().unwrap();
    let text = String::from_utf8(openssl(&["pkey", "-pubin", "-in", public.to_str().unwrap(), "-noout", "-text"])).unwrap();
    assert!(text.contains("prime256v1") || text.contains("P-256"), "{text}");
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    let manifest = http_get(&addr, &format!("/v2/team/by-wasmcell/manifests/{}", signature_tag(digest).unwrap()), &accept).json();
    let layer = &manifest["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.dev.cosign.simplesigning.v1+json", "{manifest}");
    let payload = http_get(&addr, &format!("/v2/team/by-wasmcell/blobs/{}", layer["digest"].as_str().unwrap()), &[]).body;
    let doc: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(doc["critical"]["image"]["docker-manifest-digest"], digest, "{doc}");
    assert_eq!(doc["critical"]["identity"]["docker-reference"], signed.as_str(), "{doc}");
    assert_eq!(doc["critical"]["type"], "cosign container image signature", "{doc}");
    let der = b64.decode(layer["annotations"]["dev.cosignproject.cosign/signature"].as_str().unwrap()).unwrap();
    std::fs::write(path("wasmcell.sig"), der).unwrap();
    std::fs::write(path("wasmcell-payload.json"), &payload).unwrap();
    let ok = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        public.to_str().unwrap(),
        "-signature",
        &path("wasmcell.sig"),
        &path("wasmcell-payload.json"),
    ]);
    assert_eq!(String::from_utf8_lossy(&ok).trim(), "Verified OK");
}
