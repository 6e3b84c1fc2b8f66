//! The compiled-code cache: a second run does not compile; a damaged entry is recompiled, not run.

use crate::{Cell, guests};

fn entries(cell: &Cell) -> Vec<std::path::PathBuf> {
    let dir = cell.home().join("cache/compiled");
    match std::fs::read_dir(dir) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        Err(_) => vec![],
    }
}

#[test]
fn second_run_does_not_compile() {
    let cell = Cell::new();
    let log = [("WASMCELL_LOG", "wasmcell_runtime=debug")];
    for file in [guests::HELLO_C, guests::HELLO_COMPONENT] {
        let first = cell.run_env(&log, &["run", file]);
        first.expect_ok();
        assert!(first.stderr().contains("cache miss"), "{}", first.stderr());
        assert!(first.stderr().contains("compiled"), "{}", first.stderr());
        let second = cell.run_env(&log, &["run", file]);
        second.expect_ok();
        assert_eq!(second.stdout(), "hello from C\n");
        assert!(second.stderr().contains("cache hit"), "{}", second.stderr());
        assert!(!second.stderr().contains("compiled "), "the second run compiled again: {}", second.stderr());
    }
    assert_eq!(entries(&cell).len(), 2);
}

#[test]
fn corrupted_or_truncated_entries_are_recompiled() {
    let cell = Cell::new();
    let log = [("WASMCELL_LOG", "wasmcell_runtime=debug")];
    cell.run(&["run", guests::HELLO_C]).expect_ok();
    let entry = entries(&cell).pop().expect("a cache entry");

    // Flip bytes in the middle of the compiled code.
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&entry, &bytes).unwrap();
    let out = cell.run_env(&log, &["run", guests::HELLO_C]);
    out.expect_ok();
    assert_eq!(out.stdout(), "hello from C\n");
    assert!(out.stderr().contains("corrupt"), "{}", out.stderr());
    assert!(out.stderr().contains("compiled"), "{}", out.stderr());

    // Truncate it.
    let len = std::fs::metadata(&entry).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&entry).unwrap().set_len(len / 3).unwrap();
    let out = cell.run_env(&log, &["run", guests::HELLO_C]);
    out.expect_ok();
    assert!(out.stderr().contains("corrupt"), "{}", out.stderr());

    // Repaired: the next run hits again.
    let out = cell.run_env(&log, &["run", guests::HELLO_C]);
    assert!(out.stderr().contains("cache hit"), "{}", out.stderr());
}

#[test]
fn no_cache_writes_nothing() {
    let cell = Cell::new();
    cell.run(&["run", "--no-cache", guests::HELLO_C]).expect_ok();
    assert!(entries(&cell).is_empty());
    let out = cell.run(&["cache", "clean"]);
    out.expect_ok();
}
