//! WAGI: core modules (WASI preview 1) answering HTTP the CGI way. The request arrives as
//! environment variables and stdin, the response leaves through stdout (CGI headers, a blank line,
//! the body). Like wasi:http handlers, every request gets a fresh instance.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::WasmtimeEngine;
use super::compile::Compiled;
use super::host::{self, ModuleHost, Slicing};
use super::outcome::{link_error, request_failure};
use super::tier::Tiered;
use crate::Result;
use crate::engine::{BoxFuture, Failure, MAX_WAGI_OUTPUT, WagiOutput, WagiProgram, not_runnable};
use crate::grants::Grants;
use crate::inspect::Input;

/// A loaded core module, ready to answer requests CGI-style.
#[derive(Clone)]
pub(super) struct WagiHandler {
    pre: wasmtime::InstancePre<ModuleHost>,
}

/// Loads a WASI preview 1 command module for serving as a WAGI handler; with tiered start, one that
/// switches to Cranelift's code when it is ready.
pub(super) fn load(engine: &WasmtimeEngine, input: &Input) -> Result<Arc<dyn WagiProgram>> {
    let (compiled, upgrade) = engine.load_compiled(input)?;
    let first = handler(input, compiled)?;
    Ok(match upgrade {
        None => Arc::new(first),
        Some(upgrade) => Arc::new(Tiered::start(first, upgrade, handler)),
    })
}

fn handler(input: &Input, compiled: Compiled) -> Result<WagiHandler> {
    let module = match compiled {
        Compiled::Module(m) => m,
        Compiled::Component(_) => return Err(not_runnable(format!("{}: is a component, not a WAGI module", input.name))),
    };
    if module.get_export("_start").is_none() {
        return Err(not_runnable(format!("{}: module exports no `_start` function: not a WAGI handler", input.name)));
    }
    let pre = host::module_linker(module.engine())?.instantiate_pre(&module).map_err(|e| link_error(&input.name, &e))?;
    Ok(WagiHandler { pre })
}

impl WagiProgram for WagiHandler {
    fn handle<'a>(
        &'a self,
        body: Bytes,
        cgi_env: &'a [(String, String)],
        grants: &'a Grants,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<WagiOutput, Failure>> {
        Box::pin(self.serve(body, cgi_env, grants, timeout))
    }
}

impl WagiHandler {
    async fn serve(
        &self,
        body: Bytes,
        cgi_env: &[(String, String)],
        grants: &Grants,
        timeout: Option<Duration>,
    ) -> Result<WagiOutput, Failure> {
        let stdout = MemoryOutputPipe::new(MAX_WAGI_OUTPUT);
        let wasi = grants.wagi(cgi_env, body, stdout.clone()).map_err(|e| Failure::Host(e.to_string()))?;
        let host = ModuleHost::new(wasi, grants);
        let hit = host.limits.hit_flag();
        let mut store = host::new_store(self.pre.module().engine(), host, Slicing::Yield);
        let pre = self.pre.clone();
        let run = async move {
            let instance = pre.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        };
        let result = match timeout {
            Some(t) => tokio::time::timeout(t, run).await.map_err(|_| Failure::Timeout(t))?,
            None => run.await,
        };
        let hit = hit.load(Ordering::SeqCst);
        let exit_code = match result {
            Ok(()) => 0,
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) if !(exit.0 != 0 && hit) => exit.0,
                _ => return Err(request_failure(&e, hit)),
            },
        };
        Ok(WagiOutput { stdout: stdout.contents(), exit_code })
    }
}
