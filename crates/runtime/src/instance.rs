//! The instance lifecycle: create, start, kill, wait for the exit status.
//!
//! This is what `wasmcell run` and the containerd shim drive. An [`Instance`] owns
//! one [`Guest`]; it runs on its own thread ([`Instance::start`]) or on the caller's
//! ([`Instance::run`]), on a current-thread tokio runtime. Kill and timeout go through the guest's
//! [`StopSignal`]: wasm code is interrupted at its next epoch check, a guest blocked in a host call is
//! dropped at once. Nothing polls.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{Guest, Program, StopReason, StopSignal};
use crate::grants::Grants;
use crate::{Error, Result};

/// Where a standard stream goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StdioSpec {
    /// The host process's own stream.
    Inherit,
    /// Nothing: stdin is empty, output is discarded.
    #[default]
    Null,
    /// A file or fifo (opened for append when written).
    File(PathBuf),
}

/// The three standard streams of a guest. `Default` connects none of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stdio {
    pub stdin: StdioSpec,
    pub stdout: StdioSpec,
    pub stderr: StdioSpec,
}

impl Stdio {
    /// All three streams of the host process.
    pub fn inherit() -> Stdio {
        Stdio { stdin: StdioSpec::Inherit, stdout: StdioSpec::Inherit, stderr: StdioSpec::Inherit }
    }
}

/// How a guest ended on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: i32,
}

/// A cloneable handle that stops an instance from any thread.
#[derive(Clone, Debug)]
pub struct KillHandle(StopSignal);

impl KillHandle {
    pub fn kill(&self) {
        self.0.request(StopReason::Killed);
    }
}

enum State {
    Created(Box<dyn Guest>),
    Running(JoinHandle<Result<ExitStatus>>),
    Exited(Result<ExitStatus, String>),
    Taken,
}

/// Run first on every thread a started guest runs on (its own, and its event loop's blocking-pool
/// threads): the containerd shim puts them in the container's cgroup with it.
pub type ThreadHook = Arc<dyn Fn() + Send + Sync>;

/// One sandboxed instance of a program.
pub struct Instance {
    state: State,
    stop: StopSignal,
    timeout: Option<Duration>,
    on_thread: Option<ThreadHook>,
}

impl Instance {
    /// Creates an instance of `program` granted exactly `grants`. It does not run until started.
    pub fn create(program: &Arc<dyn Program>, grants: &Grants, stdio: &Stdio) -> Result<Instance> {
        let guest = program.create(grants, stdio)?;
        let stop = guest.stop_signal();
        Ok(Instance { state: State::Created(guest), stop, timeout: grants.policy().limits.timeout, on_thread: None })
    }

    /// Runs `hook` first on each thread the guest will run on (see [`ThreadHook`]).
    pub fn on_thread(&mut self, hook: ThreadHook) {
        self.on_thread = Some(hook);
    }

    pub fn kill_handle(&self) -> KillHandle {
        KillHandle(self.stop.clone())
    }

    /// Starts the guest on a thread of its own.
    pub fn start(&mut self) -> Result<()> {
        if !matches!(self.state, State::Created(_)) {
            return Err(Error::Config("instance already started".into()));
        }
        let State::Created(guest) = std::mem::replace(&mut self.state, State::Taken) else { unreachable!() };
        let (stop, timeout, hook) = (self.stop.clone(), self.timeout, self.on_thread.clone());
        let handle = std::thread::Builder::new()
            .name("wasmcell-guest".into())
            .spawn(move || drive(guest, stop, timeout, hook))
            .map_err(Error::io("failed to spawn the guest thread"))?;
        self.state = State::Running(handle);
        Ok(())
    }

    /// Runs the guest to completion on the calling thread (`create` + `start` + `wait` without a
    /// thread of its own).
    pub fn run(mut self) -> Result<ExitStatus> {
        match std::mem::replace(&mut self.state, State::Taken) {
            State::Created(guest) => drive(guest, self.stop.clone(), self.timeout, self.on_thread.clone()),
            _ => Err(Error::Config("instance already started".into())),
        }
    }

    /// Waits for a started guest to end.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if matches!(self.state, State::Running(_)) {
            let State::Running(handle) = std::mem::replace(&mut self.state, State::Taken) else { unreachable!() };
            let result = handle.join().unwrap_or_else(|_| Err(Error::Config("guest thread panicked".into())));
            self.state = State::Exited(result.as_ref().copied().map_err(|e| e.to_string()));
            return result;
        }
        match &self.state {
            State::Exited(Ok(status)) => Ok(*status),
            State::Exited(Err(e)) => Err(Error::Config(e.clone())),
            _ => Err(Error::Config("instance was not started".into())),
        }
    }

    /// Whether a started guest has ended.
    pub fn is_finished(&self) -> bool {
        match &self.state {
            State::Running(h) => h.is_finished(),
            State::Exited(_) => true,
            _ => false,
        }
    }
}

/// A guest's event loop: a current-thread tokio runtime for the calling thread, with `hook` run first on
/// that thread and on each thread the runtime starts (its blocking pool).
pub fn event_loop(hook: Option<ThreadHook>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut rt = tokio::runtime::Builder::new_current_thread();
    rt.enable_all();
    if let Some(hook) = hook {
        hook();
        rt.on_thread_start(move || hook());
    }
    rt.build()
}

fn drive(guest: Box<dyn Guest>, stop: StopSignal, timeout: Option<Duration>, hook: Option<ThreadHook>) -> Result<ExitStatus> {
    let rt = event_loop(hook).map_err(Error::io("failed to start the guest's event loop"))?;
    // The watchdog sleeps until the deadline or until the guest ends (its sender is dropped).
    let (done, watchdog) = match timeout {
        Some(t) => {
            let (tx, rx) = mpsc::channel::<()>();
            let stop = stop.clone();
            let w = std::thread::Builder::new()
                .name("wasmcell-timeout".into())
                .spawn(move || {
                    if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(t) {
                        stop.request(StopReason::Timeout);
                    }
                })
                .map_err(Error::io("failed to spawn the timeout thread"))?;
            (Some(tx), Some(w))
        }
        None => (None, None),
    };
    let result = rt.block_on(async {
        tokio::select! {
            biased;
            () = stop.wait() => Err(Error::Killed),
            r = guest.run() => r,
        }
    });
    drop(done);
    if let Some(w) = watchdog {
        let _ = w.join();
    }
    match (stop.requested(), result) {
        (_, Ok(code)) => Ok(ExitStatus { code }),
        (Some(StopReason::Timeout), Err(_)) => Err(Error::Timeout(timeout.unwrap_or_default())),
        (Some(StopReason::Killed), Err(_)) => Err(Error::Killed),
        (None, Err(e)) => Err(e),
    }
}
