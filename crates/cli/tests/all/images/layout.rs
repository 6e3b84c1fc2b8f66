//! Builds OCI image layouts by hand (blobs, manifests, indexes, tar layers), so tests can make
//! compat, wasm-layer and multi-platform images, good and malicious, and hand them to skopeo or
//! `wasmcell load`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::Digest as _;

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// An OCI image layout directory being written.
pub struct Layout {
    pub dir: PathBuf,
    index: Vec<Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir: dir.to_path_buf(), index: Vec::new() }
    }

    /// Stores a blob; returns its descriptor with `media_type`.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let d = digest(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
        json!({"mediaType": media_type, "digest": d, "size": bytes.len()})
    }

    /// Stores an image manifest with this config and these layers; returns its descriptor.
    pub fn manifest(&self, config: Value, config_type: &str, layers: &[(&str, Vec<u8>)], annotations: Value) -> Value {
        let config = self.blob(config_type, &serde_json::to_vec(&config).unwrap());
        let layers: Vec<Value> = layers.iter().map(|(t, b)| self.blob(t, b)).collect();
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layers,
        });
        if !annotations.is_null() {
            m["annotations"] = annotations;
        }
        self.blob("application/vnd.oci.image.manifest.v1+json", &serde_json::to_vec(&m).unwrap())
    }

    /// Stores an index over `(descriptor, os, arch)` entries; returns its descriptor.
    pub fn index(&self, entries: &[(Value, &str, &str)]) -> Value {
        let manifests: Vec<Value> = entries
            .iter()
            .map(|(d, os, arch)| {
                let mut d = d.clone();
                d["platform"] = json!({"os": os, "architecture": arch});
                d
            })
            .collect();
        let idx = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
        self.blob("application/vnd.oci.image.index.v1+json", &serde_json::to_vec(&idx).unwrap())
    }

    /// Names `desc` in index.json (`org.opencontainers.image.ref.name = tag`) and writes index.json.
    pub fn tag(&mut self, desc: &Value, tag: &str, full_name: Option<&str>) {
        let mut d = desc.clone();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        if let Some(n) = full_name {
            d["annotations"]["io.containerd.image.name"] = json!(n);
        }
        self.index.push(d);
        let idx = json!({"schemaVersion": 2, "manifests": self.index});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    }

    /// The layout as a tar archive (what `wasmcell load` reads).
    pub fn tar(&self, out: &Path) {
        let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
        b.append_dir_all(".", &self.dir).unwrap();
        b.finish().unwrap();
    }
}

/// A compat image's config: os/arch and the entrypoint naming the module.
pub fn compat_config(os: &str, arch: &str, entrypoint: &[&str], env: &[&str]) -> Value {
    json!({
        "architecture": arch,
        "os": os,
        "config": {"Entrypoint": entrypoint, "Env": env},
        "rootfs": {"type": "layers", "diff_ids": []},
    })
}

/// A tar layer of regular files `(path, bytes)`, gzip-compressed.
pub fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    tar_gz_with(files, |_| {})
}

/// Like [`tar_gz`], with `more` appending entries of its own (a device node, say) after the files.
pub fn tar_gz_with(files: &[(&str, &[u8])], more: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *bytes).unwrap();
    }
    more(&mut b);
    gzip(&b.into_inner().unwrap())
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// One raw tar entry whose name and type the `tar` crate's safe API would refuse to write.
pub fn raw_entry(name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_entry_type(kind);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// Raw entries followed by the end-of-archive marker.
pub fn raw_tar(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}
