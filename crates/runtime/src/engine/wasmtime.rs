//! The wasmtime engine: core modules (WASI preview 1) and components (wasi:cli/command, WASI 0.2),
//! async host calls on the caller's tokio runtime, epoch interruption for kill and timeout, a resource
//! limiter for the memory cap, and the compiled-code cache.

use std::hash::Hasher;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Config, Module, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::{Engine, Guest, Program, StopSignal, not_runnable};
use crate::cache::{Cache, Lookup};
use crate::inspect::{Input, WasmKind, one_line};
use crate::instance::{Stdio, StdioSpec};
use crate::policy::NetworkPolicy;
use crate::{Error, Result, SandboxPolicy};

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
        let (engine, allocator) = match options.pooling {
            None => (wasmtime::Engine::new(&config).map_err(engine_err)?, Allocator::OnDemand),
            Some(pool) => pooled_engine(&mut config, pool)?,
        };
        let fingerprint = fingerprint(&engine);
        Ok(WasmtimeEngine { engine, fingerprint, options, allocator })
    }

    /// The allocator in use (the pool may be smaller than asked for).
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// The underlying wasmtime engine (for `serve`, which shares it across requests).
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.engine
    }

    /// Starts the thread that advances the epoch every 5 ms for as long as this engine lives, so that
    /// running guests of a long-lived engine (serve, the shim's HTTP components) yield and their
    /// deadlines fire.
    pub fn spawn_epoch_ticker(&self) -> std::io::Result<()> {
        let ticker = self.engine.weak();
        std::thread::Builder::new()
            .name("wasmcell-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            })
            .map(|_| ())
    }

    fn compile(&self, input: &Input, kind: WasmKind) -> Result<Vec<u8>> {
        let what = match kind {
            WasmKind::Module => "module",
            WasmKind::Component => "component",
        };
        let invalid = |e: wasmtime::Error| not_runnable(format!("{}: invalid {what}: {}", input.name, root_cause(&e)));
        let start = std::time::Instant::now();
        let bytes = match kind {
            WasmKind::Module => Module::new(&self.engine, &input.bytes).map_err(invalid)?.serialize(),
            WasmKind::Component => Component::new(&self.engine, &input.bytes).map_err(invalid)?.serialize(),
        }
        .map_err(engine_err)?;
        tracing::debug!(input = %input.name, elapsed = ?start.elapsed(), "compiled");
        Ok(bytes)
    }

    fn deserialize(&self, kind: WasmKind, compiled: &[u8]) -> wasmtime::Result<Loaded> {
        // SAFETY: `compiled` was produced by this engine's `serialize` (the cache verified its checksum
        // and key, which includes the engine's compatibility hash), or the user explicitly allowed a
        // precompiled artifact; wasmtime re-checks version and settings compatibility itself.
        Ok(match kind {
            WasmKind::Module => Loaded::Module(unsafe { Module::deserialize(&self.engine, compiled)? }),
            WasmKind::Component => Loaded::Component(unsafe { Component::deserialize(&self.engine, compiled)? }),
        })
    }

    pub(crate) fn load_compiled(&self, input: &Input) -> Result<Loaded> {
        if input.precompiled {
            if !self.options.allow_precompiled {
                return Err(not_runnable(format!(
                    "{}: is a precompiled artifact; pass --allow-precompiled to run trusted precompiled code",
                    input.name
                )));
            }
            let kind = match wasmtime::Engine::detect_precompiled(&input.bytes) {
                Some(wasmtime::Precompiled::Module) => WasmKind::Module,
                Some(wasmtime::Precompiled::Component) => WasmKind::Component,
                None => return Err(not_runnable(format!("{}: not a wasmtime precompiled artifact", input.name))),
            };
            return self
                .deserialize(kind, &input.bytes)
                .map_err(|e| not_runnable(format!("{}: cannot load precompiled artifact: {}", input.name, root_cause(&e))));
        }
        let kind = input.kind()?;
        let Some(cache) = &self.options.cache else {
            let compiled = self.compile(input, kind)?;
            return self.deserialize(kind, &compiled).map_err(engine_err);
        };
        let key = Cache::key(&input.bytes, &self.fingerprint);
        if let Lookup::Hit(compiled) = cache.get(&key) {
            match self.deserialize(kind, &compiled) {
                Ok(loaded) => {
                    tracing::debug!(input = %input.name, %key, "compiled-code cache hit");
                    return Ok(loaded);
                }
                Err(e) => tracing::warn!(%key, "cached code rejected by the engine, recompiling: {e:#}"),
            }
        }
        tracing::debug!(input = %input.name, %key, "compiled-code cache miss, compiling");
        let compiled = self.compile(input, kind)?;
        if let Err(e) = cache.put(&key, &compiled) {
            tracing::warn!(dir = %cache.dir().display(), "failed to write the compiled-code cache: {e}");
        }
        self.deserialize(kind, &compiled).map_err(engine_err)
    }
}

pub(crate) enum Loaded {
    Module(Module),
    Component(Component),
}

impl Engine for WasmtimeEngine {
    fn name(&self) -> &'static str {
        "wasmtime"
    }

    fn load_entry(&self, input: &Input, entry: Option<&str>) -> Result<Arc<dyn Program>> {
        match self.load_compiled(input)? {
            Loaded::Module(module) => {
                let entry = entry.unwrap_or("_start");
                match module.get_export(entry) {
                    None if entry == "_start" => {
                        return Err(not_runnable(format!(
                            "{}: module exports no `_start` function (a reactor or library module): nothing to run",
                            input.name
                        )));
                    }
                    None => return Err(not_runnable(format!("{}: module exports no function `{entry}`", input.name))),
                    Some(wasmtime::ExternType::Func(f)) => {
                        let results: Vec<_> = f.results().collect();
                        let fits = f.params().len() == 0
                            && (results.is_empty() || (results.len() == 1 && matches!(results[0], wasmtime::ValType::I32)));
                        if !fits {
                            return Err(not_runnable(format!(
                                "{}: `{entry}` takes parameters or returns something other than an i32 exit code: cannot run it",
                                input.name
                            )));
                        }
                    }
                    Some(_) => return Err(not_runnable(format!("{}: export `{entry}` is not a function", input.name))),
                }
                let mut linker = wasmtime::Linker::<P1Host>::new(&self.engine);
                wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h| &mut h.wasi).map_err(engine_err)?;
                let pre = linker.instantiate_pre(&module).map_err(|e| link_error(&input.name, &e))?;
                Ok(Arc::new(ModuleProgram { engine: self.engine.clone(), pre, entry: entry.into() }))
            }
            Loaded::Component(_) if entry.is_some() => Err(not_runnable(format!(
                "{}: a component runs wasi:cli/run; `#{}` picks an export of a core module only",
                input.name,
                entry.unwrap_or_default()
            ))),
            Loaded::Component(component) => {
                check_command_world(&self.engine, &component, &input.name)?;
                let mut linker = wasmtime::component::Linker::<P2Host>::new(&self.engine);
                // wasi:cli/exit#exit-with-code is stable since WASI 0.2.12, so exit codes pass through.
                wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
                crate::kv::add_to_linker(&mut linker, |h: &mut P2Host| crate::kv::KvView { ctx: &h.kv, table: &mut h.table })
                    .map_err(engine_err)?;
                let pre = linker.instantiate_pre(&component).map_err(|e| link_error(&input.name, &e))?;
                let pre = CommandPre::new(pre).map_err(|e| link_error(&input.name, &e))?;
                Ok(Arc::new(ComponentProgram { engine: self.engine.clone(), pre }))
            }
        }
    }

    fn precompile(&self, input: &Input) -> Result<Vec<u8>> {
        if input.precompiled {
            return Err(not_runnable(format!("{}: is already precompiled", input.name)));
        }
        self.compile(input, input.kind()?)
    }
}

/// An engine with the pooling allocator, halving the pool while the host refuses the address space
/// (a small VM, `ulimit -v`, overcommit off), then falling back to on-demand allocation.
fn pooled_engine(config: &mut Config, pool: PoolOptions) -> Result<(wasmtime::Engine, Allocator)> {
    use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig};
    // Linear memories are reserved at their cap (rounded to 64 KiB pages), not 4 GiB: that is what
    // lets thousands of instances fit. Bounds checks are then explicit, a few percent of speed.
    let max_memory = pool.max_memory.max(64 << 10).div_ceil(64 << 10) * (64 << 10);
    let mut instances = pool.instances.max(1);
    loop {
        let mut p = PoolingAllocationConfig::default();
        // A component built with the WASI adapter has a handful of core instances and two or
        // three memories and tables; leave room for more.
        p.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(4))
            .total_tables(instances.saturating_mul(8))
            .total_stacks(instances)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_core_instances_per_component(32)
            .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX))
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            // Reset the first MiB of a returning memory and table with memset instead of madvise:
            // no page faults and TLB shootdowns for the next instance (measured: a fresh request
            // 39-52 us -> 22-26 us with the C hello guest).
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 20)
            // On Linux >= 6.7 PAGEMAP_SCAN finds the pages the guest really dirtied, so only those
            // are reset instead of everything below the MiB (older kernels: the plain memset).
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
        config.memory_reservation(max_memory);
        config.memory_guard_size(64 << 10);
        match wasmtime::Engine::new(config) {
            Ok(engine) => return Ok((engine, Allocator::Pooling(instances))),
            Err(e) if instances > 1 => {
                tracing::warn!(instances, "cannot reserve a pool of this size ({}); trying half", root_cause(&e));
                instances /= 2;
            }
            Err(e) => {
                tracing::warn!("no pooling allocator ({}); allocating instances on demand", root_cause(&e));
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                return Ok((wasmtime::Engine::new(config).map_err(engine_err)?, Allocator::OnDemand));
            }
        }
    }
}

/// A component run by `wasmcell run` must target wasi:cli/command (export `wasi:cli/run@0.2.x`).
fn check_command_world(engine: &wasmtime::Engine, component: &Component, name: &str) -> Result<()> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    if exports.iter().any(|e| e.starts_with("wasi:cli/run@0.2")) {
        return Ok(());
    }
    let hint = if exports.iter().any(|e| e.starts_with("wasi:http/incoming-handler@")) {
        " (it is a wasi:http handler: use `wasmcell serve`)"
    } else {
        ""
    };
    let list = if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") };
    Err(not_runnable(format!("{name}: unsupported world: the component does not export wasi:cli/run@0.2.x (it exports {list}){hint}")))
}

pub(crate) fn link_error(name: &str, e: &wasmtime::Error) -> Error {
    not_runnable(format!("{name}: cannot link: {}", root_cause(e)))
}

/// The error's chain of causes on one line (wasm backtraces, which are multi-line, left out).
pub(crate) fn root_cause(e: &wasmtime::Error) -> String {
    let causes: Vec<String> = e
        .chain()
        .map(|c| c.to_string())
        .filter(|c| !c.starts_with("error while executing at wasm backtrace"))
        .map(|c| one_line(&c))
        .collect();
    causes.join(": ")
}

pub(crate) fn engine_err(e: wasmtime::Error) -> Error {
    Error::Engine(root_cause(&e))
}

/// Hashes wasmtime's compatibility hash (version, compiler settings, CPU features) to stable bytes.
fn fingerprint(engine: &wasmtime::Engine) -> [u8; 32] {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = ShaHasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    h.0.update(b"wasmtime-48.0.8");
    h.0.finalize().into()
}

/// Store state for core modules.
pub(crate) struct P1Host {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limits: MemoryLimiter,
}

/// Store state for components.
struct P2Host {
    ctx: WasiCtx,
    table: ResourceTable,
    kv: crate::kv::KvCtx,
    limits: MemoryLimiter,
}

impl WasiView for P2Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

/// Caps each linear memory and remembers whether the cap was hit, so that a guest that then fails is
/// reported as out of memory rather than as a bare trap.
pub(crate) struct MemoryLimiter {
    pub(crate) max_memory: Option<usize>,
    pub(crate) hit: Arc<AtomicBool>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        match self.max_memory {
            Some(max) if desired > max => {
                self.hit.store(true, Ordering::SeqCst);
                Ok(false)
            }
            _ => Ok(true),
        }
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 10_000_000)
    }
}

/// Builds the WASI context from the policy: the one place capabilities are granted.
pub(crate) fn wasi_builder(policy: &SandboxPolicy, stdio: &Stdio) -> Result<WasiCtxBuilder> {
    let mut b = WasiCtxBuilder::new();
    // Host calls stay async (no `allow_blocking_current_thread`): a guest blocked in one, e.g. sleeping
    // in poll_oneoff, must stay interruptible by kill and timeout.
    b.args(&policy.args);
    b.envs(&policy.env);
    for m in &policy.mounts {
        let meta = std::fs::metadata(&m.host).map_err(|_| Error::Config(format!("mount source {} does not exist", m.host.display())))?;
        if !meta.is_dir() {
            return Err(Error::Config(format!("mount source {} is not a directory", m.host.display())));
        }
        let perms = if m.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        b.preopened_dir(&m.host, &m.guest, perms).map_err(|e| Error::Config(format!("cannot mount {}: {e:#}", m.host.display())))?;
    }
    grant_network(&mut b, &policy.network);
    set_stdio(&mut b, stdio)?;
    Ok(b)
}

fn grant_network(b: &mut WasiCtxBuilder, net: &NetworkPolicy) {
    b.allow_ip_name_lookup(net.name_lookup);
    let any = !net.allow.is_empty();
    b.allow_tcp(any).allow_udp(any);
    let net = Arc::new(net.clone());
    b.socket_addr_check(move |addr, use_| {
        use wasmtime_wasi::sockets::SocketAddrUse as U;
        let implicit_bind = matches!(use_, U::TcpBind | U::UdpBind);
        let ok = match use_ {
            // Accepting a client on a listener the policy already allowed.
            U::TcpAccept => !net.allow.is_empty(),
            _ => net.allows(addr, implicit_bind),
        };
        if !ok {
            tracing::debug!(%addr, ?use_, "socket use denied by policy");
        }
        Box::pin(async move { ok })
    });
}

fn set_stdio(b: &mut WasiCtxBuilder, stdio: &Stdio) -> Result<()> {
    use wasmtime_wasi::cli::{InputFile, OutputFile};
    let open_out = |p: &std::path::Path| {
        std::fs::OpenOptions::new().append(true).create(true).open(p).map_err(Error::io(format!("failed to open {}", p.display())))
    };
    match &stdio.stdin {
        StdioSpec::Inherit => {
            b.inherit_stdin();
        }
        StdioSpec::Null => {}
        StdioSpec::File(p) => {
            let f = std::fs::File::open(p).map_err(Error::io(format!("failed to open {}", p.display())))?;
            b.stdin(InputFile::new(f));
        }
    }
    match &stdio.stdout {
        StdioSpec::Inherit => {
            b.inherit_stdout();
        }
        StdioSpec::Null => {}
        StdioSpec::File(p) => {
            b.stdout(OutputFile::new(open_out(p)?));
        }
    }
    match &stdio.stderr {
        StdioSpec::Inherit => {
            b.inherit_stderr();
        }
        StdioSpec::Null => {}
        StdioSpec::File(p) => {
            b.stderr(OutputFile::new(open_out(p)?));
        }
    }
    Ok(())
}

fn new_store<T: 'static>(engine: &wasmtime::Engine, data: T, stop: &StopSignal, limiter: fn(&mut T) -> &mut MemoryLimiter) -> Store<T> {
    let mut store = Store::new(engine, data);
    store.limiter(move |t| limiter(t) as &mut dyn ResourceLimiter);
    store.set_epoch_deadline(1);
    let stop = stop.clone();
    store.epoch_deadline_callback(move |_| {
        Ok(if stop.requested().is_some() { UpdateDeadline::Interrupt } else { UpdateDeadline::Continue(1) })
    });
    store
}

pub(crate) fn limiter_for(policy: &SandboxPolicy) -> MemoryLimiter {
    MemoryLimiter {
        max_memory: policy.limits.memory.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
        hit: Arc::new(AtomicBool::new(false)),
    }
}

struct ModuleProgram {
    engine: wasmtime::Engine,
    pre: wasmtime::InstancePre<P1Host>,
    /// The export run: `_start`, or what `file.wasm#func` named (checked: no parameters, no result or an i32).
    entry: Arc<str>,
}

impl Program for ModuleProgram {
    fn kind(&self) -> WasmKind {
        WasmKind::Module
    }

    fn create(&self, policy: &SandboxPolicy, stdio: &Stdio, stop: StopSignal) -> Result<Box<dyn Guest>> {
        let wasi = wasi_builder(policy, stdio)?.build_p1();
        let limits = limiter_for(policy);
        let hit = limits.hit.clone();
        let store = new_store(&self.engine, P1Host { wasi, limits }, &stop, |h| &mut h.limits);
        Ok(Box::new(ModuleGuest { store, pre: self.pre.clone(), entry: self.entry.clone(), hit, limit: policy.limits.memory }))
    }
}

struct ModuleGuest {
    store: Store<P1Host>,
    pre: wasmtime::InstancePre<P1Host>,
    entry: Arc<str>,
    hit: Arc<AtomicBool>,
    limit: Option<u64>,
}

impl Guest for ModuleGuest {
    fn run(self: Box<Self>) -> Pin<Box<dyn Future<Output = Result<i32>> + Send>> {
        let ModuleGuest { mut store, pre, entry, hit, limit } = *self;
        Box::pin(async move {
            let result = async {
                let instance = pre.instantiate_async(&mut store).await?;
                if &*entry == "_start" {
                    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                    return start.call_async(&mut store, ()).await.map(|()| 0);
                }
                // Checked at load: no parameters, no result or an i32.
                let func =
                    instance.get_func(&mut store, &entry).ok_or_else(|| wasmtime::format_err!("module exports no function `{entry}`"))?;
                let mut results = vec![wasmtime::Val::I32(0); func.ty(&store).results().len()];
                func.call_async(&mut store, &[], &mut results).await?;
                Ok(results.first().and_then(wasmtime::Val::i32).unwrap_or(0))
            }
            .await;
            outcome(result, &hit, limit)
        })
    }
}

struct ComponentProgram {
    engine: wasmtime::Engine,
    pre: CommandPre<P2Host>,
}

impl Program for ComponentProgram {
    fn kind(&self) -> WasmKind {
        WasmKind::Component
    }

    fn create(&self, policy: &SandboxPolicy, stdio: &Stdio, stop: StopSignal) -> Result<Box<dyn Guest>> {
        let ctx = wasi_builder(policy, stdio)?.build();
        let limits = limiter_for(policy);
        let hit = limits.hit.clone();
        let host = P2Host { ctx, table: ResourceTable::new(), kv: crate::kv::KvCtx::new(policy), limits };
        let store = new_store(&self.engine, host, &stop, |h| &mut h.limits);
        Ok(Box::new(ComponentGuest { store, pre: self.pre.clone(), hit, limit: policy.limits.memory }))
    }
}

struct ComponentGuest {
    store: Store<P2Host>,
    pre: CommandPre<P2Host>,
    hit: Arc<AtomicBool>,
    limit: Option<u64>,
}

impl Guest for ComponentGuest {
    fn run(self: Box<Self>) -> Pin<Box<dyn Future<Output = Result<i32>> + Send>> {
        let ComponentGuest { mut store, pre, hit, limit } = *self;
        Box::pin(async move {
            let result = async {
                let command = pre.instantiate_async(&mut store).await?;
                command.wasi_cli_run().call_run(&mut store).await
            }
            .await;
            outcome(result.map(|r| if r.is_ok() { 0 } else { 1 }), &hit, limit)
        })
    }
}

/// Maps what the entry point returned to an exit code or a typed error.
pub(crate) fn outcome(result: wasmtime::Result<i32>, memory_hit: &AtomicBool, limit: Option<u64>) -> Result<i32> {
    let hit = memory_hit.load(Ordering::SeqCst);
    let err = match result {
        Ok(0) => return Ok(0),
        Ok(code) if hit => {
            tracing::debug!(code, "guest failed after a denied memory growth");
            return Err(Error::MemoryLimit(limit.unwrap_or(0)));
        }
        Ok(code) => return Ok(code),
        Err(e) => e,
    };
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        if exit.0 != 0 && hit {
            return Err(Error::MemoryLimit(limit.unwrap_or(0)));
        }
        return Ok(exit.0);
    }
    if hit {
        return Err(Error::MemoryLimit(limit.unwrap_or(0)));
    }
    // A trap, or a host function failing the guest (e.g. proc_exit with a status out of range): either
    // way the guest's execution was aborted.
    let backtrace = err
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| {
            bt.frames()
                .iter()
                .map(|f| match f.func_name() {
                    Some(name) => name.to_string(),
                    None => format!("<wasm function {}>", f.func_index()),
                })
                .collect()
        })
        .unwrap_or_default();
    let message = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => root_cause(&err),
    };
    Err(Error::Trap { message, backtrace })
}
