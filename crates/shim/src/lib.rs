//! wasmcell-shim: `containerd-shim-wasmcell-v1`, containerd's shim v2 API (runtime type
//! `io.containerd.wasmcell.v1`) over wasmcell's runtime and serving loop. The only crate that knows
//! containerd.
//!
//! - [`spec`]: the bundle's OCI runtime spec → the module to run + a `SandboxPolicy` (the one place the
//!   shim grants anything).
//! - [`run`]: a container's guest on wasmcell's runtime (a command) or serving loop (a wasi:http
//!   component).
//! - [`task`]: the ttrpc task service containerd drives (create, start, state, pids, kill, wait, delete).
//! - [`cgroup`]: the container's cgroup, which the guest's threads join (CPU limits and accounting).
//! - [`containerd`]: containerd's gRPC API: a wasm-layer image's module from the content store.
//! - [`error`]: the typed error and its one mapping to a ttrpc status.
//!
//! Built on the sync flavour of containerd/rust-extensions' `containerd-shim` crate (see docs/decisions/0016-shim-on-containerd-shim.md
//! for why not runwasi's `containerd-shim-wasm`).

pub mod cgroup;
pub mod containerd;
pub mod error;
mod events;
mod mounts;
pub mod run;
pub mod spec;
pub mod task;
mod trust;
pub mod user;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::os::fd::IntoRawFd as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use containerd_shim::protos::protobuf::Message as _;
use containerd_shim::protos::ttrpc;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{DeleteResponse, ExitSignal, Flags, StartOpts};

pub use error::Error;

/// The runtime type containerd names this shim by.
pub const RUNTIME_ID: &str = "io.containerd.wasmcell.v1";

/// The annotation CRI puts on every container of a pod: one shim serves the whole pod.
const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// The environment variable containerd passes its ttrpc address in (events are published there).
const TTRPC_ADDRESS: &str = "TTRPC_ADDRESS";

/// The task service's ttrpc name in containerd 2.x (`containerd.task.v3.Task`) and the one containerd
/// 1.6 and 1.7 call (`containerd.task.v2.Task`). The messages are the same on the wire.
const TASK_V3: &str = "/containerd.task.v3.Task/";
const TASK_V2: &str = "/containerd.task.v2.Task/";

/// The shim binary's `main`: parses containerd's flags, then starts, deletes or serves a shim.
///
/// containerd-shim's own `run` answers `start` in containerd 2.x's formats (a JSON reply, or the 2.3
/// bootstrap protocol) and serves only the v3 task API, which containerd 1.6 and 1.7 can neither parse
/// nor call. So this drives the crate's parts itself: `start` answers with the bare socket address (what
/// containerd 1.6, 1.7 and 2.0-2.2 all accept) and the task service answers under both names.
pub fn main() {
    // Memory per container is a node's density (see the function for the numbers).
    wasmcell_runtime::disable_transparent_huge_pages();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let result = containerd_shim::parse(&args).and_then(|flags| {
        if flags.version {
            println!("{}:\n  Runtime: {RUNTIME_ID}\n  Version: {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        match flags.action.as_str() {
            "start" => start(&flags),
            "delete" => delete(),
            _ => serve(&flags),
        }
    });
    if let Err(e) = result {
        eprintln!("containerd-shim-wasmcell-v1: {e}");
        std::process::exit(wasmcell_exit::WASMCELL_ERROR.into());
    }
}

/// `start`: starts the long-lived shim process (or finds the one already serving this pod), then prints
/// its ttrpc address for containerd. containerd runs this in the bundle directory.
///
/// The socket is bound here, before the shim process exists, and that process is this one forked (no
/// second exec): containerd gets the address as soon as the socket listens, and its first calls wait in
/// the socket's backlog while the forked shim sets up its server. (containerd-shim's `spawn` execs the
/// binary again and waits for it to listen: about 5 ms more per container, measured.)
fn start(flags: &Flags) -> containerd_shim::Result<()> {
    // containerd passes runtime options (a protobuf Any) on stdin; this shim has none.
    let mut options = Vec::new();
    let _ = std::io::stdin().take(10 << 20).read_to_end(&mut options);
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address: std::env::var(TTRPC_ADDRESS).map_err(|_| containerd_shim::Error::Other(format!("{TTRPC_ADDRESS} is not set")))?,
        namespace: flags.namespace.clone(),
        debug: flags.debug,
        ..Default::default()
    };
    let grouping = pod_id().unwrap_or_else(|| opts.id.clone());
    let address = opts.socket_address(&grouping);
    let socket = address.strip_prefix("unix://").unwrap_or(&address).to_string();
    // `None`: another shim serves this pod already, and containerd gets its address.
    if let Some(listener) = listen(&socket)? {
        if !single_threaded() {
            // fork() copies only the calling thread: never fork a process with others. (Nothing starts
            // one before this point; this keeps it true.)
            drop(listener);
            let _ = std::fs::remove_file(&socket);
            let (_pid, spawned) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
            return announce(&spawned);
        }
        // SAFETY: the process has one thread (checked above), so the child is a complete copy of it.
        match unsafe { libc::fork() } {
            -1 => return Err(containerd_shim::Error::Other(format!("cannot fork the shim: {}", std::io::Error::last_os_error()))),
            0 => {
                detach();
                let code = match serve_on(listener, flags, &socket) {
                    Ok(()) => 0,
                    Err(e) => {
                        log::error!("shim failed: {e}");
                        wasmcell_exit::WASMCELL_ERROR.into()
                    }
                };
                std::process::exit(code);
            }
            _ => drop(listener),
        }
    }
    announce(&address)
}

/// Tells containerd where the shim listens: the bundle's `address` file and `start`'s stdout.
fn announce(address: &str) -> containerd_shim::Result<()> {
    containerd_shim::util::write_address(address)?;
    let mut out = std::io::stdout().lock();
    out.write_all(address.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| containerd_shim::Error::Other(format!("cannot write the address: {e}")))
}

/// Whether this process has exactly one thread.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").map(|d| d.count() == 1).unwrap_or(false)
}

/// The forked shim leaves `start`'s session and standard streams: containerd waits for EOF on `start`'s
/// stdout and stderr, and must not wait for the shim.
fn detach() {
    // SAFETY: setsid, open and dup2 on the process's own descriptors.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO, libc::STDERR_FILENO] {
                libc::dup2(null, fd);
            }
            libc::close(null);
        }
    }
}

/// `delete`: containerd's clean-up after a shim died: undo the shim's mounts in the bundle (the cwd) and
/// remove the container's cgroup.
fn delete() -> containerd_shim::Result<()> {
    if let Ok(cwd) = std::env::current_dir() {
        mounts::undo_in(&cwd);
        if let Some(cg) = spec::cgroup_in(&cwd).as_ref().and_then(cgroup::Cgroup::of_dead_shim) {
            cg.remove();
        }
    }
    let mut resp = DeleteResponse::new();
    resp.exit_status = 128 + libc::SIGKILL as u32;
    resp.exited_at = containerd_shim::protos::protobuf::MessageField::some(task::now());
    let mut out = std::io::stdout().lock();
    resp.write_to_writer(&mut out)?;
    out.flush().map_err(|e| containerd_shim::Error::Other(format!("cannot write the response: {e}")))
}

/// The long-lived shim run as its own process (`-socket`): serves the task API until containerd shuts it
/// down. (`start` forks the shim instead; this is for a shim started by hand or by containerd-shim's
/// `spawn`, which reads its stdout until EOF.)
fn serve(flags: &Flags) -> containerd_shim::Result<()> {
    let socket = flags.socket.strip_prefix("unix://").unwrap_or(&flags.socket);
    if socket.is_empty() {
        return Err(containerd_shim::Error::InvalidArgument("-socket is required".into()));
    }
    let Some(listener) = listen(socket)? else {
        // Another shim serves this pod already: `start` gets its address.
        containerd_shim::util::write_address(&flags.socket)?;
        server_started();
        return Ok(());
    };
    server_started();
    serve_on(listener, flags, socket)
}

/// Serves the task API on `listener` (bound to `socket`) until containerd shuts the shim down.
fn serve_on(listener: UnixListener, flags: &Flags, socket: &str) -> containerd_shim::Result<()> {
    // The shim runs in its own session; containerd stops it through the task API, not with signals.
    // SAFETY: setting a signal's disposition to ignore.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    // Before any other thread exists, so that every thread inherits SIGCHLD blocked.
    reap_children()?;
    // The shim's log goes to the `log` fifo containerd made in the bundle (containerd's own log).
    if let Err(e) = containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id) {
        eprintln!("containerd-shim-wasmcell-v1: no log: {e}");
    }
    let ttrpc_address = std::env::var(TTRPC_ADDRESS).map_err(|_| containerd_shim::Error::Other(format!("{TTRPC_ADDRESS} is not set")))?;
    let publisher = RemotePublisher::new(&ttrpc_address)?;
    let exit = Arc::new(ExitSignal::default());
    let tasks = task::TaskService::new(exit.clone(), flags.namespace.clone(), flags.address.clone(), Some(publisher));
    let service: Arc<dyn containerd_shim::protos::Task + Send + Sync> = Arc::new(tasks.clone());
    let v3 = containerd_shim::protos::create_task(service.clone());
    let v2 = containerd_shim::protos::create_task(service)
        .into_iter()
        .map(|(name, handler)| (name.replacen(TASK_V3, TASK_V2, 1), handler))
        .collect();
    let mut server = ttrpc::Server::new().add_listener(listener.into_raw_fd())?.register_service(v3).register_service(v2);
    server.start()?;
    log::info!("shim serving on {socket}");
    exit.wait();
    tasks.flush_events();
    server.shutdown();
    let _ = std::fs::remove_file(socket);
    Ok(())
}

/// containerd-shim's rootfs mount forks a helper and waits for its exit through the crate's monitor,
/// which only hears of exits from whoever reaps: this thread (the crate's own `run` has one too).
fn reap_children() -> containerd_shim::Result<()> {
    // SAFETY: plain signal-mask calls on a zeroed, then initialised, sigset_t.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || {
            loop {
                let mut signal = 0;
                // SAFETY: waits for the blocked SIGCHLD; `set` outlives the call.
                if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                    continue;
                }
                loop {
                    let mut status = 0;
                    // SAFETY: reaps any exited child without blocking.
                    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                    if pid <= 0 {
                        break;
                    }
                    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
                    if let Err(e) = containerd_shim::monitor::monitor_notify_by_pid(pid, code) {
                        log::warn!("cannot report the exit of process {pid}: {e}");
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| containerd_shim::Error::Other(format!("cannot start the reaper thread: {e}")))
}

/// Binds the shim's socket; `None` when a live shim already listens there.
fn listen(socket: &str) -> containerd_shim::Result<Option<UnixListener>> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| containerd_shim::Error::Other(format!("{what} {socket}: {e}"))
    };
    if let Some(parent) = Path::new(socket).parent() {
        std::fs::create_dir_all(parent).map_err(io("cannot create the directory of"))?;
    }
    match UnixListener::bind(socket) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(socket).is_ok() {
                return Ok(None);
            }
            // A dead shim's socket.
            std::fs::remove_file(socket).map_err(io("cannot remove the stale socket"))?;
            UnixListener::bind(socket).map(Some).map_err(io("cannot listen on"))
        }
        Err(e) => Err(io("cannot listen on")(e)),
    }
}

/// Tells the `start` process the server is up: it reads our stdout until EOF, so point stdout at stderr.
fn server_started() {
    // SAFETY: dup2 of the process's own standard descriptors.
    unsafe {
        libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
    }
}

/// The pod this container belongs to, from the bundle's spec (the cwd at `start`).
fn pod_id() -> Option<String> {
    // Only the annotations: serde skips the rest of the spec without building it.
    #[derive(serde::Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: HashMap<String, String>,
    }
    let config = std::fs::read("config.json").ok()?;
    let mut spec: Annotated = serde_json::from_slice(&config).ok()?;
    spec.annotations.remove(SANDBOX_ID_ANNOTATION)
}
