//! `wasmcell serve`: a wasi:http component (or a WASI preview 1 module, CGI-style) as an HTTP
//! service, with a fresh instance for every request.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use wasmcell_runtime::cache::Cache;
use wasmcell_runtime::engine::{Allocator, EngineChoice, EngineOptions, PoolOptions, RequestLimits};
use wasmcell_runtime::inspect::{Input, WasmKind};
use wasmcell_runtime::policy::{self, OutboundRule};
use wasmcell_runtime::{Engine, Error, SandboxPolicy, WasmtimeEngine};
use wasmcell_serve::{Config, ConnLimits, Handler, Metrics, Server};

use super::sandbox::{SandboxFlags, config};
use crate::images::{self, PullPolicy, RegistryFlags, TrustFlags};

/// Serve FILE or IMAGE over HTTP/1.1 and HTTP/2 (h2c): a component exporting
/// wasi:http/incoming-handler@0.2.x, or a WASI preview 1 module as a WAGI (CGI) handler. Every
/// request gets a fresh instance. SIGTERM or SIGINT stops accepting and drains requests in flight.
#[derive(Args, Debug)]
pub struct ServeCommand {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    addr: SocketAddr,

    #[command(flatten)]
    sandbox: SandboxFlags,

    /// Allow outbound HTTP (wasi:http/outgoing-handler) to these origins: scheme://host[:port],
    /// host `*` or `*.suffix`, port `*`; comma-separated or repeated. Denied by default.
    #[arg(long = "allow-outbound", value_name = "ORIGIN", value_delimiter = ',')]
    allow_outbound: Vec<String>,

    /// Per-request deadline (the client gets 504).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    timeout: String,

    /// Largest request body (larger ones get 413).
    #[arg(long = "max-body", default_value = "16M", value_name = "SIZE")]
    max_body: String,

    /// Guest instances alive at once; more requests wait in the queue.
    #[arg(long = "max-concurrency", default_value_t = 1000, value_name = "N")]
    max_concurrency: usize,

    /// Requests that may wait for an instance; beyond that they get 503.
    #[arg(long = "max-queue", default_value_t = 10_000, value_name = "N")]
    max_queue: usize,

    /// Open client connections at most; more wait to be accepted.
    #[arg(long = "max-connections", default_value_t = 16_384, value_name = "N")]
    max_connections: usize,

    /// How long a client may take to send a request's header, from its connection or its previous
    /// response (idle keep-alive connections close after it too).
    #[arg(long = "header-timeout", default_value = "20s", value_name = "DURATION")]
    header_timeout: String,

    /// How long a write may wait for a client that does not read; then the connection is closed.
    #[arg(long = "write-timeout", default_value = "30s", value_name = "DURATION")]
    write_timeout: String,

    /// How long SIGTERM/SIGINT waits for requests in flight before exiting.
    #[arg(long = "drain-timeout", default_value = "30s", value_name = "DURATION")]
    drain_timeout: String,

    /// Serving threads, each accepting and running its own connections' guests [default: one per
    /// CPU].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,

    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long = "metrics-addr", value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,

    /// When to pull an IMAGE: missing, always, never.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing, value_name = "WHEN")]
    pull: PullPolicy,

    #[command(flatten)]
    registry: RegistryFlags,

    #[command(flatten)]
    trust: TrustFlags,

    /// Neither read nor write the compiled-code cache.
    #[arg(long = "no-cache")]
    no_cache: bool,

    #[command(flatten)]
    engine_flag: super::EngineFlag,

    /// Allow precompiled artifacts from `wasmcell compile` (trusted native code).
    #[arg(long = "allow-precompiled")]
    allow_precompiled: bool,

    /// The component or module: a file, or an image reference.
    #[arg(value_name = "FILE|IMAGE")]
    target: String,
}

/// Memory per instance when --memory is not given (it sizes the instance pool).
pub const DEFAULT_MEMORY: u64 = 128 << 20;

impl ServeCommand {
    pub fn execute(self) -> Result<()> {
        if self.max_concurrency == 0 {
            return Err(Error::Config("--max-concurrency must be at least 1".into()).into());
        }
        // The engine comes from the flags alone (an image adds no limits), so an image that downloads
        // can bring the precompiled code for it along.
        let engine = self.engine(&self.policy(std::path::Path::new(&self.target), None)?)?;
        let mut target = images::resolve_target(&self.target, self.pull, &self.registry, &self.trust, &engine)?;
        let (path, image) = (&target.path, target.launch.as_ref());
        let policy = self.policy(path, image)?;
        let timeout = policy::parse_duration(&self.timeout).map_err(config)?;
        let drain_timeout = policy::parse_duration(&self.drain_timeout).map_err(config)?;
        let max_body = policy::parse_size(&self.max_body).map_err(config)?;
        let input = Input::read(path)?;
        images::take_precompiled(&engine, &input, target.origin.as_mut(), "compiling here");
        let handler = load(&engine, &input)?;
        // Running guests yield now and then, so deadlines fire and threads are shared.
        engine.start_time_slicing().context("failed to start the epoch thread")?;

        let config = Config {
            max_concurrency: self.max_concurrency,
            max_queue: self.max_queue,
            limits: RequestLimits { timeout: Some(timeout), max_body: Some(max_body) },
            drain_timeout,
            threads: self.threads.map(usize::from).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            conn: ConnLimits {
                max_connections: self.max_connections.max(1),
                header_timeout: policy::parse_duration(&self.header_timeout).map_err(config)?,
                write_timeout: policy::parse_duration(&self.write_timeout).map_err(config)?,
                ..ConnLimits::default()
            },
        };
        // This runtime only waits for signals and serves metrics; each serving thread runs one of
        // its own (see `wasmcell_serve::Config::threads`).
        let grants = super::sandbox::grants(policy)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("failed to start the async runtime")?;
        runtime.block_on(async move {
            let metrics = Metrics::new();
            let server = Server::bind(self.addr, handler, grants, config, metrics.clone())
                .await
                .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", self.addr)))?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            if let Some(addr) = self.metrics_addr {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::Config(format!("cannot listen on {addr} for metrics: {e}")))?;
                let mut rx = stop_rx.clone();
                tokio::spawn(metrics.clone().serve(listener, async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                }));
            }
            // The address on stdout, so scripts using port 0 can find the server.
            println!("serving {} on http://{}", self.target, server.local_addr());
            let report = server.run(signal()).await;
            let _ = stop_tx.send(true);
            drop(stop_rx);
            tracing::info!(requests = report.requests, drained = report.drained, "stopped");
            Ok::<_, anyhow::Error>(())
        })?;
        // Code compiled for this start reaches the cache while it serves; a server stopped sooner
        // waits for it, so the next start is warm.
        engine.wait_for_cache_writes();
        Ok(())
    }
}

impl ServeCommand {
    /// The sandbox flags (and an image's config) as the policy every request's instance gets; the
    /// memory cap always set, since it sizes the instance pool.
    fn policy(&self, path: &std::path::Path, image: Option<&wasmcell_oci::launch::Launch>) -> Result<SandboxPolicy> {
        let mut policy = SandboxPolicy::default();
        let argv0 = image
            .map(|i| i.argv0.clone())
            .unwrap_or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        policy.args = std::iter::once(argv0).chain(image.iter().flat_map(|i| i.default_args.clone())).collect();
        if let Some(img) = image {
            super::sandbox::apply_image(&mut policy, img)?;
        }
        policy.app = super::sandbox::default_app(&self.target, image.is_some());
        self.sandbox.apply(&mut policy)?;
        for o in &self.allow_outbound {
            policy.http_outbound.push(o.parse::<OutboundRule>().map_err(config)?);
        }
        policy.limits.memory = Some(policy.limits.memory.unwrap_or(DEFAULT_MEMORY));
        Ok(policy)
    }

    /// An engine with a pool of `--max-concurrency` instances (a warning when the host cannot reserve it).
    fn engine(&self, policy: &SandboxPolicy) -> Result<WasmtimeEngine> {
        let cache =
            (!self.no_cache).then(|| wasmcell_runtime::cache::Cache::new(wasmcell_runtime::home::Home::from_env().compiled_cache()));
        let mut options =
            engine_options(self.engine_flag.choice, self.max_concurrency, policy.limits.memory.unwrap_or(DEFAULT_MEMORY), cache);
        options.max_stack = policy.limits.max_stack;
        options.allow_precompiled = self.allow_precompiled;
        let engine = WasmtimeEngine::new(options)?;
        match engine.allocator() {
            Allocator::Pooling(n) if n as usize >= self.max_concurrency => tracing::debug!(instances = n, "instance pool reserved"),
            Allocator::Pooling(n) => {
                eprintln!("wasmcell: warning: the host could only reserve a pool of {n} instances; more run allocated on demand")
            }
            Allocator::OnDemand => eprintln!("wasmcell: warning: no instance pool could be reserved; instances are allocated on demand"),
        }
        Ok(engine)
    }
}

/// The engine settings of `serve` (also what `push --precompile` compiles a wasi:http service for):
/// a pool of `max_concurrency` instances of at most `max_memory` each, copy-on-write memory images.
pub fn engine_options(choice: EngineChoice, max_concurrency: usize, max_memory: u64, cache: Option<Cache>) -> EngineOptions {
    let instances = u32::try_from(max_concurrency).unwrap_or(u32::MAX);
    let mut options =
        EngineOptions { cache, single_instance: false, pooling: Some(PoolOptions { instances, max_memory }), ..Default::default() };
    choice.apply(&mut options);
    options
}

/// A component is served as wasi:http, a core module as WAGI.
fn load(engine: &WasmtimeEngine, input: &Input) -> Result<Handler> {
    if input.precompiled {
        // A precompiled artifact carries its kind; try the component reading first.
        return Ok(match engine.load_http(input) {
            Ok(h) => Handler::Http(h),
            Err(_) => Handler::Wagi(engine.load_wagi(input)?),
        });
    }
    Ok(match input.kind()? {
        WasmKind::Component => Handler::Http(engine.load_http(input)?),
        WasmKind::Module => Handler::Wagi(engine.load_wagi(input)?),
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
