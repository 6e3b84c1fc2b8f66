//! Running one container's guest with wasmcell's runtime and serving loop: a command (a WASI module or
//! component run to its exit) on the runtime's instance thread, or a component exporting
//! `wasi:http/handler@0.3` or `incoming-handler@0.2` served by `wasmcell-serve` on a thread of its own.
//!
//! Engine settings and the compiled-code cache are the ones `wasmcell run` / `wasmcell serve` use
//! (`EngineOptions` with the cache under `WASMCELL_HOME`); the serving loop is `wasmcell_serve::Server`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmcell_runtime::cache::Cache;
use wasmcell_runtime::engine::{EngineChoice, EngineOptions, PoolOptions};
use wasmcell_runtime::home::Home;
use wasmcell_runtime::inspect::{self, Input, WasmKind};
use wasmcell_runtime::instance::{KillHandle, ThreadHook};
use wasmcell_runtime::kv::Stores;
use wasmcell_runtime::{Engine, Grants, HttpProgram, Instance, Program, Stdio, StdioSpec, WasmtimeEngine};
use wasmcell_serve::{Config, Handler, Metrics, Server};

use crate::error::{Error, Result};
use crate::spec::{Launch, NetNs};
use crate::user::User;

/// The code `done` receives for a guest stopped by a signal (the task maps it to 128 + the signal).
pub const KILLED: i32 = -1;
/// The code `done` receives for a guest stopped at its memory limit (the task reports an OOM and exits
/// 137, as a container the OOM killer stopped).
pub const OUT_OF_MEMORY: i32 = -2;
/// Per-instance memory of an HTTP component when the spec sets no limit (as `wasmcell serve`).
const DEFAULT_HTTP_MEMORY: u64 = 128 << 20;
/// Instances of an HTTP component alive at once, at most.
const MAX_HTTP_INSTANCES: u64 = 1000;

/// Where the guest's output goes: containerd's fifos.
pub struct Io {
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
}

/// A started guest, to be signalled.
pub enum Running {
    Command(KillHandle),
    Http {
        term: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
        kill: tokio::sync::watch::Sender<bool>,
    },
    /// A pod's pause container: ends when signalled.
    Pause(std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>),
}

impl Running {
    /// `kill`: stop at once; otherwise stop gracefully (an HTTP server drains; a command stops).
    pub fn signal(&self, kill: bool) {
        match self {
            Running::Command(h) => h.kill(),
            Running::Pause(stop) => {
                stop.lock().unwrap().take();
            }
            Running::Http { term, kill: k } => {
                if kill {
                    let _ = k.send(true);
                } else if let Some(t) = term.lock().unwrap().take() {
                    let _ = t.send(());
                }
            }
        }
    }
}

/// A guest made ready to start: its engine and its compiled code (read from the compiled-code cache, or
/// compiled). The task prepares it on a thread of its own from `create` on, so that `start` finds it
/// done: between the two calls containerd and ctr spend a few milliseconds (the create event, ctr's
/// Wait) in which the shim would otherwise sit idle.
pub struct Prepared {
    launch: Launch,
    ready: Ready,
}

/// What a container runs, loaded.
enum Ready {
    Pause,
    Command { engine: WasmtimeEngine, program: Arc<dyn Program>, grants: Grants },
    Http(Box<HttpServer>),
}

/// An HTTP component ready to serve: its pooled engine, program, per-instance grants and pool size.
struct HttpServer {
    engine: WasmtimeEngine,
    program: Arc<dyn HttpProgram>,
    grants: Grants,
    instances: u64,
}

/// Reads the module or component, picks how it runs (a command, or an HTTP component served) and loads
/// it into an engine configured for that.
pub fn prepare(launch: Launch, stores: &Stores) -> Result<Prepared> {
    if launch.pause {
        return Ok(Prepared { launch, ready: Ready::Pause });
    }
    let input = Input::read(&launch.module)?;
    let http = input.kind()? == WasmKind::Component && inspect::inspect(&input.bytes)?.serves_http();
    let ready =
        if http && launch.export.is_none() { prepare_http(&launch, &input, stores)? } else { prepare_command(&launch, &input, stores)? };
    Ok(Prepared { launch, ready })
}

/// Starts the guest; `done(code)` is called once, on another thread, when it ends. `on_thread` runs
/// first on every thread the guest runs on (the container's cgroup).
pub fn start(prepared: Prepared, io: Io, on_thread: Option<ThreadHook>, done: impl FnOnce(i32) + Send + 'static) -> Result<Running> {
    let Prepared { launch, ready } = prepared;
    let on_thread = with_user(on_thread, launch.user.clone());
    match ready {
        Ready::Pause => {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            std::thread::Builder::new()
                .name("wasmcell-pause".into())
                .spawn(move || {
                    let _ = rx.recv();
                    done(KILLED);
                })
                .map_err(Error::io("failed to spawn the pause thread"))?;
            Ok(Running::Pause(std::sync::Mutex::new(Some(tx))))
        }
        Ready::Command { engine, program, grants } => start_command(engine, program, &grants, io, on_thread, done),
        Ready::Http(server) => start_http(*server, &launch, io, on_thread, done),
    }
}

fn cache() -> Option<Cache> {
    Some(Cache::new(Home::from_env().compiled_cache()))
}

/// Where the node's operator picks the compiler for every container (containerd's environment, as
/// for `WASMCELL_HOME`): `auto` (the default: tiered start on a cache miss), `cranelift`, `winch`, `pulley`.
pub const ENGINE_ENV: &str = "WASMCELL_ENGINE";

/// `options` with the compiler and tiering `WASMCELL_ENGINE` asks for.
fn engine_options(mut options: EngineOptions) -> Result<EngineOptions> {
    let choice = match std::env::var(ENGINE_ENV) {
        Ok(v) => v.parse::<EngineChoice>().map_err(|e| Error::Runtime(wasmcell_runtime::Error::Config(format!("{ENGINE_ENV}: {e}"))))?,
        Err(_) => EngineChoice::Auto,
    };
    choice.apply(&mut options);
    Ok(options)
}

fn prepare_command(launch: &Launch, input: &Input, stores: &Stores) -> Result<Ready> {
    let engine = WasmtimeEngine::new(engine_options(EngineOptions {
        cache: cache(),
        max_stack: launch.policy.limits.max_stack,
        single_instance: true,
        ..Default::default()
    })?)?;
    crate::trust::take_precompiled(&engine, input, launch.precompiled.as_ref());
    let program = engine.load_command(input, launch.export.as_deref())?;
    let grants = Grants::new(launch.policy.clone(), stores)?;
    Ok(Ready::Command { engine, program, grants })
}

fn start_command(
    engine: WasmtimeEngine,
    program: Arc<dyn Program>,
    grants: &Grants,
    io: Io,
    on_thread: Option<ThreadHook>,
    done: impl FnOnce(i32) + Send + 'static,
) -> Result<Running> {
    let stdio = Stdio {
        stdin: StdioSpec::Null,
        stdout: io.stdout.clone().map_or(StdioSpec::Null, StdioSpec::File),
        stderr: io.stderr.clone().map_or(StdioSpec::Null, StdioSpec::File),
    };
    let mut instance = Instance::create(&program, grants, &stdio)?;
    let handle = instance.kill_handle();
    if let Some(hook) = on_thread {
        instance.on_thread(hook);
    }
    instance.start()?;
    let stderr = io.stderr;
    std::thread::Builder::new()
        .name("wasmcell-wait".into())
        .spawn(move || {
            let code = match instance.wait() {
                Ok(status) => status.code,
                Err(wasmcell_runtime::Error::Killed) => KILLED,
                Err(e) => {
                    let code = match &e {
                        wasmcell_runtime::Error::MemoryLimit(_) => OUT_OF_MEMORY,
                        e => i32::from(wasmcell_exit::for_runtime(e)),
                    };
                    report(stderr.as_deref(), &Error::Runtime(e));
                    code
                }
            };
            // The code compiled for this container reaches the cache before its exit is reported
            // (the shim may be torn down right after), so the next container starts warm.
            engine.wait_for_cache_writes();
            drop(engine);
            done(code);
        })
        .map_err(Error::io("failed to spawn the wait thread"))?;
    Ok(Running::Command(handle))
}

fn prepare_http(launch: &Launch, input: &Input, stores: &Stores) -> Result<Ready> {
    // The pod's memory limit is the pool: instances of the per-instance cap that fit in it.
    let (cap, instances) = match launch.policy.limits.memory {
        Some(limit) => {
            let cap = limit.min(DEFAULT_HTTP_MEMORY);
            (cap, (limit / cap).clamp(1, MAX_HTTP_INSTANCES))
        }
        None => (DEFAULT_HTTP_MEMORY, 100),
    };
    let mut policy = launch.policy.clone();
    policy.limits.memory = Some(cap);
    let engine = WasmtimeEngine::new(engine_options(EngineOptions {
        cache: cache(),
        max_stack: policy.limits.max_stack,
        pooling: Some(PoolOptions { instances: instances as u32, max_memory: cap }),
        ..Default::default()
    })?)?;
    crate::trust::take_precompiled(&engine, input, launch.precompiled.as_ref());
    let program = engine.load_http(input)?;
    let grants = Grants::new(policy, stores)?;
    Ok(Ready::Http(Box::new(HttpServer { engine, program, grants, instances })))
}

fn start_http(
    server: HttpServer,
    launch: &Launch,
    io: Io,
    on_thread: Option<ThreadHook>,
    done: impl FnOnce(i32) + Send + 'static,
) -> Result<Running> {
    let HttpServer { engine, program, grants, instances } = server;
    // Served on this container's own thread (below), so that every request runs where its cgroup is.
    let config = Config { max_concurrency: instances as usize, threads: 0, drain_timeout: Duration::from_secs(10), ..Config::default() };

    // Running guests yield now and then, so per-request deadlines fire.
    engine.start_time_slicing().map_err(Error::io("failed to start the epoch thread"))?;

    let (term_tx, term_rx) = tokio::sync::oneshot::channel::<()>();
    let (kill_tx, mut kill_rx) = tokio::sync::watch::channel(false);
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<Result<SocketAddr>>();
    let addr = launch.http_addr;
    let netns = launch.netns.clone();
    let stderr = io.stderr.clone();
    std::thread::Builder::new()
        .name("wasmcell-serve".into())
        .spawn(move || {
            let engine = Arc::new(engine);
            let rt = match wasmcell_runtime::instance::event_loop(on_thread) {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = bound_tx.send(Err(Error::Io { context: "failed to start the async runtime".into(), source: e }));
                    return;
                }
            };
            let code = rt.block_on(async move {
                if let Err(e) = network(&netns) {
                    let _ = bound_tx.send(Err(e));
                    return None;
                }
                let server = match Server::bind(addr, Handler::Http(program), grants, config, Metrics::new()).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = bound_tx.send(Err(Error::InvalidSpec(format!("cannot listen on {addr}: {e}"))));
                        return None;
                    }
                };
                let _ = bound_tx.send(Ok(server.local_addr()));
                tokio::select! {
                    _ = server.run(async move { let _ = term_rx.await; }) => Some(0),
                    _ = kill_rx.wait_for(|k| *k) => Some(KILLED),
                }
            });
            engine.wait_for_cache_writes();
            drop(engine);
            if let Some(code) = code {
                done(code);
            }
        })
        .map_err(Error::io("failed to spawn the serving thread"))?;
    match bound_rx.recv() {
        Ok(Ok(local)) => {
            if let Some(p) = &stderr {
                let _ = append(p, &format!("wasmcell: serving on http://{local}\n"));
            }
            Ok(Running::Http { term: std::sync::Mutex::new(Some(term_tx)), kill: kill_tx })
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::InvalidSpec("the serving thread ended before listening".into())),
    }
}

/// `hook`, then the container's user for the thread's file access (after the cgroup move, which root
/// makes). A thread whose credentials cannot be set is left as `nobody` (see `user`).
fn with_user(hook: Option<ThreadHook>, user: Option<User>) -> Option<ThreadHook> {
    let Some(user) = user else { return hook };
    Some(Arc::new(move || {
        if let Some(h) = &hook {
            h();
        }
        if let Err(e) = user.apply() {
            log::error!("cannot give a guest thread uid {} gid {}: {e}; it runs as nobody", user.uid, user.gid);
        }
    }))
}

/// Puts the calling thread (the one that binds the listener, and every thread it starts) in the network
/// the spec asks for: the host's, a new namespace with only loopback up (as runc gives `ctr run`), or the
/// pod's.
fn network(netns: &NetNs) -> Result<()> {
    match netns {
        NetNs::Host => Ok(()),
        NetNs::Join(path) => enter_netns(path),
        NetNs::New => {
            // SAFETY: unshare with a flag only; CLONE_NEWNET applies to the calling thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(Error::Io { context: "cannot make a network namespace".into(), source: std::io::Error::last_os_error() });
            }
            loopback_up()
        }
    }
}

/// Brings `lo` up in the calling thread's (new) network namespace.
fn loopback_up() -> Result<()> {
    let fail = |what: &str| Error::Io { context: format!("cannot bring up loopback: {what}"), source: std::io::Error::last_os_error() };
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(fail("socket"));
    }
    // SAFETY: ifreq is plain data; the name is NUL-terminated; the ioctls read and write only `req`.
    let result = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            Err(fail("SIOCGIFFLAGS"))
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) != 0 { Err(fail("SIOCSIFFLAGS")) } else { Ok(()) }
        }
    };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    result
}

/// Moves the calling thread into the network namespace at `path` (a pod's), so that the listener it
/// creates lives there.
fn enter_netns(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).map_err(Error::io(format!("cannot open the network namespace {}", path.display())))?;
    // SAFETY: setns on a valid fd only changes the calling thread's namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(Error::Io {
            context: format!("cannot enter the network namespace {}", path.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(path)?.write_all(text.as_bytes())
}

/// Writes a one-line error to the container's stderr (what `ctr run` shows).
pub fn report(stderr: Option<&Path>, e: &Error) {
    if let Some(p) = stderr {
        let _ = append(p, &format!("wasmcell: {e}\n"));
    }
}
