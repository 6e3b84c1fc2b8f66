//! `containerd-shim-wasmcell-v1` under a real containerd (Debian's 1.6) and real `ctr`: an image written by
//! `wasmcell save` is imported, then run with `ctr run --runtime io.containerd.wasmcell.v1`. containerd
//! finds the shim on its PATH (the cargo bin dir is put in front). Every test ends by checking that no shim
//! process and no mount is left behind.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::images::layout::{self, Layout};
use crate::services::containerd::{Containerd, pids_referencing};
use crate::services::registry::Registry;
use crate::services::{check as ok, free_port, wait_for};
use crate::{Cell, guests, scratch};
use wasmcell_shim::containerd::{Client, SPEC_TYPE_URL, api};

const RUNTIME: &str = "io.containerd.wasmcell.v1";
const IMAGE: &str = "localhost/wasmcell-test/apps:1";

/// A containerd that finds the shim, with the compat image `IMAGE` imported.
struct Setup {
    containerd: Containerd,
    _home: tempfile::TempDir,
}

fn shim_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_containerd-shim-wasmcell-v1")).parent().unwrap().to_path_buf()
}

fn setup() -> Setup {
    let home = scratch();
    let containerd = Containerd::start_with_env(&[&shim_dir()], &[("WASMCELL_HOME", home.path().as_os_str())]);
    import_apps(&containerd);
    Setup { containerd, _home: home }
}

/// A compat image (wasm files in a linux/amd64 rootfs), loaded into wasmcell, written out by `wasmcell save`
/// and imported (and unpacked) by `ctr images import`.
fn import_apps(containerd: &Containerd) {
    let dir = scratch();
    let saved = apps_archive(dir.path());
    ok("ctr images import", containerd.ctr(&["images", "import", saved.to_str().unwrap()]));
}

/// The compat image `IMAGE` as `wasmcell save` writes it, in `dir`.
fn apps_archive(dir: &Path) -> PathBuf {
    let read = |p: &str| std::fs::read(p).unwrap();
    let (hello, component, exit, sleep, http) =
        (read(guests::HELLO_C), read(guests::HELLO_COMPONENT), read(guests::EXIT_C), read(guests::SLEEP_C), read(guests::HTTP_HELLO));
    let (env, fs, memhog, entries) = (read(guests::ENV_C), read(guests::FS_C), read(guests::MEMHOG_C), read(guests::ENTRIES_WASM));
    let spin = read(guests::SPIN_WAT);
    let files: &[(&str, &[u8])] = &[
        ("app/hello.wasm", &hello),
        ("app/hello-component.wasm", &component),
        ("app/exit.wasm", &exit),
        ("app/sleep.wasm", &sleep),
        ("app/http.wasm", &http),
        ("app/env.wasm", &env),
        ("app/fs.wasm", &fs),
        ("app/memhog.wasm", &memhog),
        ("app/entries.wasm", &entries),
        ("app/spin.wat", &spin),
        ("app/data/in-image.txt", b"from the image\n"),
    ];
    compat_archive(dir, IMAGE, &with_device_node(files), &["/app/hello.wasm"], &["FROM_IMAGE=yes"])
}

/// A compat image `name` of one gzipped rootfs `layer`, loaded into wasmcell and written out by
/// `wasmcell save`, in `dir`.
fn compat_archive(dir: &Path, name: &str, layer: &[u8], entrypoint: &[&str], env: &[&str]) -> PathBuf {
    let mut l = Layout::new(&dir.join("layout"));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(layer).read_to_end(&mut raw).unwrap();
    let mut config = layout::compat_config("linux", "amd64", entrypoint, env);
    config["rootfs"]["diff_ids"] = json!([layout::digest(&raw)]);
    let m = l.manifest(
        config,
        "application/vnd.oci.image.config.v1+json",
        &[("application/vnd.oci.image.layer.v1.tar+gzip", layer.to_vec())],
        json!({"module.wasm.image/variant": "compat"}),
    );
    l.tag(&m, "apps", Some(name));
    let input = dir.join("in.tar");
    l.tar(&input);
    let cell = Cell::new();
    cell.run(&["load", "-i", input.to_str().unwrap()]).expect_ok();
    let saved = dir.join("saved.tar");
    cell.run(&["save", "-o", saved.to_str().unwrap(), name]).expect_ok();
    saved
}

/// A gzipped tar of `files` plus `app/random`, a character device 1:9 (the host's /dev/urandom): what a
/// hostile compat image may carry; containerd, as root, creates it when it unpacks the layer.
fn with_device_node(files: &[(&str, &[u8])]) -> Vec<u8> {
    layout::tar_gz_with(files, |b| {
        let mut dev = tar::Header::new_gnu();
        dev.set_entry_type(tar::EntryType::Char);
        dev.set_device_major(1).unwrap();
        dev.set_device_minor(9).unwrap();
        dev.set_mode(0o666);
        dev.set_size(0);
        b.append_data(&mut dev, "app/random", &[][..]).unwrap();
    })
}

/// `wasmcell push` of `files` as CNCF Wasm artifacts (`NAME:1` each) to a real registry, then `wasmcell
/// save` of them into one archive in `dir`; their references and the archive.
fn artifacts_archive(registry: &Registry, dir: &Path, files: &[(&str, &str)]) -> (Vec<String>, PathBuf) {
    let cell = Cell::new();
    let refs: Vec<String> = files.iter().map(|(name, _)| format!("{}/team/{name}:1", registry.addr())).collect();
    for ((_, file), r) in files.iter().zip(&refs) {
        cell.run(&["push", file, r]).expect_ok();
    }
    let tar = dir.join("artifacts.tar");
    cell.run(&[&["save", "-o", tar.to_str().unwrap()][..], &refs.iter().map(String::as_str).collect::<Vec<_>>()].concat()).expect_ok();
    (refs, tar)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Setup {
    /// `ctr run --rm --runtime io.containerd.wasmcell.v1 IMAGE ID ARGS...`.
    fn run(&self, id: &str, args: &[&str]) -> Output {
        self.run_with(id, &[], args)
    }

    /// Where ctr makes the containers' stdio fifos: in the private dir, not ctr's default
    /// /run/containerd/fifo (ctr leaves an empty directory there per container).
    fn fifo_dir(&self) -> String {
        self.containerd.dir().join("fifo").to_string_lossy().into_owned()
    }

    /// `ctr run --rm --runtime ... FLAGS IMAGE ID ARGS...`.
    fn run_with(&self, id: &str, flags: &[&str], args: &[&str]) -> Output {
        let fifos = self.fifo_dir();
        self.containerd.ctr(&[&["run", "--rm", "--fifo-dir", &fifos, "--runtime", RUNTIME], flags, &[IMAGE, id], args].concat())
    }

    fn run_command(&self, id: &str, args: &[&str]) -> Command {
        let mut c = self.containerd.ctr_command();
        c.args(["run", "--rm", "--fifo-dir", &self.fifo_dir(), "--runtime", RUNTIME, IMAGE, id]).args(args);
        c
    }

    fn task_status(&self, id: &str) -> Option<String> {
        let out = self.containerd.ctr(&["task", "ls"]);
        text(&out.stdout)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
    }

    fn wait_status(&self, id: &str, status: &str) {
        let found = wait_for(Duration::from_secs(30), || (self.task_status(id).as_deref() == Some(status)).then_some(()));
        assert!(found.is_some(), "task {id} never became {status}: {:?}\n{}", self.task_status(id), self.containerd.log());
    }

    /// No shim process is left, and nothing is mounted under containerd's directory.
    fn assert_nothing_left(&self) {
        let me = self.containerd.pid();
        let left = wait_for(Duration::from_secs(10), || {
            let pids: Vec<u32> = pids_referencing(self.containerd.dir()).into_iter().filter(|p| *p != me).collect();
            pids.is_empty().then_some(())
        });
        if left.is_none() {
            let who: Vec<String> = pids_referencing(self.containerd.dir())
                .into_iter()
                .filter(|p| *p != me)
                .map(|p| format!("{p}: {}", std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default().replace('\0', " ")))
                .collect();
            panic!("processes left behind: {who:#?}\n{}", self.containerd.log());
        }
        // No container's cgroup: `ctr run` names /NAMESPACE/ID, and the shim removes it on delete, with the
        // /NAMESPACE parent it made. (Containers that ran at once share that parent, and only the shim
        // that made it removes it: it may remain, empty, as it does with runc. The test removes it.)
        for controller in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let ns = controller.path().join(self.containerd.namespace());
            let left: Vec<PathBuf> =
                std::fs::read_dir(&ns).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
            assert!(left.is_empty(), "cgroups left behind: {left:?}");
            let _ = std::fs::remove_dir(&ns);
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.containerd.dir().to_string_lossy().into_owned();
        let under: Vec<&str> = mounts.lines().filter(|l| l.contains(&dir)).collect();
        assert!(under.is_empty(), "mounts left behind: {under:#?}");
    }
}

#[test]
fn shim_runs_a_module_and_a_component_with_their_output_and_exit_code() {
    let s = setup();
    let out = ok("ctr run hello", s.run("hello", &[]));
    assert_eq!(text(&out.stdout), "hello from C\n");

    let out = ok("ctr run component", s.run("component", &["/app/hello-component.wasm"]));
    assert_eq!(text(&out.stdout), "hello from C\n");

    let out = s.run("exit", &["/app/exit.wasm", "7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));

    // Bad input: a module that is not in the image is one clear error, and nothing is left.
    let out = s.run("missing", &["/app/nope.wasm"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/app/nope.wasm: no such file in the image"), "{}", text(&out.stderr));
    let _ = s.containerd.ctr(&["containers", "rm", "missing"]);
    s.assert_nothing_left();
}

/// A minimal OCI runtime spec, as CRI would write for a wasm container (CRI adds mounts and namespaces
/// the shim ignores).
fn runtime_spec(args: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ociVersion": "1.0.2",
        "process": {"args": args, "env": ["PATH=/usr/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "linux": {},
    }))
    .unwrap()
}

/// The CNCF Wasm artifact (config `application/vnd.wasm.config.v0+json`, one `application/wasm` layer),
/// pushed by `wasmcell push`, saved by `wasmcell save` and imported into containerd's content store. ctr
/// cannot run it (containerd 1.6 cannot unpack the layer), so the test does what CRI does: a container
/// record naming the image with no snapshot, over containerd's gRPC API, then `ctr task start`.
#[test]
fn shim_runs_a_wasm_layer_image_from_containerds_content_store() {
    let s = setup();
    let dir = scratch();
    let registry = Registry::start();
    let (refs, tar) = artifacts_archive(&registry, dir.path(), &[("hello", guests::HELLO_C), ("exit", guests::EXIT_C)]);
    let (hello, exit) = (&refs[0], &refs[1]);
    ok("ctr images import", s.containerd.ctr(&["images", "import", "--all-platforms", "--no-unpack", tar.to_str().unwrap()]));

    // Why the shim reads the content store: ctr's own run fails before any shim is called.
    let out = s.containerd.ctr(&["run", "--rm", "--fifo-dir", &s.fifo_dir(), "--runtime", RUNTIME, hello, "via-ctr"]);
    assert!(!out.status.success() && text(&out.stderr).contains("mismatched image rootfs and manifest layers"), "{}", text(&out.stderr));

    let client = Client::connect(&s.containerd.socket().to_string_lossy(), s.containerd.namespace()).unwrap();
    let create = |id: &str, image: &str, args: &[&str]| {
        let container = api::Container {
            id: id.to_string(),
            image: image.to_string(),
            runtime: Some(api::Runtime { name: RUNTIME.to_string(), options: None }),
            spec: Some(api::Any { type_url: SPEC_TYPE_URL.to_string(), value: runtime_spec(args) }),
            ..Default::default()
        };
        client.create_container(container).unwrap();
    };
    let start = |id: &str| s.containerd.ctr(&["task", "start", "--fifo-dir", &s.fifo_dir(), id]);

    // No args: the layer is the module, its title argv[0].
    create("artifact-hello", hello, &[]);
    let out = ok("ctr task start artifact-hello", start("artifact-hello"));
    assert_eq!(text(&out.stdout), "hello from C\n");

    // Args as a pod's command gives them: the guest's exit code reaches ctr.
    create("artifact-exit", exit, &["exit.wasm", "7"]);
    let out = start("artifact-exit");
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));

    // A compat image whose rootfs lacks args[0] still says so (no layer to fall back on).
    create("compat-missing", IMAGE, &["/app/nope.wasm"]);
    let out = start("compat-missing");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/app/nope.wasm: no such file in the image"), "{}", text(&out.stderr));

    // An image containerd does not have: one line naming it.
    create("artifact-gone", "localhost/none/such:1", &[]);
    let out = start("artifact-gone");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("containerd: image \"localhost/none/such:1\": not found"), "{}", text(&out.stderr));

    for id in ["artifact-hello", "artifact-exit", "compat-missing", "artifact-gone"] {
        let _ = s.containerd.ctr(&["task", "delete", id]);
        client.delete_container(id).unwrap();
    }
    s.assert_nothing_left();
}

/// A Kubernetes pod through containerd's CRI plugin, driven as the kubelet drives it (RunPodSandbox,
/// CreateContainer, StartContainer, ContainerStatus, StopContainer, RemoveContainer, StopPodSandbox,
/// RemovePodSandbox) with deploy/containerd-config.toml's `wasmcell` handler: a CNCF artifact and compat
/// images, exit codes, the container log kubectl reads, OOMKilled, SIGTERM, one shim for the pod.
#[test]
fn shim_runs_a_kubernetes_pod_through_containerds_cri() {
    use crate::services::cri::*;
    let home = scratch();
    let snippet = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/containerd-config.toml")).unwrap();
    // The pod's pause image: any image containerd can unpack (the shim runs nothing for it).
    let registry = Registry::start();
    let config = format!(
        "[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{IMAGE}\"\n\n{snippet}\n\
         [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{0}\"]\n  endpoint = [\"http://{0}\"]\n",
        registry.addr()
    );
    // The pod's cgroup, made by the kubelet before the pod (cgroupfs driver); its containers' go inside.
    // (Declared before containerd: if the test fails, containerd and the shim are gone before it is removed.)
    let pod_cgroup = format!("wasmcell-test-{}-pod", std::process::id());
    let cpu_pod = Path::new("/sys/fs/cgroup/cpu").join(&pod_cgroup);
    std::fs::create_dir(&cpu_pod).unwrap();
    let _remove_on_failure = PodCgroup(pod_cgroup.clone());
    let containerd = Containerd::start_with_cri_and_env(&config, &[&shim_dir()], &[("WASMCELL_HOME", home.path().as_os_str())]);
    let dir = scratch();
    let apps = apps_archive(dir.path());
    ok("ctr -n k8s.io images import", containerd.ctr_in("k8s.io", &["images", "import", apps.to_str().unwrap()]));
    let (refs, artifacts) = artifacts_archive(&registry, dir.path(), &[("hello", guests::HELLO_C)]);
    // containerd 1.6 cannot unpack a wasm layer: the image is stored, not unpacked (CRI then gives the
    // container an empty snapshot and the shim reads the layer from the content store).
    let import = ["images", "import", "--all-platforms", "--no-unpack", artifacts.to_str().unwrap()];
    ok("ctr -n k8s.io images import artifact", containerd.ctr_in("k8s.io", &import));

    let cri = Cri::connect(&containerd);
    // The kubelet's own pull (PullImage) unpacks, which containerd 1.6 cannot do for a wasm layer: such
    // images are imported without unpacking instead (above; the README says so).
    if let Err(e) = cri.pull(&refs[0]) {
        assert!(e.to_string().contains("mismatched image rootfs and manifest layers"), "{e}");
    }
    let logs = dir.path().join("pod-logs");
    let host = NamespaceOption { network: NODE, pid: 1, ipc: NODE };
    let pod_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata { name: "wasm-pod".into(), uid: "uid-wasm-pod".into(), namespace: "default".into(), attempt: 0 }),
        hostname: "wasm-pod".into(),
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/{pod_cgroup}"),
            security_context: Some(LinuxSandboxSecurityContext { namespace_options: Some(host) }),
        }),
        ..Default::default()
    };
    let pod = cri.run_pod(&pod_config, "wasmcell").unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", containerd.log()));
    let container = |name: &str, image: &str, command: &[&str], memory: i64, cpu_quota: i64| ContainerConfig {
        metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(ImageSpec { image: image.into() }),
        command: command.iter().map(|c| c.to_string()).collect(),
        envs: vec![KeyValue { key: "POD".into(), value: "wasm-pod".into() }],
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources { memory_limit_in_bytes: memory, cpu_quota, cpu_period: 100_000 }),
        }),
        ..Default::default()
    };
    let run = |name: &str, image: &str, command: &[&str], memory: i64, cpu_quota: i64| {
        let id = cri
            .create(&pod, container(name, image, command, memory, cpu_quota), &pod_config)
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", containerd.log()));
        cri.start(&id).unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", containerd.log()));
        id
    };
    let exited = |id: &str| {
        wait_for(Duration::from_secs(30), || cri.status(id).ok().filter(|s| s.state == EXITED))
            .unwrap_or_else(|| panic!("container {id} never exited: {:?}", cri.status(id)))
    };
    // What `kubectl logs` shows: CRI's log file, one `TIME STREAM F LINE` per line.
    let log = |name: &str| std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();

    let hello = run("hello", &refs[0], &["hello.wasm"], 0, 0);
    let status = exited(&hello);
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"), "{status:?}");
    assert!(log("hello").lines().any(|l| l.ends_with(" stdout F hello from C")), "{}", log("hello"));

    let exit = run("exit", IMAGE, &["/app/exit.wasm", "3"], 0, 0);
    assert_eq!(exited(&exit).exit_code, 3);

    // The pod spec's memory limit is the guest's cap; CRI reports the OOM event as OOMKilled.
    let memhog = run("memhog", IMAGE, &["/app/memhog.wasm", "64"], 32 << 20, 0);
    let status = exited(&memhog);
    assert_eq!((status.exit_code, status.reason.as_str()), (137, "OOMKilled"), "{status:?}");
    assert!(log("memhog").contains("allocation failed after 31 MiB"), "{}", log("memhog"));

    // The container's CPU limit (half a CPU) is its cgroup's, inside the pod's, with its guest thread in it.
    let sleeper = run("sleeper", IMAGE, &["/app/sleep.wasm", "100"], 0, 50_000);
    let cg = cpu_pod.join(&sleeper);
    assert_eq!(std::fs::read_to_string(cg.join("cpu.cfs_quota_us")).unwrap().trim(), "50000");
    let joined =
        wait_for(Duration::from_secs(10), || (!std::fs::read_to_string(cg.join("tasks")).unwrap().trim().is_empty()).then_some(()));
    assert!(joined.is_some(), "no guest thread in {}", cg.display());
    // The kubelet's ContainerStats (`kubectl top`) gets the guest's CPU time from it.
    let stats = cri.stats(&sleeper).unwrap_or_else(|e| panic!("ContainerStats: {e}\n{}", containerd.log()));
    let cpu = stats.cpu.clone().unwrap_or_else(|| panic!("no CPU stats: {stats:?}"));
    assert!(cpu.timestamp > 0 && cpu.usage_core_nano_seconds.is_some(), "{cpu:?}");
    // StopContainer (a pod deleted, a rollout): SIGTERM, exit 143.
    cri.stop(&sleeper, 10).unwrap();
    assert_eq!(exited(&sleeper).exit_code, 143);

    // One shim process serves the whole pod (sandbox + 4 containers).
    let shims: Vec<u32> = pids_referencing(containerd.dir())
        .into_iter()
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default().contains("containerd-shim-wasmcell-v1"))
        .collect();
    assert_eq!(shims.len(), 1, "shims: {shims:?}");

    for id in [&hello, &exit, &memhog, &sleeper] {
        cri.remove(id).unwrap();
    }
    cri.stop_pod(&pod).unwrap();
    cri.remove_pod(&pod).unwrap();
    // The containers' cgroups are gone; the pod's own is the kubelet's to remove (here, the test's).
    let left: Vec<_> = std::fs::read_dir(&cpu_pod).unwrap().flatten().filter(|e| e.path().is_dir()).map(|e| e.path()).collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
    std::fs::remove_dir(&cpu_pod).unwrap();
    Setup { containerd, _home: home }.assert_nothing_left();
}

/// A test's pod cgroup, removed with whatever a failed test left inside it.
struct PodCgroup(String);

impl Drop for PodCgroup {
    fn drop(&mut self) {
        for hierarchy in ["cpu", "cpuacct"] {
            let pod = Path::new("/sys/fs/cgroup").join(hierarchy).join(&self.0);
            for child in std::fs::read_dir(&pod).into_iter().flatten().flatten().filter(|e| e.path().is_dir()) {
                let _ = std::fs::remove_dir(child.path());
            }
            let _ = std::fs::remove_dir(&pod);
        }
    }
}

#[test]
fn shim_kills_a_long_running_guest_with_sigterm_and_sigkill() {
    let s = setup();
    for (signal, code) in [("SIGTERM", 143), ("SIGKILL", 137)] {
        let id = format!("sleeper-{}", signal.to_lowercase());
        let child = s.run_command(&id, &["/app/sleep.wasm", "100"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        s.wait_status(&id, "RUNNING");
        let pids = ok("ctr task ps", s.containerd.ctr(&["task", "ps", &id]));
        assert!(text(&pids.stdout).lines().count() >= 2, "{}", text(&pids.stdout));
        ok("ctr task kill", s.containerd.ctr(&["task", "kill", "-s", signal, &id]));
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{signal}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "", "the guest was stopped before it woke");
    }
    s.assert_nothing_left();
}

/// A container that asks for a network namespace of its own (what `ctr run` sends without `--net-host`)
/// gets one: its listener is not on the host (it was, on the host's 0.0.0.0:8080), and answers inside.
#[test]
fn shim_gives_a_container_its_own_network_namespace() {
    let s = setup();
    ok("ctr run -d isolated", s.containerd.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, IMAGE, "isolated", "/app/http.wasm"]));
    s.wait_status("isolated", "RUNNING");
    // The serving thread of the pod's shim is in a network namespace that is not the host's.
    let pid = text(&s.containerd.ctr(&["task", "ls"]).stdout)
        .lines()
        .find(|l| l.split_whitespace().next() == Some("isolated"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        .expect("the task is listed");
    let serving = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "wasmcell-serve"))
        .expect("a serving thread");
    let ns = serving.path().join("ns/net");
    assert_ne!(std::fs::read_link(&ns).unwrap(), std::fs::read_link("/proc/self/ns/net").unwrap(), "the listener is in the host's network");
    let host = Command::new("curl").args(["-sS", "--max-time", "2", "http://127.0.0.1:8080/"]).output().unwrap();
    assert!(text(&host.stdout) != "hello from wasi:http\n", "the container's listener answered on the host");
    let inside = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["curl", "-sS", "--max-time", "10", "http://127.0.0.1:8080/"])
        .output()
        .unwrap();
    assert_eq!(text(&inside.stdout), "hello from wasi:http\n", "{}", text(&inside.stderr));
    ok("ctr task kill", s.containerd.ctr(&["task", "kill", "isolated"]));
    s.wait_status("isolated", "STOPPED");
    ok("ctr task delete", s.containerd.ctr(&["task", "delete", "isolated"]));
    ok("ctr containers rm", s.containerd.ctr(&["containers", "rm", "isolated"]));
    s.assert_nothing_left();
}

#[test]
fn shim_serves_an_http_component_until_sigterm() {
    let s = setup();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    ok(
        "ctr run -d http",
        s.containerd.ctr(&[
            "run",
            "-d",
            "--null-io",
            "--net-host",
            "--runtime",
            RUNTIME,
            "--env",
            &format!("WASMCELL_HTTP_ADDR={addr}"),
            IMAGE,
            "web",
            "/app/http.wasm",
        ]),
    );
    s.wait_status("web", "RUNNING");
    for _ in 0..3 {
        let out = ok("curl", Command::new("curl").args(["-sS", "--max-time", "10", &format!("http://{addr}/")]).output().unwrap());
        assert_eq!(text(&out.stdout), "hello from wasi:http\n");
    }
    ok("ctr task kill", s.containerd.ctr(&["task", "kill", "web"]));
    s.wait_status("web", "STOPPED");
    ok("ctr task delete", s.containerd.ctr(&["task", "delete", "web"]));
    ok("ctr containers rm", s.containerd.ctr(&["containers", "rm", "web"]));
    assert!(Command::new("curl").args(["-sS", "--max-time", "2", &format!("http://{addr}/")]).output().unwrap().status.code() != Some(0));
    s.assert_nothing_left();
}

/// WASI 0.3 under containerd: a command's exit code and a `wasi:http/handler@0.3.0` service, from a
/// compat image (the official testsuite's wasm32-wasip3 programs; skipped without the tarball).
#[test]
fn shim_runs_wasi_0_3_commands_and_services() {
    let (Some(exit), Some(service)) = (crate::wasi_testsuite::p3_test("cli-exit"), crate::wasi_testsuite::p3_test("http-service")) else {
        eprintln!("wasi 0.3 in the shim: SKIPPED, no ../shared/wasi-testsuite.tar.gz (or $WASMCELL_WASI_TESTSUITE)");
        return;
    };
    let s = setup();
    let dir = scratch();
    let image = "localhost/wasmcell-test/p3:1";
    let (exit, service) = (std::fs::read(exit).unwrap(), std::fs::read(service).unwrap());
    let layer = layout::tar_gz(&[("app/cli-exit.wasm", &exit), ("app/http-service.wasm", &service)]);
    let saved = compat_archive(dir.path(), image, &layer, &["/app/cli-exit.wasm"], &[]);
    ok("ctr images import", s.containerd.ctr(&["images", "import", saved.to_str().unwrap()]));

    let out = s.containerd.ctr(&["run", "--rm", "--fifo-dir", &s.fifo_dir(), "--runtime", RUNTIME, image, "p3-exit"]);
    assert_eq!(out.status.code(), Some(1), "cli-exit exits 1: {}", text(&out.stderr));

    let addr = format!("127.0.0.1:{}", free_port());
    let env = format!("WASMCELL_HTTP_ADDR={addr}");
    let run = ["run", "-d", "--null-io", "--net-host", "--runtime", RUNTIME, "--env", &env, image, "p3-web", "/app/http-service.wasm"];
    ok("ctr run -d p3 service", s.containerd.ctr(&run));
    s.wait_status("p3-web", "RUNNING");
    let url = format!("http://{addr}/");
    let out = wait_for(Duration::from_secs(10), || {
        let out = Command::new("curl").args(["-sS", "--max-time", "5", &url]).output().unwrap();
        out.status.success().then_some(out)
    })
    .expect("the 0.3 service never answered");
    assert_eq!(text(&out.stdout), "hey\n");
    ok("ctr task kill", s.containerd.ctr(&["task", "kill", "p3-web"]));
    s.wait_status("p3-web", "STOPPED");
    ok("ctr task delete", s.containerd.ctr(&["task", "delete", "p3-web"]));
    ok("ctr containers rm", s.containerd.ctr(&["containers", "rm", "p3-web"]));
    s.assert_nothing_left();
}

#[test]
fn shim_runs_twenty_containers_in_parallel() {
    let s = setup();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let s = &s;
                scope.spawn(move || s.run(&format!("par-{i}"), &[]))
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let out = ok(&format!("ctr run par-{i}"), h.join().unwrap());
            assert_eq!(text(&out.stdout), "hello from C\n");
        }
    });
    s.assert_nothing_left();
}

/// `linux.resources.cpu` holds for a wasm guest: its thread joins the container's cgroup (cgroup v1 here)
/// at the spec's cgroupsPath, the CFS quota throttles a guest that spins, the CPU time is accounted
/// there, and the cgroup is gone after the container.
#[test]
fn shim_puts_the_guest_in_the_containers_cgroup_under_its_cpu_limit() {
    let s = setup();
    let (cpu, cpuacct) = (Path::new("/sys/fs/cgroup/cpu"), Path::new("/sys/fs/cgroup/cpuacct"));
    assert!(cpu.join("cpu.cfs_quota_us").exists(), "this test needs the cgroup v1 cpu hierarchy at {}", cpu.display());
    // Bad input: a cgroupsPath that is none of the three forms is one clear line.
    let out = s.run_with("bad-cgroup", &["--cgroup", "a:b"], &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("linux.cgroupsPath \"a:b\": not a cgroup path"), "{}", text(&out.stderr));
    let _ = s.containerd.ctr(&["containers", "rm", "bad-cgroup"]);
    // `.` and `./` would be the shim's own cgroup (its limits would bind every guest of the pod): refused.
    for (i, path) in [".", "./"].into_iter().enumerate() {
        let id = format!("own-cgroup-{i}");
        let out = s.run_with(&id, &["--cgroup", path], &[]);
        assert!(!out.status.success(), "cgroupsPath {path:?} was accepted");
        assert!(text(&out.stderr).contains("not a cgroup path"), "{path:?}: {}", text(&out.stderr));
        let _ = s.containerd.ctr(&["containers", "rm", &id]);
    }
    let fifos = s.fifo_dir();
    let run = ["run", "-d", "--null-io", "--fifo-dir", &fifos, "--runtime", RUNTIME, "--cpu-quota", "20000", "--cpu-period", "100000"];
    ok("ctr run -d spinner", s.containerd.ctr(&[&run[..], &[IMAGE, "spinner", "/app/spin.wat"]].concat()));
    s.wait_status("spinner", "RUNNING");

    let cg = cpu.join(s.containerd.namespace()).join("spinner");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string();
    assert_eq!(read(&cg.join("cpu.cfs_quota_us")), "20000");
    assert_eq!(read(&cg.join("cpu.cfs_period_us")), "100000");
    // The guest's thread, of a shim process, is in it (and nothing else is).
    let tasks = wait_for(Duration::from_secs(10), || {
        let t = read(&cg.join("tasks"));
        (!t.is_empty()).then_some(t)
    })
    .expect("no thread joined the container's cgroup");
    for tid in tasks.lines() {
        let status = read(Path::new(&format!("/proc/{tid}/status")));
        let tgid = status.lines().find_map(|l| l.strip_prefix("Tgid:")).unwrap().trim().to_string();
        let cmdline = read(Path::new(&format!("/proc/{tgid}/cmdline")));
        assert!(cmdline.contains("containerd-shim-wasmcell-v1"), "thread {tid} of {cmdline:?}");
        assert_eq!(read(Path::new(&format!("/proc/{tid}/comm"))), "wasmcell-guest");
    }
    // The spinning guest gets about its 0.2 CPU, not the whole CPU it would take unthrottled.
    let usage = cpuacct.join(s.containerd.namespace()).join("spinner/cpuacct.usage");
    let (u0, t0) = (read(&usage).parse::<u64>().unwrap(), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (u1, dt) = (read(&usage).parse::<u64>().unwrap(), t0.elapsed());
    let share = (u1 - u0) as f64 / dt.as_nanos() as f64;
    assert!(share > 0.1 && share < 0.3, "the guest used {share:.2} CPU under a 0.2 CPU quota");
    let throttled: u64 = read(&cg.join("cpu.stat")).lines().find_map(|l| l.strip_prefix("nr_throttled ")).unwrap().parse().unwrap();
    assert!(throttled > 0, "never throttled");
    // containerd's task metrics (what CRI's ContainerStats, and so `kubectl top`, read) carry that CPU time.
    let metrics = text(&ok("ctr task metrics", s.containerd.ctr(&["task", "metrics", "spinner"])).stdout);
    let reported: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cpuacct.usage ").map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no cpuacct.usage in:\n{metrics}"));
    assert!(reported >= u1, "ctr task metrics says {reported} ns, the cgroup said {u1} ns before");

    ok("ctr task kill", s.containerd.ctr(&["task", "kill", "-s", "SIGKILL", "spinner"]));
    s.wait_status("spinner", "STOPPED");
    ok("ctr task delete", s.containerd.ctr(&["task", "delete", "spinner"]));
    ok("ctr containers rm", s.containerd.ctr(&["containers", "rm", "spinner"]));
    assert!(!cg.exists(), "{} left behind", cg.display());
    assert!(!cg.parent().unwrap().exists(), "{} (made for the container) left behind", cg.parent().unwrap().display());
    s.assert_nothing_left();
}

/// A device node in the image (here /dev/urandom's 1:9) never opens for the guest: the rootfs is mounted
/// nodev (it was not, and a guest read random bytes from it; a block device would be the node's disk).
#[test]
fn shim_never_opens_a_device_node_from_the_image() {
    let s = setup();
    let out = s.run("dev-node", &["/app/fs.wasm", "read", "/app/random"]);
    assert_eq!(out.status.code(), Some(1), "the guest opened a device node: {}", text(&out.stdout));
    assert!(text(&out.stdout).contains("denied: /app/random"), "{}", text(&out.stdout));
    // Refused because it is a device, not because containerd left it out of the rootfs.
    assert!(!text(&out.stdout).contains("No such file"), "the image's device node is missing: {}", text(&out.stdout));
    // The rest of the rootfs reads as before.
    let out = ok("ctr run fs read", s.run("dev-file", &["/app/fs.wasm", "read", "/app/data/in-image.txt"]));
    assert!(text(&out.stdout).contains("from the image"), "{}", text(&out.stdout));
    s.assert_nothing_left();
}

/// Makes `path` a character device 1:9 (the host's /dev/urandom) and checks that the host itself reads
/// it, so that a guest's denial is the shim's doing and not a `nodev` file system under the test.
fn host_random_device(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: mknod(2) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 9)) }, 0, "mknod {}", path.display());
    let mut bytes = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .unwrap_or_else(|e| panic!("the host cannot read {}: {e}", path.display()));
}

/// A device node in a bind-mounted host directory (here 1:9, /dev/urandom's; `/dev` itself or a disk's
/// mount would be worse), and one in a file system mounted below it (an rbind brings submounts along),
/// never open for the guest: it gets a private `nodev,nosuid` bind of each. Before, a spec's bind mount
/// was preopened as it was and only the rootfs was `nodev`. A plain `bind` brings no submounts.
#[test]
fn shim_never_opens_a_device_node_under_a_bind_mount() {
    let s = setup();
    let host = scratch();
    std::fs::write(host.path().join("note.txt"), "from the host\n").unwrap();
    host_random_device(&host.path().join("random"));
    let sub = host.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let status = Command::new("mount").args(["-t", "tmpfs", "tmpfs", sub.to_str().unwrap()]).status().unwrap();
    assert!(status.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _sub = Unmount(sub.clone());
    host_random_device(&sub.join("random"));

    let mount = format!("type=bind,src={},dst=/data,options=rbind:rw", host.path().display());
    for (id, file) in [("bind-dev", "/data/random"), ("bind-subdev", "/data/sub/random")] {
        let out = s.run_with(id, &["--mount", &mount], &["/app/fs.wasm", "read", file]);
        assert_eq!(out.status.code(), Some(1), "the guest opened {file}: {}", text(&out.stdout));
        assert!(text(&out.stdout).contains(&format!("denied: {file}")), "{}", text(&out.stdout));
    }
    // The directory itself is there, read and write.
    let out = ok("ctr run bind read", s.run_with("bind-file", &["--mount", &mount], &["/app/fs.wasm", "read", "/data/note.txt"]));
    assert!(text(&out.stdout).contains("from the host"), "{}", text(&out.stdout));
    ok("ctr run bind write", s.run_with("bind-write", &["--mount", &mount], &["/app/fs.wasm", "write", "/data/sub/new.txt", "x"]));
    assert_eq!(std::fs::read_to_string(sub.join("new.txt")).unwrap(), "x", "written through the submount");
    // A plain `bind` (no rbind) hides what is mounted below its source, as under runc: the guest sees the
    // empty directory the tmpfs sits on. (The shim's own bind was always recursive, so it showed it.)
    let plain = format!("type=bind,src={},dst=/data,options=bind:rw", host.path().display());
    let out = s.run_with("bind-plain", &["--mount", &plain], &["/app/fs.wasm", "read", "/data/sub/new.txt"]);
    assert_eq!(out.status.code(), Some(1), "a plain bind showed a submount: {}", text(&out.stdout));
    let out = ok("ctr run plain bind", s.run_with("bind-plain-file", &["--mount", &plain], &["/app/fs.wasm", "read", "/data/note.txt"]));
    assert!(text(&out.stdout).contains("from the host"), "{}", text(&out.stdout));
    s.assert_nothing_left();
}

/// `process.user` (a pod's runAsUser; ctr 1.6 has no --user, so the container is created over gRPC as
/// CRI does) is the guest's file access: a guest whose spec says uid 1000 used to read a root-owned 0600
/// file (every guest had root's access).
#[test]
fn shim_gives_the_guest_exactly_the_specs_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
    let s = setup();
    let dir = scratch();
    let registry = Registry::start();
    let (refs, tar) = artifacts_archive(&registry, dir.path(), &[("fs", guests::FS_C)]);
    ok("ctr images import", s.containerd.ctr(&["images", "import", "--all-platforms", "--no-unpack", tar.to_str().unwrap()]));
    let host = scratch();
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    for (name, owner, mode) in [("secret", (0, 0), 0o600), ("mine", (1000, 1000), 0o600), ("group", (0, 1000), 0o640)] {
        let p = host.path().join(name);
        std::fs::write(&p, name).unwrap();
        chown(&p, Some(owner.0), Some(owner.1)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let client = Client::connect(&s.containerd.socket().to_string_lossy(), s.containerd.namespace()).unwrap();
    let run = |id: &str, user: serde_json::Value, args: &[&str]| {
        let spec = json!({
            "ociVersion": "1.0.2",
            "process": {"args": args, "env": [], "cwd": "/", "user": user},
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/data", "type": "bind", "source": host.path(), "options": ["rbind", "rw"]}],
            "linux": {},
        });
        let container = api::Container {
            id: id.to_string(),
            image: refs[0].clone(),
            runtime: Some(api::Runtime { name: RUNTIME.to_string(), options: None }),
            spec: Some(api::Any { type_url: SPEC_TYPE_URL.to_string(), value: serde_json::to_vec(&spec).unwrap() }),
            ..Default::default()
        };
        client.create_container(container).unwrap();
        let out = s.containerd.ctr(&["task", "start", "--fifo-dir", &s.fifo_dir(), id]);
        let _ = s.containerd.ctr(&["task", "delete", id]);
        client.delete_container(id).unwrap();
        (out.status.code(), text(&out.stdout))
    };
    let uid1000 = json!({"uid": 1000, "gid": 1000});
    let (code, out) = run("user-secret", uid1000.clone(), &["fs.wasm", "read", "/data/secret"]);
    assert_eq!(code, Some(1), "uid 1000 read a root-only file: {out}");
    assert!(out.contains("denied"), "{out}");
    assert_eq!(run("user-mine", uid1000.clone(), &["fs.wasm", "read", "/data/mine"]), (Some(0), "ok: mine\n".to_string()));
    assert_eq!(run("user-group", uid1000.clone(), &["fs.wasm", "read", "/data/group"]).0, Some(0), "the gid's group access");
    assert_eq!(run("user-other", json!({"uid": 2000, "gid": 2000}), &["fs.wasm", "read", "/data/group"]).0, Some(1));
    let extra = json!({"uid": 2000, "gid": 2000, "additionalGids": [1000]});
    assert_eq!(run("user-extra", extra, &["fs.wasm", "read", "/data/group"]).0, Some(0), "a supplementary group's access");
    // Root keeps root's access; what a guest writes belongs to its user.
    assert_eq!(run("root-secret", json!({"uid": 0, "gid": 0}), &["fs.wasm", "read", "/data/secret"]).0, Some(0));
    assert_eq!(run("user-write", uid1000, &["fs.wasm", "write", "/data/made", "x"]).0, Some(0));
    let made = std::fs::metadata(host.path().join("made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (1000, 1000));
    s.assert_nothing_left();
}

#[test]
fn shim_maps_the_spec_onto_the_sandbox() {
    let s = setup();
    // Environment: the image's, then ctr's --env; nothing of the shim's own (no PATH unless the spec has it).
    let out = ok("ctr run env", s.run_with("env", &["--env", "GREETING=hi"], &["/app/env.wasm"]));
    let env = text(&out.stdout);
    assert!(env.contains("FROM_IMAGE=yes\n") && env.contains("GREETING=hi\n"), "{env}");
    assert!(!env.contains("WASMCELL_HOME"), "the shim's environment leaked into the guest: {env}");

    // The rootfs is the guest's /, and nothing outside it is reachable.
    let out = ok("ctr run fs read", s.run("fs-read", &["/app/fs.wasm", "read", "/app/data/in-image.txt"]));
    assert!(text(&out.stdout).contains("from the image"), "{}", text(&out.stdout));
    let out = s.run("fs-escape", &["/app/fs.wasm", "read", "/../../../../etc/hostname"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // A bind mount is a preopened directory; `ro` is honoured.
    let host = scratch();
    std::fs::write(host.path().join("note.txt"), "from the host\n").unwrap();
    let mount = format!("type=bind,src={},dst=/data,options=rbind:ro", host.path().display());
    let out = ok("ctr run fs mount", s.run_with("fs-mount", &["--mount", &mount], &["/app/fs.wasm", "read", "/data/note.txt"]));
    assert!(text(&out.stdout).contains("from the host"), "{}", text(&out.stdout));
    let out = s.run_with("fs-ro", &["--mount", &mount], &["/app/fs.wasm", "write", "/data/new.txt", "x"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(!host.path().join("new.txt").exists(), "a read-only mount was written");
    let rw = format!("type=bind,src={},dst=/data,options=rbind:rw", host.path().display());
    ok("ctr run fs rw", s.run_with("fs-rw", &["--mount", &rw], &["/app/fs.wasm", "write", "/data/new.txt", "x"]));
    assert_eq!(std::fs::read_to_string(host.path().join("new.txt")).unwrap(), "x");

    // linux.resources.memory.limit is the guest's memory cap: 64 MiB does not fit in 32. Like a
    // container the OOM killer stopped, it exits 137, with the reason on its stderr.
    // The shim publishes containerd's task events; CRI marks a container OOMKilled on /tasks/oom.
    let mut events = s.containerd.ctr_command().arg("events").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = s.run_with("mem-cap", &["--memory-limit", &(32u64 << 20).to_string()], &["/app/memhog.wasm", "64"]);
    std::thread::sleep(Duration::from_millis(300));
    let _ = events.kill();
    let events = text(&events.wait_with_output().unwrap().stdout);
    for topic in ["/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/exit", "/tasks/delete"] {
        assert!(events.lines().any(|l| l.contains(topic) && l.contains("mem-cap")), "no {topic} event for mem-cap:\n{events}");
    }
    assert_eq!(out.status.code(), Some(137), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("allocation failed after 31 MiB"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("exceeded its memory limit of 32 MiB"), "{}", text(&out.stderr));
    let out = ok("ctr run mem-ok", s.run_with("mem-ok", &["--memory-limit", &(128u64 << 20).to_string()], &["/app/memhog.wasm", "64"]));
    assert!(!text(&out.stdout).contains("allocation failed"), "{}", text(&out.stdout));

    // file.wasm#func runs that export instead of _start; an i32 result is the exit code.
    assert_eq!(text(&ok("#greet", s.run("entry-greet", &["/app/entries.wasm#greet"])).stdout), "greet\n");
    assert_eq!(text(&ok("_start", s.run("entry-start", &["/app/entries.wasm"])).stdout), "start\n");
    assert_eq!(s.run("entry-code", &["/app/entries.wasm#code"]).status.code(), Some(3));
    for (id, entry, error) in
        [("entry-add", "/app/entries.wasm#add", "takes parameters"), ("entry-none", "/app/entries.wasm#nope", "exports no function `nope`")]
    {
        let out = s.run(id, &[entry]);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(error), "{id}: {}", text(&out.stderr));
        let _ = s.containerd.ctr(&["containers", "rm", id]);
    }
    let _ = s.containerd.ctr(&["containers", "rm", "fs-escape", "fs-ro"]);
    s.assert_nothing_left();
}

/// deploy/containerd-config.toml, added to a config that has no runtimes of its own (as Debian's), keeps
/// the CRI plugin loading, with the `wasmcell` handler the RuntimeClass names.
#[test]
fn shim_deploy_config_loads_in_containerds_cri_plugin() {
    let snippet = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/containerd-config.toml")).unwrap();
    let containerd = Containerd::start_with_cri(&snippet);
    let plugins = text(&ok("ctr plugins ls", containerd.ctr(&["plugins", "ls"])).stdout);
    let cri = plugins.lines().find(|l| l.split_whitespace().nth(1) == Some("cri")).unwrap_or_default();
    assert_eq!(cri.split_whitespace().last(), Some("ok"), "the CRI plugin did not load:\n{plugins}\n{}", containerd.log());
    assert!(containerd.dir().join("cni/net.d").is_dir(), "CRI's CNI config dir is not the private one");
    let log = containerd.log();
    assert!(log.contains("wasmcell:{Type:io.containerd.wasmcell.v1"), "no wasmcell runtime in CRI's config:\n{log}");
    let runtime_class = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/runtimeclass.yaml")).unwrap();
    assert!(runtime_class.contains("handler: wasmcell"), "the RuntimeClass names another handler");
}

/// With `WASMCELL_SIGNATURE_POLICY` in containerd's environment, the shim starts a container only if the
/// registry holds a signature of its image's digest that the policy trusts; the unsigned image, and one
/// signed by another key, fail to start with the policy's one line (exit 122, as `wasmcell run`). The
/// signed image's precompiled code, signed by the same trusted key, is taken instead of compiling; code
/// whose signature someone with push access replaced is not (the container starts on code compiled here).
#[test]
fn shim_enforces_the_nodes_signature_policy() {
    use crate::images::sign::{PASSWORD, generate_key};
    let home = scratch();
    let dir = scratch();
    let registry = Registry::start();
    let cell = Cell::new();
    let (key, public) = generate_key(&cell, dir.path(), "team");
    let (other_key, _) = generate_key(&cell, dir.path(), "other");
    let refs: Vec<String> = ["signed", "unsigned", "other", "forged"].iter().map(|n| format!("{}/team/{n}:1", registry.addr())).collect();
    let push = |image: &str, key: Option<&Path>| {
        let mut args = vec!["push"];
        if let Some(k) = key {
            // With the code compiled for this node's engine, signed by the same key.
            args.extend(["--precompile", "--sign", k.to_str().unwrap()]);
        }
        args.extend([guests::HELLO_C, image]);
        cell.run_env(&[("WASMCELL_PASSWORD", PASSWORD)], &args).expect_ok();
    };
    push(&refs[0], Some(&key));
    push(&refs[1], None);
    push(&refs[2], Some(&other_key));
    // Signed by the trusted key, its code too (another wasm: the cache holds the first one's code once it
    // ran); then the code's signature replaced by another key's.
    let pushed = crate::images::precompiled::push_precompiled(&cell, guests::ARGS_C, &refs[3], &key);
    let forged_code = pushed["precompiled"]["digest"].as_str().unwrap();
    crate::images::precompiled::forge_code_signature(&registry, "team/forged", forged_code, &other_key);
    let tar = dir.path().join("images.tar");
    cell.run(&["save", "-o", tar.to_str().unwrap(), &refs[0], &refs[1], &refs[2], &refs[3]]).expect_ok();
    let policy = dir.path().join("policy.json");
    let doc = json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {registry.addr(): [{"type": "sigstoreSigned", "keyPath": public}]}}
    });
    std::fs::write(&policy, serde_json::to_vec(&doc).unwrap()).unwrap();
    let containerd = Containerd::start_with_env(
        &[&shim_dir()],
        &[("WASMCELL_HOME", home.path().as_os_str()), ("WASMCELL_SIGNATURE_POLICY", policy.as_os_str())],
    );
    ok("ctr images import", containerd.ctr(&["images", "import", "--all-platforms", "--no-unpack", tar.to_str().unwrap()]));
    let s = Setup { containerd, _home: home };
    let client = Client::connect(&s.containerd.socket().to_string_lossy(), s.containerd.namespace()).unwrap();
    let start = |id: &str, image: &str| {
        let container = api::Container {
            id: id.to_string(),
            image: image.to_string(),
            runtime: Some(api::Runtime { name: RUNTIME.to_string(), options: None }),
            spec: Some(api::Any { type_url: SPEC_TYPE_URL.to_string(), value: runtime_spec(&[]) }),
            ..Default::default()
        };
        client.create_container(container).unwrap();
        s.containerd.ctr(&["task", "start", "--fifo-dir", &s.fifo_dir(), id])
    };
    let out = start("signed", &refs[0]);
    assert_eq!(text(&out.stdout), "hello from C\n", "{}", text(&out.stderr));
    // Its precompiled code was taken (the shim's log reaches containerd's), not compiled.
    let log = s.containerd.log();
    assert!(log.contains(&format!("{}: using precompiled code sha256:", refs[0])), "{log}");
    for (id, image, why) in [("unsigned", &refs[1], "no signature exists"), ("other", &refs[2], "does not verify with any trusted key")] {
        let out = start(id, image);
        assert!(!out.status.success(), "{id} started");
        let err = text(&out.stderr);
        assert!(err.contains("refused by the signature policy") && err.contains(why), "{id}: {err}");
        assert!(!text(&out.stdout).contains("hello"), "{id} ran: {}", text(&out.stdout));
    }
    // The forged code is refused with the reason, and the container runs on code compiled here.
    let out = start("forged", &refs[3]);
    assert!(text(&out.stdout).starts_with("argc="), "forged: {}{}", text(&out.stdout), text(&out.stderr));
    let log = s.containerd.log();
    let refused = log.lines().find(|l| l.contains("does not verify with any trusted key") && l.contains("compiling here"));
    let refused = refused.unwrap_or_else(|| panic!("no refusal in containerd's log:\n{log}"));
    assert!(refused.contains(&refs[3]) && refused.matches("team/forged").count() == 1, "the line names the image once: {refused}");
    assert!(!log.contains(&format!("{}: using precompiled code", refs[3])), "{log}");
    for id in ["signed", "unsigned", "other", "forged"] {
        let _ = s.containerd.ctr(&["task", "delete", id]);
        client.delete_container(id).unwrap();
    }
    s.assert_nothing_left();
}
