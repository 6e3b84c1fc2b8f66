//! Tiered start: on a compiled-code cache miss a program starts on Winch's code, which compiles many
//! times faster than Cranelift's, while Cranelift compiles the same input on a thread of its own. Its
//! code goes to the cache (the next start is warm and optimized) and, for programs that make an
//! instance per request, into the program: new instances run it, a request in flight finishes on the
//! code it started with. Which inputs tier is [`super::EngineOptions::tier_above`].

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::compile::Compiled;
use super::{Tier, WasmtimeEngine};
use crate::Result;
use crate::engine::{BoxFuture, Failure, Hold, HttpBody, HttpProgram, RequestLimits, WagiOutput, WagiProgram};
use crate::grants::Grants;
use crate::inspect::{Input, WasmKind};

/// Cranelift's code for an input that started on Winch's, still to be made.
pub(super) struct Upgrade {
    engine: WasmtimeEngine,
    input: Input,
    kind: WasmKind,
}

impl Upgrade {
    pub(super) fn new(engine: WasmtimeEngine, input: Input, kind: WasmKind) -> Upgrade {
        Upgrade { engine, input, kind }
    }

    /// Compiles on a thread of its own into the cache, then hands the code to `make` and keeps what it
    /// makes in the returned cell. A failure leaves the cell empty (the program stays on Winch's code).
    pub(super) fn spawn<P: Send + Sync + 'static>(
        self,
        make: impl FnOnce(&Input, Compiled) -> Result<P> + Send + 'static,
    ) -> Arc<OnceLock<P>> {
        let cell = Arc::new(OnceLock::new());
        let filled = cell.clone();
        let name = self.input.name.clone();
        let spawned = std::thread::Builder::new().name("wasmcell-tier-up".into()).spawn(move || {
            let start = Instant::now();
            // At the lowest priority, on threads of its own (wasmtime compiles on the current rayon
            // pool): the requests served meanwhile, and the first above all, never wait for it.
            background_priority();
            let pool = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("wasmcell-tier-up-{i}")).start_handler(|_| background_priority()).build();
            let compile = || self.engine.compile_cached(Tier::Main, &self.input, self.kind);
            let compiled = match &pool {
                Ok(pool) => pool.install(compile),
                Err(_) => compile(),
            };
            let made = compiled.and_then(|code| make(&self.input, code));
            match made {
                Ok(program) => {
                    let _ = filled.set(program);
                    tracing::info!(input = %self.input.name, elapsed = ?start.elapsed(), "optimized code ready: new instances run Cranelift's code");
                }
                Err(e) => tracing::warn!(input = %self.input.name, "optimizing compile failed, staying on Winch's code: {e}"),
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(input = %name, "cannot start the optimizing compile, staying on Winch's code: {e}");
        }
        cell
    }

    /// Compiles into the cache only: the program that started keeps Winch's code (a command), the
    /// next start gets Cranelift's. A process that ends first leaves the work undone; without a cache
    /// there is nothing to do.
    pub(super) fn cache_only(self) {
        if self.engine.options.cache.is_some() {
            let _ = self.spawn(|_, _| Ok(()));
        }
    }
}

/// Lowers the calling thread to the lowest scheduling priority (nice 19; Linux's nice value is per
/// thread): for work that must not delay a guest, such as compiling ahead or writing the cache.
pub(super) fn background_priority() {
    // SAFETY: setpriority takes plain integers; `who` 0 is the calling thread on Linux.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
}

/// A program that runs Winch's code until Cranelift's is ready, then Cranelift's.
pub(super) struct Tiered<P> {
    pub(super) first: P,
    pub(super) optimized: Arc<OnceLock<P>>,
}

impl<P> Tiered<P> {
    fn current(&self) -> &P {
        self.optimized.get().unwrap_or(&self.first)
    }
}

impl<P: HttpProgram> HttpProgram for Tiered<P> {
    fn handle<'a>(
        &'a self,
        req: http::Request<HttpBody>,
        grants: &'a Grants,
        limits: RequestLimits,
        hold: Hold,
    ) -> BoxFuture<'a, Result<http::Response<HttpBody>, Failure>> {
        self.current().handle(req, grants, limits, hold)
    }
}

impl<P: WagiProgram> WagiProgram for Tiered<P> {
    fn handle<'a>(
        &'a self,
        body: Bytes,
        cgi_env: &'a [(String, String)],
        grants: &'a Grants,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<WagiOutput, Failure>> {
        self.current().handle(body, cgi_env, grants, timeout)
    }
}
