//! The mounts the shim makes for a container, and their undoing: the rootfs from the create request, and
//! a private copy of every directory the guest is given (the rootfs and the spec's bind mounts), each
//! remounted `nodev,nosuid` (and read-only when the spec says so).
//!
//! A guest opens files through its preopens, as a thread of a root process: a device node in a compat
//! image (containerd, as root, creates them when it unpacks) or under a bind-mounted host directory
//! (`/dev`, a disk's mount) would open for it unless the mount it sits on is `nodev`. `linux.devices` is
//! not honoured: a wasm guest has no ioctl and gets randomness and clocks from WASI, so no device node
//! ever opens, listed or not.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount as RootfsMount;
use wasmcell_runtime::SandboxPolicy;

use crate::error::{Error, Result};

/// The directory of a bundle that holds the guest's private binds.
const BINDS: &str = "wasmcell-mounts";

/// What the shim mounted for one container, undone (lazily, submounts too) in reverse order.
#[derive(Debug, Default)]
pub(crate) struct Mounted(Vec<PathBuf>);

impl Mounted {
    /// Unmounts everything, once.
    pub(crate) fn undo(&mut self) {
        for t in self.0.drain(..).rev() {
            unmount(&t);
        }
    }

    pub(crate) fn rootfs(&self) -> Option<&Path> {
        self.0.first().map(PathBuf::as_path).filter(|p| p.ends_with("rootfs"))
    }
}

/// Mounts the create request's rootfs at `bundle/rootfs`, `nodev,nosuid`; nothing when it has none.
pub(crate) fn mount_rootfs(mounts: &[RootfsMount], bundle: &Path, done: &mut Mounted) -> Result<()> {
    if mounts.is_empty() {
        return Ok(());
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target).map_err(Error::io(format!("cannot create {}", target.display())))?;
    done.0.push(target.clone());
    for m in mounts {
        if let Err(e) = containerd_shim::mount::mount_rootfs(Some(m.type_.as_str()), Some(m.source.as_str()), &m.options, &target) {
            return Err(Error::Io {
                context: format!("cannot mount the rootfs at {}", target.display()),
                source: std::io::Error::other(e.to_string()),
            });
        }
    }
    remount_hardened(&target, mounts.iter().any(|m| m.options.iter().any(|o| o == "ro")))
}

/// Gives the guest a private `nodev,nosuid` bind of every directory its policy preopens (the rootfs when
/// the shim did not mount it itself, and each of the spec's bind mounts, their submounts included unless
/// the mount's index is in `shallow`: a plain `bind`), under `bundle/wasmcell-mounts/N`, and points the
/// policy at those.
pub(crate) fn harden_preopens(policy: &mut SandboxPolicy, shallow: &[usize], bundle: &Path, done: &mut Mounted) -> Result<()> {
    let base = bundle.join(BINDS);
    for (i, m) in policy.mounts.iter_mut().enumerate() {
        if done.rootfs() == Some(m.host.as_path()) {
            continue; // mounted and hardened above
        }
        let target = base.join(i.to_string());
        std::fs::create_dir_all(&target).map_err(Error::io(format!("cannot create {}", target.display())))?;
        bind(&m.host, &target, !shallow.contains(&i))?;
        done.0.push(target.clone());
        remount_hardened(&target, m.read_only)?;
        for sub in submounts(&target) {
            remount_hardened(&sub, m.read_only)?;
        }
        m.host = target;
    }
    Ok(())
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::InvalidSpec(format!("a NUL in the path {}", p.display())))
}

/// A bind of `source` at `target`, with the file systems mounted below `source` when `recursive`.
fn bind(source: &Path, target: &Path, recursive: bool) -> Result<()> {
    let (src, dst) = (cstr(source)?, cstr(target)?);
    let flags = if recursive { libc::MS_BIND | libc::MS_REC } else { libc::MS_BIND };
    // SAFETY: every pointer is NUL-terminated or null.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), flags, std::ptr::null()) };
    if rc != 0 {
        return Err(Error::Io {
            context: format!("cannot bind-mount {} for the guest", source.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Remounts the mount at `target` `nodev,nosuid` (and read-only when asked).
fn remount_hardened(target: &Path, read_only: bool) -> Result<()> {
    let path = cstr(target)?;
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NODEV | libc::MS_NOSUID;
    if read_only {
        flags |= libc::MS_RDONLY;
    }
    // SAFETY: a remount of a path we mounted; every pointer is NUL-terminated or null.
    let rc = unsafe { libc::mount(std::ptr::null(), path.as_ptr(), std::ptr::null(), flags, std::ptr::null()) };
    if rc != 0 {
        return Err(Error::Io {
            context: format!("cannot remount {} nodev,nosuid", target.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The mount points strictly below `target` (what a recursive bind brought along), from mountinfo.
fn submounts(target: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p != target && p.starts_with(target))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub(crate) fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// What a shim that died left mounted in `bundle` (containerd's `delete` after a crash): the guest's
/// binds, then the rootfs.
pub(crate) fn undo_in(bundle: &Path) {
    let binds = std::fs::read_dir(bundle.join(BINDS)).into_iter().flatten().flatten();
    for entry in binds {
        unmount(&entry.path());
    }
    unmount(&bundle.join("rootfs"));
}

/// A lazy unmount of `target` and everything below it; logged, never fatal.
pub(crate) fn unmount(target: &Path) {
    if let Some(t) = target.to_str()
        && let Err(e) = containerd_shim::mount::umount_recursive(Some(t), libc::MNT_DETACH)
    {
        log::warn!("failed to unmount {t}: {e}");
    }
}
