//! The instance lifecycle as serve and the containerd shim drive it: create, start on a thread of its
//! own, kill from another thread, wait for the status; many instances from one loaded program.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmcell_runtime::engine::EngineOptions;
use wasmcell_runtime::home::Home;
use wasmcell_runtime::inspect::Input;
use wasmcell_runtime::kv::Stores;
use wasmcell_runtime::policy::Limits;
use wasmcell_runtime::{Engine, Error, Grants, Instance, Program, SandboxPolicy, Stdio, StdioSpec, WasmtimeEngine};
use wasmcell_test_programs as guests;

mod props;

fn load(engine: &WasmtimeEngine, path: &str) -> Arc<dyn Program> {
    engine.load_command(&Input::read(Path::new(path)).unwrap(), None).unwrap()
}

fn create(_engine: &WasmtimeEngine, program: &Arc<dyn Program>, policy: &SandboxPolicy, stdio: &Stdio) -> Instance {
    let grants = Grants::new(policy.clone(), &Stores::new(Home::from_env())).unwrap();
    Instance::create(program, &grants, stdio).unwrap()
}

fn engine() -> WasmtimeEngine {
    WasmtimeEngine::new(EngineOptions::default()).unwrap()
}

fn argv(args: &[&str]) -> SandboxPolicy {
    SandboxPolicy { args: args.iter().map(|s| s.to_string()).collect(), ..SandboxPolicy::default() }
}

#[test]
fn kill_stops_spinning_and_blocked_guests() {
    let engine = engine();
    for (path, args) in
        [(guests::SPIN_WAT, vec!["spin"]), (guests::SLEEP_C, vec!["sleep", "100"]), (guests::SLEEP_COMPONENT, vec!["sleep", "100"])]
    {
        let program = load(&engine, path);
        let mut instance = create(&engine, &program, &argv(&args), &Stdio::default());
        instance.start().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!instance.is_finished(), "{path} should still be running");
        let killer = instance.kill_handle();
        let start = Instant::now();
        std::thread::spawn(move || killer.kill()).join().unwrap();
        let result = instance.wait();
        assert!(matches!(result, Err(Error::Killed)), "{path}: {result:?}");
        assert!(start.elapsed() < Duration::from_secs(5), "{path}: kill took {:?}", start.elapsed());
        assert!(instance.is_finished());
    }
}

#[test]
fn many_instances_from_one_program_are_isolated() {
    let engine = engine();
    let program = load(&engine, guests::EXIT_C);
    let mut instances: Vec<Instance> =
        (0..8).map(|i| create(&engine, &program, &argv(&["exit", &i.to_string()]), &Stdio::default())).collect();
    for i in &mut instances {
        i.start().unwrap();
    }
    let codes: Vec<i32> = instances.iter_mut().map(|i| i.wait().unwrap().code).collect();
    assert_eq!(codes, (0..8).collect::<Vec<_>>());
}

#[test]
fn stdout_to_a_file_and_timeout_through_the_policy() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stdout");
    let stdio = Stdio { stdout: StdioSpec::File(out.clone()), ..Stdio::default() };
    let program = load(&engine, guests::HELLO_COMPONENT);
    let status = create(&engine, &program, &argv(&["hello"]), &stdio).run().unwrap();
    assert_eq!(status.code, 0);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello from C\n");

    let program = load(&engine, guests::SPIN_WAT);
    let policy = SandboxPolicy { limits: Limits { timeout: Some(Duration::from_millis(200)), ..Limits::default() }, ..argv(&["spin"]) };
    let mut instance = create(&engine, &program, &policy, &Stdio::default());
    instance.start().unwrap();
    assert!(matches!(instance.wait(), Err(Error::Timeout(_))));
}

#[test]
fn starting_twice_is_an_error_not_a_panic() {
    let engine = engine();
    let program = load(&engine, guests::HELLO_WAT);
    let mut instance = create(&engine, &program, &argv(&["hello"]), &Stdio::default());
    instance.start().unwrap();
    assert!(matches!(instance.start(), Err(Error::Config(_))));
    assert_eq!(instance.wait().unwrap().code, 0);
    assert_eq!(instance.wait().unwrap().code, 0, "wait after exit returns the status again");
}
