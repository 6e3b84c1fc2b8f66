//! Every kind of bad input: one clear line on stderr and its documented exit code.

use crate::{Cell, guests, scratch};

#[test]
fn missing_file_is_127() {
    Cell::new().run(&["run", "/nonexistent/app.wasm"]).expect_code(127).expect_error_line("no such file");
}

#[test]
fn unrunnable_files_are_126() {
    let cell = Cell::new();
    let dir = scratch();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let cases = [
        (write("script.sh", b"#!/bin/sh\necho hi\n"), "not a WebAssembly file"),
        (write("binary.wasm", b"\0asm\x01\0\0\0\x01\x05garbage"), "invalid module"),
        (write("empty.wasm", b""), "not a WebAssembly file"),
        (write("bad.wat", b"(module (func (i32.bogus)))"), "invalid WebAssembly text"),
        (write("future.wasm", b"\0asm\x09\0\0\0"), "unsupported wasm binary version"),
        (guests::MISSING_IMPORT_WAT.to_string(), "env::frobnicate"),
        (guests::REACTOR_WAT.to_string(), "_start"),
        (guests::COMPONENT_LIB_WAT.to_string(), "wasi:cli/run"),
        (dir.path().to_str().unwrap().to_string(), "is a directory"),
    ];
    for (file, needle) in cases {
        cell.run(&["run", &file]).expect_code(126).expect_error_line(needle);
    }
}

#[test]
fn wasmcell_errors_are_125() {
    let cell = Cell::new();
    let hello = guests::HELLO_C;
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--dir", "/nonexistent/dir", hello], "/nonexistent/dir"),
        (&["run", "-v", "/nonexistent/dir:/data", hello], "/nonexistent/dir"),
        (&["run", "-v", "/tmp:relative", hello], "must be absolute"),
        (&["run", "-v", "/tmp:/data:rx", hello], "unknown option"),
        (&["run", "--memory", "lots", hello], "invalid size"),
        (&["run", "--timeout", "soon", hello], "invalid duration"),
        (&["run", "--net", "example.com:80", hello], "invalid --net"),
        (&["run", "-e", "=x", hello], "invalid environment variable"),
        (&["run", "--env-file", "/nonexistent/env", hello], "cannot read env file"),
        (&["run", "--bogus-flag", hello], "--bogus-flag"),
        (&["run"], "FILE"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, needle) in cases {
        cell.run(args).expect_code(125).expect_error_line(needle);
    }
}

#[test]
fn help_lists_the_exit_codes() {
    let out = Cell::new().run(&["run", "--help"]);
    out.expect_ok();
    for code in ["124", "125", "126", "127", "134", "137"] {
        assert!(out.stdout().contains(&format!("  {code}  ")), "--help should document exit code {code}");
    }
}
