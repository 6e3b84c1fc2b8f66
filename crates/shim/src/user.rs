//! The container's `process.user` for every file its guest touches. A guest is a set of threads of the
//! pod's shim (a root process), so the user is applied per thread: the kernel's file-system credentials
//! (`setgroups`, `setfsgid`, `setfsuid`, made as raw syscalls, which apply to the calling thread only —
//! glibc's wrappers would change every thread of the shim). Dropping fsuid 0 also drops the thread's
//! file capabilities (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`, `CAP_FOWNER`, ...), so the guest's file
//! access is exactly that uid's, gid's and groups', as runc would give the same container. The hook runs
//! first on each thread the guest runs on (`Instance::on_thread`), its file I/O threads included.

use oci_spec::runtime::Spec;

/// Whose file access a guest has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (`process.user.additionalGids`).
    pub groups: Vec<u32>,
}

impl User {
    /// `process.user`; `None` for root without supplementary groups (the shim's own credentials).
    pub fn of(spec: &Spec) -> Option<User> {
        let user = spec.process().as_ref()?.user();
        let groups = user.additional_gids().clone().unwrap_or_default();
        let user = User { uid: user.uid(), gid: user.gid(), groups };
        (user.uid != 0 || user.gid != 0 || !user.groups.is_empty()).then_some(user)
    }

    /// Gives the calling thread these file-system credentials, and checks that it has them. Fails closed:
    /// when the kernel refuses, the thread is left as `nobody` rather than root.
    pub fn apply(&self) -> std::io::Result<()> {
        let result = self.set();
        if result.is_err() {
            // SAFETY: raw syscalls with integer arguments, affecting the calling thread only.
            unsafe {
                libc::syscall(libc::SYS_setfsgid, 65534);
                libc::syscall(libc::SYS_setfsuid, 65534);
            }
        }
        result
    }

    fn set(&self) -> std::io::Result<()> {
        let groups: Vec<libc::gid_t> = self.groups.clone();
        // SAFETY: raw syscalls on the calling thread; `groups` outlives the call.
        unsafe {
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::syscall(libc::SYS_setfsgid, self.gid);
            libc::syscall(libc::SYS_setfsuid, self.uid);
            // setfs*id report the previous value, never an error: ask again (-1 changes nothing).
            let (fsgid, fsuid) = (libc::syscall(libc::SYS_setfsgid, u32::MAX), libc::syscall(libc::SYS_setfsuid, u32::MAX));
            if fsgid != i64::from(self.gid) || fsuid != i64::from(self.uid) {
                return Err(std::io::Error::other(format!("the kernel kept fsuid {fsuid} / fsgid {fsgid}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_with_the_user_cannot_read_what_only_root_may() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root only").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let user = User { uid: 1000, gid: 1000, groups: vec![] };
        let path = secret.clone();
        let seen = std::thread::spawn(move || {
            user.apply().unwrap();
            std::fs::read(&path).map_err(|e| e.kind())
        })
        .join()
        .unwrap();
        assert_eq!(seen, Err(std::io::ErrorKind::PermissionDenied));
        // The rest of the process is still root.
        assert_eq!(std::fs::read(&secret).unwrap(), b"root only");
    }
}
