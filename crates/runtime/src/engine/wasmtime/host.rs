//! The one store state and the one linker builder, for every kind of program: commands (core modules
//! and wasi:cli components), wasi:http components and WAGI modules.
//!
//! A store's state is a [`Host`]: the WASI context of its kind (preview 1 for core modules, the
//! component context with its resource table, wasi:http context and outbound hook for components),
//! the key-value stores, and the memory limiter. Everything in it is built from [`Grants`].

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::limits::{MemoryLimiter, RESOURCE_BYTES, max_resources};
use super::outcome::engine_err;
use super::pacing::Pace;
use crate::Result;
use crate::engine::StopSignal;
use crate::grants::{Grants, Outbound};
use crate::instance::Stdio;
use crate::kv::{KvCtx, KvView};

/// A store's state; `W` is the WASI context of the program's kind.
pub(crate) struct Host<W> {
    pub(crate) wasi: W,
    pub(crate) kv: KvCtx,
    pub(crate) limits: MemoryLimiter,
    /// Its place among a serving thread's requests (`Slicing::Yield` only).
    pub(crate) pace: Pace,
}

/// The WASI context of a component: WASI 0.2 and 0.3, wasi:http, the table of
/// the guest's resources.
pub(crate) struct ComponentWasi {
    ctx: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    outbound: Outbound,
}

/// The state of a core module's store.
pub(crate) type ModuleHost = Host<WasiP1Ctx>;
/// The state of a component's store.
pub(crate) type ComponentHost = Host<ComponentWasi>;

impl ModuleHost {
    pub(crate) fn new(wasi: wasmtime_wasi::WasiCtxBuilder, grants: &Grants) -> ModuleHost {
        let mut wasi = wasi;
        Host { wasi: wasi.build_p1(), kv: KvCtx::default(), limits: MemoryLimiter::new(grants.policy()), pace: Pace::default() }
    }
}

impl ComponentHost {
    pub(crate) fn new(grants: &Grants, stdio: &Stdio) -> Result<ComponentHost> {
        let mut table = ResourceTable::new();
        // Every resource a guest holds (a stream, a header map, a request) costs the host memory.
        table.set_max_capacity(max_resources(grants.policy()));
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(RESOURCE_BYTES);
        let wasi = ComponentWasi { ctx: grants.wasi(stdio)?.build(), table, http, outbound: grants.outbound_http() };
        Ok(Host { wasi, kv: grants.kv(), limits: MemoryLimiter::new(grants.policy()), pace: Pace::default() })
    }

    /// The wasi:http view, for setting up a request's resources.
    pub(crate) fn http_view(&mut self) -> WasiHttpCtxView<'_> {
        self.http()
    }
}

impl WasiView for ComponentHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi.ctx, table: &mut self.wasi.table }
    }
}

impl WasiHttpView for ComponentHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let w = &mut self.wasi;
        WasiHttpCtxView { ctx: &mut w.http, table: &mut w.table, hooks: &mut w.outbound }
    }
}

/// The linker for core modules: WASI preview 1.
pub(crate) fn module_linker(engine: &wasmtime::Engine) -> Result<wasmtime::Linker<ModuleHost>> {
    let mut linker = wasmtime::Linker::<ModuleHost>::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h| &mut h.wasi).map_err(engine_err)?;
    Ok(linker)
}

/// The linker for components: WASI 0.2 (wasi:cli/exit#exit-with-code is stable since 0.2.12, so exit
/// codes pass through) and WASI 0.3 side by side (a component may import both: today's Rust toolchain
/// emits that), wasi:http 0.2 and 0.3, and wasi:keyvalue. Both versions are backed by the same context,
/// so every grant means the same for either. A command gets wasi:http too (its types, and outbound
/// requests, which only `serve --allow-outbound` allows anywhere). WASI 0.3 only on the engine with
/// concurrency support: a component on the other imports no 0.3 interface.
pub(crate) fn component_linker(engine: &wasmtime::Engine) -> Result<wasmtime::component::Linker<ComponentHost>> {
    let mut linker = wasmtime::component::Linker::<ComponentHost>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(engine_err)?;
    if engine.get_concurrency_support() {
        wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(engine_err)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker).map_err(engine_err)?;
    }
    crate::kv::add_to_linker(&mut linker, |h: &mut ComponentHost| KvView { ctx: &h.kv, table: &mut h.wasi.table }).map_err(engine_err)?;
    Ok(linker)
}

/// How a store's running code is interrupted.
pub(crate) enum Slicing {
    /// Trap at the next epoch tick once `stop` is requested (commands: `wasmcell run`, the shim).
    Until(StopSignal),
    /// Yield to the event loop at every epoch tick, young requests before old ones (requests: their
    /// deadline is a tokio timer; see `pacing`).
    Yield,
}

/// A store with the memory limiter installed and epoch interruption set up.
pub(crate) fn new_store<W: Send + 'static>(engine: &wasmtime::Engine, host: Host<W>, slicing: Slicing) -> Store<Host<W>> {
    let mut store = Store::new(engine, host);
    store.limiter(|h| &mut h.limits as &mut dyn ResourceLimiter);
    store.set_epoch_deadline(1);
    match slicing {
        Slicing::Until(stop) => store.epoch_deadline_callback(move |_| {
            Ok(if stop.requested().is_some() { UpdateDeadline::Interrupt } else { UpdateDeadline::Continue(1) })
        }),
        // A spinning guest shares the threads and its deadline can fire.
        // The call hook counts how long its code has run (see `pacing`).
        Slicing::Yield => {
            store.data_mut().pace = Pace::start();
            store.call_hook(|mut s, hook| {
                s.data_mut().pace.transition(hook.exiting_host());
                Ok(())
            });
            store.epoch_deadline_callback(|s| Ok(UpdateDeadline::YieldCustom(1, s.data().pace.next_slice())))
        }
    }
    store
}
