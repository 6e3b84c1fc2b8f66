//! Traps, time and memory limits: each stops the guest, says so on stderr, and exits with its code.

use std::time::{Duration, Instant};

use crate::{Cell, both, guests};

#[test]
fn trap_prints_the_trap_and_a_named_backtrace() {
    let cell = Cell::new();
    let out = cell.run(&["run", guests::TRAP_WAT]);
    out.expect_code(134);
    let err = out.stderr();
    assert!(err.starts_with("wasmcell: guest trapped: "), "{err}");
    assert!(err.contains("unreachable"), "{err}");
    let frames: Vec<&str> = err.lines().skip_while(|l| !l.starts_with("wasm backtrace")).skip(1).collect();
    assert!(frames.len() >= 3, "{err}");
    assert!(frames[0].ends_with("boom") && frames[1].ends_with("outer") && frames[2].ends_with("main"), "{err}");
}

#[test]
fn stack_overflow_is_a_trap() {
    let cell = Cell::new();
    let out = cell.run(&["run", "--max-stack", "64K", guests::RECURSE_WAT]);
    out.expect_code(134);
    assert!(out.stderr().contains("call stack exhausted"), "{}", out.stderr());
    cell.run(&["run", "--max-stack", "1K", guests::RECURSE_WAT]).expect_code(125);
}

#[test]
fn timeout_stops_a_spinning_guest() {
    let cell = Cell::new();
    let start = Instant::now();
    let out = cell.run(&["run", "--timeout", "300ms", guests::SPIN_WAT]);
    let took = start.elapsed();
    out.expect_code(124).expect_error_line("time limit of 300ms");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn timeout_stops_a_guest_blocked_in_a_host_call() {
    let cell = Cell::new();
    for (kind, file) in both(guests::SLEEP_C, guests::SLEEP_COMPONENT) {
        let start = Instant::now();
        let out = cell.run(&["run", "--timeout", "500ms", file.to_str().unwrap(), "100"]);
        let took = start.elapsed();
        out.expect_code(124).expect_error_line("time limit");
        assert!(took < Duration::from_secs(10), "{kind}: took {took:?}");
        assert_eq!(out.stdout(), "", "{kind}");
    }
    // A guest that finishes in time is not disturbed.
    cell.run(&["run", "--timeout", "30s", guests::SLEEP_C, "0"]).expect_ok();
}

#[test]
fn memory_limit_stops_growth() {
    let cell = Cell::new();
    // Only the core module: a C component built with the jco 1.35 adapter and Debian's 2022 wasi-libc
    // fails an adapter assertion on its first write after the heap grew (under `wasmtime run` too), so
    // components are covered by `component_grow.wat` below.
    {
        let (kind, file) = ("module", guests::MEMHOG_C);
        let f = file;
        let out = cell.run(&["run", "--memory", "64M", f, "16"]);
        out.expect_ok();
        assert!(out.stdout().ends_with("\nallocated 16 MiB\n"), "{kind}: {}", out.stdout());
        let out = cell.run(&["run", "--memory", "64M", f, "200"]);
        out.expect_code(137);
        assert!(out.stderr().contains("memory limit of 64 MiB"), "{kind}: {}", out.stderr());
        assert!(out.stdout().contains("\nallocation failed after "), "{kind}: the guest saw malloc fail: {}", out.stdout());
        // Without a limit the same request succeeds.
        cell.run(&["run", f, "200"]).expect_ok();
    }
    let out = cell.run(&["run", "--memory", "1M", guests::GROW_WAT]);
    out.expect_code(137).expect_error_line("memory limit of 1 MiB");
    let out = cell.run(&["run", "--memory", "8M", guests::COMPONENT_GROW_WAT]);
    out.expect_code(137).expect_error_line("memory limit of 8 MiB");
}

#[test]
fn memory_cap_holds_against_many_memories() {
    // Four 56 MiB memories: each fits under 64M, together they must not (was: exit 0 at 246 MB RSS).
    let cell = Cell::new();
    let out = cell.run(&["run", "--memory", "64M", guests::MANY_MEMORIES_WAT]);
    out.expect_code(137).expect_error_line("memory limit of 64 MiB");
    // The same guest with room for all four runs to its end.
    cell.run(&["run", "--memory", "300M", guests::MANY_MEMORIES_WAT]).expect_ok();
}

#[test]
fn memory_cap_holds_against_huge_tables() {
    // Five tables of 10M elements each are 400 MB of host memory (was: exit 0 at 410 MB RSS).
    let cell = Cell::new();
    let out = cell.run(&["run", "--memory", "1M", guests::HUGE_TABLES_WAT]);
    out.expect_code(137).expect_error_line("memory limit of 1 MiB");
}

#[test]
fn a_module_declaring_too_many_memories_is_refused_in_one_line() {
    // Each memory reserves address space when it is made: more than 100 are refused before anything
    // runs (the parser's limit, and the store's limiter behind it), one line, not runnable.
    let dir = tempfile::tempdir().unwrap();
    let mut wat = String::from("(module\n");
    for i in 0..101 {
        wat.push_str(&format!("  (memory $m{i} 0)\n"));
    }
    wat.push_str("  (func (export \"_start\")))\n");
    let path = dir.path().join("mems.wat");
    std::fs::write(&path, wat).unwrap();
    Cell::new().run(&["run", path.to_str().unwrap()]).expect_code(126).expect_error_line("memories count exceeds limit");
}
