//! What a guest sees: its arguments, exactly the environment it was granted, only its mounts, its
//! standard streams, its own exit code.

use std::os::unix::fs::symlink;

use crate::{Cell, both, guests, scratch};

#[test]
fn hello_for_each_kind() {
    let cell = Cell::new();
    for (file, expected) in [
        (guests::HELLO_C, "hello from C\n"),
        (guests::HELLO_COMPONENT, "hello from C\n"),
        (guests::HELLO_WAT, "hello from WAT\n"),
        (guests::HELLO_WASM, "hello from WAT\n"),
    ] {
        let out = cell.run(&["run", file]);
        out.expect_ok();
        assert_eq!(out.stdout(), expected, "{file}");
    }
    // The text format of a component, too.
    cell.run(&["run", guests::COMPONENT_OK_WAT]).expect_ok();
    cell.run(&["run", guests::COMPONENT_ERR_WAT]).expect_code(1);
}

#[test]
fn args_are_passed_after_the_file() {
    let cell = Cell::new();
    for (kind, file) in both(guests::ARGS_C, guests::ARGS_COMPONENT) {
        let f = file.to_str().unwrap();
        let out = cell.run(&["run", f, "one", "--two", "three four"]);
        out.expect_ok();
        let name = file.file_name().unwrap().to_str().unwrap();
        assert_eq!(out.stdout(), format!("argc=4\nargv[0]={name}\nargv[1]=one\nargv[2]=--two\nargv[3]=three four\n"), "{kind}");
    }
}

#[test]
fn environment_is_empty_unless_granted() {
    let cell = Cell::new();
    let dir = scratch();
    let env_file = dir.path().join("app.env");
    std::fs::write(&env_file, "# settings\nFROM_FILE=1\n\nHOST_COPY\nOVERRIDE=file\n").unwrap();
    let host = [("HOST_SECRET", "do-not-leak"), ("HOST_COPY", "copied"), ("HOME", "/root")];
    for (kind, file) in both(guests::ENV_C, guests::ENV_COMPONENT) {
        let f = file.to_str().unwrap();
        let out = cell.run_env(&host, &["run", f]);
        out.expect_ok();
        assert_eq!(out.stdout(), "-- end of environment\n", "{kind}: nothing granted, nothing seen");

        let out = cell.run_env(
            &host,
            &["run", "--env-file", env_file.to_str().unwrap(), "-e", "A=1", "--env", "OVERRIDE=flag", "--env", "UNSET_ON_HOST", f],
        );
        out.expect_ok();
        let mut seen: Vec<String> = out.stdout().lines().map(String::from).collect();
        assert_eq!(seen.pop().as_deref(), Some("-- end of environment"));
        seen.sort();
        assert_eq!(seen, ["A=1", "FROM_FILE=1", "HOST_COPY=copied", "OVERRIDE=flag"], "{kind}");
    }
}

/// A host layout with something worth stealing next to the mounted directory.
struct Tree {
    root: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let root = scratch();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("hello.txt"), "inside").unwrap();
        std::fs::create_dir(root.path().join("outside")).unwrap();
        std::fs::write(root.path().join("outside/secret.txt"), "secret").unwrap();
        symlink("../outside/secret.txt", data.join("link-out")).unwrap();
        symlink("/etc/hostname", data.join("link-abs")).unwrap();
        symlink("hello.txt", data.join("link-in")).unwrap();
        Tree { root }
    }

    fn data(&self) -> String {
        self.root.path().join("data").to_str().unwrap().to_string()
    }
}

#[test]
fn directories_are_confined_to_their_mounts() {
    let cell = Cell::new();
    for (kind, file) in both(guests::FS_C, guests::FS_COMPONENT) {
        let tree = Tree::new();
        let f = file.to_str().unwrap();
        let dir = format!("{}::/data", tree.data());
        let fs = |op: &str, path: &str| cell.run(&["run", "--dir", &dir, f, op, path]);

        let out = fs("read", "/data/hello.txt");
        out.expect_ok();
        assert_eq!(out.stdout(), "ok: inside\n", "{kind}");
        fs("read", "/data/link-in").expect_ok();
        assert!(fs("ls", "/data").stdout().contains("hello.txt"), "{kind}");

        for escape in ["/data/../outside/secret.txt", "/data/link-out", "/data/link-abs", "/etc/hostname", "../outside/secret.txt", "/"] {
            let out = fs("read", escape);
            out.expect_code(1);
            assert!(out.stdout().starts_with("denied: "), "{kind}: {escape} must not be readable: {}", out.stdout());
        }

        let out = cell.run(&["run", "--dir", &dir, f, "write", "/data/new.txt", "written"]);
        out.expect_ok();
        assert_eq!(std::fs::read_to_string(tree.root.path().join("data/new.txt")).unwrap(), "written");
        let out = cell.run(&["run", "--dir", &dir, f, "write", "/data/../outside/evil.txt", "x"]);
        out.expect_code(1);
        assert!(!tree.root.path().join("outside/evil.txt").exists(), "{kind}");
    }
}

#[test]
fn read_only_volumes_refuse_writes() {
    let cell = Cell::new();
    for (kind, file) in both(guests::FS_C, guests::FS_COMPONENT) {
        let tree = Tree::new();
        let f = file.to_str().unwrap();
        let vol = format!("{}:/data:ro", tree.data());
        let out = cell.run(&["run", "-v", &vol, f, "read", "/data/hello.txt"]);
        out.expect_ok();
        let out = cell.run(&["run", "-v", &vol, f, "write", "/data/hello.txt", "clobbered"]);
        out.expect_code(1);
        assert!(out.stdout().starts_with("denied: "), "{kind}");
        let out = cell.run(&["run", "-v", &vol, f, "write", "/data/new.txt", "x"]);
        out.expect_code(1);
        assert_eq!(std::fs::read_to_string(tree.root.path().join("data/hello.txt")).unwrap(), "inside", "{kind}");
        assert!(!tree.root.path().join("data/new.txt").exists(), "{kind}");
        // The same directory read-write through docker's syntax.
        let rw = format!("{}:/data", tree.data());
        cell.run(&["run", "-v", &rw, f, "write", "/data/new.txt", "x"]).expect_ok();
    }
}

#[test]
fn guest_exit_codes_pass_through() {
    let cell = Cell::new();
    for code in [0, 1, 7, 42, 125] {
        cell.run(&["run", guests::EXIT_C, &code.to_string()]).expect_code(code);
        // The preview1 adapter (jco 1.35) maps proc_exit(n != 0) to wasi:cli/exit#exit(err), which
        // carries no code: a component built with it can only exit 0 or 1 (as under `wasmtime run`).
        cell.run(&["run", guests::EXIT_COMPONENT, &code.to_string()]).expect_code(code.min(1));
    }
    // A component that uses exit-with-code (WASI 0.2.12) gets its exact code through.
    cell.run(&["run", guests::COMPONENT_EXIT42_WAT]).expect_code(42);
    // WASI preview 1 reserves statuses from 126 up; a guest using one fails like a trap.
    let out = cell.run(&["run", guests::EXIT_C, "200"]);
    out.expect_code(134);
    assert!(out.stderr().contains("invalid exit status"), "{}", out.stderr());
}

#[test]
fn stdin_passes_through() {
    let cell = Cell::new();
    let input: Vec<u8> = (0..(1 << 20) + 123).map(|i| (i % 251) as u8).collect();
    for (kind, file) in both(guests::CAT_C, guests::CAT_COMPONENT) {
        let out = cell.run_stdin(&["run", file.to_str().unwrap()], &input);
        out.expect_ok();
        assert!(out.0.stdout == input, "{kind}: stdout differs from stdin ({} vs {} bytes)", out.0.stdout.len(), input.len());
        assert!(out.stderr().contains(&format!("copied {} bytes", input.len())), "{kind}: {}", out.stderr());
    }
}

#[test]
fn malformed_outbound_rules_are_refused_not_widened() {
    // Each of these was accepted (and matched hosts it did not name); now each is one line, exit 125.
    let cell = Cell::new();
    for rule in ["http://*.", "http://[::1]garbage", "http://::1", "http://a..b"] {
        let out = cell.run(&["serve", "--addr", "127.0.0.1:0", "--allow-outbound", rule, guests::HTTP_HELLO]);
        out.expect_code(125).expect_error_line("--allow-outbound");
    }
}
