//! wasmtime's errors and traps as the runtime's typed errors: one line each, the trap's message and a
//! wasm backtrace with function names, and a failure after a denied memory growth as out of memory.

use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime_wasi::I32Exit;

use crate::engine::{Failure, not_runnable};
use crate::inspect::one_line;
use crate::{Error, Result};

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

/// Why a request's guest failed, for the serving loop (`memory_hit`: a growth was denied).
pub(crate) fn request_failure(e: &wasmtime::Error, memory_hit: bool) -> Failure {
    if memory_hit {
        return Failure::MemoryLimit;
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => Failure::Trap(trap.to_string()),
        None => Failure::Trap(root_cause(e)),
    }
}
