//! The OCI runtime spec (the bundle's `config.json`) → what the runtime is given: the module to load and a
//! [`SandboxPolicy`]. This is the shim's one place that builds a policy; nothing else grants the guest
//! anything.
//!
//! Deny by default: the guest gets `process.args`, `process.env`, and the spec's bind mounts as preopened
//! directories (read-only when the mount says `ro`), plus the container's rootfs at `/` (read-only when
//! `root.readonly`). Kernel file systems (`proc`, `sysfs`, `devpts`, `mqueue`, `tmpfs`, `cgroup`, …) have no
//! meaning for a wasm guest and are skipped. `linux.resources.memory.limit` becomes the memory cap;
//! `linux.cgroupsPath` and `linux.resources.cpu` the cgroup the guest's threads join (see `cgroup`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use wasmcell_oci::launch::{Launch as ImageLaunch, module_in_rootfs};
use wasmcell_runtime::SandboxPolicy;
use wasmcell_runtime::policy::Mount;

use crate::cgroup::{CgroupSpec, CpuLimits};
use crate::error::{Error, Result};
use crate::trust::CodeSource;
use crate::user::User;

/// The environment variable a wasi:http component's listening address is taken from.
pub const HTTP_ADDR_ENV: &str = "WASMCELL_HTTP_ADDR";
/// The default listening address of a wasi:http component.
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8080";

/// What one container runs.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The module or component file (inside the rootfs).
    pub module: PathBuf,
    /// `file.wasm#func`: the export to call instead of `_start`.
    pub export: Option<String>,
    pub policy: SandboxPolicy,
    /// Where a wasi:http component listens.
    pub http_addr: SocketAddr,
    /// The network namespace the spec puts the container in (a pod's), if it names one.
    pub netns: NetNs,
    /// A Kubernetes pod sandbox ("pause") container: nothing runs, it lives until killed.
    pub pause: bool,
    /// The container's cgroup (`linux.cgroupsPath`) and the CPU limits to write into it.
    pub cgroup: Option<CgroupSpec>,
    /// `process.user`, for every file the guest touches (`None`: root).
    pub user: Option<User>,
    /// The indices in `policy.mounts` of the spec's plain `bind` mounts (no `rbind`): as under runc, the
    /// file systems mounted below their source stay hidden from the guest.
    pub shallow: Vec<usize>,
    /// Where the image's precompiled code may come from (the node's policy requires its signer).
    pub precompiled: Option<CodeSource>,
}

/// The annotation CRI sets to `sandbox` on a pod's pause container.
const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";

/// The container's image, when args[0] names no file in the rootfs (or there are no args): called with
/// the container's rootfs and args[0] (without `#func`), it gives the image's [`ImageLaunch`] (the wasm
/// layer, from containerd's content store; argv[0] and default args); `None` when there is no image.
pub type ImageSource<'a> = &'a mut dyn FnMut(&Path, Option<&str>) -> Result<Option<ImageLaunch>>;

/// Reads `BUNDLE/config.json` and translates it.
pub fn load(bundle: &Path, image: ImageSource<'_>) -> Result<Launch> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(Error::io(format!("cannot read {}", path.display())))?;
    // serde_json directly: oci-spec's own loader reduces every parse error to "serde failed".
    let spec: Spec =
        serde_json::from_slice(&bytes).map_err(|e| Error::InvalidSpec(format!("{}: not an OCI runtime spec: {e}", path.display())))?;
    translate(&spec, bundle, image)
}

/// Translates a spec whose relative paths are relative to `bundle`.
pub fn translate(spec: &Spec, bundle: &Path, image: ImageSource<'_>) -> Result<Launch> {
    let netns = netns_of(spec);
    if spec.annotations().as_ref().and_then(|a| a.get(CONTAINER_TYPE_ANNOTATION)).is_some_and(|t| t == "sandbox") {
        // The pod's pause container (a native binary) holds nothing for a wasm pod: CRI made the netns.
        let http_addr = DEFAULT_HTTP_ADDR.parse().expect("valid default address");
        return Ok(Launch {
            module: PathBuf::new(),
            export: None,
            policy: SandboxPolicy::default(),
            http_addr,
            netns,
            pause: true,
            cgroup: None,
            user: None,
            shallow: Vec::new(),
            precompiled: None,
        });
    }
    let process = spec.process().as_ref().ok_or_else(|| Error::InvalidSpec("the spec has no process".into()))?;
    let root = spec.root().as_ref().ok_or_else(|| Error::InvalidSpec("the spec has no root".into()))?;
    let rootfs = if root.path().is_absolute() { root.path().clone() } else { bundle.join(root.path()) };
    let (module, export, args) = module_and_args(process.args().as_deref().unwrap_or_default(), &rootfs, image)?;

    let mut policy = SandboxPolicy { args, ..SandboxPolicy::default() };
    let mut http_addr = DEFAULT_HTTP_ADDR.to_string();
    for kv in process.env().iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        if k == HTTP_ADDR_ENV {
            http_addr = v.to_string();
        }
        policy.env.push((k.to_string(), v.to_string()));
    }
    let http_addr =
        http_addr.parse().map_err(|e| Error::InvalidSpec(format!("{HTTP_ADDR_ENV}={http_addr}: not an address (ip:port): {e}")))?;

    if rootfs.is_dir() {
        policy.mounts.push(Mount { host: rootfs.clone(), guest: "/".into(), read_only: root.readonly().unwrap_or(false) });
    }
    let mut shallow = Vec::new();
    for (mount, recursive) in bind_mounts(spec) {
        if !recursive {
            shallow.push(policy.mounts.len());
        }
        policy.mounts.push(mount);
    }
    if let Some(limit) =
        spec.linux().as_ref().and_then(|l| l.resources().as_ref()).and_then(|r| r.memory().as_ref()).and_then(|m| m.limit())
        && limit > 0
    {
        policy.limits.memory = Some(limit as u64);
    }

    let (cgroup, user) = (cgroup_of(spec), User::of(spec));
    Ok(Launch { module, export, policy, http_addr, netns, pause: false, cgroup, user, shallow, precompiled: None })
}

/// The module, the `#func` export and argv from `process.args`. A compat image: args[0] is a file of
/// the rootfs (the one containment rule, [`module_in_rootfs`]). Otherwise the image's launch (a wasm-layer
/// image: the rootfs is empty and the module is the image's layer, from containerd's content store):
/// with no args, its argv[0] and default args.
fn module_and_args(args: &[String], rootfs: &Path, image: ImageSource<'_>) -> Result<(PathBuf, Option<String>, Vec<String>)> {
    let first = args.first().filter(|a| !a.is_empty());
    let (file, export) = match first.map(|a| a.split_once('#')) {
        Some(Some((f, e))) => (f.to_string(), (!e.is_empty()).then(|| e.to_string())),
        Some(None) => (first.cloned().unwrap_or_default(), None),
        None => (String::new(), None),
    };
    let given = || std::iter::once(file.clone()).chain(args.iter().skip(1).cloned()).collect();
    if !file.is_empty()
        && let Some(module) = module_in_rootfs(rootfs, &file)?
    {
        return Ok((module, export, given()));
    }
    match image(rootfs, (!file.is_empty()).then_some(file.as_str()))? {
        // No module named (no args, or an empty args[0]): the image's argv[0], then the spec's other args if
        // it gives any, else the image's default args.
        Some(l) if file.is_empty() => {
            let rest = if args.len() > 1 { args[1..].to_vec() } else { l.default_args };
            Ok((l.wasm, export, std::iter::once(l.argv0).chain(rest).collect()))
        }
        Some(l) => Ok((l.wasm, export, given())),
        None if file.is_empty() => {
            Err(Error::InvalidSpec("the process has no args: args[0] must name the wasm module inside the image".into()))
        }
        None => Err(Error::InvalidSpec(format!("{file}: no such file in the image"))),
    }
}

/// The spec's bind mounts of directories, as preopens (read-only when the mount says `ro`), each with
/// whether it is recursive (`rbind`). Kernel file systems and file binds (resolv.conf, hostname, a secret
/// file: WASI preopens are directories) are skipped.
fn bind_mounts(spec: &Spec) -> Vec<(Mount, bool)> {
    let mut mounts = Vec::new();
    for m in spec.mounts().iter().flatten() {
        let typ = m.typ().as_deref().unwrap_or("");
        let options = m.options().clone().unwrap_or_default();
        let bind = typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        let Some(source) = m.source().as_ref().filter(|s| bind && s.is_dir()) else { continue };
        let guest = m.destination().to_string_lossy().into_owned();
        let mount = Mount { host: source.clone(), guest, read_only: options.iter().any(|o| o == "ro") };
        mounts.push((mount, options.iter().any(|o| o == "rbind")));
    }
    mounts
}

/// The network a container's listener lives in, as the spec's `linux.namespaces` asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetNs {
    /// No network namespace in the spec (`ctr run --net-host`): the host's.
    Host,
    /// A network namespace without a path (what `ctr run` sends): a new one, with only loopback.
    New,
    /// The namespace at this path (a pod's, made by CRI).
    Join(PathBuf),
}

fn netns_of(spec: &Spec) -> NetNs {
    let network = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network).cloned());
    match network {
        None => NetNs::Host,
        Some(n) => match n.path() {
            Some(p) if !p.as_os_str().is_empty() => NetNs::Join(p.clone()),
            _ => NetNs::New,
        },
    }
}

/// The cgroup `BUNDLE/config.json` asks for, if it can be read (clean-up after a dead shim).
pub fn cgroup_in(bundle: &Path) -> Option<CgroupSpec> {
    let spec: Spec = serde_json::from_slice(&std::fs::read(bundle.join("config.json")).ok()?).ok()?;
    cgroup_of(&spec)
}

/// `linux.cgroupsPath` and `linux.resources.cpu`; `None` without a path (`ctr run --cgroup ""`).
fn cgroup_of(spec: &Spec) -> Option<CgroupSpec> {
    let linux = spec.linux().as_ref()?;
    let path = linux.cgroups_path().as_ref()?.to_string_lossy().into_owned();
    if path.is_empty() {
        return None;
    }
    let cpu = linux.resources().as_ref().and_then(|r| r.cpu().as_ref());
    let cpu = CpuLimits {
        shares: cpu.and_then(|c| c.shares()),
        quota: cpu.and_then(|c| c.quota()),
        period: cpu.and_then(|c| c.period()),
        cpus: cpu.and_then(|c| c.cpus().clone()),
        mems: cpu.and_then(|c| c.mems().clone()),
    };
    Some(CgroupSpec { path, cpu })
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(config: serde_json::Value) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs/app")).unwrap();
        std::fs::write(dir.path().join("rootfs/app/hello.wasm"), b"\0asm\x01\0\0\0").unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
        dir
    }

    /// A compat image's container: no wasm layer to fall back on.
    fn plain(bundle: &Path) -> Result<Launch> {
        load(bundle, &mut |_, _| Ok(None))
    }

    fn config(args: &[&str], extra: serde_json::Value) -> serde_json::Value {
        let mut c = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": args, "env": ["PATH=/bin", "GREETING=hi"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs", "readonly": true},
        });
        if let serde_json::Value::Object(m) = extra {
            for (k, v) in m {
                c[k] = v;
            }
        }
        c
    }

    #[test]
    fn args_env_rootfs_and_memory_become_the_policy() {
        let b = bundle(config(
            &["/app/hello.wasm", "x"],
            serde_json::json!({
                "linux": {"resources": {"memory": {"limit": 64 << 20}}},
            }),
        ));
        let mounts = serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": b.path().join("data"), "options": ["rbind", "ro"]},
            {"destination": "/plain", "type": "bind", "source": b.path().join("data"), "options": ["bind"]},
        ]);
        let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(b.path().join("config.json")).unwrap()).unwrap();
        c["mounts"] = mounts;
        std::fs::write(b.path().join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();

        let l = plain(b.path()).unwrap();
        assert_eq!(l.module, b.path().join("rootfs/app/hello.wasm").canonicalize().unwrap());
        assert_eq!(l.policy.args, ["/app/hello.wasm", "x"]);
        assert_eq!(l.policy.env, [("PATH".to_string(), "/bin".to_string()), ("GREETING".to_string(), "hi".to_string())]);
        assert_eq!(l.policy.mounts.len(), 3, "{:?}", l.policy.mounts);
        assert_eq!((l.policy.mounts[0].guest.as_str(), l.policy.mounts[0].read_only), ("/", true));
        assert_eq!((l.policy.mounts[1].guest.as_str(), l.policy.mounts[1].read_only), ("/data", true));
        assert_eq!((l.policy.mounts[2].guest.as_str(), l.policy.mounts[2].read_only), ("/plain", false));
        assert_eq!(l.shallow, [2], "only the plain bind hides its submounts");
        assert_eq!(l.policy.limits.memory, Some(64 << 20));
        assert_eq!(l.http_addr.to_string(), DEFAULT_HTTP_ADDR);
        assert!(!l.pause);
    }

    #[test]
    fn a_malformed_spec_is_one_clear_error() {
        let mut c = config(&["/app/hello.wasm"], serde_json::json!({}));
        c["process"].as_object_mut().unwrap().remove("user");
        let e = plain(bundle(c).path()).unwrap_err().to_string();
        assert!(e.contains("not an OCI runtime spec: missing field `user`"), "{e}");
    }

    #[test]
    fn module_paths_must_stay_in_the_rootfs() {
        let b = bundle(config(&["../config.json"], serde_json::json!({})));
        assert!(plain(b.path()).unwrap_err().to_string().contains("must not contain .."));
        let b = bundle(config(&["/app/missing.wasm"], serde_json::json!({})));
        assert_eq!(plain(b.path()).unwrap_err().to_string(), "/app/missing.wasm: no such file in the image");
        let b = bundle(config(&["/app/escape.wasm"], serde_json::json!({})));
        std::os::unix::fs::symlink("/etc/hostname", b.path().join("rootfs/app/escape.wasm")).unwrap();
        assert!(plain(b.path()).unwrap_err().to_string().contains("outside the image's rootfs"));
        let b = bundle(config(&[], serde_json::json!({})));
        assert!(plain(b.path()).unwrap_err().to_string().contains("args[0] must name the wasm module"));
    }

    #[test]
    fn export_suffix_http_address_and_pause_containers() {
        let b = bundle(config(&["/app/hello.wasm#run"], serde_json::json!({})));
        let l = plain(b.path()).unwrap();
        assert_eq!(l.export.as_deref(), Some("run"));
        assert_eq!(l.policy.args[0], "/app/hello.wasm");

        let mut c = config(&["/app/hello.wasm"], serde_json::json!({}));
        c["process"]["env"] = serde_json::json!(["WASMCELL_HTTP_ADDR=127.0.0.1:9999"]);
        let b = bundle(c);
        assert_eq!(plain(b.path()).unwrap().http_addr.to_string(), "127.0.0.1:9999");
        let mut c = config(&["/app/hello.wasm"], serde_json::json!({}));
        c["process"]["env"] = serde_json::json!(["WASMCELL_HTTP_ADDR=nope"]);
        assert!(plain(bundle(c).path()).unwrap_err().to_string().starts_with("WASMCELL_HTTP_ADDR=nope: not an address"));

        let b = bundle(config(&["/pause"], serde_json::json!({"annotations": {"io.kubernetes.cri.container-type": "sandbox"}})));
        assert!(plain(b.path()).unwrap().pause);
    }

    #[test]
    fn a_wasm_layer_stands_in_for_a_module_missing_from_the_rootfs() {
        let b = bundle(config(&[], serde_json::json!({})));
        std::fs::remove_dir_all(b.path().join("rootfs")).unwrap();
        let layer = b.path().join("abc.wasm");
        let mut asked = Vec::new();
        let mut source = |_: &Path, name: Option<&str>| {
            asked.push(name.map(str::to_string));
            Ok(Some(ImageLaunch {
                kind: wasmcell_oci::image::ImageKind::Artifact,
                wasm: layer.clone(),
                argv0: "app.wasm".to_string(),
                default_args: Vec::new(),
                env: Vec::new(),
                rootfs: None,
            }))
        };
        let l = load(b.path(), &mut source).unwrap();
        assert_eq!(l.module, layer);
        assert_eq!(l.policy.args, ["app.wasm"], "argv[0] is the layer's title when the spec has no args");
        assert!(l.policy.mounts.is_empty(), "no rootfs, no / mount: {:?}", l.policy.mounts);

        let b = bundle(config(&["other.wasm#run", "x"], serde_json::json!({})));
        let l = load(b.path(), &mut source).unwrap();
        assert_eq!((l.policy.args.as_slice(), l.export.as_deref()), (&["other.wasm".to_string(), "x".to_string()][..], Some("run")));
        assert_eq!(asked, [None, Some("other.wasm".to_string())]);

        // A file of the rootfs wins: the content store is not asked.
        let b = bundle(config(&["/app/hello.wasm"], serde_json::json!({})));
        let l = load(b.path(), &mut |_, _| panic!("asked for a layer")).unwrap();
        assert!(l.module.ends_with("rootfs/app/hello.wasm"));
    }

    #[test]
    fn the_images_default_args_follow_its_argv0_when_the_spec_has_none() {
        let b = bundle(config(&[], serde_json::json!({})));
        let rootfs = b.path().join("rootfs");
        let mut source = |r: &Path, _: Option<&str>| {
            assert_eq!(r, rootfs, "the image source is given the container's rootfs");
            Ok(Some(ImageLaunch {
                kind: wasmcell_oci::image::ImageKind::WasmLayer,
                wasm: b.path().join("abc.wasm"),
                argv0: "app.wasm".to_string(),
                default_args: vec!["--flag".to_string()],
                env: vec!["IGNORED=1".to_string()],
                rootfs: None,
            }))
        };
        let l = load(b.path(), &mut source).unwrap();
        assert_eq!(l.policy.args, ["app.wasm", "--flag"]);
        assert!(!l.policy.env.iter().any(|(k, _)| k == "IGNORED"), "the spec's env is the guest's: {:?}", l.policy.env);
    }

    #[test]
    fn an_empty_args0_takes_the_images_module_and_keeps_the_specs_other_args() {
        let b = bundle(config(&["", "x"], serde_json::json!({})));
        let wasm = b.path().join("abc.wasm");
        let mut source = |_: &Path, name: Option<&str>| {
            assert_eq!(name, None, "an empty args[0] names no module");
            let (argv0, default_args) = ("app.wasm".to_string(), vec!["--flag".to_string()]);
            let kind = wasmcell_oci::image::ImageKind::WasmLayer;
            Ok(Some(ImageLaunch { kind, wasm: wasm.clone(), argv0, default_args, env: Vec::new(), rootfs: None }))
        };
        let l = load(b.path(), &mut source).unwrap();
        assert_eq!(l.policy.args, ["app.wasm", "x"], "the spec's args, not the image's defaults in their place");
    }
}
