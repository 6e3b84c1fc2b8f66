//! A container's cgroup: the threads its guest runs on are put in it, so that the CPU limits of a pod
//! hold for a wasm guest as they do for a native process, and its CPU time is accounted where the
//! kubelet and cAdvisor look for it.
//!
//! cgroup v1 (one hierarchy per controller; the threads of one process may sit in different cgroups):
//! the container's cgroup is made at `linux.cgroupsPath` in the `cpu`, `cpuacct` and (when the spec
//! names CPUs or memory nodes) `cpuset` hierarchies, `linux.resources.cpu` is written to it
//! (`cpu.shares`, `cpu.cfs_period_us`, `cpu.cfs_quota_us`, `cpuset.cpus`, `cpuset.mems`), and every
//! thread of the guest writes its thread id to its `tasks` when it starts. The memory limit is not a
//! cgroup's: v1 charges memory to a process, not to a thread, so it is the guest's memory cap instead
//! (see `spec`). The cgroup, and every parent directory made for it, is removed when the container is
//! deleted.
//!
//! cgroup v2 moves whole processes, not threads, between domain cgroups; on a host without a v1 `cpu`
//! hierarchy the guest runs without a cgroup and the shim's log says that its CPU limits do not hold.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The CPU part of `linux.resources` (values as the OCI runtime spec gives them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuLimits {
    pub shares: Option<u64>,
    pub quota: Option<i64>,
    pub period: Option<u64>,
    pub cpus: Option<String>,
    pub mems: Option<String>,
}

impl CpuLimits {
    fn wants_cpuset(&self) -> bool {
        self.cpus.as_deref().is_some_and(|c| !c.is_empty()) || self.mems.as_deref().is_some_and(|m| !m.is_empty())
    }
}

/// CPU time in nanoseconds, and CFS throttling (periods, throttled periods, nanoseconds throttled).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuUsage {
    pub total: u64,
    pub user: u64,
    pub kernel: u64,
    pub per_cpu: Vec<u64>,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_time: u64,
}

/// What the spec asks for: where the cgroup goes and the limits to write into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupSpec {
    /// `linux.cgroupsPath` as given: `/a/b` (from the hierarchy's root), `a/b` (from the shim's own
    /// cgroup), or systemd's `slice:prefix:name`.
    pub path: String,
    pub cpu: CpuLimits,
}

/// A container's cgroup, made by [`Cgroup::create`]; threads join it with [`Cgroup::join`].
#[derive(Debug)]
pub struct Cgroup {
    /// The container's directory in each hierarchy joined.
    leaves: Vec<PathBuf>,
    /// Every directory made for it, the deepest first (the leaves and any parents that did not exist).
    made: Vec<PathBuf>,
}

/// How long a guest's thread runs before it is moved into its cgroup (see [`Cgroup::join`]).
pub const JOIN_AFTER: Duration = Duration::from_millis(20);

/// The v1 hierarchies a guest's threads join.
const CONTROLLERS: [&str; 3] = ["cpu", "cpuacct", "cpuset"];

impl Cgroup {
    /// Makes the container's cgroup and writes its limits. `Ok(None)` when the host has no cgroup v1
    /// `cpu` hierarchy (the limits then do not hold; logged).
    pub fn create(spec: &CgroupSpec) -> Result<Option<Cgroup>> {
        Self::create_in(spec, &v1_hierarchies()?, &own_cgroups())
    }

    fn create_in(spec: &CgroupSpec, hierarchies: &[Hierarchy], own: &[(String, String)]) -> Result<Option<Cgroup>> {
        if !hierarchies.iter().any(|h| h.controllers.iter().any(|c| c == "cpu")) {
            log::warn!("no cgroup v1 cpu hierarchy: the CPU limits of {} do not hold for its guest", spec.path);
            return Ok(None);
        }
        let mut cgroup = Cgroup { leaves: Vec::new(), made: Vec::new() };
        for (h, leaf) in places(spec, hierarchies, own)? {
            if let Err(e) = cgroup.make(&h.mount, &leaf, h.controllers.iter().any(|c| c == "cpuset")) {
                cgroup.remove();
                return Err(e);
            }
            cgroup.leaves.push(leaf);
        }
        if let Err(e) = cgroup.write_limits(&spec.cpu) {
            cgroup.remove();
            return Err(e);
        }
        Ok(Some(cgroup))
    }

    /// The cgroup of a container whose shim died (containerd's `delete`): its directories, to remove.
    /// (Which parents that shim made is not known; they are left.)
    pub fn of_dead_shim(spec: &CgroupSpec) -> Option<Cgroup> {
        let hierarchies = v1_hierarchies().ok()?;
        let places = places(spec, &hierarchies, &own_cgroups()).ok()?;
        let leaves: Vec<PathBuf> = places.into_iter().map(|(_, leaf)| leaf).filter(|l| l.is_dir()).collect();
        Some(Cgroup { made: leaves.clone(), leaves })
    }

    /// Makes `leaf` and any missing parent below `mount`; a new cpuset directory gets its parent's CPUs
    /// and memory nodes (v1 leaves them empty, and an empty cpuset takes no thread).
    fn make(&mut self, mount: &Path, leaf: &Path, cpuset: bool) -> Result<()> {
        // Another container's shim may remove a parent it made (now empty) between our walk and our
        // mkdir below it: walk again.
        let mut attempts = 0;
        'walk: loop {
            attempts += 1;
            let mut missing = Vec::new();
            let mut dir = leaf;
            while dir != mount && !dir.exists() {
                missing.push(dir.to_path_buf());
                dir = dir.parent().unwrap_or(mount);
            }
            for dir in missing.into_iter().rev() {
                match std::fs::create_dir(&dir) {
                    Ok(()) => self.made.insert(0, dir.clone()),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 5 => continue 'walk,
                    Err(e) => return Err(Error::Io { context: format!("cannot create the cgroup {}", dir.display()), source: e }),
                }
                if cpuset {
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        let own = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
                        if own.trim().is_empty() {
                            let parent =
                                dir.parent().map(|p| std::fs::read_to_string(p.join(file)).unwrap_or_default()).unwrap_or_default();
                            write(&dir, file, parent.trim())?;
                        }
                    }
                }
            }
            return Ok(());
        }
    }

    fn write_limits(&self, cpu: &CpuLimits) -> Result<()> {
        for leaf in &self.leaves {
            let has = |file: &str| leaf.join(file).exists();
            if let Some(shares) = cpu.shares.filter(|s| *s > 0 && has("cpu.shares")) {
                write(leaf, "cpu.shares", &shares.to_string())?;
            }
            // The period first: a quota is checked against it.
            if let Some(period) = cpu.period.filter(|p| *p > 0 && has("cpu.cfs_period_us")) {
                write(leaf, "cpu.cfs_period_us", &period.to_string())?;
            }
            if let Some(quota) = cpu.quota.filter(|q| *q != 0 && has("cpu.cfs_quota_us")) {
                write(leaf, "cpu.cfs_quota_us", &quota.to_string())?;
            }
            if let Some(cpus) = cpu.cpus.as_deref().filter(|c| !c.is_empty() && has("cpuset.cpus")) {
                write(leaf, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = cpu.mems.as_deref().filter(|m| !m.is_empty() && has("cpuset.mems")) {
                write(leaf, "cpuset.mems", mems)?;
            }
        }
        Ok(())
    }

    /// Puts the calling thread in the cgroup (in every hierarchy joined) once it has run for
    /// [`JOIN_AFTER`], without waiting for it: one thread of the shim makes the moves.
    ///
    /// A cgroup v1 move holds the kernel's cgroup mutex through an RCU grace period when no move happened
    /// just before (8-12 ms here, measured): every guest that waited for it started that much later, and
    /// every cgroup made or removed meanwhile on the node waited too. A guest that ends within
    /// `JOIN_AFTER` (a function, a hello) never moves; a longer one runs unthrottled for at most
    /// `JOIN_AFTER` plus that grace period, and is limited from then on.
    pub fn join(self: &Arc<Self>) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        type Move = (Arc<Cgroup>, libc::pid_t, Instant);
        static MOVER: OnceLock<Mutex<Option<mpsc::Sender<Move>>>> = OnceLock::new();
        let mover = MOVER.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Move>();
            let spawned = std::thread::Builder::new().name("cgroup-mover".into()).spawn(move || {
                for (cgroup, tid, at) in rx {
                    std::thread::sleep((at + JOIN_AFTER).saturating_duration_since(Instant::now()));
                    // Only a thread still running (the guest has not ended) is moved.
                    if Path::new(&format!("/proc/self/task/{tid}")).exists() {
                        cgroup.attach(tid);
                    }
                }
            });
            Mutex::new(spawned.ok().map(|_| tx))
        });
        match mover.lock().unwrap().as_ref() {
            Some(tx) => {
                let _ = tx.send((self.clone(), tid, Instant::now()));
            }
            None => self.attach(tid),
        }
    }

    fn attach(&self, tid: libc::pid_t) {
        for leaf in &self.leaves {
            match std::fs::write(leaf.join("tasks"), tid.to_string()) {
                Ok(()) => {}
                // The thread has ended already.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return,
                Err(e) => log::warn!("thread {tid} cannot join the cgroup {}: {e}", leaf.display()),
            }
        }
    }

    /// The guest's CPU time and throttling, as the cgroup counts them (for containerd's task metrics).
    pub fn cpu_usage(&self) -> CpuUsage {
        let mut u = CpuUsage::default();
        let number = |leaf: &Path, file: &str| std::fs::read_to_string(leaf.join(file)).ok().and_then(|t| t.trim().parse::<u64>().ok());
        for leaf in &self.leaves {
            u.total = number(leaf, "cpuacct.usage").unwrap_or(u.total);
            u.user = number(leaf, "cpuacct.usage_user").unwrap_or(u.user);
            u.kernel = number(leaf, "cpuacct.usage_sys").unwrap_or(u.kernel);
            if let Ok(per_cpu) = std::fs::read_to_string(leaf.join("cpuacct.usage_percpu")) {
                u.per_cpu = per_cpu.split_whitespace().filter_map(|n| n.parse().ok()).collect();
            }
            if let Ok(stat) = std::fs::read_to_string(leaf.join("cpu.stat")) {
                for line in stat.lines() {
                    match line.split_once(' ') {
                        Some(("nr_periods", n)) => u.periods = n.parse().unwrap_or(0),
                        Some(("nr_throttled", n)) => u.throttled_periods = n.parse().unwrap_or(0),
                        Some(("throttled_time", n)) => u.throttled_time = n.parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
        }
        u
    }

    /// The directories of the cgroup, one per hierarchy joined.
    pub fn leaves(&self) -> &[PathBuf] {
        &self.leaves
    }

    /// Removes the cgroup and the parents made for it (those still empty). A thread that has just ended
    /// may still be counted for a moment: retried for up to a second.
    pub fn remove(&self) {
        for dir in &self.made {
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    // A parent another container still uses.
                    Err(_) if !self.leaves.contains(dir) => break,
                    Err(e) if Instant::now() >= deadline => {
                        log::warn!("cannot remove the cgroup {}: {e}", dir.display());
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
    }
}

/// Where the container's cgroup goes in each hierarchy it joins.
fn places<'h>(spec: &CgroupSpec, hierarchies: &'h [Hierarchy], own: &[(String, String)]) -> Result<Vec<(&'h Hierarchy, PathBuf)>> {
    let path = resolve(&spec.path)?;
    let mut out: Vec<(&Hierarchy, PathBuf)> = Vec::new();
    for controller in CONTROLLERS {
        if controller == "cpuset" && !spec.cpu.wants_cpuset() {
            continue;
        }
        let Some(h) = hierarchies.iter().find(|h| h.controllers.iter().any(|c| c == controller)) else { continue };
        if out.iter().any(|(seen, _)| seen.mount == h.mount) {
            continue; // co-mounted (cpu,cpuacct): one directory
        }
        let mine = own.iter().find(|(c, _)| h.controllers.contains(c)).map_or("/", |(_, p)| p.as_str());
        let relative = if spec.path.starts_with('/') || spec.path.contains(':') {
            path.clone()
        } else {
            // Relative to the shim's own cgroup in this hierarchy (as runc does).
            Path::new(mine).join(&path)
        };
        let relative = relative.strip_prefix("/").unwrap_or(&relative).to_path_buf();
        if relative.as_os_str().is_empty() {
            // The hierarchy's root: limits cannot be written there, and no container may own it.
            return Err(Error::InvalidSpec(format!("linux.cgroupsPath {:?}: names the root cgroup", spec.path)));
        }
        if relative == Path::new(mine.trim_start_matches('/')) {
            // The shim's own: its limits would bind the shim and every other guest of the pod.
            return Err(Error::InvalidSpec(format!("linux.cgroupsPath {:?}: names the shim's own cgroup", spec.path)));
        }
        out.push((h, h.mount.join(relative)));
    }
    Ok(out)
}

fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| Error::Io { context: format!("cannot write {value} to {}", dir.join(file).display()), source: e })
}

/// A mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    mount: PathBuf,
    controllers: Vec<String>,
}

/// The cgroup v1 hierarchies mounted in this mount namespace (`/proc/self/mountinfo`).
fn v1_hierarchies() -> Result<Vec<Hierarchy>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(Error::io("cannot read /proc/self/mountinfo"))?;
    Ok(parse_mountinfo(&text))
}

fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    text.lines()
        .filter_map(|line| {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS
            let (before, after) = line.split_once(" - ")?;
            let mount = before.split(' ').nth(4)?;
            let mut after = after.split(' ');
            if after.next()? != "cgroup" {
                return None;
            }
            let options = after.nth(1)?;
            let controllers: Vec<String> = options.split(',').filter(|o| CONTROLLERS.contains(o)).map(str::to_string).collect();
            (!controllers.is_empty()).then(|| Hierarchy { mount: PathBuf::from(crate::mounts::unescape(mount)), controllers })
        })
        .collect()
}

/// The shim's own cgroup per v1 controller (`/proc/self/cgroup`).
fn own_cgroups() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some(controllers.split(',').map(|c| (c.to_string(), path.to_string())).collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}

/// `linux.cgroupsPath` → a path inside each hierarchy. systemd's `slice:prefix:name` becomes the path
/// systemd gives that unit (`a-b.slice` is `a.slice/a-b.slice`; the unit is `prefix-name.scope`).
fn resolve(path: &str) -> Result<PathBuf> {
    let invalid = || Error::InvalidSpec(format!("linux.cgroupsPath {path:?}: not a cgroup path"));
    // `..` climbs out of where the container may be; `.` (or `./`) is the shim's own cgroup.
    if path.split('/').any(|c| c == ".." || c == ".") {
        return Err(invalid());
    }
    let parts: Vec<&str> = path.split(':').collect();
    match parts.as_slice() {
        [_] => Ok(PathBuf::from(path)),
        [slice, prefix, name] => {
            if slice.contains('/') || prefix.contains('/') || name.contains('/') {
                return Err(invalid());
            }
            let slice = if slice.is_empty() { "system.slice" } else { slice };
            let mut out = PathBuf::from("/");
            let stem = slice.strip_suffix(".slice").ok_or_else(invalid)?;
            if stem != "-" {
                let mut acc = String::new();
                for (i, part) in stem.split('-').enumerate() {
                    if part.is_empty() {
                        return Err(invalid());
                    }
                    if i > 0 {
                        acc.push('-');
                    }
                    acc.push_str(part);
                    out.push(format!("{acc}.slice"));
                }
            }
            let unit = if name.ends_with(".slice") {
                name.to_string()
            } else if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            };
            out.push(unit);
            Ok(out)
        }
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_paths_expand_as_systemd_names_its_units() {
        assert_eq!(resolve("/default/c1").unwrap(), PathBuf::from("/default/c1"));
        assert_eq!(
            resolve("kubepods-besteffort-pod12.slice:cri-containerd:abc").unwrap(),
            PathBuf::from("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope")
        );
        assert_eq!(resolve(":cri:abc").unwrap(), PathBuf::from("/system.slice/cri-abc.scope"));
        assert!(resolve("/a/../../etc").is_err());
        assert!(resolve(".").is_err() && resolve("./").is_err() && resolve("a/./b").is_err());
        assert!(resolve("a:b").is_err());
        assert!(resolve("kube--pods.slice:p:n").is_err());
    }

    #[test]
    fn mountinfo_names_the_v1_hierarchies() {
        let text = "\
30 23 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
31 23 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
32 23 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
33 23 0:29 / /sys/fs/cgroup/cpuset rw shared:9 - cgroup cgroup rw,cpuset
";
        let h = parse_mountinfo(text);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].mount, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(h[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(h[1].controllers, ["cpuset"]);
    }

    #[test]
    fn the_root_cgroup_is_no_containers() {
        let h = [Hierarchy { mount: PathBuf::from("/sys/fs/cgroup/cpu"), controllers: vec!["cpu".into()] }];
        let root = CgroupSpec { path: "/".into(), cpu: CpuLimits::default() };
        assert!(places(&root, &h, &[]).is_err());
        // The shim's own cgroup, named absolutely, is no container's either.
        let own = [("cpu".to_string(), "/system.slice/shim".to_string())];
        let shims = CgroupSpec { path: "/system.slice/shim".into(), cpu: CpuLimits::default() };
        assert!(places(&shims, &h, &own).is_err());
        let child = CgroupSpec { path: "c1".into(), cpu: CpuLimits::default() };
        assert_eq!(places(&child, &h, &own).unwrap()[0].1, PathBuf::from("/sys/fs/cgroup/cpu/system.slice/shim/c1"));
        let leaf = CgroupSpec { path: "/ns/c1".into(), cpu: CpuLimits::default() };
        assert_eq!(places(&leaf, &h, &[]).unwrap()[0].1, PathBuf::from("/sys/fs/cgroup/cpu/ns/c1"));
    }

    #[test]
    fn without_a_v1_cpu_hierarchy_there_is_no_cgroup() {
        let spec = CgroupSpec { path: "/x/y".into(), cpu: CpuLimits::default() };
        assert!(Cgroup::create_in(&spec, &[], &[]).unwrap().is_none());
    }
}
