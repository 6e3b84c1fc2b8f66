//! The wasmtime engine: core modules (WASI preview 1) and components (wasi:cli/command and wasi:http,
//! WASI 0.2 and 0.3), async host calls on the caller's tokio runtime, epoch interruption for kill, timeout and
//! time slicing. Its rooms:
//!
//! - this file: [`WasmtimeEngine`] and the engine-wide [`Config`] built from [`EngineOptions`];
//! - `pool`: the pooling allocator's sizing and its fallbacks;
//! - `compile`: compiling, the compiled-code cache, the engine fingerprint;
//! - `host`: the one store state ([`host::Host`]) and the one linker builder;
//! - `limits`: the memory limiter;
//! - `outcome`: wasmtime's errors and traps as the runtime's typed errors;
//! - `command`, `http`, `wagi`: the three kinds of program.
//!
//! Nothing here grants a capability: the store state is built from [`crate::grants::Grants`].

use std::sync::{Arc, OnceLock};

use wasmtime::Config;

use super::{Engine, HttpProgram, Program, WagiProgram};
use crate::cache::Cache;
use crate::inspect::Input;
use crate::{Error, Result};

mod command;
mod compile;
mod host;
mod http;
mod limits;
mod outcome;
mod pacing;
mod pool;
mod wagi;

pub(crate) use limits::RESOURCE_BYTES;

/// Engine-wide settings (they shape compiled code or every store).
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Where compiled code is cached; `None` compiles every time.
    pub cache: Option<Cache>,
    /// Maximum wasm stack in bytes (wasmtime's default is 512 KiB).
    pub max_stack: Option<usize>,
    /// Whether precompiled artifacts may be loaded (they are trusted native code).
    pub allow_precompiled: bool,
    /// Whether each instance runs alone (`wasmcell run`): copy-on-write memory images then cost a memfd
    /// and a mapping per start and save nothing, so data segments are copied instead. Leave it off when
    /// many instances share a module (serve).
    pub single_instance: bool,
    /// Pre-reserve instances with the pooling allocator (serve); sized down when the host cannot
    /// reserve the address space, and the on-demand allocator as the last resort.
    pub pooling: Option<PoolOptions>,
}

/// How big a pool of instances to reserve.
#[derive(Clone, Copy, Debug)]
pub struct PoolOptions {
    /// Instances alive at once (each a component with its core instances, memories and tables).
    pub instances: u32,
    /// The largest linear memory an instance may have.
    pub max_memory: u64,
}

/// Which allocator the engine ended up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocator {
    /// The pooling allocator with room for this many instances.
    Pooling(u32),
    OnDemand,
}

/// [`Engine`] backed by wasmtime.
///
/// Two wasmtime engines with the same settings but one: whether the component model's concurrency
/// (WASI 0.3's async ABI) is supported. With it on, every call into every component goes through
/// the store's concurrent event loop, which costs a WASI 0.2 request a third of its time (measured:
/// docs/decisions/0031-two-engines.md). So core modules and components that use no async ABI get the `plain`
/// engine, and the `concurrent` one is made the first time a component needs it.
#[derive(Clone)]
pub struct WasmtimeEngine {
    plain: Flavor,
    concurrent: Arc<Concurrent>,
    options: EngineOptions,
    allocator: Allocator,
}

/// The engine with component-model concurrency: the settings to make it with, and it once made.
struct Concurrent {
    config: Config,
    made: OnceLock<std::result::Result<Flavor, String>>,
}

/// One wasmtime engine and the fingerprint that keys its compiled code in the cache.
#[derive(Clone)]
pub(super) struct Flavor {
    engine: wasmtime::Engine,
    fingerprint: [u8; 32],
}

impl WasmtimeEngine {
    pub fn new(options: EngineOptions) -> Result<WasmtimeEngine> {
        let mut config = Config::new();
        config.epoch_interruption(true).wasm_component_model(true);
        if let Some(stack) = options.max_stack {
            if stack < 16 << 10 {
                return Err(Error::Config("--max-stack must be at least 16K".into()));
            }
            config.max_wasm_stack(stack);
            config.async_stack_size(stack.max(1 << 20) + (1 << 20));
        }
        if options.single_instance {
            config.memory_init_cow(false);
        }
        let (plain, allocator) = Self::flavor(&options, config.clone().concurrency_support(false).wasm_component_model_async(false))?;
        let concurrent = Arc::new(Concurrent { config, made: OnceLock::new() });
        Ok(WasmtimeEngine { plain, concurrent, options, allocator })
    }

    fn flavor(options: &EngineOptions, config: &mut Config) -> Result<(Flavor, Allocator)> {
        let (engine, allocator) = match options.pooling {
            None => (wasmtime::Engine::new(config).map_err(outcome::engine_err)?, Allocator::OnDemand),
            Some(pool) => pool::pooled_engine(config, pool)?,
        };
        let fingerprint = compile::fingerprint(&engine);
        Ok((Flavor { engine, fingerprint }, allocator))
    }

    /// The engine for components that use the async ABI (WASI 0.3: what `wasmtime
    /// -Wcomponent-model-async` turns on), made on first use with its own pool.
    pub(super) fn concurrent(&self) -> Result<&Flavor> {
        let made = self.concurrent.made.get_or_init(|| {
            let mut config = self.concurrent.config.clone();
            config.concurrency_support(true).wasm_component_model_async(true);
            let (flavor, allocator) = Self::flavor(&self.options, &mut config).map_err(|e| e.to_string())?;
            if allocator != self.allocator {
                tracing::warn!(?allocator, "the engine for WASI 0.3 components got a smaller instance pool");
            }
            Ok(flavor)
        });
        made.as_ref().map_err(|e| Error::Config(e.clone()))
    }

    /// The allocator in use (the pool may be smaller than asked for).
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// The wasmtime engine that runs core modules and components without the async ABI (for
    /// measurements that go around the seam, e.g. instance-cost).
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.plain.engine
    }
}

impl Engine for WasmtimeEngine {
    fn load_command(&self, input: &Input, entry: Option<&str>) -> Result<Arc<dyn Program>> {
        command::load(self, input, entry)
    }

    fn load_http(&self, input: &Input) -> Result<Arc<dyn HttpProgram>> {
        Ok(Arc::new(http::load(self, input)?))
    }

    fn load_wagi(&self, input: &Input) -> Result<Arc<dyn WagiProgram>> {
        Ok(Arc::new(wagi::load(self, input)?))
    }

    fn precompile(&self, input: &Input) -> Result<Vec<u8>> {
        if input.precompiled {
            return Err(crate::engine::not_runnable(format!("{}: is already precompiled", input.name)));
        }
        Ok(self.compile(input, input.kind()?)?.1)
    }

    /// A thread advances the epoch every 5 ms for as long as this engine lives (both flavours).
    fn start_time_slicing(&self) -> std::io::Result<()> {
        let ticker = self.plain.engine.weak();
        let concurrent = Arc::downgrade(&self.concurrent);
        std::thread::Builder::new()
            .name("wasmcell-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    pacing::tick();
                    engine.increment_epoch();
                    drop(engine);
                    if let Some(Ok(flavor)) = concurrent.upgrade().as_deref().and_then(|c| c.made.get()) {
                        flavor.engine.increment_epoch();
                    }
                    std::thread::sleep(pacing::SLICE);
                }
            })
            .map(|_| ())
    }
}
