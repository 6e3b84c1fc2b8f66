//! Components made by the usual toolchains, unchanged, under `wasmcell serve`: a Python app built with
//! componentize-py (exports wasi:http/incoming-handler@0.2.0, what cargo-component `--proxy` and most SDKs
//! target) and a JS app built with componentize-js (StarlingMonkey's fetch event, wasi:http@0.2.10).
//! Both are built here from crates/test-programs/toolchains with the pinned tools that ./scripts/test
//! installs in .deps; a missing tool fails the test (never a silent skip).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Cell;
use crate::serve::Served;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn toolchains() -> PathBuf {
    repo().join("crates/test-programs/toolchains")
}

/// `path`, which ./scripts/test installs; fails the test when it is missing.
#[track_caller]
fn installed(path: PathBuf, what: &str) -> PathBuf {
    assert!(path.exists(), "{what} is missing ({}): run ./scripts/test, which installs it", path.display());
    path
}

/// Runs a build step; panics with its output when it fails. Returns how long it took.
#[track_caller]
fn build(mut c: Command, what: &str) -> Duration {
    let t = Instant::now();
    let out = c.output().unwrap_or_else(|e| panic!("{what}: cannot run {:?} ({e}): run ./scripts/test", c.get_program()));
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

/// Asserts `wasmcell inspect` lists `export` among the component's exports.
#[track_caller]
fn assert_exports(component: &Path, export: &str) -> String {
    let out = Cell::new().run(&["inspect", component.to_str().unwrap()]);
    out.expect_ok();
    let text = out.stdout();
    let exports = text.split_once("exports:").map_or("", |(_, e)| e);
    assert!(exports.lines().any(|l| l.split_whitespace().last() == Some(export)), "no export {export} in:\n{text}");
    text
}

/// Serves `component` and asserts two requests are answered 200 with `body`; prints the timings.
#[track_caller]
fn serve_twice(name: &str, component: &Path, body: &str, built_in: Duration) {
    let size = std::fs::metadata(component).unwrap().len();
    let t = Instant::now();
    let s = Served::start(component.to_str().unwrap(), &[]);
    let started = t.elapsed();
    let mut times = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        let r = s.get("/");
        times.push(t.elapsed());
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(r.text(), body, "{name}");
    }
    eprintln!(
        "{name}: built in {built_in:.1?}, {size} bytes, serving after {started:.1?}, requests {:.1?} then {:.1?}",
        times[0], times[1]
    );
}

#[test]
fn componentize_py_wasi_http_0_2_0_app_serves_unchanged() {
    let cpy = installed(repo().join(".deps/py/bin/componentize-py"), "componentize-py");
    let dir = crate::scratch();
    // componentize-py writes __pycache__ next to the app: build from a copy, not from the source tree.
    let app = dir.path().join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::copy(toolchains().join("python/app.py"), app.join("app.py")).unwrap();
    let component = dir.path().join("python.wasm");
    let mut c = Command::new(cpy);
    c.arg("-d")
        .arg(toolchains().join("wasi-http-0.2.0"))
        .args(["-w", "wasi:http/proxy@0.2.0", "componentize", "-p"])
        .arg(&app)
        .args(["app", "-o"])
        .arg(&component);
    let took = build(c, "componentize-py");
    assert_exports(&component, "wasi:http/incoming-handler@0.2.0");
    serve_twice("componentize-py", &component, "hello from python\n", took);
}

#[test]
fn componentize_js_fetch_event_app_serves_unchanged() {
    let node_modules = installed(repo().join(".deps/node/node_modules"), "componentize-js (npm)");
    installed(node_modules.join("@bytecodealliance/componentize-js"), "componentize-js (npm)");
    let wasi_wit = installed(repo().join(".deps/jco/package/lib/wit/builtin/0.2.12"), "the WASI WIT of jco");
    let dir = crate::scratch();
    // The StarlingMonkey engine of componentize-js 0.23 exports exactly wasi:http/incoming-handler@0.2.10,
    // so the target world must be that version. No package ships the whole 0.2.10 WIT; the 0.2.x releases
    // differ only in their version (0.2.11 and 0.2.12 add nothing to these files), so jco's 0.2.12 WIT
    // with the version rewritten is it.
    let wit = dir.path().join("wit");
    std::fs::create_dir_all(wit.join("deps")).unwrap();
    for pkg in ["http", "cli", "clocks", "filesystem", "io", "random", "sockets"] {
        let text = std::fs::read_to_string(wasi_wit.join(format!("wasi-{pkg}/package.wit"))).unwrap();
        let file = if pkg == "http" { wit.join("http.wit") } else { wit.join(format!("deps/{pkg}.wit")) };
        std::fs::write(file, text.replace("@0.2.12", "@0.2.10")).unwrap();
    }
    let component = dir.path().join("js.wasm");
    let mut c = Command::new("node");
    c.arg(toolchains().join("js/build.mjs")).arg(&node_modules).arg(&wit).arg("wasi:http/proxy@0.2.10").arg(&component);
    let took = build(c, "componentize-js");
    assert_exports(&component, "wasi:http/incoming-handler@0.2.10");
    serve_twice("componentize-js", &component, "hello from js\n", took);
}
