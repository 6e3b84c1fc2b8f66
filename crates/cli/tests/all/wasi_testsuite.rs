//! The official WASI conformance suite (WebAssembly/wasi-testsuite, pinned, prebuilt; see
//! `../shared/wasi-testsuite.md`), its preview 1 tests run through `wasmcell run` as its own runner
//! would run them: each `NAME.json` spec's args, env and root directory (a fresh copy, mounted at `/`),
//! its expected exit code (0 unless said) and stdout. Every test must pass. Where the tarball is absent
//! (a clone outside this project's machines) the test says it skipped and passes; set
//! `WASMCELL_WASI_TESTSUITE` to point at another copy.
//!
//! The WASI 0.3 tests (`wasm32-wasip3`) are counted, not run: wasmcell does not run WASI 0.3 yet.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Cell, scratch};

/// The tarball: `$WASMCELL_WASI_TESTSUITE`, or `shared/wasi-testsuite.tar.gz` beside the checkout.
fn tarball() -> Option<PathBuf> {
    let given = std::env::var_os("WASMCELL_WASI_TESTSUITE").map(PathBuf::from);
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/wasi-testsuite.tar.gz");
    given.or(Some(beside)).filter(|p| p.is_file())
}

/// The suite unpacked once per build directory (a stamp names the tarball it came from).
fn unpacked(tarball: &Path) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasi-testsuite");
    let meta = std::fs::metadata(tarball).unwrap();
    let stamp = format!("{} {}", tarball.display(), meta.len());
    if std::fs::read_to_string(dir.join(".stamp")).ok().as_deref() == Some(stamp.as_str()) {
        return dir.join("wasi-testsuite");
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(tarball).unwrap());
    tar::Archive::new(gz).unpack(&dir).unwrap();
    std::fs::write(dir.join(".stamp"), stamp).unwrap();
    dir.join("wasi-testsuite")
}

/// The `.wasm` tests of every suite directory named `version` (`wasm32-wasip1`), sorted.
fn tests_of(root: &Path, version: &str) -> Vec<PathBuf> {
    let mut tests = Vec::new();
    for lang in std::fs::read_dir(root.join("tests")).unwrap().flatten() {
        let dir = lang.path().join("testsuite").join(version);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().extension().is_some_and(|e| e == "wasm") {
                tests.push(entry.path());
            }
        }
    }
    tests.sort();
    tests
}

/// Runs one preview 1 test; `Err` says how it failed.
fn run_p1(cell: &Cell, test: &Path) -> Result<(), String> {
    let spec: Value = std::fs::read_to_string(test.with_extension("json")).map_or(Value::Null, |t| serde_json::from_str(&t).unwrap());
    let mut args: Vec<String> = vec!["run".into()];
    for (k, v) in spec["env"].as_object().into_iter().flatten() {
        args.push("--env".into());
        args.push(format!("{k}={}", v.as_str().unwrap()));
    }
    let copy = scratch();
    if let Some(root) = spec["root"].as_str() {
        // A fresh copy (symlinks kept), so that one test's writes never reach another's.
        let status =
            std::process::Command::new("cp").arg("-a").arg(test.parent().unwrap().join(root)).arg(copy.path().join("root")).status();
        assert!(status.unwrap().success(), "cp {root}");
        args.push("--dir".into());
        args.push(format!("{}::/", copy.path().join("root").display()));
    }
    args.push(test.to_string_lossy().into_owned());
    args.extend(spec["args"].as_array().into_iter().flatten().map(|a| a.as_str().unwrap().to_string()));
    let out = cell.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let want = spec["exit_code"].as_i64().unwrap_or(0);
    let code = out.code();
    if i64::from(code) != want {
        return Err(format!("exit {code}, expected {want}; stderr: {}", out.stderr().trim()));
    }
    if let Some(stdout) = spec["stdout"].as_str()
        && out.stdout() != stdout
    {
        return Err(format!("stdout {:?}, expected {stdout:?}", out.stdout()));
    }
    Ok(())
}

#[test]
fn the_official_wasi_testsuite_passes() {
    let Some(tarball) = tarball() else {
        eprintln!("wasi-testsuite: SKIPPED, no ../shared/wasi-testsuite.tar.gz (or $WASMCELL_WASI_TESTSUITE)");
        return;
    };
    let root = unpacked(&tarball);
    let cell = Cell::new();
    let p1 = tests_of(&root, "wasm32-wasip1");
    assert!(p1.len() >= 72, "only {} preview 1 tests in {}", p1.len(), root.display());
    let failed: Vec<String> =
        p1.iter().filter_map(|t| run_p1(&cell, t).err().map(|e| format!("{}: {e}", t.strip_prefix(&root).unwrap().display()))).collect();
    let p3 = tests_of(&root, "wasm32-wasip3");
    eprintln!(
        "wasi-testsuite: preview 1 {}/{} passed; WASI 0.3: {} tests not run (not supported yet)",
        p1.len() - failed.len(),
        p1.len(),
        p3.len()
    );
    assert!(failed.is_empty(), "{} of {} preview 1 tests failed:\n{}", failed.len(), p1.len(), failed.join("\n"));
}
