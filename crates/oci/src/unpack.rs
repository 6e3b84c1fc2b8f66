//! Safe extraction of the rootfs layers of a compat image: an ordinary OCI or Docker image whose tar
//! (or tar+gzip) layers hold a `.wasm` file somewhere in the filesystem.
//!
//! A layer is untrusted input, so [`unpack_rootfs`] treats every entry as hostile:
//!
//! - Nothing is written outside the directory being built. Entry paths are relative and free of `..`;
//!   every parent directory of an entry must already be a real directory (never a symlink) or is created;
//!   files are created with `O_CREAT | O_EXCL` after whatever was there is removed, so no open ever goes
//!   through a symlink.
//! - The result holds only directories, regular files (mode at most `0o755`, never setuid, setgid,
//!   sticky, group- or world-writable), symlinks that resolve inside the root, and hard links to files
//!   inside the root. Devices, FIFOs and sparse files are refused. Owners and mtimes are not restored.
//! - OCI whiteouts are applied: `.wh.NAME` deletes `NAME` from earlier layers and `.wh..wh..opq` empties
//!   its directory of everything earlier layers put there.
//! - Decompression bombs stop early: bytes actually written and entries are counted across all layers
//!   against [`Limits`], and so is the decompressed tar stream itself (headers, long names and data that
//!   is skipped rather than written).
//! - The rootfs is built in a temporary directory beside `dest` and renamed into place only once every
//!   layer is in, so `dest` never exists half-extracted; on error the temporary directory is removed.

use std::cell::Cell;
use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::error::{Error, Result};

/// The layer media types of a compat image; all of them may be gzip-compressed (sniffed, whatever the
/// name says).
const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";

/// Decompressed tar bytes allowed per entry on top of [`Limits::max_bytes`]: a header, a pax or GNU
/// long-name record and padding, with room to spare.
const STREAM_OVERHEAD_PER_ENTRY: u64 = 4096;

/// How many symlinks the final check follows while resolving one link (Linux's `MAXSYMLINKS`).
const MAX_SYMLINK_HOPS: u32 = 40;

const OUTSIDE_ROOT: &str = "symlink points outside the layer root";

/// Bounds on what the layers of one image may unpack to, counted across all layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of regular-file content actually written. Default 1 GiB.
    pub max_bytes: u64,
    /// Tar entries of every kind, whiteouts included. Default 100 000.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 1 << 30, max_entries: 100_000 }
    }
}

/// One layer blob of an image, as a file in the store.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    /// The blob file (tar, or gzip-compressed tar).
    pub path: &'a Path,
    /// The media type from the manifest's layer descriptor.
    pub media_type: &'a str,
}

/// Extracts the layers in order into `dest`, which must not exist. Builds in a temp dir beside `dest`
/// (same parent) and renames it into place only when every layer extracted, so a crash never leaves a
/// half-extracted `dest`. Returns total bytes written.
///
/// The parent of `dest` is created if missing. Any unsafe entry fails the whole call with
/// [`Error::UnsafeLayer`]; limits with [`Error::TooLarge`] or [`Error::TooManyEntries`]; media types
/// other than uncompressed or gzip tar (zstd included) with [`Error::UnsupportedMediaType`].
pub fn unpack_rootfs(layers: &[Layer<'_>], dest: &Path, limits: &Limits) -> Result<u64> {
    match fs::symlink_metadata(dest) {
        Ok(_) => {
            let exists = io::Error::new(io::ErrorKind::AlreadyExists, "destination already exists");
            return Err(Error::io("refusing to unpack layers into", dest, exists));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("failed to inspect", dest, e)),
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).map_err(|e| Error::io("failed to create directory", parent, e))?;
    // Mode 0700 while building: nobody else can race us inside it.
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .map_err(|e| Error::io("failed to create a temporary directory in", parent, e))?;

    let mut unpacker = Unpacker::new(tmp.path(), *limits);
    for layer in layers {
        unpacker.layer(layer)?;
    }
    let written = unpacker.written;
    check_symlinks(tmp.path())?;
    fs::set_permissions(tmp.path(), Permissions::from_mode(0o755)).map_err(|e| Error::io("failed to set permissions of", tmp.path(), e))?;

    let built = tmp.keep();
    if let Err(e) = fs::rename(&built, dest) {
        let _ = fs::remove_dir_all(&built);
        return Err(Error::io("failed to move the unpacked rootfs to", dest, e));
    }
    Ok(written)
}

/// State shared by all layers of one [`unpack_rootfs`] call.
struct Unpacker<'r> {
    root: &'r Path,
    limits: Limits,
    /// Regular-file bytes written so far.
    written: u64,
    /// Entries seen so far.
    entries: u64,
    /// Decompressed tar bytes that may still be read.
    stream_left: u64,
    stream_limit: u64,
    /// Paths (relative to the root) the current layer wrote, with their ancestors: whiteouts and opaque
    /// directories only remove what earlier layers put there.
    touched: HashSet<PathBuf>,
    buf: Vec<u8>,
}

impl<'r> Unpacker<'r> {
    fn new(root: &'r Path, limits: Limits) -> Self {
        let stream_limit = limits.max_bytes.saturating_add(limits.max_entries.saturating_mul(STREAM_OVERHEAD_PER_ENTRY));
        Unpacker {
            root,
            limits,
            written: 0,
            entries: 0,
            stream_left: stream_limit,
            stream_limit,
            touched: HashSet::new(),
            buf: vec![0; 64 * 1024],
        }
    }

    fn layer(&mut self, layer: &Layer<'_>) -> Result<()> {
        if !LAYER_MEDIA_TYPES.contains(&layer.media_type) {
            return Err(Error::UnsupportedMediaType(layer.media_type.to_string()));
        }
        let read_err = |e| Error::io("failed to read layer", layer.path, e);
        let file = fs::File::open(layer.path).map_err(read_err)?;
        let mut file = BufReader::with_capacity(64 * 1024, file);
        let head = file.fill_buf().map_err(read_err)?;
        let reader: Box<dyn Read> = if head.starts_with(GZIP_MAGIC) {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else if head.starts_with(ZSTD_MAGIC) {
            return Err(Error::UnsupportedMediaType(format!("{} (zstd-compressed content)", layer.media_type)));
        } else {
            Box::new(file)
        };

        let left = Cell::new(self.stream_left);
        let exceeded = Cell::new(false);
        let mut archive = tar::Archive::new(TarGuard::new(Budget { inner: reader, left: &left, exceeded: &exceeded }));
        self.touched.clear();
        let result = self.entries_of(&mut archive, layer.path);
        self.stream_left = left.get();
        if exceeded.get() {
            return Err(Error::TooLarge { what: "decompressed layers".to_string(), limit: self.stream_limit });
        }
        if let Some(why) = archive.into_inner().refused {
            return Err(Error::TooLarge { what: format!("{} of a layer", why.trim_start_matches("a ")), limit: MAX_TAR_METADATA });
        }
        result
    }

    fn entries_of<R: Read>(&mut self, archive: &mut tar::Archive<R>, layer: &Path) -> Result<()> {
        let read_err = |e| Error::io("failed to read layer", layer, e);
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(Error::TooManyEntries { what: "image layers".to_string(), limit: self.limits.max_entries });
            }
            self.entry(&mut entry, layer)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, layer: &Path) -> Result<()> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let unsafe_entry =
            |reason: &str| Error::UnsafeLayer { path: String::from_utf8_lossy(&raw).into_owned(), reason: reason.to_string() };
        let rel = normalize(&raw).map_err(unsafe_entry)?;

        let name = rel.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
        if name.starts_with(WHITEOUT_PREFIX) {
            let dir = rel.parent().unwrap_or(Path::new(""));
            if name == WHITEOUT_OPAQUE {
                return self.opaque(dir, &unsafe_entry);
            }
            if name.starts_with(WHITEOUT_META_PREFIX) {
                return Ok(()); // aufs bookkeeping (`.wh..wh.plnk` and friends): nothing to apply
            }
            let hidden = &name[WHITEOUT_PREFIX.len()..];
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(unsafe_entry("whiteout names no file"));
            }
            return self.whiteout(&dir.join(OsStr::from_bytes(hidden)), &unsafe_entry);
        }

        if rel.as_os_str().is_empty() {
            // `./` itself: the root's mode is fixed, so only a directory may name it.
            return match kind {
                EntryType::Directory => Ok(()),
                _ => Err(unsafe_entry("entry replaces the layer root")),
            };
        }
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let mode = entry.header().mode().map_err(|e| Error::io("failed to read layer", layer, e))?;
                self.file(&rel, entry, mode & 0o755, layer, &unsafe_entry)
            }
            EntryType::Directory => self.dir(&rel, &unsafe_entry),
            EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                self.symlink(&rel, &target, &unsafe_entry)
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                self.hard_link(&rel, &target, &unsafe_entry)
            }
            EntryType::Char | EntryType::Block => Err(unsafe_entry("device nodes are not allowed")),
            EntryType::Fifo => Err(unsafe_entry("fifos are not allowed")),
            EntryType::GNUSparse => Err(unsafe_entry("sparse files are not supported")),
            other => Err(unsafe_entry(&format!("entry type {:?} is not allowed", other.as_byte() as char))),
        }
    }

    fn file<R: Read>(
        &mut self,
        rel: &Path,
        entry: &mut tar::Entry<'_, R>,
        mode: u32,
        layer: &Path,
        unsafe_entry: &dyn Fn(&str) -> Error,
    ) -> Result<()> {
        let limit = self.limits.max_bytes;
        let too_large = || Error::TooLarge { what: "unpacked layers".to_string(), limit };
        // The header's size is a promise; check it up front so an obvious bomb fails before any write,
        // and count what is actually written below.
        if self.written.saturating_add(entry.size()) > limit {
            return Err(too_large());
        }
        self.prepare(rel, false, unsafe_entry)?;
        let path = self.root.join(rel);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true) // O_CREAT | O_EXCL: never opens through a symlink
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("failed to create", &path, e))?;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("failed to read layer", layer, e)),
            };
            self.written += n as u64;
            if self.written > limit {
                return Err(too_large());
            }
            file.write_all(&self.buf[..n]).map_err(|e| Error::io("failed to write", &path, e))?;
        }
        // fchmod on the open file: exact bits whatever the umask, and no path lookup.
        file.set_permissions(Permissions::from_mode(mode)).map_err(|e| Error::io("failed to set permissions of", &path, e))?;
        Ok(())
    }

    fn dir(&mut self, rel: &Path, unsafe_entry: &dyn Fn(&str) -> Error) -> Result<()> {
        let path = self.root.join(rel);
        if !self.prepare(rel, true, unsafe_entry)? {
            fs::create_dir(&path).map_err(|e| Error::io("failed to create directory", &path, e))?;
        }
        fs::set_permissions(&path, Permissions::from_mode(0o755)).map_err(|e| Error::io("failed to set permissions of", &path, e))
    }

    fn symlink(&mut self, rel: &Path, target: &[u8], unsafe_entry: &dyn Fn(&str) -> Error) -> Result<()> {
        if target.is_empty() {
            return Err(unsafe_entry("symlink has an empty target"));
        }
        if target.contains(&0) {
            return Err(unsafe_entry("symlink target contains a NUL byte"));
        }
        if target.starts_with(b"/") {
            return Err(unsafe_entry(OUTSIDE_ROOT));
        }
        // Lexically, from the link's own directory. Chains through other links are checked once the
        // whole tree is in place (`check_symlinks`).
        let mut depth = rel.components().count() - 1;
        for part in target.split(|b| *b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => depth = depth.checked_sub(1).ok_or_else(|| unsafe_entry(OUTSIDE_ROOT))?,
                _ => depth += 1,
            }
        }
        self.prepare(rel, false, unsafe_entry)?;
        let path = self.root.join(rel);
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &path).map_err(|e| Error::io("failed to create symlink", &path, e))
    }

    fn hard_link(&mut self, rel: &Path, target: &[u8], unsafe_entry: &dyn Fn(&str) -> Error) -> Result<()> {
        let target_rel = normalize(target).map_err(|reason| unsafe_entry(&format!("hard link target: {reason}")))?;
        if target_rel.as_os_str().is_empty() {
            return Err(unsafe_entry("hard link to the layer root"));
        }
        if target_rel == rel {
            return Ok(()); // a link to itself: the file is already there
        }
        // The target's parents must be real directories too, or linking would resolve through a symlink.
        if !self.parents_are_dirs(&target_rel, false, unsafe_entry)? {
            return Err(unsafe_entry("hard link target does not exist"));
        }
        let source = self.root.join(&target_rel);
        match fs::symlink_metadata(&source) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(m) if m.file_type().is_symlink() => return Err(unsafe_entry("hard link target is a symlink")),
            Ok(_) => return Err(unsafe_entry("hard link target is not a regular file")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(unsafe_entry("hard link target does not exist"));
            }
            Err(e) => return Err(Error::io("failed to inspect", &source, e)),
        }
        self.prepare(rel, false, unsafe_entry)?;
        let path = self.root.join(rel);
        fs::hard_link(&source, &path).map_err(|e| Error::io("failed to create hard link", &path, e))
    }

    /// Applies `.wh.NAME`: removes `rel` unless this layer wrote it.
    fn whiteout(&mut self, rel: &Path, unsafe_entry: &dyn Fn(&str) -> Error) -> Result<()> {
        if self.touched.contains(rel) || !self.parents_are_dirs(rel, false, unsafe_entry)? {
            return Ok(());
        }
        let path = self.root.join(rel);
        remove(&path).map_err(|e| Error::io("failed to remove", &path, e))
    }

    /// Applies `.wh..wh..opq`: empties `dir` of everything this layer did not write.
    fn opaque(&mut self, dir: &Path, unsafe_entry: &dyn Fn(&str) -> Error) -> Result<()> {
        if !dir.as_os_str().is_empty() {
            if !self.parents_are_dirs(dir, false, unsafe_entry)? {
                return Ok(());
            }
            match fs::symlink_metadata(self.root.join(dir)) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(unsafe_entry("opaque whiteout in something that is not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io("failed to inspect", self.root.join(dir), e)),
            }
        }
        self.clear(dir)
    }

    fn clear(&self, dir: &Path) -> Result<()> {
        let path = self.root.join(dir);
        let list_err = |e| Error::io("failed to list", &path, e);
        for child in fs::read_dir(&path).map_err(list_err)? {
            let child = child.map_err(list_err)?;
            let rel = dir.join(child.file_name());
            if !self.touched.contains(&rel) {
                let child_path = self.root.join(&rel);
                remove(&child_path).map_err(|e| Error::io("failed to remove", &child_path, e))?;
            } else if child.file_type().map_err(list_err)?.is_dir() {
                self.clear(&rel)?;
            }
        }
        Ok(())
    }

    /// Makes `rel`'s parents real directories (creating missing ones) and clears the way for `rel`
    /// itself: removes what an earlier entry left there, except a directory when `keep_dir` (then
    /// returns true). Records `rel` as written by this layer.
    fn prepare(&mut self, rel: &Path, keep_dir: bool, unsafe_entry: &dyn Fn(&str) -> Error) -> Result<bool> {
        self.parents_are_dirs(rel, true, unsafe_entry)?;
        for ancestor in rel.ancestors() {
            if ancestor.as_os_str().is_empty() || !self.touched.insert(ancestor.to_path_buf()) {
                break;
            }
        }
        let path = self.root.join(rel);
        match fs::symlink_metadata(&path) {
            Ok(m) if keep_dir && m.is_dir() => Ok(true),
            Ok(_) => remove(&path).map(|()| false).map_err(|e| Error::io("failed to remove", &path, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("failed to inspect", &path, e)),
        }
    }

    /// Checks that every parent of `rel` is a real directory inside the root, never a symlink. A missing
    /// one is created (mode 0755) when `create`, otherwise the answer is false.
    fn parents_are_dirs(&self, rel: &Path, create: bool, unsafe_entry: &dyn Fn(&str) -> Error) -> Result<bool> {
        let Some(parent) = rel.parent() else { return Ok(true) };
        let mut path = self.root.to_path_buf();
        for part in parent.components() {
            path.push(part);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(unsafe_entry("a parent directory is a symlink"));
                }
                Ok(_) => return Err(unsafe_entry("a parent directory is not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&path).map_err(|e| Error::io("failed to create directory", &path, e))?;
                    fs::set_permissions(&path, Permissions::from_mode(0o755))
                        .map_err(|e| Error::io("failed to set permissions of", &path, e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(Error::io("failed to inspect", &path, e)),
            }
        }
        Ok(true)
    }
}

/// The most a GNU long name or long link, or a pax header, may hold. Real ones are a few hundred bytes;
/// the tar crate reads them whole into memory, so an unbounded one is a memory bomb.
pub const MAX_TAR_METADATA: u64 = 64 << 10;

/// Watches a tar stream's 512-byte headers as they pass to the tar crate, and fails the stream at the
/// first metadata entry (GNU long name or long link, pax extended or global header) larger than
/// [`MAX_TAR_METADATA`], before its data is read. Position is tracked exactly: each header is followed
/// by its data rounded up to 512 bytes. A GNU sparse entry (whose extension blocks would follow
/// unannounced) is failed too; sparse files are refused anyway.
pub(crate) struct TarGuard<R> {
    inner: R,
    /// Bytes of the current header block seen so far, and the block itself.
    block: [u8; 512],
    in_block: usize,
    /// Data bytes (with padding) still to pass before the next header.
    skip: u64,
    /// Why the stream was failed, for the caller to report (the tar crate hides it in an I/O error).
    pub(crate) refused: Option<String>,
}

impl<R> TarGuard<R> {
    pub(crate) fn new(inner: R) -> TarGuard<R> {
        TarGuard { inner, block: [0; 512], in_block: 0, skip: 0, refused: None }
    }

    /// Looks at one whole header: what data follows it, and whether it may.
    fn header(&mut self) -> Result<u64, String> {
        let h = &self.block;
        if h.iter().all(|&b| b == 0) {
            return Ok(0); // end-of-archive marker
        }
        let size = tar_size(&h[124..136]).ok_or("a tar header with an unreadable size")?;
        match h[156] {
            b'L' | b'K' | b'x' | b'g' if size > MAX_TAR_METADATA => {
                Err(format!("a tar long-name or pax header of {size} bytes (the limit is {MAX_TAR_METADATA})"))
            }
            b'S' => Err("a GNU sparse entry".into()),
            _ => Ok(size.div_ceil(512) * 512),
        }
    }

    /// Accounts for `data`, which just passed.
    fn watch(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = (self.skip.min(data.len() as u64)) as usize;
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (512 - self.in_block).min(data.len());
            self.block[self.in_block..self.in_block + n].copy_from_slice(&data[..n]);
            self.in_block += n;
            data = &data[n..];
            if self.in_block == 512 {
                self.in_block = 0;
                self.skip = self.header()?;
            }
        }
        Ok(())
    }
}

/// A tar header's size field: octal digits (space or NUL terminated), or GNU's base-256.
fn tar_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(n);
    }
    let digits: Vec<u8> = field.iter().copied().skip_while(|b| *b == b' ').take_while(|b| (b'0'..=b'7').contains(b)).collect();
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&digits).ok()?, 8).ok()
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(why) = &self.refused {
            return Err(io::Error::other(why.clone()));
        }
        let n = self.inner.read(buf)?;
        if let Err(why) = self.watch(&buf[..n]) {
            self.refused = Some(why.clone());
            return Err(io::Error::other(why));
        }
        Ok(n)
    }
}

/// A reader that fails once more than `left` bytes have passed, and says so in `exceeded` (the tar
/// crate turns the error into an opaque I/O error).
pub(crate) struct Budget<'c, R> {
    pub(crate) inner: R,
    pub(crate) left: &'c Cell<u64>,
    pub(crate) exceeded: &'c Cell<bool>,
}

impl<R: Read> Read for Budget<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)? as u64;
        match self.left.get().checked_sub(n) {
            Some(left) => {
                self.left.set(left);
                Ok(n as usize)
            }
            None => {
                self.exceeded.set(true);
                Err(io::Error::other("decompressed layer is over its size limit"))
            }
        }
    }
}

/// Turns an entry path (or hard link target) into a relative path of plain components, or says why
/// it cannot be one. `./` prefixes, `.` components and repeated or trailing slashes are dropped.
fn normalize(raw: &[u8]) -> Result<PathBuf, &'static str> {
    if raw.contains(&0) {
        return Err("path contains a NUL byte");
    }
    if raw.starts_with(b"/") {
        return Err("absolute paths are not allowed");
    }
    let mut rel = PathBuf::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("`..` components are not allowed"),
            _ => rel.push(OsStr::from_bytes(part)),
        }
    }
    Ok(rel)
}

/// Removes a file, symlink (not what it points to) or directory tree; absent is fine.
fn remove(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Checks, once the tree is complete, that every symlink resolves inside `root` when followed for
/// real. The per-entry check is lexical; a chain such as `d/l -> ..` plus `e -> d/l/..` passes it,
/// and a later layer may swap a directory for a link under an earlier one.
fn check_symlinks(root: &Path) -> Result<()> {
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let path = root.join(&dir);
        let list_err = |e| Error::io("failed to list", &path, e);
        for child in fs::read_dir(&path).map_err(list_err)? {
            let child = child.map_err(list_err)?;
            let rel = dir.join(child.file_name());
            let kind = child.file_type().map_err(list_err)?;
            if kind.is_dir() {
                dirs.push(rel);
            } else if kind.is_symlink() {
                resolve_inside(root, &rel)
                    .map_err(|reason| Error::UnsafeLayer { path: rel.to_string_lossy().into_owned(), reason: reason.to_string() })?;
            }
        }
    }
    Ok(())
}

/// Follows the symlink `link` (relative to `root`) component by component, as the kernel would, and
/// fails if it ever climbs above `root`. Components that do not exist are taken lexically.
fn resolve_inside(root: &Path, link: &Path) -> Result<(), &'static str> {
    let read = |rel: &Path| fs::read_link(root.join(rel)).map_err(|_| "cannot read symlink");
    let parts = |target: &Path| -> Vec<Vec<u8>> { target.as_os_str().as_bytes().split(|b| *b == b'/').map(<[u8]>::to_vec).collect() };
    // `at` holds real directories (or missing names) only, never a link, so `..` pops to the real parent.
    let mut at: PathBuf = link.parent().unwrap_or(Path::new("")).to_path_buf();
    let mut todo: VecDeque<Vec<u8>> = parts(&read(link)?).into();
    let mut hops = 1;
    while let Some(part) = todo.pop_front() {
        match &part[..] {
            b"" | b"." => {}
            b".." => {
                if !at.pop() {
                    return Err(OUTSIDE_ROOT);
                }
            }
            name => {
                let next = at.join(OsStr::from_bytes(name));
                if !fs::symlink_metadata(root.join(&next)).is_ok_and(|m| m.file_type().is_symlink()) {
                    at = next;
                    continue;
                }
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err("too many levels of symlinks");
                }
                let target = read(&next)?;
                if target.is_absolute() {
                    return Err(OUTSIDE_ROOT);
                }
                for part in parts(&target).into_iter().rev() {
                    todo.push_front(part);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, Instant};

    use flate2::write::GzEncoder;
    use tar::{Builder, Header};

    use super::*;

    const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    const TAR_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    const DOCKER_TAR_GZ: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    /// Appends one entry with its name and link name written straight into the header bytes, so
    /// names the `tar` builder refuses (`..`, absolute) can be tested too.
    fn raw(b: &mut Builder<Vec<u8>>, kind: EntryType, path: &str, link: &str, data: &[u8]) {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn file(b: &mut Builder<Vec<u8>>, path: &str, data: &[u8]) {
        raw(b, EntryType::Regular, path, "", data);
    }

    fn dir(b: &mut Builder<Vec<u8>>, path: &str) {
        raw(b, EntryType::Directory, path, "", b"");
    }

    fn symlink(b: &mut Builder<Vec<u8>>, path: &str, target: &str) {
        raw(b, EntryType::Symlink, path, target, b"");
    }

    fn tar_of(fill: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = Builder::new(Vec::new());
        fill(&mut b);
        b.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// A private root holding the layer blobs (`store/`) and the destination's parent (`out/`).
    struct Fixture {
        root: tempfile::TempDir,
        blobs: Vec<(PathBuf, &'static str)>,
    }

    impl Fixture {
        fn new() -> Self {
            let root = tempfile::tempdir().unwrap();
            fs::create_dir_all(root.path().join("store")).unwrap();
            fs::create_dir_all(root.path().join("out/nested")).unwrap();
            Fixture { root, blobs: Vec::new() }
        }

        fn layer(&mut self, media_type: &'static str, bytes: &[u8]) -> &mut Self {
            let path = self.root.path().join(format!("store/layer{}", self.blobs.len()));
            fs::write(&path, bytes).unwrap();
            self.blobs.push((path, media_type));
            self
        }

        fn dest(&self) -> PathBuf {
            self.root.path().join("out/nested/rootfs")
        }

        fn unpack(&self, limits: &Limits) -> Result<u64> {
            let layers: Vec<Layer<'_>> = self.blobs.iter().map(|(path, media_type)| Layer { path, media_type }).collect();
            unpack_rootfs(&layers, &self.dest(), limits)
        }

        /// Every path under the fixture root, relative to it.
        fn tree(&self) -> BTreeSet<String> {
            let mut out = BTreeSet::new();
            let mut dirs = vec![self.root.path().to_path_buf()];
            while let Some(d) = dirs.pop() {
                for e in fs::read_dir(&d).unwrap() {
                    let e = e.unwrap();
                    let p = e.path();
                    out.insert(p.strip_prefix(self.root.path()).unwrap().to_string_lossy().into_owned());
                    if e.file_type().unwrap().is_dir() {
                        dirs.push(p);
                    }
                }
            }
            out
        }

        /// Unpacking failed and left nothing behind: no `dest`, no temporary directory, nothing
        /// written anywhere under the fixture root but the layer blobs.
        fn assert_untouched(&self) {
            assert!(fs::symlink_metadata(self.dest()).is_err(), "dest was created");
            let mut expected: BTreeSet<String> = ["store", "out", "out/nested"].into_iter().map(String::from).collect();
            expected.extend((0..self.blobs.len()).map(|i| format!("store/layer{i}")));
            assert_eq!(self.tree(), expected);
        }
    }

    fn unsafe_reason(err: Error) -> (String, String) {
        match err {
            Error::UnsafeLayer { path, reason } => (path, reason),
            other => panic!("expected an unsafe-layer error, got {other:?}"),
        }
    }

    /// Unpacks one uncompressed layer that must be refused as unsafe; returns (path, reason).
    fn refused(fill: impl FnOnce(&mut Builder<Vec<u8>>)) -> (String, String) {
        let mut fx = Fixture::new();
        fx.layer(TAR, &tar_of(fill));
        let err = fx.unpack(&Limits::default()).unwrap_err();
        fx.assert_untouched();
        unsafe_reason(err)
    }

    #[test]
    fn unpack_happy_path() {
        let long = format!("deep/{}/file.txt", "d".repeat(120));
        let layer1 = tar_of(|b| {
            dir(b, "./bin/");
            let mut h = Header::new_gnu();
            h.set_mode(0o6777); // setuid, setgid, world-writable: all dropped
            h.set_size(8);
            b.append_data(&mut h, "bin/app.wasm", &b"\0asm\x01\0\0\0"[..]).unwrap(); // via the builder
            file(b, "./etc/conf", b"k=v\n"); // parent created implicitly
            symlink(b, "bin/latest", "app.wasm");
            symlink(b, "lnk", "./bin/../bin/app.wasm");
            raw(b, EntryType::Link, "bin/hard", "./bin/app.wasm", b"");
            let mut h = Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(4);
            b.append_data(&mut h, &long, &b"long"[..]).unwrap(); // GNU long-name record
            file(b, "old/gone.txt", b"gone");
            file(b, "old/kept.txt", b"kept");
            file(b, "opq/a", b"a");
            file(b, "opq/sub/b", b"b");
            file(b, "replaced", b"file");
        });
        let layer2 = tar_of(|b| {
            file(b, "opq/new", b"new"); // before the opaque marker: still kept
            file(b, "old/.wh.gone.txt", b"");
            file(b, "opq/.wh..wh..opq", b"");
            file(b, "opq/sub/c", b"c");
            dir(b, "replaced/"); // a file from layer 1 becomes a directory
            file(b, "etc/conf", b"k=w\n"); // overwrite
        });
        let layer3 = tar_of(|b| {
            file(b, ".wh.lnk", b"");
        });
        let mut fx = Fixture::new();
        fx.layer(TAR, &layer1).layer(TAR_GZ, &gzip(&layer2)).layer(TAR, &gzip(&layer3)); // gzip sniffed
        let written = fx.unpack(&Limits::default()).unwrap();
        assert_eq!(written, 8 + 4 + 4 + 4 + 4 + 1 + 1 + 4 + 3 + 1 + 4);

        let root = fx.dest();
        let read = |p: &str| fs::read(root.join(p)).unwrap();
        assert_eq!(read("bin/app.wasm"), b"\0asm\x01\0\0\0");
        let mode = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("bin/app.wasm"), 0o755);
        assert_eq!(mode("etc/conf"), 0o644);
        assert_eq!(mode("bin"), 0o755);
        assert_eq!(mode("etc"), 0o755);
        assert_eq!(mode(""), 0o755);
        assert_eq!(read("etc/conf"), b"k=w\n");
        assert_eq!(fs::read_link(root.join("bin/latest")).unwrap(), Path::new("app.wasm"));
        assert_eq!(read("bin/latest"), read("bin/app.wasm"));
        let ino = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().ino();
        assert_eq!(ino("bin/hard"), ino("bin/app.wasm"));
        assert_eq!(read(&long), b"long");
        assert!(!root.join("old/gone.txt").exists());
        assert_eq!(read("old/kept.txt"), b"kept");
        assert!(!root.join("opq/a").exists());
        assert!(!root.join("opq/sub/b").exists());
        assert_eq!(read("opq/new"), b"new");
        assert_eq!(read("opq/sub/c"), b"c");
        assert!(root.join("replaced").is_dir());
        assert!(fs::symlink_metadata(root.join("lnk")).is_err());
        // Nothing else beside `dest` in its parent: the temporary directory was renamed away.
        let siblings: Vec<_> = fs::read_dir(fx.root.path().join("out/nested")).unwrap().collect();
        assert_eq!(siblings.len(), 1);
    }

    #[test]
    fn unpack_rejects_dotdot_path() {
        let (path, reason) = refused(|b| file(b, "../x", b"evil"));
        assert_eq!(path, "../x");
        assert!(reason.contains("`..`"), "{reason}");
        let (_, reason) = refused(|b| file(b, "./a/../../x", b"evil"));
        assert!(reason.contains("`..`"), "{reason}");
    }

    #[test]
    fn unpack_rejects_whiteout_of_nothing() {
        for name in ["d/.wh.", "d/.wh..", "d/.wh..."] {
            let (path, reason) = refused(|b| {
                file(b, "d/f", b"f");
                file(b, name, b"");
            });
            assert_eq!((path.as_str(), reason.as_str()), (name, "whiteout names no file"));
        }
    }

    #[test]
    fn unpack_rejects_absolute_path() {
        let name = format!("/tmp/wasmcell-unpack-abs-{}", std::process::id());
        let (_, reason) = refused(|b| file(b, &name, b"evil"));
        assert!(reason.contains("absolute"), "{reason}");
        assert!(!Path::new(&name).exists());
    }

    #[test]
    fn unpack_rejects_nul_in_pax_path() {
        // A pax record `path=a\0b` overrides the header name.
        let record = b"14 path=a\0bcd\n";
        let (_, reason) = refused(|b| {
            raw(b, EntryType::XHeader, "pax", "", record);
            file(b, "plain", b"x");
        });
        assert!(reason.contains("NUL"), "{reason}");
    }

    #[test]
    fn unpack_rejects_symlink_outside_root() {
        let (path, reason) = refused(|b| {
            dir(b, "a/");
            symlink(b, "a/up", "../../etc");
        });
        assert_eq!(path, "a/up");
        assert_eq!(reason, OUTSIDE_ROOT);
        let (_, reason) = refused(|b| symlink(b, "passwd", "/etc/passwd"));
        assert_eq!(reason, OUTSIDE_ROOT);
    }

    #[test]
    fn unpack_rejects_symlink_chain_outside_root() {
        // Each link is inside the root lexically; followed for real, `e` is the root's parent.
        let (path, reason) = refused(|b| {
            dir(b, "d/");
            symlink(b, "d/l", "..");
            symlink(b, "e", "d/l/..");
        });
        assert_eq!(path, "e");
        assert_eq!(reason, OUTSIDE_ROOT);
    }

    #[test]
    fn unpack_rejects_write_through_symlink() {
        // `a -> .` is inside the root, but nothing may be written through it.
        let (path, reason) = refused(|b| {
            symlink(b, "a", ".");
            file(b, "a/evil", b"evil");
        });
        assert_eq!(path, "a/evil");
        assert!(reason.contains("symlink"), "{reason}");
        // `a -> ..` is refused on its own, and across layers it would be refused at `a/evil` too.
        let mut fx = Fixture::new();
        fx.layer(TAR, &tar_of(|b| symlink(b, "a", "..")));
        fx.layer(TAR, &tar_of(|b| file(b, "a/evil", b"evil")));
        let (path, reason) = unsafe_reason(fx.unpack(&Limits::default()).unwrap_err());
        assert_eq!((path.as_str(), reason.as_str()), ("a", OUTSIDE_ROOT));
        fx.assert_untouched();
    }

    #[test]
    fn unpack_rejects_hardlink_outside_root() {
        let (path, reason) = refused(|b| raw(b, EntryType::Link, "h", "../outside", b""));
        assert_eq!(path, "h");
        assert!(reason.contains("hard link target") && reason.contains("`..`"), "{reason}");
        let (_, reason) = refused(|b| raw(b, EntryType::Link, "h", "/etc/passwd", b""));
        assert!(reason.contains("absolute"), "{reason}");
        let (_, reason) = refused(|b| {
            symlink(b, "s", "x");
            file(b, "x", b"x");
            raw(b, EntryType::Link, "h", "s", b"");
        });
        assert!(reason.contains("symlink"), "{reason}");
    }

    #[test]
    fn unpack_rejects_devices() {
        let (path, reason) = refused(|b| raw(b, EntryType::Char, "dev/null", "", b""));
        assert_eq!(path, "dev/null");
        assert!(reason.contains("device"), "{reason}");
        let (_, reason) = refused(|b| raw(b, EntryType::Block, "dev/sda", "", b""));
        assert!(reason.contains("device"), "{reason}");
    }

    #[test]
    fn unpack_rejects_fifo() {
        let (_, reason) = refused(|b| raw(b, EntryType::Fifo, "pipe", "", b""));
        assert!(reason.contains("fifo"), "{reason}");
    }

    #[test]
    fn unpack_rejects_gzip_bomb() {
        let zeros = vec![0u8; 20 << 20];
        let bomb = gzip(&tar_of(|b| file(b, "zeros", &zeros)));
        assert!(bomb.len() < 1 << 20);
        let mut fx = Fixture::new();
        fx.layer(DOCKER_TAR_GZ, &bomb);
        let limits = Limits { max_bytes: 1 << 20, ..Limits::default() };
        let start = Instant::now();
        let err = fx.unpack(&limits).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(matches!(&err, Error::TooLarge { what, limit } if what == "unpacked layers" && *limit == 1 << 20));
        fx.assert_untouched();

        // Many files that are each small: counted as written, across layers.
        let half = vec![7u8; 600 << 10];
        let mut fx = Fixture::new();
        fx.layer(TAR, &tar_of(|b| file(b, "one", &half)));
        fx.layer(TAR_GZ, &gzip(&tar_of(|b| file(b, "two", &half))));
        assert!(matches!(fx.unpack(&limits).unwrap_err(), Error::TooLarge { .. }));
        fx.assert_untouched();
    }

    #[test]
    fn unpack_rejects_unwritten_data_bomb() {
        // A directory entry carrying 20 MiB of data that is never written still counts as read.
        let zeros = vec![0u8; 20 << 20];
        let mut fx = Fixture::new();
        fx.layer(TAR_GZ, &gzip(&tar_of(|b| raw(b, EntryType::Directory, "d/", "", &zeros))));
        let limits = Limits { max_bytes: 1 << 20, max_entries: 16 };
        let err = fx.unpack(&limits).unwrap_err();
        assert!(matches!(&err, Error::TooLarge { what, .. } if what == "decompressed layers"), "{err:?}");
        fx.assert_untouched();
    }

    #[test]
    fn unpack_rejects_too_many_entries() {
        let mut fx = Fixture::new();
        fx.layer(TAR, &tar_of(|b| (0..3).for_each(|i| file(b, &format!("f{i}"), b"x"))));
        fx.layer(TAR, &tar_of(|b| (3..6).for_each(|i| file(b, &format!("f{i}"), b"x"))));
        let limits = Limits { max_entries: 5, ..Limits::default() };
        let err = fx.unpack(&limits).unwrap_err();
        assert!(matches!(err, Error::TooManyEntries { limit: 5, .. }), "{err:?}");
        fx.assert_untouched();
        // Exactly at the limit is fine.
        assert!(fx.unpack(&Limits { max_entries: 6, ..Limits::default() }).is_ok());
    }

    #[test]
    fn unpack_rejects_unsupported_media_types() {
        let mut fx = Fixture::new();
        fx.layer("application/vnd.oci.image.layer.v1.tar+zstd", &tar_of(|b| file(b, "f", b"x")));
        assert!(matches!(fx.unpack(&Limits::default()).unwrap_err(), Error::UnsupportedMediaType(_)));
        fx.assert_untouched();
        let mut fx = Fixture::new();
        fx.layer(TAR, &[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]); // zstd content under a tar name
        assert!(matches!(fx.unpack(&Limits::default()).unwrap_err(), Error::UnsupportedMediaType(_)));
        fx.assert_untouched();
    }

    #[test]
    fn unpack_refuses_existing_dest() {
        let mut fx = Fixture::new();
        fx.layer(TAR, &tar_of(|b| file(b, "f", b"x")));
        fs::create_dir(fx.dest()).unwrap();
        assert!(matches!(fx.unpack(&Limits::default()).unwrap_err(), Error::Io { .. }));
        assert_eq!(fs::read_dir(fx.dest()).unwrap().count(), 0);
    }
}
