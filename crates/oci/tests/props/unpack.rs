//! Tar unpacking (`unpack::unpack_rootfs`): layers of hostile entries (`..`, absolute paths, symlinks and
//! hard links pointing out, long names through pax and GNU headers, devices, fifos, sizes that lie,
//! whiteouts) never write outside the destination, never make a device, never exceed the limits.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use wasmcell_oci::unpack::{self, Layer, Limits};
use wasmcell_props::{DEFAULT_DISK_CASES, check, one_line, scratch};

const SECRET: &[u8] = b"outside the rootfs";

/// One tar entry, as hostile as the strategy makes it.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) kind: u8,
    pub(crate) path: String,
    pub(crate) link: String,
    pub(crate) data: Vec<u8>,
    /// The size the header declares, when it lies about the data that follows.
    pub(crate) declared: Option<u64>,
    pub(crate) mode: u32,
    /// Names go in a pax header (else in the 100-byte fields, cut).
    pub(crate) pax: bool,
}

pub(crate) fn name() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        16 => proptest::sample::select(&["a", "b", "d", "sibling", ".wh.a", ".wh..wh..opq", "é\n"][..]).prop_map(String::from),
        2 => proptest::sample::select(&["..", ".", "", ".wh.", ".wh..wh.plnk"][..]).prop_map(String::from),
        1 => (1usize..300).prop_map(|n| "n".repeat(n)),
    ];
    let prefix = prop_oneof![8 => Just(""), 2 => Just("./"), 1 => proptest::sample::select(&["/", "../", "../../sibling/"][..])];
    (prefix, proptest::collection::vec(part, 1..5)).prop_map(|(p, parts)| format!("{p}{}", parts.join("/")))
}

pub(crate) fn entry() -> impl Strategy<Value = Entry> {
    let kind = prop_oneof![
        20 => proptest::sample::select(&b"00000555221"[..]),
        2 => proptest::sample::select(&b"3467SxgLKV\0"[..]),
        1 => any::<u8>(),
    ];
    let link = prop_oneof![8 => name(), 1 => proptest::sample::select(&["/etc/passwd", "../secret", "../../secret", "a/../../secret"][..]).prop_map(String::from)];
    let data = proptest::collection::vec(any::<u8>(), 0..600);
    let declared = proptest::option::weighted(0.1, prop_oneof![0u64..2048, Just(u64::MAX >> 4)]);
    (kind, name(), link, data, declared, any::<u32>(), proptest::bool::weighted(0.2))
        .prop_map(|(kind, path, link, data, declared, mode, pax)| Entry { kind, path, link, data, declared, mode: mode & 0o7777, pax })
}

fn block(kind: u8, path: &[u8], link: &[u8], size: u64, mode: u32) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    let old = h.as_old_mut();
    old.name[..path.len().min(100)].copy_from_slice(&path[..path.len().min(100)]);
    old.linkname[..link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(mode);
    h.set_size(size);
    h.set_cksum();
    h.as_bytes().to_vec()
}

fn padded(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn pax_record(key: &str, value: &str) -> String {
    // The length counts itself: try the digits the total needs.
    let body = format!(" {key}={value}\n");
    let mut n = body.len() + 1;
    while format!("{n}{body}").len() != n {
        n += 1;
    }
    format!("{n}{body}")
}

pub(crate) fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if e.pax {
            let records = pax_record("path", &e.path) + &pax_record("linkpath", &e.link);
            out.extend(block(b'x', b"././@PaxHeader", b"", records.len() as u64, 0o644));
            padded(&mut out, records.as_bytes());
        }
        out.extend(block(e.kind, e.path.as_bytes(), e.link.as_bytes(), e.declared.unwrap_or(e.data.len() as u64), e.mode));
        padded(&mut out, &e.data);
    }
    out.extend([0; 1024]);
    out
}

#[derive(Clone, Debug)]
struct Case {
    layers: Vec<(Vec<Entry>, bool, &'static str)>,
    max_bytes: u64,
    max_entries: u64,
}

fn case() -> impl Strategy<Value = Case> {
    let media = prop_oneof![
        20 => proptest::sample::select(
            &[
                "application/vnd.oci.image.layer.v1.tar",
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ][..]
        ),
        1 => Just("application/vnd.oci.image.layer.v1.tar+zstd"),
    ];
    let layer = (proptest::collection::vec(entry(), 0..6), any::<bool>(), media);
    let limits =
        (proptest::sample::select(&[0u64, 700, 1 << 20, 1 << 20, 1 << 20][..]), proptest::sample::select(&[1u64, 8, 1000, 1000][..]));
    (proptest::collection::vec(layer, 1..3), limits).prop_map(|(layers, (max_bytes, max_entries))| Case { layers, max_bytes, max_entries })
}

/// Every path under `root`, relative to it, without going into `skip`.
fn tree(root: &Path, skip: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).expect("readable") {
            let p = e.expect("an entry").path();
            out.insert(p.strip_prefix(root).expect("under root").to_path_buf());
            if p != skip && fs::symlink_metadata(&p).expect("exists").is_dir() {
                dirs.push(p);
            }
        }
    }
    out
}

#[test]
fn tar_layers_never_escape() {
    check("tar unpacking", DEFAULT_DISK_CASES, case(), |case| {
        let dir = scratch();
        let root = dir.path();
        for d in ["store", "out/sibling"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        fs::write(root.join("out/secret"), SECRET).expect("write");
        let mut blobs = Vec::new();
        for (i, (entries, gzip, _)) in case.layers.iter().enumerate() {
            let mut bytes = tar_of(entries);
            if *gzip {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&bytes).expect("gzip");
                bytes = gz.finish().expect("gzip");
            }
            let path = root.join(format!("store/layer{i}"));
            fs::write(&path, bytes).expect("write");
            blobs.push(path);
        }
        let layers: Vec<Layer<'_>> = blobs.iter().zip(&case.layers).map(|(path, (_, _, media_type))| Layer { path, media_type }).collect();
        let dest = root.join("out/rootfs");
        let limits = Limits { max_bytes: case.max_bytes, max_entries: case.max_entries };
        let result = unpack::unpack_rootfs(&layers, &dest, &limits);

        // Outside the rootfs: exactly what was there before.
        let mut expected: BTreeSet<PathBuf> = ["store", "out", "out/sibling", "out/secret"].into_iter().map(PathBuf::from).collect();
        expected.extend((0..blobs.len()).map(|i| PathBuf::from(format!("store/layer{i}"))));
        if result.is_ok() {
            expected.insert("out/rootfs".into());
        }
        prop_assert_eq!(tree(root, &dest), expected);
        let secret = fs::metadata(root.join("out/secret")).expect("secret");
        prop_assert_eq!(secret.nlink(), 1, "a hard link to a file outside");
        prop_assert_eq!(fs::read(root.join("out/secret")).expect("secret"), SECRET);
        match result {
            Err(e) => one_line(&e),
            Ok(written) => rootfs_holds(&dest, written, case.max_bytes),
        }
    });
}

/// Only directories, files (mode at most 0755) and symlinks that resolve inside; no more bytes than
/// were counted, and no more than the limit.
fn rootfs_holds(dest: &Path, written: u64, max_bytes: u64) -> Result<(), TestCaseError> {
    prop_assert!(written <= max_bytes, "{written} bytes written, limit {max_bytes}");
    let real_root = dest.canonicalize().expect("the rootfs");
    prop_assert_eq!(fs::metadata(dest).expect("rootfs").permissions().mode() & 0o7777, 0o755);
    let mut inodes = BTreeSet::new();
    let mut bytes = 0;
    for rel in tree(dest, Path::new("")) {
        let path = dest.join(&rel);
        let m = fs::symlink_metadata(&path).expect("exists");
        let t = m.file_type();
        if t.is_file() {
            prop_assert_eq!(m.mode() & 0o7022, 0, "{:?} has mode {:o}", rel, m.mode());
            if inodes.insert(m.ino()) {
                bytes += m.len();
            }
        } else if t.is_symlink() {
            prop_assert!(resolves_inside(&real_root, &path, 0), "{rel:?} -> {:?} leaves the rootfs", fs::read_link(&path));
        } else {
            prop_assert!(t.is_dir(), "{rel:?} is a {t:?}");
        }
    }
    prop_assert!(bytes <= written, "{bytes} bytes in files, {written} counted");
    Ok(())
}

/// Follows the link as the kernel would, treating missing names as plain names: never above `root`.
fn resolves_inside(root: &Path, link: &Path, hops: u32) -> bool {
    if hops > 40 {
        return true; // a loop: the kernel gives ELOOP, nothing outside is reached
    }
    let Ok(target) = fs::read_link(link) else { return false };
    if target.is_absolute() {
        return false;
    }
    let mut at: PathBuf = link.parent().expect("a parent").canonicalize().expect("a real parent");
    for part in target.iter() {
        match part.to_str() {
            Some(".") => {}
            Some("..") => {
                at.pop();
            }
            _ => {
                let next = at.join(part);
                if fs::symlink_metadata(&next).is_ok_and(|m| m.file_type().is_symlink()) {
                    if !resolves_inside(root, &next, hops + 1) {
                        return false;
                    }
                    at = next.canonicalize().unwrap_or(next);
                } else {
                    at = next;
                }
            }
        }
        if !at.starts_with(root) {
            return false;
        }
    }
    true
}
