//! The shim's typed error, and the one place where errors become ttrpc statuses. What a message quotes
//! (a spec's field, a path, an id) passes through the images crate's `shown`: one line, bounded length.

use containerd_shim::protos::ttrpc;
use wasmcell_oci::error::shown;

/// What can go wrong while serving containerd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// containerd asked about a container or process this shim does not have.
    #[error("{}: no such container", shown(.0))]
    NotFound(String),

    /// A container with this id already exists in this shim.
    #[error("{}: container already exists", shown(.0))]
    AlreadyExists(String),

    /// The request does not fit the container's state (start twice, delete while running).
    #[error("{}", shown(.0))]
    FailedPrecondition(String),

    /// The bundle or its OCI runtime spec asks for something the shim does not support or that is
    /// malformed (no args, a missing module, an unsupported mount).
    #[error("{}", shown(.0))]
    InvalidSpec(String),

    /// The request itself is unsupported (exec, checkpoint, pause).
    #[error("{0} is not supported by the wasmcell shim")]
    Unimplemented(&'static str),

    /// The signature policy (`WASMCELL_SIGNATURE_POLICY`) refused the container's image.
    #[error("{}", shown(.0))]
    Untrusted(String),

    /// containerd's own API failed (reading the image of a wasm-layer container).
    #[error("containerd: {}", shown(.0))]
    Containerd(String),

    /// The runtime refused or failed (not runnable, bad policy, trap at start).
    #[error(transparent)]
    Runtime(#[from] wasmcell_runtime::Error),

    /// A host I/O error with what was being done.
    #[error("{}: {}", shown(context), shown(&source.to_string()))]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The exit code of a container that failed to start for this reason: `wasmcell run`'s, from the
    /// one table (`wasmcell_exit`): a spec naming no runnable module is not runnable.
    pub fn exit_code(&self) -> u32 {
        u32::from(match self {
            Error::Runtime(e) => wasmcell_exit::for_runtime(e),
            Error::InvalidSpec(_) => wasmcell_exit::NOT_RUNNABLE,
            Error::Untrusted(_) => wasmcell_exit::UNTRUSTED,
            _ => wasmcell_exit::WASMCELL_ERROR,
        })
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// An image the container runs breaks the images crate's rules (a module path leaving the rootfs, an
/// unsupported media type): the spec asks for what cannot run. I/O keeps its cause.
impl From<wasmcell_oci::Error> for Error {
    fn from(e: wasmcell_oci::Error) -> Error {
        match e {
            wasmcell_oci::Error::InvalidImage(m) => Error::InvalidSpec(m),
            e @ wasmcell_oci::Error::Untrusted { .. } => Error::Untrusted(e.to_string()),
            wasmcell_oci::Error::Io { context, path, source } => Error::Io { context: format!("{context} {}", path.display()), source },
            other => Error::InvalidSpec(other.to_string()),
        }
    }
}

/// The one mapping from [`Error`] to a ttrpc status (containerd turns the code into its errdefs).
impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> ttrpc::Error {
        use ttrpc::Code;
        let code = match &e {
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::InvalidSpec(_) => Code::INVALID_ARGUMENT,
            Error::Untrusted(_) => Code::PERMISSION_DENIED,
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            Error::Runtime(r) => match r {
                wasmcell_runtime::Error::NotFound(_) => Code::NOT_FOUND,
                wasmcell_runtime::Error::NotRunnable(_) | wasmcell_runtime::Error::Config(_) => Code::INVALID_ARGUMENT,
                _ => Code::INTERNAL,
            },
            Error::Io { .. } | Error::Containerd(_) => Code::INTERNAL,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, format!("{e:#}")))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
