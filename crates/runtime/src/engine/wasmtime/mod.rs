//! The wasmtime engine: core modules (WASI preview 1) and components (wasi:cli/command and wasi:http,
//! WASI 0.2 and 0.3), async host calls on the caller's tokio runtime, epoch interruption for kill, timeout and
//! time slicing. Its rooms:
//!
//! - this file: [`WasmtimeEngine`] and the engine-wide [`Config`] built from [`EngineOptions`];
//! - `pool`: the pooling allocator's sizing and its fallbacks;
//! - `compile`: compiling, the compiled-code cache, the engine fingerprint;
//! - `tier`: tiered start (Winch's code first, Cranelift's from a background thread);
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
mod tier;
mod wagi;

pub(crate) use limits::RESOURCE_BYTES;

/// Which compiler makes the code a guest runs. Each keys its own compiled code in the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compiler {
    /// Cranelift, wasmtime's optimizing compiler: the fastest code, the slowest compile.
    #[default]
    Cranelift,
    /// Winch, wasmtime's baseline compiler: one pass, compiles many times faster, runs slower. It
    /// has no GC, exception handling, tail calls, typed function references or relaxed SIMD: a module
    /// that uses them is refused.
    Winch,
    /// Pulley, wasmtime's portable interpreter: Cranelift compiles to its bytecode, so no native code
    /// is made or run (for hosts that forbid JIT); the slowest to run.
    Pulley,
}

impl Compiler {
    /// The name `--engine` takes.
    pub fn name(self) -> &'static str {
        match self {
            Compiler::Cranelift => "cranelift",
            Compiler::Winch => "winch",
            Compiler::Pulley => "pulley",
        }
    }

    fn configure(self, config: &mut Config) -> Result<()> {
        use wasmtime::Strategy;
        match self {
            Compiler::Cranelift => {
                config.strategy(Strategy::Cranelift);
            }
            Compiler::Winch => {
                // Winch compiles the functions; Cranelift still makes the trampolines between host
                // and wasm, one per function that escapes (thousands in CPython's table): they are
                // small and gain nothing from optimization, nor from the backtracking register
                // allocator (which spent most of Cranelift's time in a Winch compile of CPython).
                config
                    .strategy(Strategy::Winch)
                    .cranelift_opt_level(wasmtime::OptLevel::None)
                    .cranelift_regalloc_algorithm(wasmtime::RegallocAlgorithm::SinglePass);
            }
            Compiler::Pulley => {
                let target = if cfg!(target_pointer_width = "64") { "pulley64" } else { "pulley32" };
                config.strategy(Strategy::Cranelift).target(target).map_err(outcome::engine_err)?;
            }
        }
        Ok(())
    }
}

/// What `--engine` (and the shim's `WASMCELL_ENGINE`) asks for: one compiler, or `auto`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// Cranelift's code, from the cache when it is there; on a miss for an input of at least
    /// [`EngineChoice::TIER_ABOVE`] bytes the guest starts on Winch's code while Cranelift's compiles
    /// (tiered start, see [`EngineOptions::tier_above`]).
    #[default]
    Auto,
    /// Always this compiler.
    Only(Compiler),
}

impl EngineChoice {
    /// The input size from which `auto` starts on Winch's code: below it Cranelift compiles in well
    /// under a second here, and a small program's first run is not slowed by a second compile.
    pub const TIER_ABOVE: u64 = 1 << 20;

    /// Sets the compiler and tiering of `options`.
    pub fn apply(self, options: &mut EngineOptions) {
        (options.compiler, options.tier_above) = match self {
            EngineChoice::Auto => (Compiler::Cranelift, Some(Self::TIER_ABOVE)),
            EngineChoice::Only(c) => (c, None),
        };
    }
}

impl std::str::FromStr for EngineChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<EngineChoice, String> {
        Ok(match s {
            "auto" => EngineChoice::Auto,
            "cranelift" => EngineChoice::Only(Compiler::Cranelift),
            "winch" => EngineChoice::Only(Compiler::Winch),
            "pulley" => EngineChoice::Only(Compiler::Pulley),
            _ => {
                let shown: String = s.chars().take(40).collect();
                return Err(format!("unknown engine {shown:?}: expected auto, cranelift, winch or pulley"));
            }
        })
    }
}

/// Engine-wide settings (they shape compiled code or every store).
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// The compiler of the code guests run.
    pub compiler: Compiler,
    /// Tiered start (with Cranelift only): on a compiled-code cache miss for an input of at least
    /// this many bytes, the guests start on Winch's code while Cranelift's compiles on a thread of its
    /// own; it goes to the cache, and the programs that can (serve's) switch new instances to it.
    pub tier_above: Option<u64>,
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
///
/// Tiered start adds the same two for Winch (the `Baseline` tier), made when a cache miss needs them,
/// without an instance pool: they serve only until Cranelift's code is ready.
#[derive(Clone)]
pub struct WasmtimeEngine {
    plain: Flavor,
    lazy: Arc<Lazy>,
    options: EngineOptions,
    allocator: Allocator,
}

/// The engines made on first use: the settings to make them with, and each once made.
struct Lazy {
    config: Config,
    /// (Main, concurrent), (Baseline, plain), (Baseline, concurrent).
    made: [OnceLock<std::result::Result<Flavor, String>>; 3],
    /// Code compiled elsewhere and loaded already (`adopt_code`), by cache key, for the next load.
    adopted: std::sync::Mutex<Option<(String, compile::Compiled)>>,
    /// Compiled-code cache writes still under way on threads of their own (see
    /// `WasmtimeEngine::wait_for_cache_writes`).
    writes: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Lazy {
    /// Where the engine of `tier` (concurrent or not) is kept; `None`: it is `WasmtimeEngine::plain`.
    fn slot(tier: Tier, concurrent: bool) -> Option<usize> {
        match (tier, concurrent) {
            (Tier::Main, false) => None,
            (Tier::Main, true) => Some(0),
            (Tier::Baseline, false) => Some(1),
            (Tier::Baseline, true) => Some(2),
        }
    }
}

/// Whose code: the engine's own compiler's, or Winch's while that compiles (tiered start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tier {
    Main,
    Baseline,
}

/// One wasmtime engine and the fingerprint that keys its compiled code in the cache.
#[derive(Clone)]
pub(super) struct Flavor {
    engine: wasmtime::Engine,
    fingerprint: [u8; 32],
    tier: Tier,
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
        let (plain, allocator) = Self::flavor(&options, &config, Tier::Main, false)?;
        let lazy = Arc::new(Lazy { config, made: Default::default(), adopted: Default::default(), writes: Default::default() });
        Ok(WasmtimeEngine { plain, lazy, options, allocator })
    }

    /// Makes the engine of a tier, with or without component-model concurrency. The main tier gets
    /// the instance pool the options ask for; the baseline one allocates on demand.
    fn flavor(options: &EngineOptions, base: &Config, tier: Tier, concurrent: bool) -> Result<(Flavor, Allocator)> {
        let mut config = base.clone();
        config.concurrency_support(concurrent).wasm_component_model_async(concurrent);
        let (compiler, pooling) = match tier {
            Tier::Main => (options.compiler, options.pooling),
            Tier::Baseline => (Compiler::Winch, None),
        };
        compiler.configure(&mut config)?;
        let (engine, allocator) = match pooling {
            None => (wasmtime::Engine::new(&config).map_err(outcome::engine_err)?, Allocator::OnDemand),
            Some(pool) => pool::pooled_engine(&mut config, pool)?,
        };
        let fingerprint = compile::fingerprint(&engine, compiler);
        Ok((Flavor { engine, fingerprint, tier }, allocator))
    }

    /// The engine of `tier` for components that use the async ABI (`concurrent`: WASI 0.3, what
    /// `wasmtime -Wcomponent-model-async` turns on) or not; all but the main plain one are made on
    /// first use (the main concurrent one with its own pool).
    pub(super) fn engine_for(&self, tier: Tier, concurrent: bool) -> Result<&Flavor> {
        let Some(slot) = Lazy::slot(tier, concurrent) else { return Ok(&self.plain) };
        let made = self.lazy.made[slot].get_or_init(|| {
            let (flavor, allocator) = Self::flavor(&self.options, &self.lazy.config, tier, concurrent).map_err(|e| e.to_string())?;
            if tier == Tier::Main && allocator != self.allocator {
                tracing::warn!(?allocator, "the engine for WASI 0.3 components got a smaller instance pool");
            }
            Ok(flavor)
        });
        made.as_ref().map_err(|e| Error::Config(e.clone()))
    }

    /// Whether the engine of `tier` (concurrent or not) has been made already.
    pub(super) fn made(&self, tier: Tier, concurrent: bool) -> bool {
        Lazy::slot(tier, concurrent).is_none_or(|slot| self.lazy.made[slot].get().is_some())
    }

    /// Whether a cache miss on `input` starts on Winch's code (see [`EngineOptions::tier_above`]).
    pub(super) fn tiers(&self, input: &Input) -> bool {
        self.options.compiler == Compiler::Cranelift
            && self.options.tier_above.is_some_and(|above| input.bytes.len() as u64 >= above)
            && !input.precompiled
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
        http::load(self, input)
    }

    fn load_wagi(&self, input: &Input) -> Result<Arc<dyn WagiProgram>> {
        wagi::load(self, input)
    }

    fn precompile(&self, input: &Input) -> Result<Vec<u8>> {
        if input.precompiled {
            return Err(crate::engine::not_runnable(format!("{}: is already precompiled", input.name)));
        }
        self.compile(Tier::Main, input, input.kind()?)?.1.serialize()
    }

    /// A thread advances the epoch every 5 ms for as long as this engine lives (every flavour).
    fn start_time_slicing(&self) -> std::io::Result<()> {
        let ticker = self.plain.engine.weak();
        let lazy = Arc::downgrade(&self.lazy);
        std::thread::Builder::new()
            .name("wasmcell-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    pacing::tick();
                    engine.increment_epoch();
                    drop(engine);
                    if let Some(lazy) = lazy.upgrade() {
                        for flavor in lazy.made.iter().filter_map(|m| m.get()?.as_ref().ok()) {
                            flavor.engine.increment_epoch();
                        }
                    }
                    std::thread::sleep(pacing::SLICE);
                }
            })
            .map(|_| ())
    }
}
