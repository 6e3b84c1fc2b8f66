//! A private OCI registry: Debian's `docker-registry` (distribution 2.8) serving plain HTTP on 127.0.0.1, with
//! filesystem storage in a fresh temp dir and deletes enabled. Three flavours: anonymous, htpasswd (bcrypt) and
//! token auth (with [`TokenServer`]).
//!
//! Distribution quirks worth knowing when writing tests against it:
//! - manifest GETs need an OCI `Accept` header, or an OCI manifest answers 404 (`MANIFEST_UNKNOWN`);
//! - there is no referrers API (`/v2/NAME/referrers/DIGEST` is 404): use the `sha256-<hex>` tag fallback;
//! - with token auth, `GET /v2/` answers 401 `WWW-Authenticate: Bearer realm="..",service=".."` (no scope);
//!   `/v2/_catalog` needs the scope `registry:catalog:*`;
//! - the JWT `kid` must be the libtrust id of a key in `rootcertbundle` (see [`super::token`]).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::token::TokenServer;
use super::{free_port, http_request, spawn_service, stop_group};

/// Path of Debian's registry binary.
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// How long a registry gets to answer `GET /v2/` after it was started.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// A running registry; killed and its storage deleted on drop.
pub struct Registry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Registry {
    /// A registry anyone may pull from and push to.
    pub fn start() -> Registry {
        Registry::start_with_auth(|_| String::new())
    }

    /// A registry that wants HTTP Basic auth as `user`/`pass` for every request (bcrypt htpasswd file).
    pub fn start_htpasswd(user: &str, pass: &str) -> Registry {
        Registry::start_with_auth(|dir| {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .stdin(Stdio::null())
                .output()
                .expect("failed to run htpasswd (Debian apache2-utils)");
            let out = super::check("htpasswd -Bbn", out);
            let file = dir.join("htpasswd");
            std::fs::write(&file, out.stdout).unwrap();
            format!("auth:\n  htpasswd:\n    realm: wasmcell-test\n    path: {}\n", yaml_str(&file))
        })
    }

    /// A registry with distribution's token auth, and the token server that gives `user`/`pass` their tokens.
    pub fn start_token(user: &str, pass: &str) -> (Registry, TokenServer) {
        let tokens = TokenServer::start(user, pass);
        let registry = Registry::start_with_auth(|_| {
            format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                yaml_str(tokens.realm()),
                yaml_str(tokens.service()),
                yaml_str(tokens.issuer()),
                yaml_str(tokens.cert_path())
            )
        });
        (registry, tokens)
    }

    /// A token-auth registry whose challenge names `realm` as its token server (a lying registry: the
    /// tokens it would accept come from `tokens`, but it sends clients elsewhere).
    pub fn start_token_realm(user: &str, pass: &str, realm: &str) -> (Registry, TokenServer) {
        let tokens = TokenServer::start(user, pass);
        let registry = Registry::start_with_auth(|_| {
            format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                yaml_str(realm),
                yaml_str(tokens.service()),
                yaml_str(tokens.issuer()),
                yaml_str(tokens.cert_path())
            )
        });
        (registry, tokens)
    }

    /// Starts the registry with an `auth:` section made by `auth(dir)` (empty for none), on a free port; retries
    /// with another port when the one picked was taken in the meantime.
    fn start_with_auth(auth: impl FnOnce(&Path) -> String) -> Registry {
        let dir = tempfile::Builder::new().prefix("wasmcell-registry-").tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        let auth = auth(dir.path());
        let config_path = dir.path().join("config.yml");
        let log_path = dir.path().join("registry.log");
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let addr = format!("127.0.0.1:{}", free_port());
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  formatter: text\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: {addr}\n  secret: wasmcell-test-secret\n\
                 {auth}",
                yaml_str(&storage)
            );
            std::fs::write(&config_path, config).unwrap();
            let log = std::fs::File::create(&log_path).unwrap();
            let mut cmd = Command::new(DOCKER_REGISTRY);
            cmd.arg("serve").arg(&config_path).current_dir(dir.path()).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
            let mut child =
                spawn_service(cmd).unwrap_or_else(|e| panic!("failed to start {DOCKER_REGISTRY} (is docker-registry installed?): {e}"));
            let deadline = Instant::now() + START_DEADLINE;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = read_log(&log_path);
                    if log.contains("address already in use") && attempt < ATTEMPTS {
                        break; // someone took the port: try another
                    }
                    panic!("docker-registry exited with {status} before answering on {addr}; its log:\n{log}");
                }
                if answers_as_registry(&addr) {
                    return Registry { child, addr, dir };
                }
                if Instant::now() >= deadline {
                    stop_group(&mut child, Duration::ZERO);
                    panic!(
                        "docker-registry did not answer GET http://{addr}/v2/ within {START_DEADLINE:?}; its log:\n{}",
                        read_log(&log_path)
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        unreachable!()
    }

    /// `127.0.0.1:PORT`, the registry part of image references (`ADDR/repo:tag`).
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The filesystem driver's root directory.
    pub fn storage_root(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the bytes of blob `digest` (`sha256:HEX`, or just `HEX`); tests can corrupt or
    /// delete it to simulate a bad registry.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "not a sha256 digest: {digest}");
        self.storage_root().join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// Everything the registry logged so far (level warn and above, text format).
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("registry.log"))
    }

    /// The registry's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        stop_group(&mut self.child, Duration::ZERO);
    }
}

/// A value YAML reads back as exactly this string (YAML accepts JSON strings).
fn yaml_str(s: impl AsRef<std::ffi::OsStr>) -> String {
    serde_json::to_string(s.as_ref().to_str().expect("non-UTF-8 path")).unwrap()
}

fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        s = String::from_utf8_lossy(&bytes).into_owned();
    }
    s
}

/// `GET /v2/` got an HTTP answer (any status) that came from a distribution registry, not from whatever else might
/// have grabbed the port.
fn answers_as_registry(addr: &str) -> bool {
    match http_request(addr, "GET", "/v2/", &[], b"") {
        Ok(resp) => resp.header("Docker-Distribution-Api-Version").is_some_and(|v| v.starts_with("registry/2")),
        Err(_) => false,
    }
}

/// `sha256:HEX` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A tiny single-layer image written by hand as an OCI image layout.
///
/// Its layer is an uncompressed tar: push it with `skopeo copy --preserve-digests` to keep the manifest as it is
/// (otherwise skopeo gzips the layer for the registry and writes a new manifest).
pub struct OciLayout {
    /// The layout directory, for `oci:DIR:TAG` references.
    pub dir: PathBuf,
    pub tag: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    /// An uncompressed tar with one file, `hello.txt`.
    pub layer: Vec<u8>,
    pub layer_digest: String,
}

impl OciLayout {
    /// `oci:DIR:TAG`, the skopeo reference of this image.
    pub fn skopeo_ref(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }
}

/// Writes an OCI image layout at `dir` (created if missing): `oci-layout`, `index.json` naming the manifest `tag`,
/// and the blobs of one manifest, its config and one uncompressed tar layer holding `hello.txt` = `content`.
pub fn write_oci_layout(dir: &Path, tag: &str, content: &[u8]) -> OciLayout {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, "hello.txt", content).unwrap();
    let layer = builder.into_inner().unwrap();
    let layer_digest = sha256_digest(&layer);

    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))
    .unwrap();
    let config_digest = sha256_digest(&config);

    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len() }],
    }))
    .unwrap();
    let manifest_digest = sha256_digest(&manifest);

    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for (digest, bytes) in [(&layer_digest, &layer), (&config_digest, &config), (&manifest_digest, &manifest)] {
        std::fs::write(blobs.join(digest.strip_prefix("sha256:").unwrap()), bytes).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    OciLayout { dir: dir.to_path_buf(), tag: tag.to_string(), manifest, manifest_digest, config, config_digest, layer, layer_digest }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::{basic_auth, check, http_get, skopeo};

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    #[test]
    fn registry_starts_and_answers() {
        let registry = Registry::start();
        let v2 = http_get(&registry.addr(), "/v2/", &[]);
        assert_eq!(v2.status, 200, "{}", v2.text());

        // Push a hand-written OCI layout with skopeo, read the manifest back, find the layer in storage.
        let scratch = tempfile::tempdir().unwrap();
        let image = write_oci_layout(&scratch.path().join("layout"), "v1", b"hello from wasmcell\n");
        let dest = format!("docker://{}/wasmcell/hello:v1", registry.addr());
        // Without --preserve-digests skopeo gzips the uncompressed layer on the way to a registry.
        check("skopeo copy", skopeo(&["copy", "--preserve-digests", &image.skopeo_ref(), &dest]));
        let raw = check("skopeo inspect --raw", skopeo(&["inspect", "--raw", "--tls-verify=false", &dest])).stdout;
        assert_eq!(String::from_utf8_lossy(&raw).trim_end(), String::from_utf8_lossy(&image.manifest), "skopeo changed the manifest");

        // Distribution answers an OCI manifest GET by tag and by digest when asked with an OCI Accept header.
        for reference in ["v1", image.manifest_digest.as_str()] {
            let got = http_get(&registry.addr(), &format!("/v2/wasmcell/hello/manifests/{reference}"), &[("Accept", OCI_MANIFEST)]);
            assert_eq!(got.status, 200, "{reference}: {}", got.text());
            assert_eq!(got.body, image.manifest);
            assert_eq!(got.header("Docker-Content-Digest"), Some(image.manifest_digest.as_str()));
        }
        // ... and pretends an OCI manifest does not exist to a client that does not accept OCI.
        let no_accept = http_get(&registry.addr(), "/v2/wasmcell/hello/manifests/v1", &[]);
        assert_eq!(no_accept.status, 404, "{}", no_accept.text());
        assert_eq!(std::fs::read(registry.blob_data_path(&image.layer_digest)).unwrap(), image.layer);
        assert_eq!(std::fs::read(registry.blob_data_path(&image.config_digest)).unwrap(), image.config);
        let blob = http_get(&registry.addr(), &format!("/v2/wasmcell/hello/blobs/{}", image.layer_digest), &[]);
        assert_eq!(blob.status, 200);
        assert_eq!(blob.body, image.layer);
    }

    #[test]
    fn htpasswd_registry_wants_basic_auth() {
        let registry = Registry::start_htpasswd("alice", "s3cret");
        let anonymous = http_get(&registry.addr(), "/v2/", &[]);
        assert_eq!(anonymous.status, 401, "{}", anonymous.text());
        let challenge = anonymous.header("WWW-Authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Basic realm="), "{challenge}");
        let wrong = http_get(&registry.addr(), "/v2/", &[("Authorization", &basic_auth("alice", "wrong"))]);
        assert_eq!(wrong.status, 401, "{}", wrong.text());
        let right = http_get(&registry.addr(), "/v2/", &[("Authorization", &basic_auth("alice", "s3cret"))]);
        assert_eq!(right.status, 200, "{}\nregistry log:\n{}", right.text(), registry.log());
    }

    #[test]
    fn token_registry_takes_bearer_tokens_from_the_token_server() {
        let (registry, tokens) = Registry::start_token("alice", "s3cret");
        let addr = registry.addr();

        let anonymous = http_get(&addr, "/v2/", &[]);
        assert_eq!(anonymous.status, 401, "{}", anonymous.text());
        let challenge = anonymous.header("WWW-Authenticate").unwrap_or_default().to_string();
        assert_eq!(challenge, format!(r#"Bearer realm="{}",service="{}""#, tokens.realm(), tokens.service()));

        // The token flow by hand: Basic auth at the realm, Bearer at the registry.
        let get_token = |pass: &str, scope: &str| {
            let path = format!("/token?service={}&scope={scope}", tokens.service());
            http_get(tokens.addr(), &path, &[("Authorization", &basic_auth("alice", pass))])
        };
        let refused = get_token("wrong", "registry:catalog:*");
        assert_eq!(refused.status, 401, "{}", refused.text());
        let granted = get_token("s3cret", "registry:catalog:*");
        assert_eq!(granted.status, 200, "{}", granted.text());
        let token = granted.json()["token"].as_str().unwrap().to_string();
        assert_eq!(tokens.issued(), 1);
        let bearer = format!("Bearer {token}");
        let catalog = http_get(&addr, "/v2/_catalog", &[("Authorization", &bearer)]);
        assert_eq!(catalog.status, 200, "{}\nregistry log:\n{}", catalog.text(), registry.log());
        assert_eq!(catalog.json(), serde_json::json!({ "repositories": [] }));
        let v2 = http_get(&addr, "/v2/", &[("Authorization", &bearer)]);
        assert_eq!(v2.status, 200, "{}", v2.text());

        // The registry really checks the scope and the signature.
        let pull_only = get_token("s3cret", "repository:wasmcell/hello:pull").json()["token"].as_str().unwrap().to_string();
        let denied = http_get(&addr, "/v2/_catalog", &[("Authorization", &format!("Bearer {pull_only}"))]);
        assert_eq!(denied.status, 401, "{}", denied.text());
        let mut forged = token.clone();
        forged.truncate(token.len() - 8);
        forged.push_str("AAAAAAAA");
        let forged = http_get(&addr, "/v2/_catalog", &[("Authorization", &format!("Bearer {forged}"))]);
        assert_eq!(forged.status, 401, "{}", forged.text());

        // skopeo does the whole flow itself.
        let scratch = tempfile::tempdir().unwrap();
        let image = write_oci_layout(&scratch.path().join("layout"), "v1", b"token-protected\n");
        let dest = format!("docker://{addr}/wasmcell/hello:v1");
        let before = tokens.issued();
        let bad = skopeo(&["copy", "--dest-creds", "alice:wrong", &image.skopeo_ref(), &dest]);
        assert!(!bad.status.success(), "push with a wrong password succeeded");
        check(
            "skopeo copy --dest-creds",
            skopeo(&["copy", "--preserve-digests", "--dest-creds", "alice:s3cret", &image.skopeo_ref(), &dest]),
        );
        assert!(tokens.issued() > before, "skopeo got no token");
        assert!(tokens.scopes().iter().any(|s| s == "repository:wasmcell/hello:pull,push"), "{:?}", tokens.scopes());
        let raw = check("skopeo inspect --raw --creds", skopeo(&["inspect", "--raw", "--creds", "alice:s3cret", &dest])).stdout;
        assert_eq!(String::from_utf8_lossy(&raw).trim_end(), String::from_utf8_lossy(&image.manifest));
        let unauthenticated = skopeo(&["inspect", "--raw", &dest]);
        assert!(!unauthenticated.status.success(), "anonymous pull from the token registry succeeded");

        let token = get_token("s3cret", "registry:catalog:*").json()["token"].as_str().unwrap().to_string();
        let catalog = http_get(&addr, "/v2/_catalog", &[("Authorization", &format!("Bearer {token}"))]);
        assert_eq!(catalog.json(), serde_json::json!({ "repositories": ["wasmcell/hello"] }));
    }
}
