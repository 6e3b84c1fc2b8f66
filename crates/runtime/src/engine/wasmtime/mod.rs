//! The wasmtime engine: core modules (WASI preview 1) and components (wasi:cli/command and wasi:http,
//! WASI 0.2), async host calls on the caller's tokio runtime, epoch interruption for kill, timeout and
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

use std::sync::Arc;

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
#[derive(Clone)]
pub struct WasmtimeEngine {
    engine: wasmtime::Engine,
    fingerprint: [u8; 32],
    options: EngineOptions,
    allocator: Allocator,
}

impl WasmtimeEngine {
    pub fn new(options: EngineOptions) -> Result<WasmtimeEngine> {
        let mut config = Config::new();
        // WASI 0.3 needs the component model's async ABI (what `wasmtime -Wcomponent-model-async` turns on).
        config.epoch_interruption(true).wasm_component_model(true).wasm_component_model_async(true);
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
        let (engine, allocator) = match options.pooling {
            None => (wasmtime::Engine::new(&config).map_err(outcome::engine_err)?, Allocator::OnDemand),
            Some(pool) => pool::pooled_engine(&mut config, pool)?,
        };
        let fingerprint = compile::fingerprint(&engine);
        Ok(WasmtimeEngine { engine, fingerprint, options, allocator })
    }

    /// The allocator in use (the pool may be smaller than asked for).
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// The underlying wasmtime engine (for measurements that go around the seam, e.g. instance-cost).
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.engine
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
        self.compile(input, input.kind()?)
    }

    /// A thread advances the epoch every 5 ms for as long as this engine lives.
    fn start_time_slicing(&self) -> std::io::Result<()> {
        let ticker = self.engine.weak();
        std::thread::Builder::new()
            .name("wasmcell-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(pacing::SLICE);
                }
            })
            .map(|_| ())
    }
}
