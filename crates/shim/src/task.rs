//! containerd's task service for wasm containers: create, start, state, pids, kill, wait, delete,
//! connect, shutdown.
//!
//! A container's guest runs on threads of this shim process (no child process): `pids` reports the
//! shim's pid, `kill` goes through the runtime's stop signal (SIGKILL stops at once; SIGTERM stops a
//! command guest and drains an HTTP server), `wait` returns the exit code the runtime reports (128 + the
//! signal for a killed guest, as for a native process). The guest's stdout and stderr are containerd's
//! fifos. Nothing outlives the shim: the rootfs mount containerd asked for and the guest's private binds
//! (`mounts`) are undone and the container's cgroup removed on delete, and the shim exits once
//! containerd shuts it down.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use containerd_shim::api::{self, Status};
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskOOM, TaskStart};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};
use containerd_shim::protos::topics;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, TtrpcContext, TtrpcResult};

use wasmcell_oci::launch::Launch as ImageLaunch;
use wasmcell_runtime::home::Home;
use wasmcell_runtime::instance::ThreadHook;
use wasmcell_runtime::kv::Stores;

use crate::cgroup::Cgroup;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::mounts::{self, Mounted};
use crate::run::{self, Running};
use crate::spec;
use crate::trust::CodeSource;

/// The task service: every container this shim runs.
#[derive(Clone)]
pub struct TaskService {
    pub(crate) exit: Arc<ExitSignal>,
    pub(crate) namespace: String,
    /// containerd's events, sent in order by a thread of their own (see [`Events`]).
    events: Option<Arc<Events>>,
    /// containerd's gRPC socket (`-address`): the content store of wasm-layer images.
    address: String,
    containers: Arc<Mutex<HashMap<String, Arc<Container>>>>,
    /// The key-value stores this shim's guests were granted, opened once and shared by every
    /// container of the pod that names the same application and store.
    stores: Stores,
}

struct Container {
    id: String,
    bundle: PathBuf,
    stdout: String,
    stderr: String,
    /// What the shim mounted (the rootfs, the guest's private nodev binds); undone when the guest ends
    /// (or on delete).
    mounted: Mutex<Mounted>,
    /// The container's cgroup, which the guest's threads join; removed on delete.
    cgroup: Option<Arc<Cgroup>>,
    state: Mutex<State>,
    changed: Condvar,
    /// The last signal delivered, for the exit code of a killed guest.
    signal: AtomicU32,
    /// containerd's stdout/stderr fifos held open read-write, so that the guest's opening them for writing
    /// never blocks and a guest never gets EPIPE when nobody reads (`ctr run -d`). Closed when the guest
    /// ends: ctr waits for EOF on them before it deletes the task.
    fifos: Mutex<Vec<std::fs::File>>,
}

impl Container {
    /// Unmounts what the shim mounted, once; a concurrent caller waits until it is done (delete must not
    /// answer while anything is still mounted: containerd then removes the bundle).
    fn unmount_rootfs(&self) {
        self.mounted.lock().unwrap().undo();
    }
}

enum State {
    Created(Preparing),
    Running(Running),
    Stopped { code: u32, at: Timestamp },
}

/// A created container's guest being made ready (`run::prepare`) on a thread of its own; `start` joins it.
type Preparing = Option<std::thread::JoinHandle<Result<run::Prepared>>>;

impl TaskService {
    pub fn new(exit: Arc<ExitSignal>, namespace: String, address: String, publisher: Option<RemotePublisher>) -> TaskService {
        let events = publisher.and_then(|p| Events::start(p, namespace.clone())).map(Arc::new);
        let stores = Stores::new(Home::from_env());
        TaskService { exit, namespace, address, events, containers: Arc::default(), stores }
    }

    /// What container `id`'s image launches (`wasmcell_oci::launch`), its wasm layer from containerd's
    /// content store into the bundle (a wasm-layer image's container has nothing in its rootfs).
    /// Where the node's policy requires a signer for the image, `code` is where its precompiled
    /// code may come from.
    fn image_launch(
        &self,
        id: &str,
        rootfs: &Path,
        module: Option<&str>,
        bundle: &Path,
        code: &mut Option<CodeSource>,
    ) -> Result<Option<ImageLaunch>> {
        if self.address.is_empty() {
            return Ok(None);
        }
        let client = crate::containerd::Client::connect(&self.address, &self.namespace)?;
        crate::containerd::launch(&client, id, module, bundle, rootfs, code)
    }

    fn get(&self, id: &str) -> Result<Arc<Container>> {
        self.containers.lock().unwrap().get(id).cloned().ok_or_else(|| Error::NotFound(id.to_string()))
    }

    fn create_task(&self, req: &api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        if self.containers.lock().unwrap().contains_key(&req.id) {
            return Err(Error::AlreadyExists(req.id.clone()));
        }
        if req.terminal {
            return Err(Error::Unimplemented("a terminal (ctr run -t)"));
        }
        let began = std::time::Instant::now();
        let bundle = PathBuf::from(&req.bundle);
        let mut mounted = Mounted::default();
        let container = self.create_mounted(req, bundle, began, &mut mounted);
        if container.is_err() {
            mounted.undo(); // any failure undoes what was mounted
        }
        let container = container?;
        *container.mounted.lock().unwrap() = mounted;
        self.containers.lock().unwrap().insert(req.id.clone(), container);
        let event = TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            }),
            pid: std::process::id(),
            ..Default::default()
        };
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event));
        Ok(api::CreateTaskResponse { pid: std::process::id(), ..Default::default() })
    }

    /// The container of `req`: its rootfs and the guest's directories mounted (into `mounted`, which the
    /// caller undoes on failure), its fifos open, its spec read, its guest being prepared.
    fn create_mounted(
        &self,
        req: &api::CreateTaskRequest,
        bundle: PathBuf,
        began: std::time::Instant,
        mounted: &mut Mounted,
    ) -> Result<Arc<Container>> {
        mounts::mount_rootfs(&req.rootfs, &bundle, mounted)?;
        let mut fifos = Vec::new();
        for p in [&req.stdout, &req.stderr].into_iter().filter(|p| !p.is_empty()) {
            let f = std::fs::OpenOptions::new().read(true).write(true).open(p);
            fifos.push(f.map_err(|e| Error::Io { context: format!("cannot open {p}"), source: e })?);
        }
        let opened = began.elapsed();
        let mut code = None;
        let mut image = |rootfs: &Path, module: Option<&str>| self.image_launch(&req.id, rootfs, module, &bundle, &mut code);
        let mut launch = spec::load(&bundle, &mut image)?;
        launch.precompiled = code;
        mounts::harden_preopens(&mut launch.policy, &launch.shallow, &bundle, mounted)?;
        let cgroup = launch.cgroup.as_ref().map(Cgroup::create).transpose()?.flatten().map(Arc::new);
        let stores = self.stores.clone();
        let preparing =
            std::thread::Builder::new().name("wasmcell-prepare".into()).spawn(move || run::prepare(launch, &stores)).map_err(|e| {
                if let Some(cg) = &cgroup {
                    cg.remove();
                }
                Error::io("failed to spawn the thread preparing the guest")(e)
            })?;
        log::debug!("create {}: rootfs and fifos {:?}, spec and mounts {:?}", req.id, opened, began.elapsed() - opened);
        Ok(Arc::new(Container {
            id: req.id.clone(),
            bundle,
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            mounted: Mutex::new(Mounted::default()),
            cgroup,
            state: Mutex::new(State::Created(Some(preparing))),
            changed: Condvar::new(),
            signal: AtomicU32::new(0),
            fifos: Mutex::new(fifos),
        }))
    }

    fn start_task(&self, req: &api::StartRequest) -> Result<api::StartResponse> {
        no_exec(&req.exec_id)?;
        let c = self.get(&req.id)?;
        let mut state = c.state.lock().unwrap();
        let began = std::time::Instant::now();
        let prepared = match &mut *state {
            State::Created(p) => p.take().map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Io { context: "preparing the guest".into(), source: std::io::Error::other("the thread panicked") })
                })
            }),
            _ => None,
        };
        let Some(prepared) = prepared else {
            return Err(Error::FailedPrecondition(format!("{}: container already started", req.id)));
        };
        let io = run::Io { stdout: non_empty(&c.stdout), stderr: non_empty(&c.stderr) };
        let done = {
            let c = c.clone();
            let this = self.clone();
            move |code: i32| this.exited(&c, code)
        };
        let on_thread = c.cgroup.clone().map(|cg| -> ThreadHook { Arc::new(move || cg.join()) });
        let running = match prepared.and_then(|p| run::start(p, io, on_thread, done)) {
            Ok(r) => r,
            Err(e) => {
                // As a runc container whose process failed to start: the task is stopped (with the
                // code `wasmcell run` exits with for the same error), so it can be deleted; containerd
                // refuses to delete a task that is still created. Say why on its stderr too.
                run::report(non_empty(&c.stderr).as_deref(), &e);
                // ctr waits for EOF on the fifos before it deletes the task.
                let mut fifos = c.fifos.lock().unwrap();
                drain(&fifos);
                fifos.clear();
                drop(fifos);
                *state = State::Stopped { code: e.exit_code(), at: now() };
                c.changed.notify_all();
                return Err(e);
            }
        };
        *state = State::Running(running);
        drop(state);
        log::debug!("start {}: guest running after {:?}", req.id, began.elapsed());
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart { container_id: req.id.clone(), pid: std::process::id(), ..Default::default() }),
        );
        Ok(api::StartResponse { pid: std::process::id(), ..Default::default() })
    }

    /// Called on the guest's thread when it ends.
    fn exited(&self, c: &Container, code: i32) {
        let signal = c.signal.load(Ordering::SeqCst);
        if code == run::OUT_OF_MEMORY {
            // CRI marks the container OOMKilled on this event.
            self.publish(topics::TASK_OOM_EVENT_TOPIC, Box::new(TaskOOM { container_id: c.id.clone(), ..Default::default() }));
        }
        let code = exit_status(code, signal);
        {
            let mut fifos = c.fifos.lock().unwrap();
            drain(&fifos);
            fifos.clear();
        }
        let at = now();
        *c.state.lock().unwrap() = State::Stopped { code, at: at.clone() };
        c.changed.notify_all();
        let event = TaskExit {
            container_id: c.id.clone(),
            id: c.id.clone(),
            pid: std::process::id(),
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        };
        self.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event));
        // Nothing reads the rootfs once the guest is gone (no exec, no restart): unmounting it now, while
        // ctr reacts to the exit, takes it off the path of the delete that follows.
        c.unmount_rootfs();
    }

    fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        if let Some(events) = &self.events {
            events.send(topic, event);
        }
    }

    /// Sends the events still queued, then stops the events thread (before the shim exits).
    pub fn flush_events(&self) {
        if let Some(events) = &self.events {
            events.flush();
        }
    }

    fn kill_task(&self, req: &api::KillRequest) -> Result<()> {
        no_exec(&req.exec_id)?;
        let c = self.get(&req.id)?;
        let state = c.state.lock().unwrap();
        match &*state {
            State::Running(r) => {
                let signal = req.signal;
                match signal {
                    0 => {}
                    SIGKILL | SIGINT | SIGTERM | SIGHUP | SIGQUIT => {
                        if c.signal.load(Ordering::SeqCst) == 0 || signal == SIGKILL {
                            c.signal.store(signal, Ordering::SeqCst);
                        }
                        r.signal(signal == SIGKILL);
                    }
                    _ => return Err(Error::FailedPrecondition(format!("signal {signal} is not supported for a wasm guest"))),
                }
                Ok(())
            }
            State::Created(_) => Err(Error::FailedPrecondition(format!("{}: container not started", req.id))),
            // containerd kills stopped tasks on `ctr task kill --all` and on delete: nothing to do.
            State::Stopped { .. } => Err(Error::NotFound(format!("{}: process already finished", req.id))),
        }
    }

    fn wait_task(&self, req: &api::WaitRequest) -> Result<api::WaitResponse> {
        no_exec(&req.exec_id)?;
        let c = self.get(&req.id)?;
        let mut state = c.state.lock().unwrap();
        loop {
            if let State::Stopped { code, at } = &*state {
                return Ok(api::WaitResponse { exit_status: *code, exited_at: MessageField::some(at.clone()), ..Default::default() });
            }
            state = c.changed.wait(state).unwrap();
        }
    }

    fn state_task(&self, req: &api::StateRequest) -> Result<api::StateResponse> {
        no_exec(&req.exec_id)?;
        let c = self.get(&req.id)?;
        let state = c.state.lock().unwrap();
        let mut resp = api::StateResponse {
            id: c.id.clone(),
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: std::process::id(),
            stdout: c.stdout.clone(),
            stderr: c.stderr.clone(),
            ..Default::default()
        };
        match &*state {
            State::Created(_) => resp.status = Status::CREATED.into(),
            State::Running(_) => resp.status = Status::RUNNING.into(),
            State::Stopped { code, at } => {
                resp.status = Status::STOPPED.into();
                resp.exit_status = *code;
                resp.exited_at = MessageField::some(at.clone());
            }
        }
        Ok(resp)
    }

    fn delete_task(&self, req: &api::DeleteRequest) -> Result<api::DeleteResponse> {
        no_exec(&req.exec_id)?;
        let c = self.get(&req.id)?;
        let (code, at) = {
            let mut state = c.state.lock().unwrap();
            if let State::Running(r) = &*state {
                c.signal.store(SIGKILL, Ordering::SeqCst);
                r.signal(true);
            }
            loop {
                match &*state {
                    State::Stopped { code, at } => break (*code, at.clone()),
                    State::Created(_) => break (0, now()),
                    State::Running(_) => state = c.changed.wait(state).unwrap(),
                }
            }
        };
        c.unmount_rootfs();
        if let Some(cg) = &c.cgroup {
            cg.remove();
        }
        self.containers.lock().unwrap().remove(&req.id);
        let event = TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid: std::process::id(),
            exit_status: code,
            exited_at: MessageField::some(at.clone()),
            ..Default::default()
        };
        self.publish(topics::TASK_DELETE_EVENT_TOPIC, Box::new(event));
        Ok(api::DeleteResponse { pid: std::process::id(), exit_status: code, exited_at: MessageField::some(at), ..Default::default() })
    }
}

const SIGKILL: u32 = libc::SIGKILL as u32;
const SIGTERM: u32 = libc::SIGTERM as u32;
const SIGINT: u32 = libc::SIGINT as u32;
const SIGHUP: u32 = libc::SIGHUP as u32;
const SIGQUIT: u32 = libc::SIGQUIT as u32;

/// How long an ended guest's output may wait in containerd's fifos for its reader.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until what the guest wrote to the fifos has been read (or `DRAIN_TIMEOUT`), before they are
/// closed and the exit is reported. A reader that opens a fifo only after every writer closed it would find
/// the pipe, and the output in it, gone: ctr opens its ends asynchronously, and on a loaded host a guest
/// can start, print and end before that.
fn drain(fifos: &[std::fs::File]) {
    use std::os::fd::AsRawFd;
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    for f in fifos {
        loop {
            let mut unread: libc::c_int = 0;
            // SAFETY: FIONREAD writes one c_int; `f` is an open fifo.
            if unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut unread) } != 0 || unread == 0 {
                break;
            }
            if std::time::Instant::now() >= deadline {
                log::warn!("{unread} bytes of output were never read");
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
}

/// The exit status containerd is told for a guest that ended with `code` (as `run::start`'s `done` has
/// it) after the task was sent `signal` (0: none): 128 + the signal for a killed guest and 137 for one
/// stopped at its memory limit, as for a native process; otherwise the code's low byte.
fn exit_status(code: i32, signal: u32) -> u32 {
    match code {
        run::KILLED if signal != 0 => wasmcell_exit::for_signal(signal),
        run::OUT_OF_MEMORY => u32::from(wasmcell_exit::OUT_OF_MEMORY),
        code => u32::from(wasmcell_exit::for_guest(code)),
    }
}

/// Mounts the create request's rootfs at `BUNDLE/rootfs` (none: `None`), then remounts it nodev and nosuid:
/// whatever the image holds, its device nodes and setuid bits mean nothing to the guest. A failure leaves
/// nothing mounted.
fn no_exec(exec_id: &str) -> Result<()> {
    if exec_id.is_empty() { Ok(()) } else { Err(Error::Unimplemented("exec")) }
}

fn non_empty(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

pub(crate) fn now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32, ..Default::default() }
}

impl containerd_shim::Task for TaskService {
    fn create(&self, _ctx: &TtrpcContext, req: api::CreateTaskRequest) -> TtrpcResult<api::CreateTaskResponse> {
        Ok(self.create_task(&req)?)
    }

    fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        Ok(self.start_task(&req)?)
    }

    fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        Ok(self.state_task(&req)?)
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        self.get(&req.id)?;
        let info = containerd_shim::protos::types::task::ProcessInfo { pid: std::process::id(), ..Default::default() };
        Ok(api::PidsResponse { processes: vec![info], ..Default::default() })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        self.kill_task(&req)?;
        Ok(api::Empty::default())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        Ok(self.wait_task(&req)?)
    }

    fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> TtrpcResult<api::DeleteResponse> {
        Ok(self.delete_task(&req)?)
    }

    /// Task metrics (`ctr task metrics`, CRI's ContainerStats, so `kubectl top`): cgroup v1 metrics with
    /// the guest's CPU time from its cgroup (none without one).
    fn stats(&self, _ctx: &TtrpcContext, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        use containerd_shim::protos::cgroups::metrics::{CPUStat, CPUUsage, Metrics, Throttle};
        let c = self.get(&req.id)?;
        let mut metrics = Metrics::new();
        if let Some(cg) = &c.cgroup {
            let u = cg.cpu_usage();
            let usage = CPUUsage { total: u.total, kernel: u.kernel, user: u.user, per_cpu: u.per_cpu, ..Default::default() };
            let throttling = Throttle {
                periods: u.periods,
                throttled_periods: u.throttled_periods,
                throttled_time: u.throttled_time,
                ..Default::default()
            };
            metrics.cpu = MessageField::some(CPUStat {
                usage: MessageField::some(usage),
                throttling: MessageField::some(throttling),
                ..Default::default()
            });
        }
        let stats = containerd_shim::util::convert_to_any(Box::new(metrics))?;
        Ok(api::StatsResponse { stats: MessageField::some(stats), ..Default::default() })
    }

    fn connect(&self, _ctx: &TtrpcContext, _req: api::ConnectRequest) -> TtrpcResult<api::ConnectResponse> {
        let pid = std::process::id();
        Ok(api::ConnectResponse { shim_pid: pid, task_pid: pid, version: env!("CARGO_PKG_VERSION").into(), ..Default::default() })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        if self.containers.lock().unwrap().is_empty() {
            self.exit.signal();
        }
        Ok(api::Empty::default())
    }
}

/// The task state machine driven as containerd drives it, with no containerd and no root: the guest
/// is a pod's pause container (`run`'s stub guest: nothing runs, it ends when signalled), or a module
/// that fails to load; the bundle has no rootfs mounts, no cgroup, no events publisher.
#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::time::Duration;

    use containerd_shim::protos::ttrpc;

    use super::*;

    fn service() -> TaskService {
        TaskService::new(Arc::new(ExitSignal::default()), "test".into(), String::new(), None)
    }

    fn bundle(config: serde_json::Value) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs/app")).unwrap();
        std::fs::write(dir.path().join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
        dir
    }

    fn spec(args: &[&str]) -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": args, "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
        })
    }

    /// A pod's sandbox container: the stub guest.
    fn pause_bundle() -> tempfile::TempDir {
        let mut c = spec(&["/pause"]);
        c["annotations"] = serde_json::json!({"io.kubernetes.cri.container-type": "sandbox"});
        bundle(c)
    }

    fn create(t: &TaskService, id: &str, bundle: &Path) -> Result<api::CreateTaskResponse> {
        t.create_task(&api::CreateTaskRequest { id: id.into(), bundle: bundle.to_string_lossy().into_owned(), ..Default::default() })
    }

    fn start(t: &TaskService, id: &str) -> Result<api::StartResponse> {
        t.start_task(&api::StartRequest { id: id.into(), ..Default::default() })
    }

    fn kill(t: &TaskService, id: &str, signal: u32) -> Result<()> {
        t.kill_task(&api::KillRequest { id: id.into(), signal, ..Default::default() })
    }

    fn wait(t: &TaskService, id: &str) -> Result<api::WaitResponse> {
        t.wait_task(&api::WaitRequest { id: id.into(), ..Default::default() })
    }

    fn state(t: &TaskService, id: &str) -> Result<api::StateResponse> {
        t.state_task(&api::StateRequest { id: id.into(), ..Default::default() })
    }

    fn delete(t: &TaskService, id: &str) -> Result<api::DeleteResponse> {
        t.delete_task(&api::DeleteRequest { id: id.into(), ..Default::default() })
    }

    fn status(t: &TaskService, id: &str) -> Status {
        state(t, id).unwrap().status.enum_value().unwrap()
    }

    /// What containerd sees of an error: the ttrpc status code.
    fn code(e: Error) -> ttrpc::Code {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => s.code(),
            e => panic!("not a status: {e:?}"),
        }
    }

    #[test]
    fn create_start_kill_wait_delete() {
        let t = service();
        let b = pause_bundle();
        let pid = std::process::id();

        assert_eq!(create(&t, "c1", b.path()).unwrap().pid, pid, "the guest runs in the shim's process");
        let s = state(&t, "c1").unwrap();
        assert_eq!(s.status, Status::CREATED.into());
        assert_eq!((s.id.as_str(), s.bundle.as_str(), s.pid), ("c1", b.path().to_str().unwrap(), pid));

        assert_eq!(start(&t, "c1").unwrap().pid, pid);
        assert_eq!(status(&t, "c1"), Status::RUNNING);

        kill(&t, "c1", SIGTERM).unwrap();
        let w = wait(&t, "c1").unwrap();
        assert_eq!(w.exit_status, 128 + 15, "a guest stopped by SIGTERM exits 143");
        assert!(w.exited_at.is_some());
        let s = state(&t, "c1").unwrap();
        assert_eq!((s.status, s.exit_status), (Status::STOPPED.into(), 143));
        assert_eq!(s.exited_at, w.exited_at, "state and wait tell the same exit");
        assert_eq!(wait(&t, "c1").unwrap().exit_status, 143, "wait on a stopped task answers at once, again");

        let d = delete(&t, "c1").unwrap();
        assert_eq!((d.exit_status, d.exited_at.clone()), (143, w.exited_at));
        assert!(matches!(state(&t, "c1").unwrap_err(), Error::NotFound(_)), "deleted tasks are gone");
        assert!(t.containers.lock().unwrap().is_empty());
    }

    #[test]
    fn sigkill_exits_137_and_signal_0_only_probes() {
        let t = service();
        let b = pause_bundle();
        create(&t, "c", b.path()).unwrap();
        start(&t, "c").unwrap();
        kill(&t, "c", 0).unwrap();
        assert_eq!(status(&t, "c"), Status::RUNNING, "signal 0 stops nothing");
        kill(&t, "c", SIGKILL).unwrap();
        assert_eq!(wait(&t, "c").unwrap().exit_status, 137);
    }

    #[test]
    fn sigint_exits_130() {
        let t = service();
        let b = pause_bundle();
        create(&t, "c", b.path()).unwrap();
        start(&t, "c").unwrap();
        kill(&t, "c", SIGINT).unwrap();
        assert_eq!(wait(&t, "c").unwrap().exit_status, 130);
    }

    #[test]
    fn a_signal_a_guest_cannot_take_is_refused_and_leaves_it_running() {
        let t = service();
        let b = pause_bundle();
        create(&t, "c", b.path()).unwrap();
        start(&t, "c").unwrap();
        let e = kill(&t, "c", libc::SIGUSR1 as u32).unwrap_err();
        assert_eq!(e.to_string(), format!("signal {} is not supported for a wasm guest", libc::SIGUSR1));
        assert_eq!(code(e), ttrpc::Code::FAILED_PRECONDITION);
        assert_eq!(status(&t, "c"), Status::RUNNING);
        kill(&t, "c", SIGKILL).unwrap();
        wait(&t, "c").unwrap();
    }

    #[test]
    fn starting_twice_is_refused() {
        let t = service();
        let b = pause_bundle();
        create(&t, "c", b.path()).unwrap();
        start(&t, "c").unwrap();
        let e = start(&t, "c").unwrap_err();
        assert_eq!(e.to_string(), "c: container already started");
        assert_eq!(code(e), ttrpc::Code::FAILED_PRECONDITION);
        assert_eq!(status(&t, "c"), Status::RUNNING, "the refused start changed nothing");

        kill(&t, "c", SIGTERM).unwrap();
        wait(&t, "c").unwrap();
        assert!(matches!(start(&t, "c").unwrap_err(), Error::FailedPrecondition(_)), "a stopped task is not restarted");
    }

    #[test]
    fn killing_a_stopped_task_is_not_found_and_changes_nothing() {
        let t = service();
        let b = pause_bundle();
        create(&t, "c", b.path()).unwrap();
        start(&t, "c").unwrap();
        kill(&t, "c", SIGTERM).unwrap();
        wait(&t, "c").unwrap();
        let e = kill(&t, "c", SIGKILL).unwrap_err();
        assert_eq!(e.to_string(), "c: process already finished: no such container");
        assert_eq!(code(e), ttrpc::Code::NOT_FOUND, "what containerd ignores on `kill --all` and delete");
        assert_eq!(state(&t, "c").unwrap().exit_status, 143, "the exit status stays that of the first signal");
    }

    #[test]
    fn a_created_task_cannot_be_killed_but_can_be_deleted() {
        let t = service();
        let b = pause_bundle();
        create(&t, "c", b.path()).unwrap();
        let e = kill(&t, "c", SIGTERM).unwrap_err();
        assert_eq!(e.to_string(), "c: container not started");
        assert_eq!(code(e), ttrpc::Code::FAILED_PRECONDITION);
        assert_eq!(status(&t, "c"), Status::CREATED);

        let d = delete(&t, "c").unwrap();
        assert_eq!(d.exit_status, 0);
        assert!(matches!(start(&t, "c").unwrap_err(), Error::NotFound(_)));
    }

    #[test]
    fn deleting_a_running_task_kills_it_first() {
        let t = service();
        let b = pause_bundle();
        create(&t, "c", b.path()).unwrap();
        start(&t, "c").unwrap();
        let d = delete(&t, "c").unwrap();
        assert_eq!(d.exit_status, 137, "delete stops the guest with SIGKILL and waits for it");
        assert!(d.exited_at.is_some());
        assert!(matches!(wait(&t, "c").unwrap_err(), Error::NotFound(_)));
    }

    #[test]
    fn wait_blocks_until_the_guest_ends() {
        let t = service();
        let b = pause_bundle();
        create(&t, "c", b.path()).unwrap();
        start(&t, "c").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let t = t.clone();
            std::thread::spawn(move || tx.send(wait(&t, "c").map(|w| w.exit_status)).unwrap())
        };
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "wait answered while the guest runs");
        kill(&t, "c", SIGTERM).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap(), 143);
        waiter.join().unwrap();
    }

    #[test]
    fn ids_are_unique_per_shim_and_tasks_are_independent() {
        let t = service();
        let (b1, b2) = (pause_bundle(), pause_bundle());
        create(&t, "a", b1.path()).unwrap();
        let e = create(&t, "a", b2.path()).unwrap_err();
        assert_eq!(e.to_string(), "a: container already exists");
        assert_eq!(code(e), ttrpc::Code::ALREADY_EXISTS);
        assert_eq!(state(&t, "a").unwrap().bundle, b1.path().to_str().unwrap(), "the first one is untouched");

        create(&t, "b", b2.path()).unwrap();
        start(&t, "a").unwrap();
        start(&t, "b").unwrap();
        kill(&t, "a", SIGKILL).unwrap();
        assert_eq!(wait(&t, "a").unwrap().exit_status, 137);
        assert_eq!(status(&t, "b"), Status::RUNNING, "killing one task leaves the other");
        delete(&t, "a").unwrap();
        kill(&t, "b", SIGTERM).unwrap();
        assert_eq!(wait(&t, "b").unwrap().exit_status, 143);
        assert_eq!(delete(&t, "b").unwrap().exit_status, 143);
    }

    #[test]
    fn unknown_ids_exec_and_terminals_are_refused() {
        let t = service();
        for e in [
            start(&t, "nope").map(drop),
            kill(&t, "nope", SIGKILL),
            wait(&t, "nope").map(drop),
            state(&t, "nope").map(drop),
            delete(&t, "nope").map(drop),
        ] {
            let e = e.unwrap_err();
            assert_eq!(e.to_string(), "nope: no such container");
            assert_eq!(code(e), ttrpc::Code::NOT_FOUND);
        }

        let b = pause_bundle();
        create(&t, "c", b.path()).unwrap();
        let exec = "exec-1".to_string();
        let refused = [
            t.start_task(&api::StartRequest { id: "c".into(), exec_id: exec.clone(), ..Default::default() }).map(drop),
            t.kill_task(&api::KillRequest { id: "c".into(), exec_id: exec.clone(), signal: SIGKILL, ..Default::default() }),
            t.wait_task(&api::WaitRequest { id: "c".into(), exec_id: exec.clone(), ..Default::default() }).map(drop),
            t.state_task(&api::StateRequest { id: "c".into(), exec_id: exec.clone(), ..Default::default() }).map(drop),
            t.delete_task(&api::DeleteRequest { id: "c".into(), exec_id: exec, ..Default::default() }).map(drop),
        ];
        for e in refused {
            let e = e.unwrap_err();
            assert_eq!(e.to_string(), "exec is not supported by the wasmcell shim");
            assert_eq!(code(e), ttrpc::Code::UNIMPLEMENTED);
        }
        assert_eq!(status(&t, "c"), Status::CREATED, "refused execs leave the task as it was");

        let req = api::CreateTaskRequest {
            id: "tty".into(),
            bundle: b.path().to_string_lossy().into_owned(),
            terminal: true,
            ..Default::default()
        };
        assert_eq!(code(t.create_task(&req).unwrap_err()), ttrpc::Code::UNIMPLEMENTED);
        assert!(state(&t, "tty").is_err());
    }

    #[test]
    fn a_bundle_that_cannot_be_read_creates_nothing() {
        let t = service();
        let empty = tempfile::tempdir().unwrap();
        let e = create(&t, "c", empty.path()).unwrap_err();
        assert!(e.to_string().starts_with("cannot read "), "{e}");
        assert!(matches!(state(&t, "c").unwrap_err(), Error::NotFound(_)));

        let missing = bundle(spec(&["/app/missing.wasm"]));
        let e = create(&t, "c", missing.path()).unwrap_err();
        assert_eq!(e.to_string(), "/app/missing.wasm: no such file in the image");
        assert_eq!(code(e), ttrpc::Code::INVALID_ARGUMENT);

        let b = pause_bundle();
        create(&t, "c", b.path()).expect("the id is free after a failed create");
    }

    #[test]
    fn a_guest_that_fails_to_load_leaves_a_stopped_task_and_says_why_on_stderr() {
        let t = service();
        let b = bundle(spec(&["/app/bad.wasm"]));
        std::fs::write(b.path().join("rootfs/app/bad.wasm"), b"not wasm at all").unwrap();
        let stderr = b.path().join("stderr");
        let path = std::ffi::CString::new(stderr.to_str().unwrap()).unwrap();
        // SAFETY: a valid, NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let req = api::CreateTaskRequest {
            id: "c".into(),
            bundle: b.path().to_string_lossy().into_owned(),
            stderr: stderr.to_string_lossy().into_owned(),
            ..Default::default()
        };
        t.create_task(&req).unwrap();
        // ctr's end of the fifo: read until the shim closes it.
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            std::fs::File::open(&stderr).unwrap().read_to_string(&mut text).unwrap();
            text
        });

        let e = start(&t, "c").unwrap_err();
        let expected = e.exit_code();
        assert_ne!(expected, 0);
        let text = reader.join().unwrap();
        assert_eq!(text, format!("wasmcell: {e}\n"), "the reason is on the container's stderr, then the fifo is closed");

        let s = state(&t, "c").unwrap();
        assert_eq!((s.status, s.exit_status), (Status::STOPPED.into(), expected), "a failed start is a stopped task");
        assert_eq!(wait(&t, "c").unwrap().exit_status, expected);
        assert!(matches!(start(&t, "c").unwrap_err(), Error::FailedPrecondition(_)));
        assert_eq!(delete(&t, "c").unwrap().exit_status, expected, "and it can be deleted");
    }

    #[test]
    fn exit_statuses_are_those_of_a_native_process() {
        assert_eq!(exit_status(0, 0), 0);
        assert_eq!(exit_status(3, 0), 3);
        assert_eq!(exit_status(134, 0), 134, "a trap, as SIGABRT");
        assert_eq!(exit_status(256 + 7, 0), 7, "only the low byte, as wait(2)");
        assert_eq!(exit_status(run::KILLED, SIGTERM), 143);
        assert_eq!(exit_status(run::KILLED, SIGKILL), 137);
        assert_eq!(exit_status(run::KILLED, SIGHUP), 129);
        assert_eq!(exit_status(run::OUT_OF_MEMORY, 0), 137, "as the OOM killer's SIGKILL");
        assert_eq!(exit_status(run::OUT_OF_MEMORY, SIGTERM), 137, "the memory limit, not the signal, ended it");
        assert_eq!(exit_status(5, SIGTERM), 5, "a guest that exits on its own after a signal keeps its code");
        assert_eq!(exit_status(run::KILLED, 0), 255, "stopped with no signal recorded");
    }
}
