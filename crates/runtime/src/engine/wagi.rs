//! WAGI: core modules (WASI preview 1) answering HTTP the CGI way. The request arrives as
//! environment variables and stdin, the response leaves through stdout (CGI headers, a blank line,
//! the body). Like wasi:http handlers, every request gets a fresh instance.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use wasmtime::Store;
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

use super::http::Failure;
use super::not_runnable;
use super::wasmtime::{Loaded, P1Host, WasmtimeEngine, engine_err, limiter_for, link_error, root_cause, wasi_builder};
use crate::inspect::Input;
use crate::instance::{Stdio, StdioSpec};
use crate::{Result, SandboxPolicy};

/// The most a WAGI handler may write to stdout (its whole response).
pub const MAX_OUTPUT: usize = 64 << 20;

/// A loaded core module, ready to answer requests CGI-style.
#[derive(Clone)]
pub struct WagiHandler {
    pre: wasmtime::InstancePre<P1Host>,
}

impl WasmtimeEngine {
    /// Loads a WASI preview 1 command module for serving as a WAGI handler.
    pub fn load_wagi(&self, input: &Input) -> Result<WagiHandler> {
        let module = match self.load_compiled(input)? {
            Loaded::Module(m) => m,
            Loaded::Component(_) => return Err(not_runnable(format!("{}: is a component, not a WAGI module", input.name))),
        };
        if module.get_export("_start").is_none() {
            return Err(not_runnable(format!("{}: module exports no `_start` function: not a WAGI handler", input.name)));
        }
        let mut linker = wasmtime::Linker::<P1Host>::new(self.wasmtime());
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h| &mut h.wasi).map_err(engine_err)?;
        let pre = linker.instantiate_pre(&module).map_err(|e| link_error(&input.name, &e))?;
        Ok(WagiHandler { pre })
    }
}

/// What a WAGI run produced.
#[derive(Debug)]
pub struct WagiOutput {
    pub stdout: Bytes,
    pub exit_code: i32,
}

impl WagiHandler {
    /// Runs the module once with `cgi_env` added to the policy's environment and `body` as stdin.
    pub async fn handle(
        &self,
        body: Bytes,
        cgi_env: &[(String, String)],
        policy: &SandboxPolicy,
        timeout: Option<Duration>,
    ) -> Result<WagiOutput, Failure> {
        let stdio = Stdio { stdin: StdioSpec::Null, stdout: StdioSpec::Null, stderr: StdioSpec::Inherit };
        let mut b = wasi_builder(policy, &stdio).map_err(|e| Failure::Host(e.to_string()))?;
        b.envs(cgi_env);
        b.stdin(MemoryInputPipe::new(body));
        let stdout = MemoryOutputPipe::new(MAX_OUTPUT);
        b.stdout(stdout.clone());
        let limits = limiter_for(policy);
        let hit = limits.hit.clone();
        let mut store = Store::new(self.pre.module().engine(), P1Host { wasi: b.build_p1(), limits });
        store.limiter(|h| &mut h.limits as &mut dyn wasmtime::ResourceLimiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
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
        let exit_code = match result {
            Ok(()) => 0,
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) if !(exit.0 != 0 && hit.load(Ordering::SeqCst)) => exit.0,
                _ if hit.load(Ordering::SeqCst) => return Err(Failure::MemoryLimit),
                _ => {
                    return Err(match e.downcast_ref::<wasmtime::Trap>() {
                        Some(trap) => Failure::Trap(trap.to_string()),
                        None => Failure::Trap(root_cause(&e)),
                    });
                }
            },
        };
        Ok(WagiOutput { stdout: stdout.contents(), exit_code })
    }
}
