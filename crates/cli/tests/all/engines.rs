//! `--engine`: the same guests and limits under Cranelift, Winch and Pulley; what Winch cannot compile
//! is refused in one line; the cache keys each compiler apart; and tiered start (`auto`), where a
//! served program starts on Winch's code and switches to Cranelift's once it is compiled.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::serve::Served;
use crate::{Cell, both, guests};

const COMPILERS: &[&str] = &["cranelift", "winch", "pulley"];

#[test]
fn every_engine_runs_the_guests_with_their_exit_codes_and_grants() {
    let cell = Cell::new();
    for engine in COMPILERS {
        for (kind, hello) in both(guests::HELLO_C, guests::HELLO_COMPONENT) {
            let out = cell.run(&["run", "--engine", engine, hello.to_str().unwrap()]);
            out.expect_ok();
            assert!(out.stdout().contains("hello"), "{engine} {kind}: {}", out.stdout());
        }
        // (Through the WASI adapter a component's failure is exit 1, as in sandbox.rs.)
        for ((kind, exit), want) in both(guests::EXIT_C, guests::EXIT_COMPONENT).into_iter().zip([7, 1]) {
            assert_eq!(cell.run(&["run", "--engine", engine, exit.to_str().unwrap(), "7"]).code(), want, "{engine} {kind}");
        }
        let env = cell.run(&["run", "--engine", engine, "--env", "A=1", guests::ENV_C]);
        assert!(env.expect_ok().stdout().contains("A=1"), "{engine}: {}", env.stdout());
        // WASMCELL_ENGINE is --engine's default.
        cell.run_env(&[("WASMCELL_ENGINE", engine)], &["run", guests::HELLO_WAT]).expect_ok();
    }
}

/// A limit is the host's, not the compiler's: a spinning guest is stopped at --timeout and a growing
/// one at --memory under every engine.
#[test]
fn every_engine_holds_the_time_and_memory_limits() {
    let cell = Cell::new();
    for engine in COMPILERS {
        let start = Instant::now();
        cell.run(&["run", "--engine", engine, "--timeout", "300ms", guests::SPIN_WAT]).expect_code(124);
        assert!(start.elapsed() < Duration::from_secs(10), "{engine}: the spin ran {:?}", start.elapsed());
        cell.run(&["run", "--engine", engine, "--memory", "8M", guests::GROW_WAT]).expect_code(137);
    }
}

/// Winch has no GC, exceptions or tail calls: a module that needs them is refused with one line that
/// names the engine (exit 126), and runs under the default engine and Pulley.
#[test]
fn winch_refuses_what_it_cannot_compile_in_one_line() {
    let cell = Cell::new();
    for guest in [guests::W3_GC_WAT, guests::W3_EXCEPTIONS_WAT, guests::W3_TAIL_CALL_WAT] {
        cell.run(&["run", "--engine", "winch", guest]).expect_code(126).expect_error_line("--engine winch");
        cell.run(&["run", guest]).expect_ok();
        cell.run(&["run", "--engine", "pulley", guest]).expect_ok();
    }
    cell.run(&["run", "--engine", "jit", guests::HELLO_WAT]).expect_code(125).expect_error_line("unknown engine");
}

/// Each compiler's code has its own cache entry: a run under another engine is a miss, never the
/// other compiler's code.
#[test]
fn the_compiled_code_cache_keys_each_engine_apart() {
    let cell = Cell::new();
    let log = [("WASMCELL_LOG", "debug")];
    let run = |engine: &str| cell.run_env(&log, &["run", "--engine", engine, guests::HELLO_C]);
    for engine in COMPILERS {
        let first = run(engine);
        assert!(first.expect_ok().stderr().contains("cache miss"), "{engine}: {}", first.stderr());
        let second = run(engine);
        assert!(second.expect_ok().stderr().contains("cache hit"), "{engine}: {}", second.stderr());
    }
    assert_eq!(cache_entries(cell.home()), COMPILERS.len(), "one entry per compiler");
}

/// `serve --engine` for each compiler: the hello component answers.
#[test]
fn every_engine_serves() {
    for engine in COMPILERS {
        let s = Served::start(guests::HTTP_HELLO, &["--engine", engine]);
        let r = s.get("/");
        assert_eq!(r.status, 200, "{engine}");
    }
}

/// Tiered start: a served component of 1 MiB or more that is not in the cache answers at once from
/// Winch's code while Cranelift compiles it (after the first answer, or after a second without one);
/// a request in flight when the optimized code arrives finishes on the code it started with; new
/// requests run Cranelift's code, which is cached, so the next start is warm and optimized (no Winch
/// at all).
#[test]
fn a_large_component_starts_on_winch_and_switches_to_cranelift() {
    let scratch = crate::scratch();
    let big = padded(guests::HTTP_SLOW, &scratch.path().join("slow-big.wasm"), 1 << 20);
    // One home for both starts (a Served's own cell goes when it stops).
    let home = crate::scratch();
    let serve = || {
        let cell = Cell::new();
        let mut c = cell.command();
        c.env("WASMCELL_HOME", home.path()).env("WASMCELL_LOG", "debug").args(["serve", "--addr", "127.0.0.1:0", big.to_str().unwrap()]);
        Served::spawn(c, cell)
    };
    let s = serve();
    // Sent before Cranelift's code can be ready (a compile takes far more than nothing), and answered
    // only after the optimizing compile stopped waiting for a first answer (1 s).
    let addr = s.addr.clone();
    let in_flight = std::thread::spawn(move || crate::services::http_request(&addr, "GET", "/?ms=4000", &[], b"").unwrap());
    let ready = Instant::now() + Duration::from_secs(60);
    while cache_entries(home.path()) < 2 {
        assert!(Instant::now() < ready, "no optimized code in the cache after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.get("/?ms=1").status, 200);
    assert_eq!(in_flight.join().unwrap().status, 200, "the request in flight across the switch");
    let (code, err) = s.terminate();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("tier=Baseline") && err.contains("optimized code ready"), "{err}");
    assert!(err.lines().any(|l| l.contains("optimizing compile starts") && l.contains("answered=false")), "{err}");

    // The next start finds Cranelift's code and makes no Winch engine.
    let s = serve();
    assert_eq!(s.get("/?ms=1").status, 200);
    let (_, err) = s.terminate();
    assert!(err.contains("cache hit") && !err.contains("tier=Baseline"), "{err}");
}

/// The optimizing compile of a tiered start waits for the first answer (it slowed that answer), not
/// for the second it would wait without one.
#[test]
fn the_optimizing_compile_starts_after_the_first_answer() {
    let scratch = crate::scratch();
    let big = padded(guests::HTTP_HELLO, &scratch.path().join("hello-big.wasm"), 1 << 20);
    let home = crate::scratch();
    let cell = Cell::new();
    let mut c = cell.command();
    c.env("WASMCELL_HOME", home.path()).env("WASMCELL_LOG", "debug").args(["serve", "--addr", "127.0.0.1:0", big.to_str().unwrap()]);
    let s = Served::spawn(c, cell);
    assert_eq!(s.get("/").status, 200);
    let ready = Instant::now() + Duration::from_secs(60);
    while cache_entries(home.path()) < 2 {
        assert!(Instant::now() < ready, "no optimized code in the cache after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, err) = s.terminate();
    let started = err.lines().find(|l| l.contains("optimizing compile starts")).unwrap_or_else(|| panic!("{err}"));
    assert!(started.contains("answered=true"), "{err}");
    // The wait ended with the answer: its logged length is under the second it would wait without one.
    let waited = started.split("waited=").nth(1).and_then(|w| w.split_whitespace().next()).unwrap_or_default();
    assert!(waited.ends_with("ms") || waited.ends_with("µs") || waited.ends_with("ns"), "waited {waited}: {err}");
}

/// `--engine cranelift` never tiers: a large component's first start compiles it with Cranelift.
#[test]
fn a_fixed_engine_never_tiers() {
    let scratch = crate::scratch();
    let big = padded(guests::HTTP_HELLO, &scratch.path().join("hello-big.wasm"), 1 << 20);
    let cell = Cell::new();
    let mut c = cell.command();
    c.env("WASMCELL_LOG", "debug").args(["serve", "--engine", "cranelift", "--addr", "127.0.0.1:0", big.to_str().unwrap()]);
    let s = Served::spawn(c, cell);
    assert_eq!(s.get("/").status, 200);
    let (_, err) = s.terminate();
    assert!(!err.contains("tier=Baseline") && !err.contains("optimized code ready"), "{err}");
}

/// `wasm` with a custom section appended that makes it at least `size` bytes (custom sections may
/// follow every other section of a module or component; the code is unchanged).
fn padded(wasm: &str, to: &Path, size: usize) -> PathBuf {
    let mut bytes = std::fs::read(wasm).unwrap();
    let name = b"padding";
    let payload = size.saturating_sub(bytes.len());
    let mut body = leb(name.len());
    body.extend_from_slice(name);
    body.resize(body.len() + payload, 0);
    bytes.push(0);
    bytes.extend(leb(body.len()));
    bytes.extend(body);
    std::fs::write(to, bytes).unwrap();
    to.to_path_buf()
}

fn leb(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// The number of entries in a home's compiled-code cache.
fn cache_entries(home: &Path) -> usize {
    fn count(dir: &Path) -> usize {
        let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
        entries
            .map(|e| if e.path().is_dir() { count(&e.path()) } else { usize::from(e.path().extension().is_some_and(|x| x == "bin")) })
            .sum()
    }
    count(&home.join("cache/compiled"))
}
