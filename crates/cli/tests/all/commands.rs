//! `wasmcell compile` and `wasmcell inspect`.

use crate::{Cell, guests, scratch};

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
