//! Commands: a core module's `_start` (or a chosen export) and a component's `wasi:cli/run` (WASI 0.2
//! or 0.3), each run to its exit code. Loading checks the entry and the world; creating a guest builds its store.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use wasmtime::Store;
use wasmtime::component::Component;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p3::bindings::CommandPre as P3CommandPre;

use super::WasmtimeEngine;
use super::compile::Compiled;
use super::host::{self, ComponentHost, Host, ModuleHost, Slicing};
use super::outcome::{link_error, outcome};
use crate::Result;
use crate::engine::{BoxFuture, Guest, Program, StopSignal, not_runnable};
use crate::grants::Grants;
use crate::inspect::Input;
use crate::instance::Stdio;

/// Loads a command. With tiered start it runs on Winch's code while Cranelift's compiles for the
/// cache: a command cannot change code mid-run, its next start can.
pub(super) fn load(engine: &WasmtimeEngine, input: &Input, entry: Option<&str>) -> Result<Arc<dyn Program>> {
    let (compiled, upgrade) = engine.load_compiled(input)?;
    let program = program(input, compiled, entry)?;
    if let Some(upgrade) = upgrade {
        upgrade.cache_only();
    }
    Ok(program)
}

fn program(input: &Input, compiled: Compiled, entry: Option<&str>) -> Result<Arc<dyn Program>> {
    match compiled {
        Compiled::Module(module) => {
            let entry = entry.unwrap_or("_start");
            check_entry(&module, entry, &input.name)?;
            let pre = host::module_linker(module.engine())?.instantiate_pre(&module).map_err(|e| link_error(&input.name, &e))?;
            Ok(Arc::new(ModuleProgram { engine: module.engine().clone(), pre, entry: entry.into() }))
        }
        Compiled::Component(_) if entry.is_some() => Err(not_runnable(format!(
            "{}: a component runs wasi:cli/run; `#{}` picks an export of a core module only",
            input.name,
            entry.unwrap_or_default()
        ))),
        Compiled::Component(component) => {
            let world = check_command_world(component.engine(), &component, &input.name)?;
            let linker = host::component_linker(component.engine())?;
            let pre = linker.instantiate_pre(&component).map_err(|e| link_error(&input.name, &e))?;
            let pre = match world {
                Cli::P2 => Entry::P2(CommandPre::new(pre).map_err(|e| link_error(&input.name, &e))?),
                Cli::P3 => Entry::P3(P3CommandPre::new(pre).map_err(|e| link_error(&input.name, &e))?),
            };
            Ok(Arc::new(ComponentProgram { engine: component.engine().clone(), pre }))
        }
    }
}

/// The export run must exist and take no parameters, returning nothing or an i32 exit code.
fn check_entry(module: &wasmtime::Module, entry: &str, name: &str) -> Result<()> {
    match module.get_export(entry) {
        None if entry == "_start" => {
            Err(not_runnable(format!("{name}: module exports no `_start` function (a reactor or library module): nothing to run")))
        }
        None => Err(not_runnable(format!("{name}: module exports no function `{entry}`"))),
        Some(wasmtime::ExternType::Func(f)) => {
            let results: Vec<_> = f.results().collect();
            let fits =
                f.params().len() == 0 && (results.is_empty() || (results.len() == 1 && matches!(results[0], wasmtime::ValType::I32)));
            if fits {
                Ok(())
            } else {
                Err(not_runnable(format!(
                    "{name}: `{entry}` takes parameters or returns something other than an i32 exit code: cannot run it"
                )))
            }
        }
        Some(_) => Err(not_runnable(format!("{name}: export `{entry}` is not a function"))),
    }
}

/// The version of wasi:cli a command component exports its `run` in.
#[derive(Clone, Copy)]
enum Cli {
    P2,
    P3,
}

/// A component run by `wasmcell run` must target wasi:cli/command (export `wasi:cli/run@0.3.x` or
/// `@0.2.x`).
fn check_command_world(engine: &wasmtime::Engine, component: &Component, name: &str) -> Result<Cli> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    // 0.3 first: a Rust program built for wasm32-wasip3 exports both, and its 0.2 `run` is a stub.
    if exports.iter().any(|e| e.starts_with("wasi:cli/run@0.3")) {
        return Ok(Cli::P3);
    }
    if exports.iter().any(|e| e.starts_with("wasi:cli/run@0.2")) {
        return Ok(Cli::P2);
    }
    let hint = if exports.iter().any(|e| e.starts_with("wasi:http/incoming-handler@") || e.starts_with("wasi:http/handler@")) {
        " (it is a wasi:http handler: use `wasmcell serve`)"
    } else {
        ""
    };
    let list = if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") };
    Err(not_runnable(format!(
        "{name}: unsupported world: the component does not export wasi:cli/run@0.2.x or @0.3.x (it exports {list}){hint}"
    )))
}

/// A stop signal whose interrupt is an epoch increment of `engine`: running code checks it at once.
fn stop_signal(engine: &wasmtime::Engine) -> StopSignal {
    let engine = engine.clone();
    StopSignal::new(move || engine.increment_epoch())
}

struct ModuleProgram {
    engine: wasmtime::Engine,
    pre: wasmtime::InstancePre<ModuleHost>,
    /// The export run: `_start`, or what `file.wasm#func` named (checked: no parameters, no result or an i32).
    entry: Arc<str>,
}

impl Program for ModuleProgram {
    fn create(&self, grants: &Grants, stdio: &Stdio) -> Result<Box<dyn Guest>> {
        let host = ModuleHost::new(grants.wasi(stdio)?, grants);
        let run = Run::new(&self.engine, host, grants);
        Ok(Box::new(ModuleGuest { run, pre: self.pre.clone(), entry: self.entry.clone() }))
    }
}

/// What every command guest runs with: its store, how it is stopped, and its memory cap's state.
struct Run<W: 'static> {
    store: Store<Host<W>>,
    stop: StopSignal,
    hit: Arc<AtomicBool>,
    limit: Option<u64>,
}

impl<W: Send + 'static> Run<W> {
    /// A store for `host` whose code traps at the next epoch tick once the guest is asked to stop.
    fn new(engine: &wasmtime::Engine, host: Host<W>, grants: &Grants) -> Run<W> {
        let stop = stop_signal(engine);
        let hit = host.limits.hit_flag();
        let store = host::new_store(engine, host, Slicing::Until(stop.clone()));
        Run { store, stop, hit, limit: grants.policy().limits.memory }
    }
}

struct ModuleGuest {
    run: Run<wasmtime_wasi::p1::WasiP1Ctx>,
    pre: wasmtime::InstancePre<ModuleHost>,
    entry: Arc<str>,
}

impl Guest for ModuleGuest {
    fn stop_signal(&self) -> StopSignal {
        self.run.stop.clone()
    }

    fn run(self: Box<Self>) -> BoxFuture<'static, Result<i32>> {
        let ModuleGuest { run: Run { mut store, hit, limit, .. }, pre, entry } = *self;
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

/// A command component's `run`, linked: WASI 0.2 or 0.3.
#[derive(Clone)]
enum Entry {
    P2(CommandPre<ComponentHost>),
    P3(P3CommandPre<ComponentHost>),
}

struct ComponentProgram {
    engine: wasmtime::Engine,
    pre: Entry,
}

impl Program for ComponentProgram {
    fn create(&self, grants: &Grants, stdio: &Stdio) -> Result<Box<dyn Guest>> {
        let run = Run::new(&self.engine, ComponentHost::new(grants, stdio)?, grants);
        Ok(Box::new(ComponentGuest { run, pre: self.pre.clone() }))
    }
}

struct ComponentGuest {
    run: Run<super::host::ComponentWasi>,
    pre: Entry,
}

impl Guest for ComponentGuest {
    fn stop_signal(&self) -> StopSignal {
        self.run.stop.clone()
    }

    fn run(self: Box<Self>) -> BoxFuture<'static, Result<i32>> {
        let ComponentGuest { run: Run { mut store, hit, limit, .. }, pre } = *self;
        Box::pin(async move {
            let result = async {
                match pre {
                    Entry::P2(pre) => {
                        let command = pre.instantiate_async(&mut store).await?;
                        command.wasi_cli_run().call_run(&mut store).await
                    }
                    // WASI 0.3: `run` is an async export, called inside the store's event loop.
                    Entry::P3(pre) => {
                        let command = pre.instantiate_async(&mut store).await?;
                        store.run_concurrent(async move |s| command.wasi_cli_run().call_run(s).await).await?
                    }
                }
            }
            .await;
            outcome(result.map(|r| if r.is_ok() { 0 } else { 1 }), &hit, limit)
        })
    }
}
