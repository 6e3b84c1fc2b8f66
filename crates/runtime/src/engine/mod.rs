//! The engine seam.
//!
//! An [`Engine`] turns an [`Input`] into a [`Program`] (compiling it, or loading compiled code from the
//! [`crate::cache`]); a program creates [`Guest`]s, one per instance, each sandboxed by a
//! [`SandboxPolicy`]. The instance lifecycle ([`crate::instance`]) drives guests without knowing which
//! engine made them. Today there is one engine, [`WasmtimeEngine`]; a pure-Rust interpreter slots in
//! beside it by implementing the same three traits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::inspect::{Input, WasmKind};
use crate::instance::Stdio;
use crate::{Error, Result, SandboxPolicy};

mod wasmtime;

pub use self::wasmtime::{Allocator, EngineOptions, PoolOptions, WasmtimeEngine};
pub mod http;
pub mod wagi;

/// Compiles inputs into runnable programs.
pub trait Engine: Send + Sync + 'static {
    /// A short name for logs (`wasmtime`).
    fn name(&self) -> &'static str;

    /// Compiles `input`, or loads its compiled code from the cache, and links it against the host.
    /// Link errors (an import the host does not provide, an unsupported world) surface here, before
    /// any instance exists.
    fn load(&self, input: &Input) -> Result<Arc<dyn Program>> {
        self.load_entry(input, None)
    }

    /// Like [`load`](Self::load), running the core module's export `entry` instead of `_start` (the
    /// shim's `file.wasm#func`). The export must take no parameters and return nothing or an i32 (the
    /// exit code). Components always run `wasi:cli/run`, so an entry is an error for them.
    fn load_entry(&self, input: &Input, entry: Option<&str>) -> Result<Arc<dyn Program>>;

    /// Compiles `input` into this engine's precompiled format (`wasmcell compile`).
    fn precompile(&self, input: &Input) -> Result<Vec<u8>>;
}

/// A loaded, linked program: creating an instance of it is cheap.
pub trait Program: Send + Sync {
    fn kind(&self) -> WasmKind;

    /// Creates a sandboxed guest granted exactly what `policy` says. It does not run yet.
    fn create(&self, policy: &SandboxPolicy, stdio: &Stdio, stop: StopSignal) -> Result<Box<dyn Guest>>;
}

/// One instance of a program, ready to run its entry point.
pub trait Guest: Send {
    /// Instantiates the program and runs its entry point to completion, returning the guest's exit
    /// code. Wasm code that is running when [`StopSignal::request`] is called stops at its next
    /// interruption point.
    fn run(self: Box<Self>) -> Pin<Box<dyn Future<Output = Result<i32>> + Send>>;
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
