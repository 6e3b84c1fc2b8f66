//! A private containerd (Debian's 1.6): root, state, the grpc/ttrpc/debug sockets and the `opt` plugin's path all
//! live in a temp dir (without the last one it writes /opt/containerd), the CRI plugin is off.
//!
//! Each instance uses its own namespace, `wasmcell-test-PID-N`, so that teardown can remove the cgroups its
//! containers left (`/sys/fs/cgroup/*/NAMESPACE/...`, the path `ctr run` puts a container in) without racing
//! another instance that runs in parallel in the same test binary.
//!
//! Teardown (drop), in order: SIGTERM containerd's process group (SIGKILL after 10 s); SIGKILL whatever still
//! refers to the temp dir (shims run in their own process group and outlive containerd) and whatever is in the
//! namespace's cgroups (container processes); remove shim sockets it left in /run/containerd/s; lazily unmount
//! everything mounted under the temp dir; remove the namespace's cgroup dirs (and `NS/ID` of tasks a test ran in
//! another namespace); delete the temp dir.
//!
//! A test binary killed hard (SIGKILL, CI timeout) takes containerd with it (parent-death signal), but its shims
//! and containers survive: they are not our children. So every instance records its owner (pid and start time)
//! in its temp dir, and the first start in a test binary sweeps instances whose owner is gone, with the same
//! teardown.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{spawn_service, stop_group, wait_for};

pub const CONTAINERD: &str = "/usr/bin/containerd";
pub const CTR: &str = "/usr/bin/ctr";

/// How long containerd gets to open its socket.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A running containerd; stopped and cleaned up on drop.
pub struct Containerd {
    child: Option<Child>,
    /// Canonical path of the temp dir (mountinfo and /proc/PID/cmdline show canonical paths).
    root: PathBuf,
    dir: Option<tempfile::TempDir>,
    namespace: String,
}

impl Containerd {
    /// Starts containerd with the usual PATH.
    pub fn start() -> Containerd {
        Containerd::start_with_path(&[])
    }

    /// Starts containerd with `dirs` put in front of its PATH, e.g. a directory holding
    /// `containerd-shim-wasmcell-v1` so that `ctr run --runtime io.containerd.wasmcell.v1` finds it.
    pub fn start_with_path(dirs: &[&Path]) -> Containerd {
        Containerd::start_with_env(dirs, &[])
    }

    /// Like [`start_with_path`](Self::start_with_path), with extra environment variables for containerd
    /// (and so for the shims it starts), e.g. `WASMCELL_HOME`.
    pub fn start_with_env(dirs: &[&Path], env: &[(&str, &OsStr)]) -> Containerd {
        Containerd::start_configured(dirs, env, None)
    }

    /// containerd with its CRI plugin on (what Kubernetes talks to) and `cri_config` (TOML) appended to
    /// its config, e.g. deploy/containerd-config.toml.
    pub fn start_with_cri(cri_config: &str) -> Containerd {
        Containerd::start_configured(&[], &[], Some(cri_config))
    }

    /// containerd with its CRI plugin and `cri_config`, `dirs` in front of its PATH and `env` added.
    pub fn start_with_cri_and_env(cri_config: &str, dirs: &[&Path], env: &[(&str, &OsStr)]) -> Containerd {
        Containerd::start_configured(dirs, env, Some(cri_config))
    }

    fn start_configured(dirs: &[&Path], env: &[(&str, &OsStr)], cri: Option<&str>) -> Containerd {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let namespace = format!("wasmcell-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep_stale_instances);
        let dir = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let me = std::process::id();
        std::fs::write(root.join("owner"), format!("{me} {}", start_time(me).unwrap_or(0))).unwrap();
        std::fs::write(root.join("namespace"), &namespace).unwrap();
        // Unix socket paths are limited to 107 bytes.
        assert!(root.join("containerd.sock.ttrpc").as_os_str().len() < 100, "temp dir path too long for sockets: {}", root.display());
        let q = |name: &str| toml_str(&root.join(name));
        let disabled_cri = if cri.is_some() { "" } else { "\n  \"io.containerd.grpc.v1.cri\"," };
        let mut config = format!(
            r#"version = 2
root = {root}
state = {state}
disabled_plugins = [{disabled_cri}
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = {grpc}

[ttrpc]
  address = {ttrpc}

[debug]
  address = {debug}
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}
"#,
            root = q("root"),
            state = q("state"),
            grpc = q("containerd.sock"),
            ttrpc = q("containerd.sock.ttrpc"),
            debug = q("debug.sock"),
            opt = q("opt"),
        );
        if let Some(extra) = cri {
            // CRI creates its CNI config dir at start: keep it in the temp dir, not /etc/cni.
            config.push_str(&format!(
                "\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  conf_dir = {}\n  bin_dir = {}\n\n",
                q("cni/net.d"),
                q("cni/bin")
            ));
            config.push_str(extra);
        }
        let config_path = root.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = root.join("containerd.log");
        let log = std::fs::File::create(&log_path).unwrap();

        let mut path = std::env::join_paths(dirs.iter().map(|d| d.to_path_buf())).unwrap();
        let system = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        if !path.is_empty() {
            path.push(":");
        }
        path.push(system);

        let mut cmd = Command::new(CONTAINERD);
        cmd.arg("--config")
            .arg(&config_path)
            .current_dir(&root)
            .env("PATH", path)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = spawn_service(cmd).unwrap_or_else(|e| panic!("failed to start {CONTAINERD} (is containerd installed?): {e}"));
        let mut this = Containerd { child: Some(child), root, dir: Some(dir), namespace };

        let socket = this.socket();
        let ready = wait_for(START_DEADLINE, || {
            if let Some(status) = this.child.as_mut().unwrap().try_wait().unwrap() {
                return Some(Err(status));
            }
            std::os::unix::net::UnixStream::connect(&socket).ok().map(|_| Ok(()))
        });
        match ready {
            Some(Ok(())) => this,
            Some(Err(status)) => {
                panic!("containerd exited with {status} before opening {}; its log:\n{}", socket.display(), this.log())
            }
            None => panic!("containerd did not open {} within {START_DEADLINE:?}; its log:\n{}", socket.display(), this.log()),
        }
    }

    /// The grpc socket, for `ctr --address` and for clients.
    pub fn socket(&self) -> PathBuf {
        self.root.join("containerd.sock")
    }

    /// The ttrpc socket.
    pub fn ttrpc_socket(&self) -> PathBuf {
        self.root.join("containerd.sock.ttrpc")
    }

    /// This instance's namespace (`wasmcell-test-PID-N`), used by [`ctr`](Self::ctr).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The private temp dir holding everything (canonical path).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// containerd's `root` (content store, snapshots, metadata).
    pub fn root_dir(&self) -> PathBuf {
        self.root.join("root")
    }

    /// containerd's `state` (task bundles).
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// containerd's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// containerd's log (level info) so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.root.join("containerd.log")).unwrap_or_default()).into_owned()
    }

    /// `ctr --address SOCK -n NAMESPACE`, ready for more arguments.
    pub fn ctr_command(&self) -> Command {
        let mut c = Command::new(CTR);
        c.arg("--address").arg(self.socket()).arg("-n").arg(&self.namespace).stdin(Stdio::null());
        c
    }

    /// Runs `ctr --address SOCK -n NAMESPACE ARGS` in another namespace (CRI's is `k8s.io`).
    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> Output {
        Command::new(CTR)
            .arg("--address")
            .arg(self.socket())
            .arg("-n")
            .arg(namespace)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("failed to run {CTR}: {e}"))
    }

    /// Runs `ctr --address SOCK -n NAMESPACE ARGS`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command().args(args).output().unwrap_or_else(|e| panic!("failed to run {CTR}: {e}"))
    }

    /// The cgroup dirs of this instance's namespace, one per mounted hierarchy that has one.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        namespace_cgroups(&self.namespace)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_group(&mut child, Duration::from_secs(10));
        }
        clean_up(&self.root, &self.namespace);
        // The dir is gone already; TempDir's own removal finds nothing to do.
        drop(self.dir.take());
    }
}

const DIR_PREFIX: &str = "wasmcell-containerd-";

/// Everything after containerd itself is stopped: its shims and containers, their sockets, mounts and cgroups,
/// then the temp dir `root`.
fn clean_up(root: &Path, namespace: &str) {
    // Shim sockets live outside our dir (/run/containerd/s/HASH); containerd records them in its state dir.
    let shim_sockets = shim_sockets(&root.join("state"));
    let cgroups = cgroups_of(&root.join("state"), namespace);
    let me = std::process::id();
    wait_for(Duration::from_secs(10), || {
        let mut pids = pids_referencing(root);
        for cg in &cgroups {
            pids.extend(cgroup_pids(cg));
        }
        pids.retain(|&p| p != me && !is_zombie(p));
        for &p in &pids {
            // SAFETY: plain syscall on a pid that belongs to this containerd, its shims or its containers.
            unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
        }
        pids.is_empty().then_some(())
    });
    for socket in shim_sockets {
        let _ = std::fs::remove_file(socket);
    }
    unmount_under(root);
    wait_for(Duration::from_secs(10), || {
        let left: Vec<_> = cgroups.iter().filter(|cg| remove_cgroup_tree(cg).is_err()).collect();
        left.is_empty().then_some(())
    });
    if let Err(e) = std::fs::remove_dir_all(root)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("warning: could not remove {}: {e}", root.display());
    }
}

/// Cleans up after instances whose test binary died without dropping them (see the module doc). Instances of live
/// test binaries, including other `cargo test` runs on the machine, are left alone.
fn sweep_stale_instances() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let Ok(root) = e.path().canonicalize() else { continue };
        let owner = std::fs::read_to_string(root.join("owner")).unwrap_or_default();
        let namespace = std::fs::read_to_string(root.join("namespace")).unwrap_or_default();
        let owner_alive = match owner.split_once(' ') {
            Some((pid, started)) => pid.parse().ok().and_then(start_time).is_some_and(|t| t.to_string() == started),
            // Being set up right now, or very old: only clean it once it is clearly abandoned.
            None => e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(600)),
        };
        if !owner_alive && (namespace.starts_with("wasmcell-test-") || namespace.is_empty()) {
            clean_up(&root, if namespace.is_empty() { "wasmcell-test-unknown" } else { &namespace });
        }
    }
}

/// The start time of process `pid` (field 22 of /proc/PID/stat, clock ticks since boot): with the pid, it names
/// a process uniquely.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// A TOML basic string holding `path`.
fn toml_str(path: &Path) -> String {
    // JSON string escapes are valid TOML basic-string escapes.
    serde_json::to_string(path.to_str().expect("non-UTF-8 path")).unwrap()
}

/// Pids of processes whose command line mentions something inside the directory `path` (e.g. containerd's
/// `--config DIR/config.toml`, shims' `-address DIR/containerd.sock`).
pub fn pids_referencing(path: &Path) -> Vec<u32> {
    let mut needle = path.as_os_str().as_bytes().to_vec();
    needle.push(b'/');
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| super::find(&cmdline, &needle).is_some()))
        .collect()
}

/// A process that is gone or a zombie (dead, waiting for its parent to reap it).
pub fn is_zombie(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "PID (COMM) STATE ...": COMM may contain spaces and parentheses, so look after the last ')'.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_none_or(|s| s == "Z" || s == "X"),
        Err(_) => true,
    }
}

/// `/sys/fs/cgroup/*/NAMESPACE` (cgroup v1 hierarchies, the v2 `unified` one) and `/sys/fs/cgroup/NAMESPACE` (pure
/// cgroup v2) that exist.
fn namespace_cgroups(namespace: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![base.join(namespace)];
    if let Ok(entries) = std::fs::read_dir(base) {
        for e in entries.flatten() {
            dirs.push(e.path().join(namespace));
        }
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

/// The cgroups this containerd's containers may be in: all of our (unique) namespace, and `NS/ID` for every task
/// its state dir knows, in case a test used another namespace (then only the task's own cgroup is ours).
fn cgroups_of(state: &Path, namespace: &str) -> Vec<PathBuf> {
    let mut out = namespace_cgroups(namespace);
    for (ns, id, _) in tasks(state) {
        if ns.starts_with("wasmcell-test-") {
            out.extend(namespace_cgroups(&ns));
        } else {
            out.extend(namespace_cgroups(&ns).into_iter().map(|d| d.join(&id)).filter(|d| d.is_dir()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Every pid in the cgroup `dir` and its descendants.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> =
        std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(cgroup_pids(&e.path()));
            }
        }
    }
    pids
}

/// `rmdir` a cgroup and its descendants, deepest first (cgroupfs only allows rmdir of empty cgroups).
fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Lazily unmounts every mount point at or under `root` (deepest first), from /proc/self/mountinfo.
fn unmount_under(root: &Path) {
    for _ in 0..5 {
        let mut points: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(p))))
            .filter(|p| p.starts_with(root))
            .collect();
        if points.is_empty() {
            return;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        points.dedup();
        for p in points {
            let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
            // SAFETY: plain syscall with a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\OOO`.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Sockets of the shims of this containerd (`state/io.containerd.runtime.v2.task/NS/ID/address`), which containerd
/// 1.6 puts in /run/containerd/s whatever its own paths are.
fn shim_sockets(state: &Path) -> Vec<PathBuf> {
    tasks(state)
        .into_iter()
        .filter_map(|(_, _, bundle)| std::fs::read_to_string(bundle.join("address")).ok())
        .map(|addr| PathBuf::from(addr.trim().trim_start_matches("unix://")))
        .filter(|path| path.starts_with("/run/containerd/s"))
        .collect()
}

/// `(namespace, id, bundle dir)` of every task in containerd's state dir (v2 runtime).
fn tasks(state: &Path) -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(state.join("io.containerd.runtime.v2.task")) else { return out };
    for ns in namespaces.flatten() {
        for task in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            let (ns, id) = (ns.file_name().to_string_lossy().into_owned(), task.file_name().to_string_lossy().into_owned());
            out.push((ns, id, task.path()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::check;

    #[test]
    fn containerd_starts_answers_ctr_and_leaves_nothing_behind() {
        let containerd = Containerd::start();
        let version = check("ctr version", containerd.ctr(&["version"]));
        let text = String::from_utf8_lossy(&version.stdout).into_owned();
        assert!(text.contains("Server:") && text.contains("1.6"), "{text}");
        let images = check("ctr images ls -q", containerd.ctr(&["images", "ls", "-q"]));
        assert!(images.stdout.is_empty(), "fresh containerd has images: {}", String::from_utf8_lossy(&images.stdout));
        // Nothing escaped to the default paths.
        let log = containerd.log();
        assert!(!log.contains("/var/lib/containerd") && !log.contains("/opt/containerd"), "{log}");

        let (pid, dir) = (containerd.pid(), containerd.dir().to_path_buf());
        drop(containerd);
        assert!(is_zombie(pid) || !is_containerd(pid), "containerd {pid} still runs");
        assert!(pids_referencing(&dir).is_empty(), "processes still refer to {}", dir.display());
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }

    /// A real container (runc, host binaries in a private rootfs) left running at drop: its shim, its process,
    /// its cgroups all go away.
    #[test]
    fn containerd_drop_cleans_up_a_running_container() {
        let containerd = Containerd::start();
        let scratch = tempfile::tempdir().unwrap();
        let rootfs = scratch.path().join("rootfs");
        copy_binary_with_libs(Path::new("/bin/sleep"), &rootfs);

        let id = "sleeper";
        let rootfs_arg = rootfs.to_str().unwrap();
        let run = containerd.ctr(&["run", "-d", "--rootfs", rootfs_arg, id, "/bin/sleep", "1000"]);
        check("ctr run -d --rootfs", run);
        let running = wait_for(Duration::from_secs(30), || {
            let out = containerd.ctr(&["tasks", "ls"]);
            String::from_utf8_lossy(&out.stdout).contains("RUNNING").then_some(())
        });
        assert!(running.is_some(), "task never ran; containerd log:\n{}", containerd.log());
        let cgroups = containerd.cgroup_dirs();
        assert!(!cgroups.is_empty(), "no cgroup for namespace {}", containerd.namespace());
        let container_pids: Vec<u32> = cgroups.iter().flat_map(|c| cgroup_pids(c)).collect();
        assert!(!container_pids.is_empty());
        let shims = pids_referencing(containerd.dir());
        assert!(shims.len() >= 2, "expected containerd and a shim, found {shims:?}");

        let dir = containerd.dir().to_path_buf();
        drop(containerd);
        for cg in &cgroups {
            assert!(!cg.exists(), "{} left behind", cg.display());
        }
        for pid in container_pids.iter().chain(&shims) {
            assert!(is_zombie(*pid), "process {pid} survived");
        }
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }

    /// A test binary killed hard leaves shims and containers running; the next start cleans them up.
    #[test]
    fn containerd_sweeps_instances_of_dead_test_binaries() {
        let mut helper = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "--nocapture", "--test-threads=1", "services::containerd::tests::abandoned_instance_helper"])
            .env("WASMCELL_ABANDON_HELPER", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(helper.stdout.take().unwrap()));
        let (dir, namespace) = loop {
            let line = lines.next().expect("the helper ended before announcing its containerd").unwrap();
            // libtest has already written "test NAME ... " without a newline.
            if let Some((_, rest)) = line.split_once("ABANDONED ") {
                let (dir, ns) = rest.split_once(' ').unwrap();
                break (PathBuf::from(dir), ns.to_string());
            }
        };
        let _ = helper.kill();
        let _ = helper.wait();
        // containerd followed its parent (parent-death signal); the shim and the container did not.
        wait_for(Duration::from_secs(10), || pids_referencing(&dir).len().eq(&1).then_some(()));
        let survivors = pids_referencing(&dir);
        assert!(!survivors.is_empty(), "expected the shim to outlive the killed test binary");
        assert!(!namespace_cgroups(&namespace).is_empty());

        sweep_stale_instances();
        assert!(pids_referencing(&dir).is_empty(), "sweep left processes referring to {}", dir.display());
        assert!(namespace_cgroups(&namespace).is_empty(), "sweep left cgroups of {namespace}");
        assert!(!dir.exists(), "sweep left {}", dir.display());
    }

    /// Run (in a child process) by `containerd_sweeps_instances_of_dead_test_binaries`: starts a container and
    /// waits to be killed. Does nothing when run any other way.
    #[test]
    #[ignore = "helper of containerd_sweeps_instances_of_dead_test_binaries"]
    fn abandoned_instance_helper() {
        if std::env::var_os("WASMCELL_ABANDON_HELPER").is_none() {
            return;
        }
        let containerd = Containerd::start();
        let scratch = tempfile::tempdir().unwrap();
        let rootfs = scratch.path().join("rootfs");
        copy_binary_with_libs(Path::new("/bin/sleep"), &rootfs);
        check(
            "ctr run -d --rootfs",
            containerd.ctr(&["run", "-d", "--rootfs", rootfs.to_str().unwrap(), "abandoned", "/bin/sleep", "1000"]),
        );
        println!("ABANDONED {} {}", containerd.dir().display(), containerd.namespace());
        std::thread::sleep(Duration::from_secs(120));
    }

    fn is_containerd(pid: u32) -> bool {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| super::super::find(&c, b"containerd").is_some())
    }

    /// Copies `bin` and the shared libraries `ldd` lists into `rootfs` at the same paths.
    fn copy_binary_with_libs(bin: &Path, rootfs: &Path) {
        let ldd = check("ldd", Command::new("ldd").arg(bin).output().unwrap());
        let mut files = vec![bin.to_path_buf()];
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = line.split("=>").last().unwrap().trim().split(' ').next().unwrap_or("");
            if path.starts_with('/') {
                files.push(PathBuf::from(path));
            }
        }
        for f in files {
            let dest = rootfs.join(f.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&f, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
        }
    }
}
