//! The one table of process exit codes, following podman's conventions: `wasmcell` exits with these,
//! and the containerd shim gives a container that could not run the same code `wasmcell run` would.
//! Every error either binary can meet is mapped to a code here and nowhere else (check:
//! `grep -rn "exit(1)\|ExitCode::from([0-9]" crates/*/src` finds nothing).

use wasmcell_oci::Error as OciError;
use wasmcell_runtime::Error as RuntimeError;

/// `wasmcell system check` found problems in the store (as fsck and podman's checks do).
pub const CHECK_FAILED: u8 = 1;
/// The guest ran longer than `--timeout` (as coreutils' `timeout`).
pub const TIMEOUT: u8 = 124;
/// wasmcell's own error: bad flags, a mount that does not exist, an unusable home directory, a
/// registry or authentication failure, content that fails its digest check.
pub const WASMCELL_ERROR: u8 = 125;
/// The file or image is not runnable: not wasm, malformed, an unsupported world, an import the host
/// lacks; not a wasm image, an unsupported media type, an unsafe or oversized layer.
pub const NOT_RUNNABLE: u8 = 126;
/// The file, image or key does not exist (locally, or in the registry).
pub const NOT_FOUND: u8 = 127;
/// The signature policy refused the image: no signature where one is required, one that does not
/// verify with a trusted key or names another image or digest, or a `reject` scope.
pub const UNTRUSTED: u8 = 122;
/// The guest trapped (as a native process killed by SIGABRT: 128 + 6).
pub const TRAP: u8 = 134;
/// The guest hit its memory cap (as a container the OOM killer stopped: 128 + SIGKILL).
pub const OUT_OF_MEMORY: u8 = 137;
/// The guest was killed (128 + SIGKILL, as a killed process).
pub const KILLED: u8 = 137;

/// The table as it appears in `--help` and the README.
pub const TABLE: &str = "\
Exit codes:
  0-255  the guest's own exit code, passed through
  1      (system check) the store has problems
  122    the signature policy refused the image (unsigned, a bad or untrusted
         signature, a signature of another image or digest, a reject scope)
  124    the guest exceeded --timeout
  125    wasmcell's own error (bad flags, a mount that does not exist, a registry or
         authentication failure, content that fails its digest check, ...)
  126    the file or image is not runnable (not wasm, malformed, unsupported world,
         missing import, not a wasm image, unsafe or oversized layers)
  127    the file, image or key does not exist (locally or in the registry)
  134    the guest trapped (the trap and a wasm backtrace are printed)
  137    the guest exceeded --memory, or was killed";

/// The code for an error of the runtime.
pub fn for_runtime(e: &RuntimeError) -> u8 {
    match e {
        RuntimeError::NotFound(_) | RuntimeError::Absent(_) => NOT_FOUND,
        RuntimeError::NotRunnable(_) => NOT_RUNNABLE,
        RuntimeError::Trap { .. } => TRAP,
        RuntimeError::Timeout(_) => TIMEOUT,
        RuntimeError::MemoryLimit(_) => OUT_OF_MEMORY,
        RuntimeError::Killed => KILLED,
        RuntimeError::Config(_) | RuntimeError::Io { .. } | RuntimeError::Engine(_) => WASMCELL_ERROR,
    }
}

/// The code for an error of the image store or a registry.
pub fn for_oci(e: &OciError) -> u8 {
    match e {
        OciError::ImageNotFound(_) | OciError::RemoteNotFound { .. } => NOT_FOUND,
        OciError::InvalidImage(_)
        | OciError::UnsupportedMediaType(_)
        | OciError::UnsafeLayer { .. }
        | OciError::TooLarge { .. }
        | OciError::TooManyEntries { .. } => NOT_RUNNABLE,
        OciError::Untrusted { .. } => UNTRUSTED,
        OciError::InvalidReference { .. }
        | OciError::Unauthorized { .. }
        | OciError::Registry(_)
        | OciError::DigestMismatch { .. }
        | OciError::SizeMismatch { .. }
        | OciError::Credentials(_)
        | OciError::Io { .. }
        | OciError::NoSpace { .. }
        | OciError::Corrupt(_) => WASMCELL_ERROR,
    }
}

/// The code for an error that ended a command: the typed error inside it, else wasmcell's own.
pub fn for_error(err: &anyhow::Error) -> u8 {
    if let Some(e) = err.downcast_ref::<OciError>() {
        return for_oci(e);
    }
    if let Some(wasmcell_sign::Error::Io { source, .. }) = err.downcast_ref::<wasmcell_sign::Error>()
        && source.kind() == std::io::ErrorKind::NotFound
    {
        return NOT_FOUND;
    }
    err.downcast_ref::<RuntimeError>().map_or(WASMCELL_ERROR, for_runtime)
}

/// A process's exit code for a guest's own exit status (wasm exit codes are i32; a process's are 0-255).
pub fn for_guest(code: i32) -> u8 {
    (code & 0xff) as u8
}

/// A process's exit code after it was stopped by `signal` (the shell's and containerd's 128 + N).
pub fn for_signal(signal: u32) -> u32 {
    128 + signal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_keep_their_codes_through_anyhow_context() {
        let e = anyhow::Error::from(RuntimeError::NotRunnable("x".into())).context("failed to load");
        assert_eq!(for_error(&e), NOT_RUNNABLE);
        let e = anyhow::Error::from(OciError::ImageNotFound("a/b".into())).context("pull");
        assert_eq!(for_error(&e), NOT_FOUND);
        assert_eq!(for_error(&anyhow::anyhow!("anything else")), WASMCELL_ERROR);
        assert_eq!(for_runtime(&RuntimeError::Timeout(std::time::Duration::from_secs(1))), TIMEOUT);
        assert_eq!(for_runtime(&RuntimeError::Trap { message: String::new(), backtrace: vec![] }), TRAP);
    }

    #[test]
    fn guest_codes_wrap_like_a_process_status() {
        assert_eq!(for_guest(0), 0);
        assert_eq!(for_guest(3), 3);
        assert_eq!(for_guest(256 + 7), 7);
        assert_eq!(for_guest(-1), 255);
    }
}
