//! OCI layout archives (`layout::load` into a `Store`): a valid archive of one artifact, with its blobs
//! dropped, corrupted, renamed or truncated, its index.json mutated, hostile entries added, and sizes
//! that lie. Errors are one line; whatever ends up in the store is what the archive held, under its
//! digest; a named image is complete.

use std::collections::BTreeMap;
use std::fs;

use proptest::prelude::*;
use serde_json::json;
use wasmcell_oci::image::{self, Content};
use wasmcell_oci::{Digest, Reference, Store, layout};
use wasmcell_props::{DEFAULT_DISK_CASES, check, mutate_json, one_line, scratch};

use crate::unpack::{Entry, entry, tar_of};

/// What happens to one blob of the valid archive.
#[derive(Clone, Debug)]
enum Blob {
    Keep,
    Drop,
    Corrupt(usize),
    Rename(String),
}

#[derive(Clone, Debug)]
struct Case {
    wasm: Vec<u8>,
    blobs: [Blob; 3],
    index: serde_json::Value,
    extra: Vec<Entry>,
    dot_slash: bool,
    cut: Option<usize>,
    name: Option<String>,
}

fn blob() -> impl Strategy<Value = Blob> {
    prop_oneof![
        12 => Just(Blob::Keep),
        1 => Just(Blob::Drop),
        1 => any::<usize>().prop_map(Blob::Corrupt),
        1 => crate::unpack::name().prop_map(Blob::Rename),
    ]
}

fn index_json(name: &str, manifest: &[u8]) -> serde_json::Value {
    json!({"schemaVersion": 2, "mediaType": image::OCI_INDEX, "manifests": [{
        "mediaType": image::OCI_MANIFEST, "digest": Digest::of(manifest).to_string(), "size": manifest.len(),
        "annotations": { layout::NAME_ANNOTATION: name, layout::REF_NAME_ANNOTATION: "1.0" }}]})
}

fn case() -> impl Strategy<Value = Case> {
    let wasm = proptest::collection::vec(any::<u8>(), 0..64).prop_map(|tail| {
        let mut w = b"\0asm\x01\0\0\0\0".to_vec(); // a module and one custom section holding `tail`
        w.push(1 + tail.len() as u8);
        w.push(0);
        w.extend(tail);
        w
    });
    let name = proptest::option::weighted(0.2, "localhost:5000/[a-z]{1,8}:[a-z0-9]{1,5}");
    (wasm, [blob(), blob(), blob()], any::<bool>(), proptest::collection::vec(entry(), 0..3), any::<bool>(), any::<usize>(), name)
        .prop_flat_map(|(wasm, blobs, mutate, extra, dot_slash, cut_at, name)| {
            let artifact = image::build_artifact(&wasm, "app.wasm", &BTreeMap::new(), "2026-01-01T00:00:00Z").expect("an artifact");
            let index = index_json("localhost:5000/app:1.0", &artifact.manifest);
            let index = if mutate { mutate_json(index).boxed() } else { Just(index).boxed() };
            let cut = proptest::option::weighted(0.05, Just(cut_at));
            (Just(wasm), Just(blobs), index, Just(extra), Just(dot_slash), cut, Just(name))
        })
        .prop_map(|(wasm, blobs, index, extra, dot_slash, cut, name)| Case { wasm, blobs, index, extra, dot_slash, cut, name })
}

/// The archive's bytes, and what it holds under `blobs/sha256/` (by entry name).
fn archive(case: &Case) -> (Vec<u8>, BTreeMap<String, Vec<u8>>) {
    let artifact = image::build_artifact(&case.wasm, "app.wasm", &BTreeMap::new(), "2026-01-01T00:00:00Z").expect("an artifact");
    let prefix = if case.dot_slash { "./" } else { "" };
    let file = |path: String, data: Vec<u8>| Entry {
        kind: b'0',
        pax: path.len() >= 100,
        path,
        link: String::new(),
        data,
        declared: None,
        mode: 0o644,
    };
    let mut entries = vec![file(format!("{prefix}oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec())];
    let mut held = BTreeMap::new();
    for (bytes, fate) in [artifact.manifest.clone(), artifact.config.clone(), case.wasm.clone()].into_iter().zip(&case.blobs) {
        let mut path = format!("blobs/sha256/{}", Digest::of(&bytes).hex());
        let mut bytes = bytes;
        match fate {
            Blob::Keep => {}
            Blob::Drop => continue,
            Blob::Corrupt(at) => {
                let i = at % bytes.len();
                bytes[i] ^= 0x20;
            }
            Blob::Rename(to) => path = to.clone(),
        }
        held.insert(path.clone(), bytes.clone());
        entries.push(file(format!("{prefix}{path}"), bytes));
    }
    entries.extend(case.extra.iter().cloned());
    entries.push(file(format!("{prefix}index.json"), serde_json::to_vec(&case.index).expect("serializes")));
    let mut bytes = tar_of(&entries);
    if let Some(cut) = case.cut {
        bytes.truncate(cut % bytes.len());
    }
    (bytes, held)
}

#[test]
fn oci_layouts() {
    check("OCI layout load", DEFAULT_DISK_CASES, case(), |case| {
        let dir = scratch();
        let store = Store::open(dir.path().join("store")).expect("a store");
        let (bytes, held) = archive(&case);
        let name: Option<Reference> = case.name.as_deref().map(|n| n.parse().expect("a valid name"));
        let result = layout::load(&store, &bytes[..], name.as_ref());

        // Every stored blob verifies and is one the archive held under that name.
        let blobs = store.blob_path(&Digest::of(b"")).parent().expect("the blobs directory").to_path_buf();
        for e in fs::read_dir(&blobs).expect("blobs") {
            let e = e.expect("an entry");
            let hex = e.file_name().to_string_lossy().into_owned();
            let content = fs::read(e.path()).expect("a blob");
            prop_assert_eq!(Digest::of(&content).hex().to_string(), hex.clone(), "a blob stored under another digest");
            prop_assert_eq!(held.get(&format!("blobs/sha256/{hex}")), Some(&content), "a blob the archive did not hold");
        }
        prop_assert_eq!(fs::read_dir(dir.path().join("store/ingest")).expect("ingest").count(), 0, "an ingest left behind");
        let loaded = match result {
            Err(e) => return one_line(&e),
            Ok(loaded) => loaded,
        };
        prop_assert!(!loaded.is_empty());
        for l in loaded {
            let record = store.get_name(&l.name).expect("names").expect("the loaded name is in the store");
            let manifest = store.read_small(&record.manifest, 4 << 20).expect("the manifest is stored");
            let Ok(Content::Manifest(m)) = Content::parse(&manifest, None) else { return Err(TestCaseError::fail("not a manifest")) };
            prop_assert!(store.has(&m.config.digest) && m.layers.iter().all(|d| store.has(&d.digest)), "a named image is incomplete");
        }
        Ok(())
    });
}
