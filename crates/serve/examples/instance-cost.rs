//! What one fresh instance costs `wasmcell serve`, without sockets: loads a wasi:http component the way
//! serve does (pooling allocator, copy-on-write memory images, an epoch ticker) and serves N synthetic
//! requests through `HttpHandler::handle` one after another, reading each response body to its end.
//! Then, with wasmtime's public API on the same engine, times instantiation alone (a store with the
//! same kind of state as serve's, `ProxyPre::instantiate_async`, the store dropped), the whole request
//! done in place (instantiate, `call_handle` on the caller's task, the body read; no spawned task, no
//! deadline, no body limit) and the store alone.
//!
//!   cargo run --release -p wasmcell-serve --example instance-cost -- HELLO.http.wasm [N]     (N: 20000)
//!
//! The last two lines are machine-readable: `fresh-instance-us MEAN` (instantiation alone: the cost of one
//! fresh instance) and `request-us MEAN` (the whole request through `handle`, multi-thread runtime).

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use wasmcell_runtime::engine::{Allocator, EngineOptions, HttpBody, PoolOptions, RequestLimits};
use wasmcell_runtime::home::Home;
use wasmcell_runtime::inspect::Input;
use wasmcell_runtime::kv::Stores;
use wasmcell_runtime::{Engine, Grants, HttpProgram, SandboxPolicy, WasmtimeEngine};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

type BoxError = Box<dyn Error + Send + Sync>;

// The global allocator of the shipped `wasmcell` binary (crates/cli/src/main.rs): time what users run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MEMORY: u64 = 128 << 20;

fn main() -> Result<(), BoxError> {
    // As the shipped binary does first thing.
    wasmcell_runtime::disable_transparent_huge_pages();
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: instance-cost COMPONENT [N]")?;
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20_000);
    let warmup = (n / 20).clamp(1, 1000);

    let engine = WasmtimeEngine::new(EngineOptions {
        pooling: Some(PoolOptions { instances: 100, max_memory: MEMORY }),
        single_instance: false,
        cache: None,
        ..Default::default()
    })?;
    if engine.allocator() != Allocator::Pooling(100) {
        eprintln!("instance-cost: warning: allocator is {:?}, not a pool of 100", engine.allocator());
    }
    let input = Input::read(Path::new(&path))?;
    let handler = engine.load_http(&input)?;
    // The policy serve builds for a file with no flags: argv[0] the file name, the memory cap set.
    let mut policy = SandboxPolicy { args: vec![input.name.clone()], ..SandboxPolicy::default() };
    policy.limits.memory = Some(MEMORY);
    // serve's limits: a deadline (a tokio timer per request) and a body cap.
    let limits = RequestLimits { timeout: Some(Duration::from_secs(30)), max_body: Some(16 << 20) };

    // The epoch ticker serve runs (guests yield at every tick).
    engine.start_time_slicing()?;
    let grants = Grants::new(policy.clone(), &Stores::new(Home::from_env()))?;

    println!("{}: {n} sequential requests per measurement ({warmup} warm-up requests first)", input.name);

    // 1. handle: fresh instance + the guest's handler + the whole response body, as serve does it.
    // As in serve, the requests start on a worker of a multi-thread runtime (not on the thread that
    // blocks on the runtime), so the task `handle` spawns may run on the same worker or be stolen.
    let multi = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (h, g) = (handler.clone(), grants.clone());
    let handle_multi = multi
        .block_on(async move { tokio::spawn(async move { measure(n, warmup, || serve_one(h.as_ref(), &g, limits)).await }).await })??;
    report("handle (instantiate + handle + body), multi-thread runtime", &handle_multi);
    let current = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle_current = current.block_on(measure(n, warmup, || serve_one(handler.as_ref(), &grants, limits)))?;
    report("handle (instantiate + handle + body), current-thread runtime", &handle_current);

    // 2. instantiation alone, and the store alone, through wasmtime's API on the same engine.
    let component = Component::new(engine.wasmtime(), &input.bytes)?;
    let mut linker = Linker::<Host>::new(engine.wasmtime());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;
    // Instantiation alone, in 5 rounds of n/5: on a shared VM a neighbour's burst can double a whole
    // round, so the median round's mean is printed beside the mean over all of them.
    let rounds = 5;
    let mut inst = Vec::with_capacity(n);
    let mut round_means = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let times = current.block_on(measure(n / rounds, warmup, || async {
            let mut store = new_store(engine.wasmtime(), &policy);
            pre.instantiate_async(&mut store).await?;
            drop(store);
            Ok(())
        }))?;
        round_means.push(mean_us(&times));
        inst.extend(times);
    }
    report("instantiate alone (store + WASI ctx + instantiate + drop)", &inst);
    round_means.sort_by(f64::total_cmp);
    let rounds_text: Vec<String> = round_means.iter().map(|m| format!("{m:.2}")).collect();
    println!("  its {rounds} rounds' means (us, sorted): {}; median round {:.2} us", rounds_text.join(" "), round_means[rounds / 2]);
    let direct = current.block_on(measure(n, warmup, || async {
        let mut store = new_store(engine.wasmtime(), &policy);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (req, out) = {
            let mut view = store.data_mut().http();
            (view.new_incoming_request(Scheme::Http, synthetic_request()?)?, view.new_response_outparam(tx)?)
        };
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await?;
        let resp = rx.await?.map_err(|code| format!("guest answered with error {code:?}"))?;
        let body = resp.into_body().collect().await?.to_bytes();
        drop(store);
        if body.is_empty() {
            return Err("empty response body".into());
        }
        Ok(())
    }))?;
    report("instantiate + call_handle + body, in place (no task, no limits)", &direct);
    let store_only = current.block_on(measure(n, warmup, || async {
        drop(new_store(engine.wasmtime(), &policy));
        Ok(())
    }))?;
    report("store alone (store + WASI ctx + drop)", &store_only);

    println!("fresh-instance-us {:.2}", mean_us(&inst));
    println!("request-us {:.2}", mean_us(&handle_multi));
    Ok(())
}

/// One request through `handle`, its body read to the end and checked.
async fn serve_one(handler: &dyn HttpProgram, grants: &Grants, limits: RequestLimits) -> Result<(), BoxError> {
    let req = synthetic_request()?.map(|b| -> HttpBody { b.map_err(|never| match never {}).boxed_unsync() });
    let resp = handler.handle(req, grants, limits, Box::new(())).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status != 200 || body.is_empty() {
        return Err(format!("unexpected response: {status} {:?}", String::from_utf8_lossy(&body)).into());
    }
    Ok(())
}

fn synthetic_request() -> Result<http::Request<Empty<Bytes>>, BoxError> {
    Ok(http::Request::builder()
        .method("GET")
        .uri("http://127.0.0.1/")
        .header("host", "127.0.0.1")
        .header("user-agent", "instance-cost")
        .body(Empty::<Bytes>::new())?)
}

/// Runs `f` `warmup` times, then `n` times timing each run.
async fn measure<F, Fut>(n: usize, warmup: usize, mut f: F) -> Result<Vec<Duration>, BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    for _ in 0..warmup {
        f().await?;
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        f().await?;
        times.push(start.elapsed());
    }
    Ok(times)
}

fn mean_us(times: &[Duration]) -> f64 {
    times.iter().sum::<Duration>().as_secs_f64() * 1e6 / times.len() as f64
}

fn report(what: &str, times: &[Duration]) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let pct = |p: f64| sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e6;
    println!("{what:<64} mean {:7.2} us   p50 {:7.2} us   p99 {:7.2} us", mean_us(times), pct(0.50), pct(0.99));
}

/// Store state like serve's: WASI context, resource table, wasi:http context, a memory limiter.
struct Host {
    ctx: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    limiter: Limiter,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: Default::default() }
    }
}

struct Limiter {
    max: usize,
    hit: Arc<AtomicBool>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit.store(true, Ordering::SeqCst);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 10_000_000)
    }
}

fn new_store(engine: &wasmtime::Engine, policy: &SandboxPolicy) -> Store<Host> {
    let mut b = WasiCtxBuilder::new();
    b.args(&policy.args).envs(&policy.env).inherit_stdout().inherit_stderr();
    let host = Host {
        ctx: b.build(),
        table: ResourceTable::new(),
        http: WasiHttpCtx::new(),
        limiter: Limiter { max: MEMORY as usize, hit: Arc::new(AtomicBool::new(false)) },
    };
    let mut store = Store::new(engine, host);
    store.limiter(|h| &mut h.limiter as &mut dyn ResourceLimiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    store
}
