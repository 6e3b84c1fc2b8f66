//! The one table of process exit codes, following podman's conventions. Every error the CLI can meet
//! is mapped to a code here and nowhere else.

use std::process::ExitCode;

use wasmcell_runtime::Error;

/// wasmcell's own error: bad flags, a mount that does not exist, an unusable home directory.
pub const WASMCELL_ERROR: u8 = 125;
/// The file is not runnable: not wasm, malformed, an unsupported world, an import the host lacks.
pub const NOT_RUNNABLE: u8 = 126;
/// The file or image does not exist (locally, or in the registry).
pub const NOT_FOUND: u8 = 127;
/// The guest ran longer than `--timeout` (as coreutils' `timeout`).
pub const TIMEOUT: u8 = 124;
/// The guest trapped (as a native process killed by SIGABRT).
pub const TRAP: u8 = 134;
/// The guest hit `--memory` (as a container killed by the OOM killer) or was killed.
pub const MEMORY_LIMIT: u8 = 137;

/// The table as it appears in `--help` and the README.
pub const TABLE: &str = "\
Exit codes:
  0-255  the guest's own exit code, passed through
  124    the guest exceeded --timeout
  125    wasmcell's own error (bad flags, a mount that does not exist, a registry or
         authentication failure, content that fails its digest check, ...)
  126    the file or image is not runnable (not wasm, malformed, unsupported world,
         missing import, not a wasm image, unsafe or oversized layers)
  127    the file, image or key does not exist (locally or in the registry)
  134    the guest trapped (the trap and a wasm backtrace are printed)
  137    the guest exceeded --memory, or was killed";

/// The exit code for an error that ended the command.
pub fn code_for(err: &anyhow::Error) -> u8 {
    if let Some(e) = err.downcast_ref::<wasmcell_oci::Error>() {
        use wasmcell_oci::Error as E;
        return match e {
            E::ImageNotFound(_) | E::RemoteNotFound { .. } => NOT_FOUND,
            E::InvalidImage(_) | E::UnsupportedMediaType(_) | E::UnsafeLayer { .. } | E::TooLarge { .. } | E::TooManyEntries { .. } => {
                NOT_RUNNABLE
            }
            E::InvalidReference { .. }
            | E::Unauthorized { .. }
            | E::Registry(_)
            | E::DigestMismatch { .. }
            | E::SizeMismatch { .. }
            | E::Credentials(_)
            | E::Io { .. }
            | E::Corrupt(_) => WASMCELL_ERROR,
        };
    }
    match err.downcast_ref::<Error>() {
        Some(Error::NotFound(_) | Error::Absent(_)) => NOT_FOUND,
        Some(Error::NotRunnable(_)) => NOT_RUNNABLE,
        Some(Error::Trap { .. }) => TRAP,
        Some(Error::Timeout(_)) => TIMEOUT,
        Some(Error::MemoryLimit(_) | Error::Killed) => MEMORY_LIMIT,
        Some(Error::Config(_) | Error::Io { .. } | Error::Engine(_)) | None => WASMCELL_ERROR,
    }
}

/// The exit code for a guest's own exit status (wasm exit codes are i32; a process's are 0-255).
pub fn guest_code(code: i32) -> ExitCode {
    ExitCode::from((code & 0xff) as u8)
}
