//! Property test of the OCI runtime spec → policy translation (`spec::load`): config.json files that are
//! arbitrary bytes, arbitrary JSON, or a valid spec with random fields set to values of any type. An
//! error is one short line; a policy grants nothing the spec did not ask for: mounts are the rootfs at
//! `/` or the spec's directory binds, env is `process.env`, args are `process.args` (or the image's),
//! the memory cap is the spec's, and no network, outbound HTTP, store or other limit appears.

use std::path::Path;

use oci_spec::runtime::Spec;
use proptest::prelude::*;
use serde_json::json;
use wasmcell_oci::launch::Launch as ImageLaunch;
use wasmcell_props::{DEFAULT_DISK_CASES, check, json as any_json, mutate_json, one_line, scratch, text};

use super::{Launch, load};

/// Stands for the bundle's directory in generated specs (written in when the case runs).
const BUNDLE: &str = "@BUNDLE@";

fn valid_spec() -> serde_json::Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["/app/hello.wasm#run", "x"], "env": ["PATH=/bin", "A=b=c", "WASMCELL_HTTP_ADDR=127.0.0.1:8080"],
                    "cwd": "/", "user": {"uid": 1000, "gid": 1000, "additionalGids": [5]}},
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [
            {"destination": "/data", "type": "bind", "source": format!("{BUNDLE}/data"), "options": ["rbind", "ro"]},
            {"destination": "/rw", "source": format!("{BUNDLE}/data"), "options": ["bind"]},
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/etc/hostname", "type": "bind", "source": format!("{BUNDLE}/afile"), "options": ["bind"]},
            {"destination": "/gone", "type": "bind", "source": "/nonexistent/dir"},
        ],
        "linux": {"resources": {"memory": {"limit": 64 << 20}, "cpu": {"shares": 1024, "quota": 50000, "period": 100000}},
                  "namespaces": [{"type": "network"}, {"type": "mount"}], "cgroupsPath": "/wasmcell/props"},
        "annotations": {"io.kubernetes.cri.container-type": "container"},
    })
}

fn config() -> impl Strategy<Value = Vec<u8>> {
    let to_bytes = |v: serde_json::Value| serde_json::to_vec(&v).expect("a value serializes");
    prop_oneof![
        1 => Just(valid_spec()).prop_map(to_bytes),
        12 => mutate_json(valid_spec()).prop_map(to_bytes),
        1 => any_json().prop_map(to_bytes),
        1 => text().prop_map(String::into_bytes),
    ]
}

fn image(bundle: &Path) -> ImageLaunch {
    ImageLaunch {
        kind: wasmcell_oci::image::ImageKind::WasmLayer,
        wasm: bundle.join("layer.wasm"),
        argv0: "app.wasm".into(),
        default_args: vec!["--flag".into()],
        env: vec!["IMAGE_ENV=1".into()],
        rootfs: None,
    }
}

#[test]
fn runtime_specs_grant_only_what_they_ask() {
    check("OCI runtime spec -> policy", DEFAULT_DISK_CASES, (config(), any::<bool>()), |(config, has_image)| {
        let dir = scratch();
        let bundle = dir.path();
        for d in ["rootfs/app", "data"] {
            std::fs::create_dir_all(bundle.join(d)).expect("mkdir");
        }
        std::fs::write(bundle.join("rootfs/app/hello.wasm"), b"\0asm\x01\0\0\0").expect("write");
        std::fs::write(bundle.join("afile"), b"x").expect("write");
        let config = String::from_utf8_lossy(&config).replace(BUNDLE, &bundle.to_string_lossy()).into_bytes();
        std::fs::write(bundle.join("config.json"), &config).expect("write");
        let result = load(bundle, &mut |_, _| Ok(has_image.then(|| image(bundle))));
        match result {
            Err(e) => one_line(&e),
            Ok(launch) => {
                let spec: Spec = serde_json::from_slice(&config).expect("load read it, so it is a spec");
                grants_only_the_spec(&launch, &spec, bundle, has_image)
            }
        }
    });
}

fn grants_only_the_spec(launch: &Launch, spec: &Spec, bundle: &Path, has_image: bool) -> Result<(), TestCaseError> {
    let p = &launch.policy;
    if launch.pause {
        prop_assert_eq!(p, &wasmcell_runtime::SandboxPolicy::default(), "a pause container is granted nothing");
        return Ok(());
    }
    prop_assert!(p.network.allow.is_empty() && !p.network.name_lookup && p.http_outbound.is_empty() && p.kv.is_empty() && p.app.is_empty());
    prop_assert!(p.limits.timeout.is_none() && p.limits.max_stack.is_none());
    let process = spec.process().as_ref().expect("a process");
    let env: Vec<(String, String)> = process
        .env()
        .iter()
        .flatten()
        .map(|kv| kv.split_once('=').map_or((kv.clone(), String::new()), |(k, v)| (k.to_string(), v.to_string())))
        .collect();
    prop_assert_eq!(&p.env, &env, "env is the spec's, nothing from the image");
    let memory = spec.linux().as_ref().and_then(|l| l.resources().as_ref()).and_then(|r| r.memory().as_ref()).and_then(|m| m.limit());
    prop_assert_eq!(p.limits.memory, memory.filter(|m| *m > 0).map(|m| m as u64));

    let args = process.args().clone().unwrap_or_default();
    let first = args.first().map_or("", |a| a.split_once('#').map_or(a.as_str(), |(f, _)| f));
    let expected: Vec<String> = if !first.is_empty() {
        std::iter::once(first.to_string()).chain(args.iter().skip(1).cloned()).collect()
    } else {
        // No module named: the image's argv[0], then the spec's other args, or else the image's defaults.
        prop_assert!(has_image, "no module named and no image, yet it runs");
        let rest = if args.len() > 1 { args[1..].to_vec() } else { vec!["--flag".to_string()] };
        std::iter::once("app.wasm".to_string()).chain(rest).collect()
    };
    prop_assert_eq!(&p.args, &expected, "args are the spec's (or the image's when the spec names no module)");
    let root = spec.root().as_ref().expect("a root");
    let rootfs = if root.path().is_absolute() { root.path().clone() } else { bundle.join(root.path()) };
    let real_rootfs = rootfs.canonicalize().ok();
    prop_assert!(
        launch.module == bundle.join("layer.wasm") || real_rootfs.is_some_and(|r| launch.module.starts_with(r)),
        "{:?}",
        launch.module
    );

    let spec_mounts = spec.mounts().clone().unwrap_or_default();
    prop_assert!(p.mounts.iter().filter(|m| m.guest == "/" && m.host == rootfs).count() <= 1);
    for m in &p.mounts {
        let is_rootfs = m.host == rootfs && m.guest == "/" && m.read_only == root.readonly().unwrap_or(false);
        let is_bind = spec_mounts.iter().any(|s| {
            let options = s.options().clone().unwrap_or_default();
            let bind = s.typ().as_deref() == Some("bind") || options.iter().any(|o| o == "bind" || o == "rbind");
            bind && s.source().as_ref() == Some(&m.host)
                && s.destination().to_string_lossy() == m.guest
                && m.read_only == options.iter().any(|o| o == "ro")
                && m.host.is_dir()
        });
        prop_assert!(is_rootfs || is_bind, "{m:?} is neither the rootfs nor a bind mount of the spec");
    }
    prop_assert!(p.mounts.len() <= spec_mounts.len() + 1);
    Ok(())
}
