//! OCI image-layout tar archives: `save` writes them, `load` reads them.
//!
//! `save` writes `oci-layout`, `index.json` and `blobs/sha256/*`. Each image in `index.json` carries
//! its full name in `io.containerd.image.name` (what `ctr images import` names it by) and its tag in
//! `org.opencontainers.image.ref.name` (what skopeo's `oci-archive:` reads). `load` takes the same
//! format, from wasmcell, skopeo or containerd's `ctr images export`, checking every blob's digest
//! as it streams into the store.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{self, Content, Descriptor, Index};
use crate::reference::Reference;
use crate::store::{ImageRecord, MAX_MANIFEST_BYTES, Store};
use crate::unpack::{Budget, MAX_TAR_METADATA, TarGuard};

pub const NAME_ANNOTATION: &str = "io.containerd.image.name";
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Writes the images `(name, record)` and everything they need as an OCI layout tar.
pub fn save(store: &Store, images: &[(Reference, ImageRecord)], out: impl Write) -> Result<()> {
    let _lock = store.lock_shared()?;
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut written = std::collections::BTreeSet::new();
    let mut index =
        Index { schema_version: 2, media_type: Some(image::OCI_INDEX.into()), manifests: Vec::new(), annotations: BTreeMap::new() };
    let tar_err = |e: std::io::Error| Error::io("failed to write archive", "-", e);

    append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(tar_err)?;
    for (name, record) in images {
        let manifest_bytes = store.read_small(&record.manifest, MAX_MANIFEST_BYTES)?;
        let Content::Manifest(manifest) = Content::parse(&manifest_bytes, None)? else {
            return Err(Error::InvalidImage(format!("{name}: stored manifest is an index")));
        };
        let mut blobs: Vec<Digest> = vec![record.manifest.clone(), manifest.config.digest.clone()];
        blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
        for digest in blobs {
            if !written.insert(digest.clone()) {
                continue;
            }
            let size = store.size(&digest).ok_or_else(|| Error::ImageNotFound(format!("blob {digest} of {name} is not in the store")))?;
            let file = store.open_blob(&digest)?;
            let mut header = tar::Header::new_ustar();
            header.set_size(size);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, format!("blobs/sha256/{}", digest.hex()), file).map_err(tar_err)?;
        }
        let mut annotations = BTreeMap::from([(NAME_ANNOTATION.to_string(), name.to_string())]);
        if let Some(tag) = name.tag() {
            annotations.insert(REF_NAME_ANNOTATION.to_string(), tag.to_string());
        }
        index.manifests.push(Descriptor {
            media_type: manifest.media_type.clone().unwrap_or_else(|| image::OCI_MANIFEST.into()),
            digest: record.manifest.clone(),
            size: manifest_bytes.len() as u64,
            platform: None,
            annotations,
        });
    }
    let index = serde_json::to_vec(&index).expect("index serializes");
    append_bytes(&mut tar, "index.json", &index).map_err(tar_err)?;
    tar.into_inner().map_err(tar_err)?.flush().map_err(tar_err)?;
    Ok(())
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, bytes)
}

/// One image `load` named.
#[derive(Debug, serde::Serialize)]
pub struct Loaded {
    pub name: String,
    pub digest: Digest,
}

/// Reads an OCI layout tar into the store and names its images. `name` names an image the
/// archive leaves unnamed (or renames the only one).
pub fn load(store: &Store, input: impl Read, name: Option<&Reference>) -> Result<Vec<Loaded>> {
    let _lock = store.lock_shared()?;
    // The budget of a pulled image: as many bytes as --max-image-size's default, as many entries as a
    // compat image's layers, and no long name or pax header over 64 KiB.
    let limits = crate::unpack::Limits::default();
    let (left, exceeded) = (std::cell::Cell::new(crate::registry::DEFAULT_MAX_IMAGE_SIZE), std::cell::Cell::new(false));
    let mut archive = tar::Archive::new(TarGuard::new(Budget { inner: input, left: &left, exceeded: &exceeded }));
    let result = load_entries(store, &mut archive, limits.max_entries);
    if exceeded.get() {
        return Err(Error::TooLarge { what: "the archive".into(), limit: crate::registry::DEFAULT_MAX_IMAGE_SIZE });
    }
    if let Some(why) = archive.into_inner().refused {
        return Err(Error::TooLarge { what: format!("{} in the archive", why.trim_start_matches("a ")), limit: MAX_TAR_METADATA });
    }
    let (index_bytes, blobs) = result?;
    name_loaded(store, &index_bytes, blobs, name)
}

/// Stores the archive's blobs; returns its index.json and how many blobs it had.
fn load_entries<R: Read>(store: &Store, archive: &mut tar::Archive<R>, max_entries: u64) -> Result<(Vec<u8>, u64)> {
    let mut index_bytes = None;
    let mut blobs = 0u64;
    let mut entries = 0u64;
    let bad = |e: std::io::Error| Error::InvalidImage(format!("not a readable tar archive: {e}"));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        entries += 1;
        if entries > max_entries {
            return Err(Error::TooManyEntries { what: "the archive".into(), limit: max_entries });
        }
        let path = entry.path().map_err(bad)?.to_string_lossy().trim_start_matches("./").to_string();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        if path == "index.json" {
            let mut bytes = Vec::new();
            (&mut entry).take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes).map_err(bad)?;
            if bytes.len() as u64 > MAX_MANIFEST_BYTES {
                return Err(Error::TooLarge { what: "index.json".into(), limit: MAX_MANIFEST_BYTES });
            }
            index_bytes = Some(bytes);
        } else if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            let digest: Digest = format!("sha256:{hex}")
                .parse()
                .map_err(|_| Error::InvalidImage(format!("archive entry {path:?} is not named by a sha256 digest")))?;
            let size = entry.header().size().map_err(bad)?;
            if !store.has(&digest) {
                let mut ingest = store.ingest()?;
                std::io::copy(&mut entry, &mut ingest).map_err(bad)?;
                ingest.commit(Some(&digest), Some(size), &format!("archive blob {digest}"))?;
            }
            blobs += 1;
        }
    }
    let index_bytes = index_bytes.ok_or_else(|| Error::InvalidImage("archive has no index.json (not an OCI image layout)".into()))?;
    Ok((index_bytes, blobs))
}

/// Names the images of a loaded archive's index.
fn name_loaded(store: &Store, index_bytes: &[u8], blobs: u64, name: Option<&Reference>) -> Result<Vec<Loaded>> {
    let Content::Index(index) = Content::parse(index_bytes, Some(image::OCI_INDEX))? else {
        return Err(Error::InvalidImage("index.json is not an image index".into()));
    };
    if index.manifests.is_empty() {
        return Err(Error::InvalidImage("archive holds no images".into()));
    }
    if name.is_some() && index.manifests.len() > 1 {
        return Err(Error::InvalidImage(format!("archive holds {} images; --name names only one", index.manifests.len())));
    }
    tracing::debug!(blobs, "archive read");
    let mut loaded = Vec::new();
    for entry in &index.manifests {
        let image_name = match name {
            Some(n) => n.clone(),
            None => entry_name(entry)?,
        };
        let top = store.read_small(&entry.digest, MAX_MANIFEST_BYTES).map_err(|e| missing(e, &entry.digest))?;
        let manifest_digest = match Content::parse(&top, Some(&entry.media_type))? {
            Content::Manifest(_) => entry.digest.clone(),
            Content::Index(idx) => image::choose_platform(&idx)?.digest.clone(),
        };
        let manifest_bytes = store.read_small(&manifest_digest, MAX_MANIFEST_BYTES).map_err(|e| missing(e, &manifest_digest))?;
        let Content::Manifest(manifest) = Content::parse(&manifest_bytes, None)? else {
            return Err(Error::InvalidImage("an index entry points at another index".into()));
        };
        let config = store.read_small(&manifest.config.digest, MAX_MANIFEST_BYTES).map_err(|e| missing(e, &manifest.config.digest))?;
        // A signature attachment (`…:sha256-<hex>.sig`, saved beside its image) is not a wasm image.
        if !crate::trust::is_signature_name(&image_name.to_string()) {
            image::classify(manifest.clone(), &config, false)?;
        }
        for layer in &manifest.layers {
            if !store.has(&layer.digest) {
                return Err(Error::InvalidImage(format!("archive is missing layer {}", layer.digest)));
            }
        }
        let target = Descriptor { annotations: BTreeMap::new(), platform: None, ..entry.clone() };
        store.set_name(&image_name.to_string(), target, manifest_digest)?;
        loaded.push(Loaded { name: image_name.to_string(), digest: entry.digest.clone() });
    }
    Ok(loaded)
}

fn missing(e: Error, digest: &Digest) -> Error {
    match e {
        Error::ImageNotFound(_) => Error::InvalidImage(format!("archive is missing blob {digest}")),
        other => other,
    }
}

/// The name an index entry carries: containerd's full name, else a ref.name that is a full
/// reference (a bare tag names nothing by itself).
fn entry_name(entry: &Descriptor) -> Result<Reference> {
    if let Some(n) = entry.annotations.get(NAME_ANNOTATION) {
        return n.parse();
    }
    if let Some(n) = entry.annotations.get(REF_NAME_ANNOTATION)
        && n.contains('/')
    {
        return n.parse();
    }
    Err(Error::InvalidImage(format!("image {} in the archive has no name; give one with --name", entry.digest)))
}
