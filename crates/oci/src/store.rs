//! The local content-addressed store, with containerd's content-store semantics.
//!
//! ```text
//! <root>/blobs/sha256/<hex>   immutable blobs, named by digest, mode 0444
//! <root>/ingest/              blobs being written; invisible until committed
//! <root>/rootfs/<hex>/        compat rootfs trees unpacked from the layers of manifest <hex>
//! <root>/names.json           names (tags) -> image records, kept apart from blobs
//! <root>/lock                 shared by everyone using blobs, exclusive for prune
//! <root>/names.lock           serializes read-modify-write of names.json
//! ```
//!
//! Architecture Invariant: a blob becomes visible only by a rename after its size and digest were
//! checked and the data fsynced; names are only ever replaced whole (temp file + fsync + rename).
//! So a kill -9 at any moment leaves at worst an orphan file under `ingest/`, which prune removes.
//! Shared blobs are stored once. Two pulls of the same image may race: both verify, and the second
//! rename replaces identical bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::image::Descriptor;

/// The largest manifest, index or config the store will read into memory (containerd's limit).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest wasm layer (module or component) run from a store, local or containerd's.
pub const MAX_LAYER_BYTES: u64 = 1 << 30;

/// A local content-addressed store. Cheap to clone; holds no open files.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// What a name points at.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// The top-level content: an image manifest, or an index the manifest was picked from.
    pub target: Descriptor,
    /// The image manifest for the wasm platform (equal to `target.digest` when that is a manifest).
    pub manifest: Digest,
    /// When this name was last set (RFC 3339).
    pub updated: String,
}

#[derive(Default, Serialize, Deserialize)]
struct Names {
    images: BTreeMap<String, ImageRecord>,
}

/// A blob being written. Dropped without [`Ingest::commit`], it leaves nothing behind.
pub struct Ingest {
    file: tempfile::NamedTempFile,
    hasher: Hasher,
    blobs: PathBuf,
}

/// A held store lock; released on drop.
pub struct StoreLock {
    _file: File,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub blobs_removed: u64,
    pub bytes_removed: u64,
    pub rootfs_removed: u64,
    pub ingests_removed: u64,
}

/// What [`Store::check`] found.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub blobs: u64,
    pub bytes: u64,
    /// Blobs whose content no longer matches their name (removed when repairing).
    pub corrupt: Vec<Digest>,
    /// Names whose content is missing: `(name, digest)`.
    pub missing: Vec<(String, Digest)>,
    /// Files in the blob directory that are not named by a digest.
    pub stray: Vec<PathBuf>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty() && self.stray.is_empty()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let store = Store { root: root.into() };
        for dir in [store.blobs_dir(), store.root.join("ingest"), store.root.join("rootfs")] {
            fs::create_dir_all(&dir).map_err(|e| Error::io("failed to create", &dir, e))?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// Where the blob named `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub fn has(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(digest)).ok().map(|m| m.len())
    }

    /// Shared lock: held by everyone who writes or reads blobs, so prune never runs under them.
    pub fn lock_shared(&self) -> Result<StoreLock> {
        let file = self.lock_file("lock")?;
        file.lock_shared().map_err(|e| Error::io("failed to lock", self.root.join("lock"), e))?;
        Ok(StoreLock { _file: file })
    }

    /// Exclusive lock: prune.
    pub fn lock_exclusive(&self) -> Result<StoreLock> {
        let file = self.lock_file("lock")?;
        file.lock().map_err(|e| Error::io("failed to lock", self.root.join("lock"), e))?;
        Ok(StoreLock { _file: file })
    }

    fn lock_file(&self, name: &str) -> Result<File> {
        let path = self.root.join(name);
        File::options().create(true).truncate(false).read(true).write(true).open(&path).map_err(|e| Error::io("failed to open", &path, e))
    }

    /// Starts writing a blob.
    pub fn ingest(&self) -> Result<Ingest> {
        let dir = self.root.join("ingest");
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .suffix(".part")
            .tempfile_in(&dir)
            .map_err(|e| Error::io("failed to create ingest in", &dir, e))?;
        Ok(Ingest { file, hasher: Hasher::default(), blobs: self.blobs_dir() })
    }

    /// Stores `bytes` as a blob (checking them against `expected` when given).
    pub fn put(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        let mut ingest = self.ingest()?;
        ingest.write_all(bytes).map_err(|e| Error::io("failed to write", ingest.file.path(), e))?;
        ingest.commit(expected, Some(bytes.len() as u64), "blob")
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::ImageNotFound(format!("blob {digest} is not in the store")),
            _ => Error::io("failed to open", &path, e),
        })
    }

    /// Reads a small blob (a manifest, index or config) whole, refusing more than `limit` bytes,
    /// and re-checks its digest: these few bytes decide what everything else is.
    pub fn read_small(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let mut bytes = Vec::new();
        self.open_blob(digest)?.take(limit + 1).read_to_end(&mut bytes).map_err(|e| Error::io("failed to read", &path, e))?;
        if bytes.len() as u64 > limit {
            return Err(Error::TooLarge { what: format!("blob {digest}"), limit });
        }
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(Error::Corrupt(format!("blob {digest} has content {actual}; run `wasmcell system check --repair` and pull again")));
        }
        Ok(bytes)
    }

    // ---- names -------------------------------------------------------------------------------

    fn names_path(&self) -> PathBuf {
        self.root.join("names.json")
    }

    fn read_names(&self) -> Result<Names> {
        let path = self.names_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Names::default()),
            Err(e) => Err(Error::io("failed to read", &path, e)),
        }
    }

    /// Applies `change` to the names under the names lock and writes them back atomically.
    fn update_names<T>(&self, change: impl FnOnce(&mut Names) -> Result<T>) -> Result<T> {
        let lock = self.lock_file("names.lock")?;
        lock.lock().map_err(|e| Error::io("failed to lock", self.root.join("names.lock"), e))?;
        let mut names = self.read_names()?;
        let out = change(&mut names)?;
        let bytes = serde_json::to_vec_pretty(&names).expect("names serialize");
        let path = self.names_path();
        wasmcell_fsutil::atomic_write(&path, &bytes).map_err(|e| Error::io("failed to write", &path, e))?;
        Ok(out)
    }

    /// Points `name` at an image whose content is already stored.
    pub fn set_name(&self, name: &str, target: Descriptor, manifest: Digest) -> Result<()> {
        for d in [&target.digest, &manifest] {
            if !self.has(d) {
                return Err(Error::ImageNotFound(format!("blob {d} is not in the store")));
            }
        }
        let record = ImageRecord { target, manifest, updated: chrono::Utc::now().to_rfc3339() };
        self.update_names(|names| {
            names.images.insert(name.to_string(), record);
            Ok(())
        })
    }

    /// The record for `name`, if any.
    pub fn get_name(&self, name: &str) -> Result<Option<ImageRecord>> {
        Ok(self.read_names()?.images.remove(name))
    }

    /// Removes `name`; true if it existed. Content stays until [`Store::prune`].
    pub fn remove_name(&self, name: &str) -> Result<bool> {
        self.update_names(|names| Ok(names.images.remove(name).is_some()))
    }

    /// Every name, sorted.
    pub fn names(&self) -> Result<Vec<(String, ImageRecord)>> {
        Ok(self.read_names()?.images.into_iter().collect())
    }

    // ---- rootfs ------------------------------------------------------------------------------

    /// Where the unpacked rootfs of compat manifest `manifest` lives.
    pub fn rootfs_path(&self, manifest: &Digest) -> PathBuf {
        self.root.join("rootfs").join(manifest.hex())
    }

    // ---- prune and check ---------------------------------------------------------------------

    /// Every digest reachable from the names: each target, the manifests of an index that are
    /// stored, and each manifest's config and layers.
    pub fn reachable(&self) -> Result<BTreeSet<Digest>> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<Digest> = Vec::new();
        for (_, record) in self.read_names()?.images {
            todo.push(record.target.digest);
            todo.push(record.manifest);
        }
        while let Some(d) = todo.pop() {
            if !seen.insert(d.clone()) || !self.has(&d) {
                continue;
            }
            // Only manifests and indexes have children; anything bigger or not JSON has none.
            if self.size(&d).unwrap_or(u64::MAX) <= MAX_MANIFEST_BYTES
                && let Ok(bytes) = self.read_small(&d, MAX_MANIFEST_BYTES)
            {
                todo.extend(children(&bytes));
            }
        }
        Ok(seen)
    }

    /// Removes every blob no name reaches, unpacked trees of unreferenced manifests and
    /// abandoned ingests. Waits for running pulls and pushes (exclusive store lock).
    pub fn prune(&self) -> Result<PruneReport> {
        let _lock = self.lock_exclusive()?;
        let keep = self.reachable()?;
        let mut report = PruneReport::default();
        for (digest, path) in self.list_blobs()? {
            if digest.as_ref().is_some_and(|d| keep.contains(d)) {
                continue;
            }
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(|e| Error::io("failed to remove", &path, e))?;
            report.blobs_removed += 1;
            report.bytes_removed += size;
        }
        let rootfs = self.root.join("rootfs");
        for entry in read_dir(&rootfs)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let used = format!("sha256:{name}").parse::<Digest>().is_ok_and(|d| keep.contains(&d));
            if !used {
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(|e| Error::io("failed to remove", &path, e))?;
                report.rootfs_removed += 1;
            }
        }
        let ingest = self.root.join("ingest");
        for entry in read_dir(&ingest)? {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| Error::io("failed to remove", &path, e))?;
            report.ingests_removed += 1;
        }
        sync_dir(&self.blobs_dir())?;
        Ok(report)
    }

    /// Re-hashes every blob and checks that every name's content is present. With `repair`,
    /// corrupt blobs are removed (a pull fetches them again).
    pub fn check(&self, repair: bool) -> Result<CheckReport> {
        let _lock = if repair { self.lock_exclusive()? } else { self.lock_shared()? };
        let mut report = CheckReport::default();
        for (digest, path) in self.list_blobs()? {
            let Some(digest) = digest else {
                report.stray.push(path);
                continue;
            };
            let mut hasher = Hasher::default();
            let mut file = File::open(&path).map_err(|e| Error::io("failed to open", &path, e))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf).map_err(|e| Error::io("failed to read", &path, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            report.blobs += 1;
            report.bytes += hasher.len();
            if hasher.finish() != digest {
                if repair {
                    fs::remove_file(&path).map_err(|e| Error::io("failed to remove", &path, e))?;
                    let rootfs = self.rootfs_path(&digest);
                    let _ = fs::remove_dir_all(rootfs);
                }
                report.corrupt.push(digest);
            }
        }
        for (name, record) in self.read_names()?.images {
            for d in [&record.target.digest, &record.manifest] {
                if !self.has(d) {
                    report.missing.push((name.clone(), d.clone()));
                }
            }
            if let Ok(bytes) = self.read_small(&record.manifest, MAX_MANIFEST_BYTES) {
                for d in children(&bytes) {
                    if !self.has(&d) {
                        report.missing.push((name.clone(), d));
                    }
                }
            }
        }
        if repair {
            // Unpacked trees are derived data: drop them all so they are rebuilt from checked blobs.
            for entry in read_dir(&self.root.join("rootfs"))? {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(report)
    }

    fn list_blobs(&self) -> Result<Vec<(Option<Digest>, PathBuf)>> {
        let mut out = Vec::new();
        for entry in read_dir(&self.blobs_dir())? {
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy()).parse().ok();
            out.push((digest, entry.path()));
        }
        Ok(out)
    }
}

impl Ingest {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Checks size and digest, makes the data durable, then renames it into place. `what`
    /// names the content in errors. On error nothing becomes visible.
    pub fn commit(mut self, expected: Option<&Digest>, size: Option<u64>, what: &str) -> Result<Digest> {
        let path = self.file.path().to_path_buf();
        self.file.flush().map_err(|e| Error::io("failed to write", &path, e))?;
        if let Some(size) = size
            && size != self.hasher.len()
        {
            return Err(Error::SizeMismatch { what: what.to_string(), expected: size, actual: self.hasher.len() });
        }
        let actual = self.hasher.clone().finish();
        if let Some(expected) = expected
            && expected != &actual
        {
            return Err(Error::DigestMismatch { what: what.to_string(), expected: expected.to_string(), actual: actual.to_string() });
        }
        self.file.as_file().sync_all().map_err(|e| Error::io("failed to sync", &path, e))?;
        let mut perms = self.file.as_file().metadata().map_err(|e| Error::io("failed to stat", &path, e))?.permissions();
        perms.set_readonly(true);
        fs::set_permissions(&path, perms).map_err(|e| Error::io("failed to chmod", &path, e))?;
        let dest = self.blobs.join(actual.hex());
        self.file.persist(&dest).map_err(|e| Error::io("failed to commit", &dest, e.error))?;
        sync_dir(&self.blobs)?;
        Ok(actual)
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The digests a manifest or index points at (config, layers, manifests). Not JSON: none.
pub fn children(bytes: &[u8]) -> Vec<Digest> {
    #[derive(Deserialize)]
    struct Ptr {
        digest: String,
    }
    #[derive(Deserialize)]
    struct Any {
        config: Option<Ptr>,
        #[serde(default)]
        layers: Vec<Ptr>,
        #[serde(default)]
        manifests: Vec<Ptr>,
    }
    let Ok(any) = serde_json::from_slice::<Any>(bytes) else {
        return Vec::new();
    };
    any.config.into_iter().chain(any.layers).chain(any.manifests).filter_map(|p| p.digest.parse().ok()).collect()
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Ok(it) => it.collect::<std::io::Result<Vec<_>>>().map_err(|e| Error::io("failed to list", dir, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("failed to list", dir, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("failed to sync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn manifest(config: &Digest, layers: &[&Digest]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": config.to_string(), "size": 2},
            "layers": layers.iter().map(|d| serde_json::json!({"mediaType": "application/wasm", "digest": d.to_string(), "size": 1})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn ingest_is_invisible_until_commit_and_checked() {
        let (_d, store) = store();
        let mut ing = store.ingest().unwrap();
        ing.write_all(b"hello").unwrap();
        let want = Digest::of(b"hello");
        assert!(!store.has(&want));
        let wrong = Digest::of(b"other");
        let err = ing.commit(Some(&wrong), None, "layer").unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!store.has(&want));
        assert_eq!(fs::read_dir(store.root().join("ingest")).unwrap().count(), 0, "failed ingest left behind");

        let mut ing = store.ingest().unwrap();
        ing.write_all(b"hell").unwrap();
        let err = ing.commit(Some(&want), Some(5), "layer").unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { expected: 5, actual: 4, .. }), "{err}");

        assert_eq!(store.put(b"hello", Some(&want)).unwrap(), want);
        assert!(store.has(&want));
        assert_eq!(store.put(b"hello", None).unwrap(), want, "storing twice is fine");
        assert!(fs::metadata(store.blob_path(&want)).unwrap().permissions().readonly());
    }

    #[test]
    fn names_prune_and_check() {
        let (_d, store) = store();
        let config = store.put(b"{}", None).unwrap();
        let layer = store.put(b"L", None).unwrap();
        let unused = store.put(b"unused", None).unwrap();
        let m = manifest(&config, &[&layer]);
        let md = store.put(&m, None).unwrap();
        let desc = Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: md.clone(),
            size: m.len() as u64,
            platform: None,
            annotations: Default::default(),
        };
        store.set_name("r/a:1", desc.clone(), md.clone()).unwrap();
        store.set_name("r/a:2", desc.clone(), md.clone()).unwrap();
        assert_eq!(store.names().unwrap().len(), 2);
        fs::create_dir_all(store.rootfs_path(&unused)).unwrap();
        fs::write(store.root().join("ingest/blob-x.part"), b"half").unwrap();

        let report = store.prune().unwrap();
        assert_eq!((report.blobs_removed, report.rootfs_removed, report.ingests_removed), (1, 1, 1));
        assert!(!store.has(&unused) && store.has(&layer) && store.has(&config) && store.has(&md));

        assert!(store.remove_name("r/a:1").unwrap());
        assert_eq!(store.prune().unwrap().blobs_removed, 0, "r/a:2 still holds the shared blobs");
        assert!(store.check(false).unwrap().is_ok());

        // Corrupt the layer behind the store's back: check finds it, repair removes it.
        let path = store.blob_path(&layer);
        let mut perms = fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        fs::set_permissions(&path, perms).unwrap();
        fs::write(&path, b"X").unwrap();
        let report = store.check(false).unwrap();
        assert_eq!(report.corrupt, vec![layer.clone()]);
        let report = store.check(true).unwrap();
        assert_eq!(report.corrupt, vec![layer.clone()]);
        assert!(!store.has(&layer));
        let report = store.check(false).unwrap();
        assert_eq!(report.missing, vec![("r/a:2".to_string(), layer.clone())]);

        assert!(store.remove_name("r/a:2").unwrap());
        store.prune().unwrap();
        assert_eq!(store.list_blobs().unwrap().len(), 0);
    }

    #[test]
    fn set_name_requires_content() {
        let (_d, store) = store();
        let d = Digest::of(b"absent");
        let desc = Descriptor { media_type: "x".into(), digest: d.clone(), size: 1, platform: None, annotations: Default::default() };
        assert!(matches!(store.set_name("n", desc, d), Err(Error::ImageNotFound(_))));
    }

    #[test]
    fn oversized_small_reads_are_refused() {
        let (_d, store) = store();
        let d = store.put(&[b'a'; 100], None).unwrap();
        assert!(matches!(store.read_small(&d, 10), Err(Error::TooLarge { .. })));
        assert_eq!(store.read_small(&d, 100).unwrap().len(), 100);
    }
}
