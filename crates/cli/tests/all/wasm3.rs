//! Wasm 3.0: a guest for each standard feature runs under `wasmcell run` (each exits 0 only when the
//! feature computed the right value), `inspect` names the proposals a module uses, and a GC heap is
//! held to `--memory` like a linear memory.

use crate::{Cell, guests};

/// Each Wasm 3.0 guest and the proposals `inspect` must find in it.
const GUESTS: &[(&str, &[&str])] = &[
    (guests::W3_EXCEPTIONS_WAT, &["exceptions"]),
    (guests::W3_GC_WAT, &["gc"]),
    (guests::W3_TAIL_CALL_WAT, &["tail-call", "function-references"]),
    (guests::W3_MEMORY64_WAT, &["memory64", "multi-memory", "bulk-memory"]),
    (guests::W3_SIMD_WAT, &["relaxed-simd", "extended-const", "simd"]),
];

/// Before: exceptions and GC failed with "exception refs not supported without the exception handling
/// feature" / "cannot define struct types when gc types are disabled" (exit 126).
#[test]
fn every_wasm3_feature_runs() {
    let cell = Cell::new();
    for (guest, _) in GUESTS {
        cell.run(&["run", guest]).expect_ok();
    }
}

#[test]
fn inspect_names_the_proposals_a_module_uses() {
    let cell = Cell::new();
    for (guest, used) in GUESTS {
        let out = cell.run(&["inspect", "--format", "json", guest]);
        out.expect_ok();
        let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
        let found: Vec<&str> = v["proposals"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        for p in *used {
            assert!(found.contains(p), "{guest}: {p} not in {found:?}");
        }
        assert!(!found.contains(&"threads") && !found.contains(&"component-model-async"), "{guest}: {found:?}");
    }
    let out = cell.run(&["inspect", guests::W3_GC_WAT]);
    assert!(out.stdout().lines().any(|l| l.starts_with("uses:") && l.contains("gc")), "{}", out.stdout());
}

/// A GC heap is host memory too: a list of 1 MiB arrays that only grows stops at the cap, exit 137.
#[test]
fn a_gc_heap_is_held_to_the_memory_cap() {
    let cell = Cell::new();
    let out = cell.run(&["run", "--memory", "64M", guests::W3_GC_HOG_WAT]);
    out.expect_code(137);
    assert!(out.stderr().contains("memory limit of 64 MiB"), "{}", out.stderr());
}
