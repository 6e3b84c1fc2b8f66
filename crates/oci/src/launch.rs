//! The one launch model of an image: which wasm file runs, with which argv[0], default arguments,
//! environment and rootfs.
//!
//! `wasmcell run`/`serve` (images in the local [`Store`]) and the containerd shim (images in
//! containerd's content store) both build a [`Launch`] here, from a manifest, its config and a
//! [`BlobSource`]. Classification is [`image::classify_for`] for both (the same media types, the same
//! architecture check, the same single-artifact rules). They differ only in where bytes come from and
//! in what they add on top: the CLI its flags and pull policy, the shim what the OCI runtime spec says
//! (`process.args`/`env`, mounts, cgroup, netns).
//!
//! Also the one rule for finding a module inside an unpacked rootfs: [`module_in_rootfs`].

use std::path::{Component, Path, PathBuf};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{self, Content, Descriptor, ImageKind, Manifest};
use crate::reference::Reference;
use crate::store::{ImageRecord, MAX_LAYER_BYTES, MAX_MANIFEST_BYTES, Store};

/// An image resolved for running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Which of the three formats the image is.
    pub kind: ImageKind,
    /// The module or component file to load: the wasm layer's blob, or a file of the unpacked rootfs.
    pub wasm: PathBuf,
    /// argv[0]: the module named by the caller, else the layer's title (wasm layers) or the
    /// Entrypoint/Cmd's first word (compat), else the image repository's last component.
    pub argv0: String,
    /// The image's default arguments after argv[0]: Entrypoint beyond the module, then Cmd
    /// (runwasi's reading). Empty when the caller named the module: its own arguments replace them.
    pub default_args: Vec<String>,
    /// `KEY=VALUE` from the image config.
    pub env: Vec<String>,
    /// The unpacked rootfs of a compat image (its `/`); `None` for artifact and wasm-layer images.
    pub rootfs: Option<PathBuf>,
}

/// Where an image's bytes come from: the local [`Store`], or containerd's content store (in the shim).
pub trait BlobSource {
    /// The source's error; an images-crate error (a bad manifest, a refused image) converts into it.
    type Error: From<Error>;

    /// Reads a manifest, index or config whole, refusing more than `limit` bytes, checked against the
    /// descriptor's size and digest.
    fn read_blob(&self, desc: &Descriptor, limit: u64) -> Result<Vec<u8>, Self::Error>;

    /// A file holding the wasm layer `layer` (at most [`MAX_LAYER_BYTES`], checked against its digest).
    fn wasm_file(&self, layer: &Descriptor) -> Result<PathBuf, Self::Error>;

    /// The compat image's rootfs, its `layers` (in order) unpacked: `manifest` names the image.
    fn rootfs(&self, manifest: &Digest, layers: &[Descriptor]) -> Result<PathBuf, Self::Error>;
}

/// The image manifest a launch is built from.
#[derive(Clone, Debug)]
pub struct Picked {
    /// The manifest's own digest (names a compat image's unpacked rootfs).
    pub digest: Digest,
    pub manifest: Manifest,
    /// It was picked from an index by its wasm platform.
    pub from_index: bool,
}

/// Reads `target` (a manifest, or an index: its wasm platform's entry, see [`image::choose_platform`]).
pub fn pick<S: BlobSource>(source: &S, target: &Descriptor) -> Result<Picked, S::Error> {
    let read = |desc: &Descriptor| -> Result<Content, S::Error> {
        Ok(Content::parse(&source.read_blob(desc, MAX_MANIFEST_BYTES)?, Some(&desc.media_type))?)
    };
    match read(target)? {
        Content::Manifest(manifest) => Ok(Picked { digest: target.digest.clone(), manifest, from_index: false }),
        Content::Index(index) => {
            let entry = image::choose_platform(&index)?.clone();
            match read(&entry)? {
                Content::Manifest(manifest) => Ok(Picked { digest: entry.digest, manifest, from_index: true }),
                Content::Index(_) => Err(Error::InvalidImage("an index inside an index".into()).into()),
            }
        }
    }
}

impl Launch {
    /// The launch of the image `target` names (a manifest or an index) in `source`. `image` is the
    /// image's name (argv[0] when nothing else gives one); `module`, when the caller names the module
    /// (a runtime spec's `args[0]`), picks it instead of the image's Entrypoint.
    pub fn from_target<S: BlobSource>(source: &S, target: &Descriptor, image: &str, module: Option<&str>) -> Result<Launch, S::Error> {
        let picked = pick(source, target)?;
        Launch::from_manifest(source, picked, image, module)
    }

    /// The launch of an image manifest already picked (see [`Launch::from_target`] for the rest).
    pub fn from_manifest<S: BlobSource>(source: &S, picked: Picked, image: &str, module: Option<&str>) -> Result<Launch, S::Error> {
        let config = source.read_blob(&picked.manifest.config, MAX_MANIFEST_BYTES)?;
        let img = image::classify_for(picked.manifest, &config, picked.from_index, module)?;
        let module = module.filter(|m| !m.is_empty());
        match img.kind {
            ImageKind::Artifact | ImageKind::WasmLayer => {
                let layer = img.wasm_layer.as_ref().expect("wasm images have a wasm layer");
                let title = layer.annotations.get(image::TITLE_ANNOTATION).cloned();
                let argv0 = module.map(str::to_string).or(title).unwrap_or_else(|| repository_name(image));
                let default_args = match module {
                    Some(_) => Vec::new(),
                    None => img.entrypoint.iter().skip(1).chain(&img.cmd).cloned().collect(),
                };
                Ok(Launch { kind: img.kind, wasm: source.wasm_file(layer)?, argv0, default_args, env: img.env, rootfs: None })
            }
            ImageKind::Compat => {
                let mut words = img.entrypoint.iter().chain(&img.cmd).cloned();
                let (argv0, default_args) = match module {
                    Some(m) => (m.to_string(), Vec::new()),
                    None => (words.next().expect("classify refuses a compat image without Entrypoint or Cmd"), words.collect()),
                };
                let rootfs = source.rootfs(&picked.digest, &img.rootfs_layers)?;
                let wasm = module_in_rootfs(&rootfs, &argv0)?
                    .ok_or_else(|| Error::InvalidImage(format!("{argv0}: no such file in the image's rootfs")))?;
                Ok(Launch { kind: img.kind, wasm, argv0, default_args, env: img.env, rootfs: Some(rootfs) })
            }
        }
    }

    /// The launch of the image `record` (named `reference`) in the local store, unpacking a compat
    /// image's rootfs once.
    pub fn from_store(store: &Store, reference: &Reference, record: &ImageRecord) -> Result<Launch> {
        let _lock = store.lock_shared()?;
        let bytes = store.read_small(&record.manifest, MAX_MANIFEST_BYTES)?;
        let Content::Manifest(manifest) = Content::parse(&bytes, None)? else {
            return Err(Error::InvalidImage("stored manifest is an index".into()));
        };
        let picked = Picked { digest: record.manifest.clone(), manifest, from_index: record.target.digest != record.manifest };
        Launch::from_manifest(store, picked, &reference.to_string(), None)
    }
}

/// An image name's repository's last component (`app` for `registry:5000/team/app:1`), or the name.
fn repository_name(image: &str) -> String {
    match image.parse::<Reference>() {
        Ok(r) => r.repository().rsplit('/').next().unwrap_or("app").to_string(),
        Err(_) => image.to_string(),
    }
}

/// The host path of the module `guest_path` names inside the unpacked `rootfs`: `..` is refused, and
/// so is anything that resolves (through symlinks) outside the rootfs, or is not a file. `Ok(None)`
/// when there is no such file, or no rootfs at all.
pub fn module_in_rootfs(rootfs: &Path, guest_path: &str) -> Result<Option<PathBuf>> {
    let rel = Path::new(guest_path);
    if rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Error::InvalidImage(format!("{guest_path}: the module path must not contain ..")));
    }
    let rel: PathBuf = rel.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    if rel.as_os_str().is_empty() {
        return Err(Error::InvalidImage(format!("{guest_path:?}: names no module file inside the image")));
    }
    let root = match rootfs.canonicalize() {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("failed to open the rootfs", rootfs, e)),
    };
    let candidate = root.join(&rel);
    let real = match candidate.canonicalize() {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("failed to open the module", candidate, e)),
    };
    if !real.starts_with(&root) {
        return Err(Error::InvalidImage(format!("{guest_path}: resolves outside the image's rootfs")));
    }
    if !real.is_file() {
        return Err(Error::InvalidImage(format!("{guest_path}: not a file")));
    }
    Ok(Some(real))
}

/// The local store as a blob source: blobs were checked when they were stored.
impl BlobSource for Store {
    type Error = Error;

    fn read_blob(&self, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        if desc.size > limit {
            return Err(Error::TooLarge { what: format!("blob {}", desc.digest), limit });
        }
        let bytes = self.read_small(&desc.digest, limit)?;
        if bytes.len() as u64 != desc.size {
            return Err(Error::SizeMismatch { what: format!("blob {}", desc.digest), expected: desc.size, actual: bytes.len() as u64 });
        }
        Ok(bytes)
    }

    fn wasm_file(&self, layer: &Descriptor) -> Result<PathBuf> {
        if layer.size > MAX_LAYER_BYTES {
            return Err(Error::TooLarge { what: format!("wasm layer {}", layer.digest), limit: MAX_LAYER_BYTES });
        }
        match self.size(&layer.digest) {
            None => Err(Error::ImageNotFound(format!("blob {} is not in the store", layer.digest))),
            Some(n) if n != layer.size => {
                Err(Error::SizeMismatch { what: format!("wasm layer {}", layer.digest), expected: layer.size, actual: n })
            }
            Some(_) => Ok(self.blob_path(&layer.digest)),
        }
    }

    fn rootfs(&self, manifest: &Digest, layers: &[Descriptor]) -> Result<PathBuf> {
        let rootfs = self.rootfs_path(manifest);
        if rootfs.exists() {
            return Ok(rootfs);
        }
        let paths: Vec<PathBuf> = layers.iter().map(|l| self.blob_path(&l.digest)).collect();
        let layers: Vec<crate::unpack::Layer<'_>> =
            layers.iter().zip(&paths).map(|(l, p)| crate::unpack::Layer { path: p, media_type: &l.media_type }).collect();
        match crate::unpack::unpack_rootfs(&layers, &rootfs, &Default::default()) {
            Ok(_) => Ok(rootfs),
            // Another run may have unpacked it at the same moment.
            Err(_) if rootfs.exists() => Ok(rootfs),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::image::{COMPONENT_LAYER, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, Platform, TITLE_ANNOTATION, VARIANT_ANNOTATION};

    const TAR_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn module() -> Vec<u8> {
        wat::parse_str(r#"(module (func (export "_start")))"#).unwrap()
    }

    /// Stores `bytes` and describes them as `media_type`, titled `title`.
    fn put(store: &Store, media_type: &str, bytes: &[u8], title: Option<&str>) -> Descriptor {
        let digest = store.put(bytes, None).unwrap();
        let annotations = title.map(|t| BTreeMap::from([(TITLE_ANNOTATION.to_string(), t.to_string())])).unwrap_or_default();
        Descriptor { media_type: media_type.into(), digest, size: bytes.len() as u64, platform: None, annotations }
    }

    /// Stores an image (config JSON, layers, manifest annotations) under `name`; its manifest descriptor.
    fn image(store: &Store, name: &str, config: serde_json::Value, layers: Vec<Descriptor>, annotations: &[(&str, &str)]) -> Descriptor {
        let config = put(store, OCI_CONFIG, &serde_json::to_vec(&config).unwrap(), None);
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            artifact_type: None,
            config,
            layers,
            annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let desc = put(store, OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap(), None);
        store.set_name(name, desc.clone(), desc.digest.clone()).unwrap();
        desc
    }

    fn launch(store: &Store, name: &str) -> Result<Launch> {
        let record = store.get_name(name).unwrap().expect("stored");
        Launch::from_store(store, &name.parse().unwrap(), &record)
    }

    fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn compat(store: &Store, name: &str, entrypoint: &[&str], cmd: &[&str]) -> Descriptor {
        let layer = put(store, TAR_GZ, &tar_gz(&[("app/hello.wasm", &module()), ("etc/greeting", b"hi\n")]), None);
        let config = serde_json::json!({"architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": entrypoint, "Cmd": cmd, "Env": ["FROM_IMAGE=yes"]}});
        image(store, name, config, vec![layer], &[(VARIANT_ANNOTATION, "compat")])
    }

    #[test]
    fn an_artifact_runs_its_one_layer_named_by_its_title() {
        let (_d, store) = store();
        let wasm = module();
        let a = image::build_artifact(&wasm, "app.wasm", &BTreeMap::new(), "2026-01-01T00:00:00Z").unwrap();
        let layer = put(&store, image::WASM_LAYER, &wasm, None);
        assert_eq!(layer.digest, a.layer.digest);
        store.put(&a.config, None).unwrap();
        let manifest = put(&store, OCI_MANIFEST, &a.manifest, None);
        store.set_name("localhost/team/hello:1", manifest.clone(), manifest.digest).unwrap();

        let l = launch(&store, "localhost/team/hello:1").unwrap();
        assert_eq!(l.kind, ImageKind::Artifact);
        assert_eq!(l.wasm, store.blob_path(&layer.digest));
        assert_eq!((l.argv0.as_str(), l.default_args.len(), l.env.len(), l.rootfs), ("app.wasm", 0, 0, None));
    }

    #[test]
    fn a_wasm_layer_image_takes_its_args_and_env_from_the_config() {
        let (_d, store) = store();
        let layer = put(&store, COMPONENT_LAYER, &module(), None);
        let config = serde_json::json!({"architecture": "wasm", "os": "wasip2",
            "config": {"Entrypoint": ["app.wasm", "a"], "Cmd": ["b"], "Env": ["K=V"]}});
        image(&store, "localhost/team/layered:1", config, vec![layer.clone()], &[]);
        let l = launch(&store, "localhost/team/layered:1").unwrap();
        assert_eq!(l.kind, ImageKind::WasmLayer);
        assert_eq!(l.wasm, store.blob_path(&layer.digest));
        assert_eq!(l.argv0, "layered", "no title: the repository's name");
        assert_eq!((l.default_args, l.env, l.rootfs), (vec!["a".to_string(), "b".to_string()], vec!["K=V".to_string()], None));
    }

    #[test]
    fn several_wasm_layers_are_picked_by_title_and_the_caller_may_name_one() {
        let (_d, store) = store();
        let one = put(&store, image::WASM_LAYER, &module(), Some("one.wasm"));
        let two = put(&store, COMPONENT_LAYER, &wat::parse_str("(module)").unwrap(), Some("two.wasm"));
        let config = serde_json::json!({"architecture": "wasm", "os": "wasip1", "config": {"Entrypoint": ["/two.wasm", "x"]}});
        let target = image(&store, "localhost/team/multi:1", config, vec![one.clone(), two.clone()], &[]);
        let l = launch(&store, "localhost/team/multi:1").unwrap();
        assert_eq!((l.wasm, l.argv0.as_str(), l.default_args), (store.blob_path(&two.digest), "two.wasm", vec!["x".to_string()]));

        // A runtime spec's args[0] names the module: it is argv[0], and the image's arguments are dropped.
        let l = Launch::from_target(&store, &target, "localhost/team/multi:1", Some("one.wasm")).unwrap();
        assert_eq!((l.wasm, l.argv0.as_str(), l.default_args.len()), (store.blob_path(&one.digest), "one.wasm", 0));
        let e = Launch::from_target(&store, &target, "multi", Some("three.wasm")).unwrap_err().to_string();
        assert!(e.contains("2 wasm layers and none titled \"three.wasm\"") && e.contains("one.wasm, two.wasm"), "{e}");
    }

    #[test]
    fn a_compat_image_runs_from_its_unpacked_rootfs() {
        let (_d, store) = store();
        let target = compat(&store, "localhost/team/compat:1", &["/app/hello.wasm"], &["arg"]);
        let l = launch(&store, "localhost/team/compat:1").unwrap();
        let rootfs = store.rootfs_path(&target.digest);
        assert_eq!(l.kind, ImageKind::Compat);
        assert_eq!(l.rootfs.as_deref(), Some(rootfs.as_path()));
        assert_eq!(l.wasm, rootfs.join("app/hello.wasm").canonicalize().unwrap());
        assert_eq!(
            (l.argv0.as_str(), &l.default_args[..], &l.env[..]),
            ("/app/hello.wasm", &["arg".to_string()][..], &["FROM_IMAGE=yes".to_string()][..])
        );
        assert_eq!(std::fs::read(rootfs.join("etc/greeting")).unwrap(), b"hi\n");
        // Unpacked once: a second launch reuses it.
        assert_eq!(launch(&store, "localhost/team/compat:1").unwrap(), l);

        // Cmd alone names the module too; a module missing from the rootfs is one clear error.
        compat(&store, "localhost/team/cmd:1", &[], &["app/hello.wasm"]);
        assert_eq!(launch(&store, "localhost/team/cmd:1").unwrap().argv0, "app/hello.wasm");
        compat(&store, "localhost/team/missing:1", &["/app/nope.wasm"], &[]);
        let e = launch(&store, "localhost/team/missing:1").unwrap_err().to_string();
        assert!(e.contains("/app/nope.wasm: no such file in the image"), "{e}");
    }

    #[test]
    fn an_entrypoint_escaping_the_rootfs_is_refused() {
        let (_d, store) = store();
        compat(&store, "localhost/team/dotdot:1", &["/app/../../../etc/hostname"], &[]);
        let e = launch(&store, "localhost/team/dotdot:1").unwrap_err();
        assert!(matches!(&e, Error::InvalidImage(m) if m.contains("must not contain ..")), "{e}");

        // A symlink out of the rootfs (unpacking refuses them; a rootfs from elsewhere may have one).
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("app/escape.wasm")).unwrap();
        let e = module_in_rootfs(dir.path(), "/app/escape.wasm").unwrap_err();
        assert!(e.to_string().contains("/app/escape.wasm: resolves outside the image's rootfs"), "{e}");
        std::os::unix::fs::symlink("../../../../../../..", dir.path().join("app/up")).unwrap();
        assert!(module_in_rootfs(dir.path(), "app/up/etc/hostname").unwrap_err().to_string().contains("outside the image's rootfs"));
        assert!(module_in_rootfs(dir.path(), "/app").unwrap_err().to_string().contains("not a file"));
        assert!(module_in_rootfs(dir.path(), "/").unwrap_err().to_string().contains("names no module file"));
        assert_eq!(module_in_rootfs(dir.path(), "/app/none.wasm").unwrap(), None);
        assert_eq!(module_in_rootfs(&dir.path().join("no-rootfs"), "/app/x.wasm").unwrap(), None);
        std::fs::write(dir.path().join("app/ok.wasm"), b"").unwrap();
        assert_eq!(module_in_rootfs(dir.path(), "app/ok.wasm").unwrap(), Some(dir.path().canonicalize().unwrap().join("app/ok.wasm")));
    }

    #[test]
    fn unknown_media_types_are_refused() {
        let (_d, store) = store();
        // wasm-to-oci's old layer type is no wasm layer (for the shim either): not a tar layer either.
        let old = put(&store, "application/vnd.wasm.content.layer.v1+wasm", &module(), None);
        let config = serde_json::json!({"architecture": "wasm", "os": "wasip1"});
        image(&store, "localhost/team/old:1", config, vec![old], &[]);
        assert!(matches!(launch(&store, "localhost/team/old:1"), Err(Error::UnsupportedMediaType(t)) if t.contains("vnd.wasm.content")));

        let layer = put(&store, image::WASM_LAYER, &module(), None);
        let config = put(&store, "application/x-unknown", b"{}", None);
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
        let desc = put(&store, OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap(), None);
        assert!(
            matches!(Launch::from_target(&store, &desc, "x", None), Err(Error::UnsupportedMediaType(t)) if t == "application/x-unknown")
        );

        // The architecture check: wasm layers in a linux/amd64 image.
        let config = serde_json::json!({"architecture": "amd64", "os": "linux"});
        image(&store, "localhost/team/amd64:1", config, vec![layer], &[]);
        let e = launch(&store, "localhost/team/amd64:1").unwrap_err().to_string();
        assert!(e.contains("not \"wasm\""), "{e}");
    }

    #[test]
    fn an_index_yields_its_wasm_platform_and_limits_hold() {
        let (_d, store) = store();
        let linux = compat(&store, "localhost/team/linux:1", &["/app/hello.wasm"], &[]);
        let layer = put(&store, COMPONENT_LAYER, &module(), Some("w.wasm"));
        let wasm = image(&store, "localhost/team/wasm:1", serde_json::json!({"architecture": "wasm", "os": "wasip2"}), vec![layer], &[]);
        let entry = |d: &Descriptor, os: &str, arch: &str| {
            let platform = Some(Platform { architecture: arch.into(), os: os.into(), variant: None });
            serde_json::json!(Descriptor { platform, ..d.clone() })
        };
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [entry(&linux, "linux", "amd64"), entry(&wasm, "wasip2", "wasm")]});
        let index = put(&store, OCI_INDEX, &serde_json::to_vec(&index).unwrap(), None);
        let picked = pick(&store, &index).unwrap();
        assert_eq!((picked.digest, picked.from_index), (wasm.digest.clone(), true));
        assert_eq!(Launch::from_target(&store, &index, "localhost/team/wasm:1", None).unwrap().argv0, "w.wasm");

        let too_big = Descriptor { size: MAX_MANIFEST_BYTES + 1, ..wasm.clone() };
        assert!(matches!(pick(&store, &too_big), Err(Error::TooLarge { .. })));
        let wrong_size = Descriptor { size: wasm.size + 1, ..wasm };
        assert!(matches!(pick(&store, &wrong_size), Err(Error::SizeMismatch { .. })));
        let huge = Descriptor { size: MAX_LAYER_BYTES + 1, ..linux };
        assert!(matches!(store.wasm_file(&huge), Err(Error::TooLarge { .. })));
    }
}
