//! The runtime's typed error: callers branch on the variant (the CLI maps each to an exit code in one
//! table, a shim maps them to ttrpc statuses).

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can stop a workload from running to its own exit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input file does not exist.
    #[error("{}: no such file", .0.display())]
    NotFound(PathBuf),

    /// Something named that does not exist, other than a file (a key in a key-value store).
    #[error("{0}: not found")]
    Absent(String),

    /// The input exists but cannot be run: not wasm, malformed, an unsupported world, an import the host
    /// does not provide.
    #[error("{0}")]
    NotRunnable(String),

    /// The sandbox policy or the runtime's own configuration is invalid (a mount that does not exist,
    /// a bad limit).
    #[error("{0}")]
    Config(String),

    /// The guest trapped. `backtrace` holds one line per wasm frame, innermost first.
    #[error("guest trapped: {message}")]
    Trap { message: String, backtrace: Vec<String> },

    /// The guest ran longer than its time limit and was stopped.
    #[error("guest exceeded its time limit of {}", humanize_duration(*.0))]
    Timeout(Duration),

    /// The guest needed more linear memory than its limit allows.
    #[error("guest exceeded its memory limit of {}", humanize_bytes(*.0))]
    MemoryLimit(u64),

    /// The guest was stopped by `Instance::kill`.
    #[error("guest was killed")]
    Killed,

    /// An I/O error of the host (the cache directory, a file), with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// Anything else the engine reported (its chain of causes, on one line).
    #[error("{0}")]
    Engine(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

pub(crate) fn humanize_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

pub(crate) fn humanize_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}
