//! The engine seam.
//!
//! An [`Engine`] turns an [`Input`] into a program of the kind its caller drives — a [`Program`] (a
//! command: `wasmcell run`, the shim), an [`HttpProgram`] (wasi:http, per request) or a [`WagiProgram`]
//! (CGI, per request) — compiling it or loading compiled code from the [`crate::cache`]. Instances are
//! granted exactly what a [`Grants`] says. The instance lifecycle ([`crate::instance`]) and the
//! serving loop drive them without knowing which engine made them: every front end loads through this
//! seam, and a guest owns its [`StopSignal`] (the engine's interrupt inside). Today there is one engine,
//! [`WasmtimeEngine`]; another slots in beside it by implementing the same traits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::grants::Grants;
use crate::inspect::Input;
use crate::instance::Stdio;
use crate::{Error, Result};

mod wasmtime;

pub(crate) use self::wasmtime::RESOURCE_BYTES;
pub use self::wasmtime::{Allocator, Compiler, EngineChoice, EngineOptions, PoolOptions, WasmtimeEngine};

/// A boxed future, as the object-safe traits below return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A request or response body as it crosses the seam: streamed, either way.
pub type HttpBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Compiles inputs into runnable programs, one kind of program per way a guest is driven.
/// Link errors (an import the host does not provide, an unsupported world) surface when loading,
/// before any instance exists.
pub trait Engine: Send + Sync + 'static {
    /// A command: a core module's `_start` (or its export `entry`, the shim's `file.wasm#func`: no
    /// parameters, nothing or an i32 exit code returned), or a component's `wasi:cli/run` (an entry is
    /// an error for a component).
    fn load_command(&self, input: &Input, entry: Option<&str>) -> Result<Arc<dyn Program>>;

    /// A component exporting wasi:http/incoming-handler, instantiated fresh for every request.
    fn load_http(&self, input: &Input) -> Result<Arc<dyn HttpProgram>>;

    /// A WASI preview 1 command module answering HTTP the CGI way (WAGI), fresh for every request.
    fn load_wagi(&self, input: &Input) -> Result<Arc<dyn WagiProgram>>;

    /// Compiles `input` into this engine's precompiled format (`wasmcell compile`).
    fn precompile(&self, input: &Input) -> Result<Vec<u8>>;

    /// Makes running guests of a long-lived engine (serve, the shim's HTTP components) yield now and
    /// then, so that their deadlines fire and they share threads; lasts as long as the engine.
    fn start_time_slicing(&self) -> std::io::Result<()>;
}

/// A loaded, linked command: creating an instance of it is cheap.
pub trait Program: Send + Sync {
    /// Creates a sandboxed guest granted exactly what `grants` says. It does not run yet.
    fn create(&self, grants: &Grants, stdio: &Stdio) -> Result<Box<dyn Guest>>;
}

/// One instance of a program, ready to run its entry point.
pub trait Guest: Send {
    /// How to stop this guest: the program made it, with the engine's own way of interrupting
    /// running wasm code.
    fn stop_signal(&self) -> StopSignal;

    /// Instantiates the program and runs its entry point to completion, returning the guest's exit
    /// code. Wasm code that is running when [`StopSignal::request`] is called stops at its next
    /// interruption point.
    fn run(self: Box<Self>) -> BoxFuture<'static, Result<i32>>;
}

/// A loaded wasi:http component.
pub trait HttpProgram: Send + Sync {
    /// Serves one request in a fresh instance granted `grants`. Resolves when the guest has set the
    /// response (its body may still be streaming) or failed to. `hold` is dropped only once the
    /// request's store, and with it its instance slot, is gone (which may be after the response).
    fn handle<'a>(
        &'a self,
        req: http::Request<HttpBody>,
        grants: &'a Grants,
        limits: RequestLimits,
        hold: Hold,
    ) -> BoxFuture<'a, Result<http::Response<HttpBody>, Failure>>;
}

/// What a caller keeps alive for as long as a request's instance exists: the serving loop's admission
/// permit, so that it admits a request only when an instance slot is free.
pub type Hold = Box<dyn std::any::Any + Send + Sync>;

/// A loaded WAGI module.
pub trait WagiProgram: Send + Sync {
    /// Runs the module once in a fresh instance with `cgi_env` added to the granted environment and
    /// `body` as stdin; its stdout is the response.
    fn handle<'a>(
        &'a self,
        body: Bytes,
        cgi_env: &'a [(String, String)],
        grants: &'a Grants,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<WagiOutput, Failure>>;
}

/// The most a WAGI handler may write to stdout (its whole response).
pub const MAX_WAGI_OUTPUT: usize = 64 << 20;

/// What a WAGI run produced.
#[derive(Debug)]
pub struct WagiOutput {
    pub stdout: Bytes,
    pub exit_code: i32,
}

/// Per-request limits beside the sandbox policy's.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestLimits {
    /// Wall-clock deadline for the whole request, response body included.
    pub timeout: Option<Duration>,
    /// Largest request body the guest may read.
    pub max_body: Option<u64>,
}

/// Why a request got no response from the guest. The serving loop maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The guest trapped (or a host call failed it).
    #[error("guest trapped: {0}")]
    Trap(String),
    /// A WAGI module exited with a non-zero status instead of answering.
    #[error("the module exited with status {0}")]
    Exit(i32),
    /// The guest ran past the request deadline.
    #[error("guest exceeded the request timeout of {0:?}")]
    Timeout(Duration),
    /// The guest's memory growth was denied at the cap and it failed.
    #[error("guest exceeded its memory limit")]
    MemoryLimit,
    /// The request body was larger than allowed.
    #[error("request body over {0} bytes")]
    BodyTooLarge(u64),
    /// The guest returned without setting a response.
    #[error("guest returned without a response")]
    NoResponse,
    /// The guest answered with an error code instead of a response.
    #[error("guest answered with error {0}")]
    ErrorCode(String),
    /// The host could not set up the request.
    #[error("{0}")]
    Host(String),
}

/// Why a guest was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Killed,
    Timeout,
}

/// Shared between an instance's controller and its guest: the controller requests a stop, the engine
/// sees it at the guest's next interruption point.
#[derive(Clone)]
pub struct StopSignal {
    inner: Arc<StopInner>,
}

struct StopInner {
    reason: AtomicU8,
    notify: tokio::sync::Notify,
    interrupt: Box<dyn Fn() + Send + Sync>,
}

impl StopSignal {
    /// `interrupt` makes running wasm code check [`StopSignal::requested`] soon (for wasmtime: an epoch
    /// increment), without busy polling.
    pub fn new(interrupt: impl Fn() + Send + Sync + 'static) -> StopSignal {
        StopSignal {
            inner: Arc::new(StopInner { reason: AtomicU8::new(0), notify: tokio::sync::Notify::new(), interrupt: Box::new(interrupt) }),
        }
    }

    /// Asks the guest to stop. The first reason wins.
    pub fn request(&self, reason: StopReason) {
        let code = match reason {
            StopReason::Killed => 1,
            StopReason::Timeout => 2,
        };
        if self.inner.reason.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.inner.notify.notify_one();
            (self.inner.interrupt)();
        }
    }

    pub fn requested(&self) -> Option<StopReason> {
        match self.inner.reason.load(Ordering::SeqCst) {
            1 => Some(StopReason::Killed),
            2 => Some(StopReason::Timeout),
            _ => None,
        }
    }

    /// Resolves once a stop has been requested.
    pub async fn wait(&self) {
        if self.requested().is_none() {
            self.inner.notify.notified().await;
        }
    }
}

impl std::fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopSignal").field("requested", &self.requested()).finish()
    }
}

pub(crate) fn not_runnable(msg: impl Into<String>) -> Error {
    Error::NotRunnable(msg.into())
}
