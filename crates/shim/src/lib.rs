//! wasmcell-shim: `containerd-shim-wasmcell-v1`, containerd's shim v2 API (runtime type
//! `io.containerd.wasmcell.v1`) over wasmcell's runtime and serving loop. The only crate that knows
//! containerd.
//!
//! - [`spec`]: the bundle's OCI runtime spec → the module to run + a `SandboxPolicy` (the one place the
//!   shim grants anything).
//! - [`run`]: a container's guest on wasmcell's runtime (a command) or serving loop (a wasi:http
//!   component).
//! - [`task`]: the ttrpc task service containerd drives (create, start, state, pids, kill, wait, delete).
//! - [`error`]: the typed error and its one mapping to a ttrpc status.
//!
//! Built on the sync flavour of containerd/rust-extensions' `containerd-shim` crate (see ARCHITECTURE.md
//! for why not runwasi's `containerd-shim-wasm`).

pub mod error;
pub mod run;
pub mod spec;
pub mod task;

use std::sync::Arc;

use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, ExitSignal, Flags, StartOpts};

pub use error::Error;

/// The runtime type containerd names this shim by.
pub const RUNTIME_ID: &str = "io.containerd.wasmcell.v1";

/// The annotation CRI puts on every container of a pod: one shim serves the whole pod.
const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// The shim binary's `main`: parses containerd's flags and serves (or starts / deletes) a shim.
pub fn main() {
    containerd_shim::run::<Shim>(RUNTIME_ID, Some(Config { no_reaper: true, ..Config::default() }))
}

/// One shim process.
pub struct Shim {
    exit: Arc<ExitSignal>,
    namespace: String,
}

impl containerd_shim::Shim for Shim {
    type T = task::TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Shim { exit: Arc::new(ExitSignal::default()), namespace: args.namespace.clone() }
    }

    /// Spawns the long-lived shim process (or finds the one already serving this pod) and returns its
    /// ttrpc address. containerd runs this in the bundle directory.
    fn start_shim(&mut self, opts: StartOpts) -> Result<String, containerd_shim::Error> {
        let grouping = pod_id().unwrap_or_else(|| opts.id.clone());
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    /// containerd's clean-up after a shim died: undo the rootfs mount of the bundle (the cwd).
    fn delete_shim(&mut self) -> Result<DeleteResponse, containerd_shim::Error> {
        if let Ok(cwd) = std::env::current_dir() {
            task::unmount(&cwd.join("rootfs"));
        }
        let mut resp = DeleteResponse::new();
        resp.exit_status = 128 + libc::SIGKILL as u32;
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        resp.exited_at = containerd_shim::protos::protobuf::MessageField::some(
            containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
                ..Default::default()
            },
        );
        Ok(resp)
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        task::TaskService::new(self.exit.clone(), self.namespace.clone(), Some(publisher))
    }
}

/// The pod this container belongs to, from the bundle's spec (the cwd at `start`).
fn pod_id() -> Option<String> {
    let config = std::fs::read("config.json").ok()?;
    let spec: serde_json::Value = serde_json::from_slice(&config).ok()?;
    spec.get("annotations")?.get(SANDBOX_ID_ANNOTATION)?.as_str().map(str::to_string)
}
