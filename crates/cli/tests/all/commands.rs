//! `wasmcell compile` and `wasmcell inspect`.

use crate::{Cell, Out, guests, scratch};

#[test]
fn compile_then_run_precompiled() {
    let cell = Cell::new();
    let dir = scratch();
    let out_path = dir.path().join("hello.cwasm");
    let out = out_path.to_str().unwrap();
    cell.run(&["compile", guests::HELLO_COMPONENT, "-o", out]).expect_ok();
    assert!(std::fs::metadata(&out_path).unwrap().len() > 0);
    cell.run(&["run", out]).expect_code(126).expect_error_line("--allow-precompiled");
    let run = cell.run(&["run", "--allow-precompiled", out]);
    run.expect_ok();
    assert_eq!(run.stdout(), "hello from C\n");
    cell.run(&["compile", "/nonexistent.wasm"]).expect_code(127);
}

/// Names relative to the current directory, as a user types them: `compile app.wasm` writes
/// `app.cwasm` beside it, `key generate --output-key-prefix team` writes `team.key` and `team.pub` there.
#[test]
fn files_named_without_a_directory_are_written_in_the_current_one() {
    let cell = Cell::new();
    let dir = scratch();
    std::fs::copy(guests::HELLO_COMPONENT, dir.path().join("app.wasm")).unwrap();
    let out = Out(cell.command().current_dir(dir.path()).args(["compile", "app.wasm"]).output().unwrap());
    out.expect_ok();
    assert!(std::fs::metadata(dir.path().join("app.cwasm")).unwrap().len() > 0);
    let out = Out(cell
        .command()
        .current_dir(dir.path())
        .env("WASMCELL_PASSWORD", "pw")
        .args(["key", "generate", "--output-key-prefix", "team"])
        .output()
        .unwrap());
    out.expect_ok();
    assert!(dir.path().join("team.key").is_file() && dir.path().join("team.pub").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn inspect_reports_kind_wasi_imports_and_exports() {
    let cell = Cell::new();
    let out = cell.run(&["inspect", "--format", "json", guests::HELLO_COMPONENT]);
    out.expect_ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(v["kind"], "component");
    assert!(v["wasi"].as_str().unwrap().starts_with("0.2."), "{v}");
    let names = |key: &str| -> Vec<String> { v[key].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect() };
    assert!(names("exports").iter().any(|e| e.starts_with("wasi:cli/run@0.2")), "{v}");
    assert!(names("imports").iter().any(|e| e.starts_with("wasi:cli/stdout@0.2")), "{v}");

    let out = cell.run(&["inspect", guests::HELLO_WAT]);
    out.expect_ok();
    let text = out.stdout();
    assert!(text.contains("kind:     module"), "{text}");
    assert!(text.contains("wasi:     preview1"), "{text}");
    assert!(text.contains("wasi_snapshot_preview1::fd_write"), "{text}");
    assert!(text.contains("_start"), "{text}");
    cell.run(&["inspect", "/nonexistent.wasm"]).expect_code(127);
}
