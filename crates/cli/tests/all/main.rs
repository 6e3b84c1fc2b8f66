//! End-to-end tests of the `wasmcell` binary, with guests built from source (`wasmcell-test-programs`).
//! One test binary for the crate, so wasmtime is linked once.

mod bad_input;
mod cache;
mod commands;
mod engines;
mod images;
mod kv;
mod limits;
mod sandbox;
mod serve;
mod serve_toolchains;
mod services;
mod shim;
mod wasi_p3;
mod wasi_testsuite;
mod wasm3;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use wasmcell_test_programs as guests;

/// A private `WASMCELL_HOME` and a way to run `wasmcell` in it with a clean environment.
pub struct Cell {
    pub home: tempfile::TempDir,
    /// Environment variables every command of this cell gets (e.g. `WASMCELL_ENGINE`).
    env: Vec<(String, String)>,
}

impl Default for Cell {
    fn default() -> Self {
        Self::new()
    }
}

impl Cell {
    pub fn new() -> Cell {
        Cell { home: tempfile::tempdir().unwrap(), env: Vec::new() }
    }

    /// A cell whose every command runs with `key=value` in wasmcell's environment.
    pub fn with_env(mut self, key: &str, value: &str) -> Cell {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The engine this cell's commands use, when one was set.
    pub fn engine(&self) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == "WASMCELL_ENGINE").map(|(_, v)| v.as_str())
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wasmcell"));
        c.env_clear().env("WASMCELL_HOME", self.home.path()).env("PATH", std::env::var_os("PATH").unwrap_or_default()).stdin(Stdio::null());
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs `wasmcell ARGS` and returns its output.
    pub fn run(&self, args: &[&str]) -> Out {
        Out(self.command().args(args).output().unwrap())
    }

    /// Runs `wasmcell ARGS` with extra environment variables for the wasmcell process itself.
    pub fn run_env(&self, env: &[(&str, &str)], args: &[&str]) -> Out {
        let mut c = self.command();
        c.envs(env.iter().copied());
        Out(c.args(args).output().unwrap())
    }

    /// Runs `wasmcell ARGS` feeding `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Out {
        let mut child = self.command().args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        Out(out)
    }
}

/// A finished command, with assertion helpers that print everything on failure.
pub struct Out(pub Output);

impl Out {
    pub fn code(&self) -> i32 {
        self.0.status.code().expect("wasmcell was killed by a signal")
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// Asserts the exit code, showing both streams when it differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), code, "unexpected exit code\nstdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr());
        self
    }

    #[track_caller]
    pub fn expect_ok(&self) -> &Self {
        self.expect_code(0)
    }

    /// Asserts one clean line on stderr containing `needle`: no panic, no Rust backtrace.
    #[track_caller]
    pub fn expect_error_line(&self, needle: &str) -> &Self {
        let err = self.stderr();
        assert_eq!(err.lines().count(), 1, "expected exactly one line on stderr, got:\n{err}");
        assert!(err.starts_with("wasmcell: "), "error line should start with `wasmcell: `: {err}");
        assert!(err.contains(needle), "stderr should mention `{needle}`: {err}");
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
        self
    }
}

/// A fresh scratch directory.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Both flavours of a C guest: the core module and the component.
pub fn both(module: &'static str, component: &'static str) -> [(&'static str, PathBuf); 2] {
    [("module", PathBuf::from(module)), ("component", PathBuf::from(component))]
}
