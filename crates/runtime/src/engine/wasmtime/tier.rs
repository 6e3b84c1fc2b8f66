//! Tiered start: on a compiled-code cache miss a program starts on Winch's code, which compiles many
//! times faster than Cranelift's, while Cranelift compiles the same input on a thread of its own. Its
//! code goes to the cache (the next start is warm and optimized) and, for programs that make an
//! instance per request, into the program: new instances run it, a request in flight finishes on the
//! code it started with. Which inputs tier is [`super::EngineOptions::tier_above`].

use std::sync::{Arc, Condvar, Mutex, OnceLock};
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

    /// Compiles on a thread of its own into the cache, once `after` opens, then hands the code to
    /// `make` and keeps what it makes in the returned cell. A failure leaves the cell empty (the
    /// program stays on Winch's code).
    pub(super) fn spawn<P: Send + Sync + 'static>(
        self,
        after: Arc<Gate>,
        make: impl FnOnce(&Input, Compiled) -> Result<P> + Send + 'static,
    ) -> Arc<OnceLock<P>> {
        let cell = Arc::new(OnceLock::new());
        let filled = cell.clone();
        let name = self.input.name.clone();
        let spawned = std::thread::Builder::new().name("wasmcell-tier-up".into()).spawn(move || {
            let start = Instant::now();
            let answered = after.wait(FIRST_ANSWER_WAIT);
            tracing::debug!(input = %self.input.name, waited = ?start.elapsed(), answered, "optimizing compile starts");
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
            let _ = self.spawn(Gate::open_now(), |_, _| Ok(()));
        }
    }
}

/// Lowers the calling thread to the lowest scheduling priority (nice 19; Linux's nice value is per
/// thread): for work that must not delay a guest, such as compiling ahead or writing the cache.
pub(super) fn background_priority() {
    // SAFETY: setpriority takes plain integers; `who` 0 is the calling thread on Linux.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
}

/// How long a served program's optimizing compile waits for the first answer before it starts anyway.
const FIRST_ANSWER_WAIT: Duration = Duration::from_secs(1);

/// Opens once; a thread may wait for it, with a bound. A tiered program's optimizing compile waits
/// for the first answer: on two cores it made that answer take 20-70 ms instead of 10-15 (its two
/// threads fault in memory beside the first instance's, nice 19 or not; measured with
/// `serve --engine auto` against `--engine winch`).
pub(super) struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    pub(super) fn new() -> Arc<Gate> {
        Arc::new(Gate { open: Mutex::new(false), opened: Condvar::new() })
    }

    fn open_now() -> Arc<Gate> {
        Arc::new(Gate { open: Mutex::new(true), opened: Condvar::new() })
    }

    fn is_open(&self) -> bool {
        *self.open.lock().unwrap()
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// Whether it opened within `at_most`.
    fn wait(&self, at_most: Duration) -> bool {
        let open = self.open.lock().unwrap();
        let (open, _) = self.opened.wait_timeout_while(open, at_most, |open| !*open).unwrap();
        *open
    }
}

/// A program that runs Winch's code until Cranelift's is ready, then Cranelift's.
pub(super) struct Tiered<P> {
    first: P,
    optimized: Arc<OnceLock<P>>,
    /// Opened by the first answer: the optimizing compile waits for it (see [`Gate`]).
    answered: Arc<Gate>,
}

impl<P: Send + Sync + 'static> Tiered<P> {
    /// Serves `first` and starts `upgrade`, whose code `make` makes into the program that takes over.
    pub(super) fn start(first: P, upgrade: Upgrade, make: impl FnOnce(&Input, Compiled) -> Result<P> + Send + 'static) -> Self {
        let answered = Gate::new();
        let optimized = upgrade.spawn(answered.clone(), make);
        Tiered { first, optimized, answered }
    }
}

impl<P> Tiered<P> {
    fn current(&self) -> &P {
        self.optimized.get().unwrap_or(&self.first)
    }

    /// `answer`, opening the gate once it is done while the gate is still closed.
    fn opening<'a, T: 'a>(&self, answer: BoxFuture<'a, T>) -> BoxFuture<'a, T> {
        if self.answered.is_open() {
            return answer;
        }
        let gate = self.answered.clone();
        Box::pin(async move {
            let answered = answer.await;
            gate.open();
            answered
        })
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
        self.opening(self.current().handle(req, grants, limits, hold))
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
        self.opening(self.current().handle(body, cgi_env, grants, timeout))
    }
}
