//! The one serving loop: `wasmcell serve` and the containerd shim both run this.
//!
//! It accepts connections (HTTP/1.1 with keep-alive, and HTTP/2 over cleartext by prior knowledge,
//! through hyper-util's auto builder), admits each request against the concurrency limit (requests
//! beyond it wait in a bounded queue; 503 only when the queue is full), hands it to a fresh guest
//! instance (a wasi:http component, or a WAGI module), maps what went wrong to a status code in one
//! place ([`status_for`]), logs it, counts it, and on shutdown stops accepting and drains the
//! requests in flight up to a deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use wasmcell_runtime::Grants;
use wasmcell_runtime::engine::{Failure, HttpProgram, RequestLimits, WagiProgram};

use admission::Admission;
use spread::{Handoff, Placed, Seat, Spread};

mod admission;
mod conn;
mod metrics;
mod spread;
mod wagi;

pub use conn::ConnLimits;
pub use metrics::Metrics;

/// What serves each request: a program loaded through the engine seam.
#[derive(Clone)]
pub enum Handler {
    /// A wasi:http component.
    Http(Arc<dyn HttpProgram>),
    /// A WASI preview 1 module, CGI-style.
    Wagi(Arc<dyn WagiProgram>),
}

/// How the server behaves; everything but the app and the policy.
#[derive(Clone, Debug)]
pub struct Config {
    /// Guest instances alive at once.
    pub max_concurrency: usize,
    /// Requests that may wait for an instance beyond that; more get 503.
    pub max_queue: usize,
    /// Per-request deadline and body limit.
    pub limits: RequestLimits,
    /// How long a shutdown waits for requests in flight.
    pub drain_timeout: Duration,
    /// Serving threads, each with a single-threaded runtime of its own that accepts, parses and
    /// runs its connections' guests: a request never hops between threads, and a connection goes to
    /// the thread with the fewest open (`spread.rs`). 0 serves on the caller's runtime instead.
    pub threads: usize,
    /// What a client connection may hold (open connections, header and write deadlines, HTTP/2 streams).
    pub conn: ConnLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_concurrency: 1000,
            max_queue: 10_000,
            limits: RequestLimits { timeout: Some(Duration::from_secs(30)), max_body: Some(16 << 20) },
            drain_timeout: Duration::from_secs(30),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            conn: ConnLimits::default(),
        }
    }
}

/// How a serve ended.
#[derive(Debug)]
pub struct DrainReport {
    /// Whether every request in flight finished before the drain deadline.
    pub drained: bool,
    pub requests: u64,
}

struct Shared {
    handler: Handler,
    grants: Grants,
    config: Config,
    admission: Admission,
    /// One permit per open client connection (shared by the serving threads).
    connections: Arc<tokio::sync::Semaphore>,
    metrics: Metrics,
    local: SocketAddr,
}

/// A bound server; [`Server::run`] serves until the shutdown future resolves.
pub struct Server {
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds `addr` (port 0 picks one). Every request's instance is granted exactly `grants`.
    pub async fn bind(addr: SocketAddr, handler: Handler, grants: Grants, config: Config, metrics: Metrics) -> std::io::Result<Server> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let admission = Admission::new(config.max_concurrency, config.max_queue, metrics.clone());
        let connections = Arc::new(tokio::sync::Semaphore::new(config.conn.max_connections.max(1)));
        let shared = Arc::new(Shared { handler, grants, config, admission, connections, metrics, local });
        Ok(Server { listener, shared })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Serves until `shutdown` resolves, then stops accepting and waits for requests in flight up
    /// to the drain timeout. With `threads` > 0 the serving threads share the listening socket
    /// and this future only waits for `shutdown` and for them.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> DrainReport {
        let Server { listener, shared } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut drained = true;
        if shared.config.threads == 0 {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!("cannot serve: {e}");
                    return DrainReport { drained: false, requests: 0 };
                }
            };
            let serving = accept_loop(listener, shared.clone(), stop_rx, None);
            tokio::pin!(serving);
            tokio::select! {
                d = &mut serving => return DrainReport { drained: d, requests: shared.metrics.requests_total() },
                () = shutdown => {}
            }
            tracing::info!("shutting down: no new connections, draining requests in flight");
            let _ = stop_tx.send(true);
            drained = serving.await;
        } else {
            let mut done = Vec::new();
            for (i, seat) in Spread::seats(shared.config.threads).into_iter().enumerate() {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let listener = listener.try_clone();
                let shared = shared.clone();
                let stop_rx = stop_rx.clone();
                let spawned = std::thread::Builder::new().name(format!("wasmcell-serve-{i}")).spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                    let d = match (runtime, listener) {
                        (Ok(rt), Ok(l)) => rt.block_on(async move {
                            match TcpListener::from_std(l) {
                                Ok(l) => accept_loop(l, shared, stop_rx, Some(seat)).await,
                                Err(e) => {
                                    tracing::error!("serving thread {i} cannot listen: {e}");
                                    false
                                }
                            }
                        }),
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::error!("serving thread {i} failed to start: {e}");
                            false
                        }
                    };
                    let _ = tx.send(d);
                });
                match spawned {
                    Ok(_) => done.push(rx),
                    Err(e) => tracing::error!("cannot start serving thread {i}: {e}"),
                }
            }
            drop(listener);
            shutdown.await;
            tracing::info!("shutting down: no new connections, draining requests in flight");
            let _ = stop_tx.send(true);
            for rx in done {
                drained &= rx.await.unwrap_or(false);
            }
        }
        DrainReport { drained, requests: shared.metrics.requests_total() }
    }
}

/// Accepts and serves connections on the current runtime until `stop` turns true, then drains
/// them up to the drain timeout; tells whether they all finished. With a `seat` (a serving thread),
/// each accepted connection is served where [`Seat::pick`] says, and those handed over arrive in its
/// inbox.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut seat: Option<Seat>,
) -> bool {
    let graceful = GracefulShutdown::new();
    let builder = conn::builder(&shared.config.conn);
    loop {
        let accept = async {
            // A connection beyond the cap waits in the kernel's accept queue until one ends.
            let permit = shared.connections.clone().acquire_owned().await.ok()?;
            Some(listener.accept().await.map(|(s, peer)| Arrival::Accepted(s, peer, permit)))
        };
        let handed = async {
            match seat.as_mut() {
                Some(s) => s.inbox.recv().await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            accepted = accept => accepted,
            Some(handoff) = handed => Some(Ok(Arrival::Handed(handoff))),
            _ = stop.wait_for(|s| *s) => None,
        };
        let (open, stream, peer, permit) = match next {
            None => break,
            Some(Err(e)) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Some(Ok(Arrival::Accepted(stream, peer, permit))) => match &seat {
                None => (None, stream, peer, permit),
                Some(seat) => match seat.place(stream, peer, permit) {
                    Placed::Here(open, stream, permit) => (Some(open), stream, peer, permit),
                    Placed::Away => continue,
                },
            },
            Some(Ok(Arrival::Handed((stream, peer, permit, open)))) => match TcpStream::from_std(stream) {
                Ok(stream) => (Some(open), stream, peer, permit),
                Err(e) => {
                    tracing::warn!(%peer, "cannot take over a connection: {e}");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(conn::GuardedIo::new(stream, &shared.config.conn));
        let service = {
            let shared = shared.clone();
            hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(shared.serve(req, peer).await) }
            })
        };
        let conn = graceful.watch(builder.serve_connection_with_upgrades(io, service).into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop((permit, open));
        });
    }
    drop(listener);
    tracing::debug!("no new connections, draining requests in flight");
    let drained = tokio::time::timeout(shared.config.drain_timeout, graceful.shutdown()).await.is_ok();
    if !drained {
        tracing::warn!(timeout = ?shared.config.drain_timeout, "drain timeout: requests still in flight were cut off");
    }
    drained
}

/// A connection a serving thread is to serve.
enum Arrival {
    /// Accepted here: the client's address, and the connection-cap permit taken before accepting.
    Accepted(TcpStream, SocketAddr, OwnedSemaphorePermit),
    /// Accepted by another serving thread and handed over.
    Handed(Handoff),
}

/// The body every response has: the guest's stream, or a short message from the host. It holds
/// the request's instance permit until it is done, so a streaming guest counts as live.
pub type ServeBody = wasmcell_runtime::engine::HttpBody;

impl Shared {
    async fn serve(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<ServeBody> {
        let start = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
        let version = req.version();
        let response = match self.admission.admit().await {
            Err(status) => message(status, "server busy: the request queue is full\n"),
            Ok(permit) => {
                self.metrics.live_instances.inc();
                // Released when both are gone: the response body (a streaming guest is live) and the
                // request's instance (its store may outlive the answer).
                let guard = Arc::new(LiveGuard { metrics: self.metrics.clone(), _permit: permit });
                match self.handle(req, peer, guard.clone()).await {
                    Ok(resp) => resp.map(|b| HoldBody { inner: b, _guard: Some(guard) }.boxed_unsync()),
                    Err(failure) => {
                        drop(guard);
                        self.metrics.record_failure(&failure);
                        tracing::warn!(%method, %path, "{failure}");
                        let status = status_for(&failure);
                        message(status, &format!("{}\n", public_message(&failure)))
                    }
                }
            }
        };
        let status = response.status();
        let elapsed = start.elapsed();
        self.metrics.observe(status, elapsed);
        tracing::info!(target: "wasmcell::access", %peer, %method, %path, ?version, status = status.as_u16(), micros = elapsed.as_micros() as u64, "request");
        response
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr, live: Arc<LiveGuard>) -> Result<Response<ServeBody>, Failure> {
        match &self.handler {
            Handler::Http(h) => {
                let req = req.map(|b| b.map_err(Into::into).boxed_unsync());
                h.handle(req, &self.grants, self.config.limits, Box::new(live)).await
            }
            Handler::Wagi(w) => wagi::handle(w.as_ref(), req, peer, self.local, &self.grants, self.config.limits).await,
        }
    }
}

/// The one mapping from a guest's failure to an HTTP status.
pub fn status_for(failure: &Failure) -> StatusCode {
    match failure {
        Failure::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        Failure::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Failure::NoResponse | Failure::ErrorCode(_) => StatusCode::BAD_GATEWAY,
        Failure::Trap(_) | Failure::Exit(_) | Failure::MemoryLimit | Failure::Host(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What the client is told (the log has the details).
fn public_message(failure: &Failure) -> String {
    match failure {
        Failure::Trap(_) => "the handler failed (trap)".into(),
        Failure::Exit(code) => format!("the handler exited with status {code}"),
        Failure::Timeout(t) => format!("the handler did not finish within {t:?}"),
        Failure::MemoryLimit => "the handler exceeded its memory limit".into(),
        Failure::BodyTooLarge(n) => format!("request body larger than {n} bytes"),
        Failure::NoResponse => "the handler returned no response".into(),
        Failure::ErrorCode(_) => "the handler answered with an error".into(),
        Failure::Host(_) => "internal error".into(),
    }
}

fn message(status: StatusCode, text: &str) -> Response<ServeBody> {
    let body = Full::new(Bytes::from(text.to_string())).map_err(|never| match never {}).boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// Counts an instance as live until the response body that it writes is finished.
struct LiveGuard {
    metrics: Metrics,
    _permit: OwnedSemaphorePermit,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.metrics.live_instances.dec();
    }
}

struct HoldBody {
    inner: ServeBody,
    _guard: Option<Arc<LiveGuard>>,
}

impl Body for HoldBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self._guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant, so that a new one without a status or a message fails to compile here.
    fn every_failure() -> Vec<Failure> {
        let all = vec![
            Failure::Trap("wasm trap: unreachable at 0x1234".into()),
            Failure::Exit(3),
            Failure::Timeout(Duration::from_millis(1500)),
            Failure::MemoryLimit,
            Failure::BodyTooLarge(1024),
            Failure::NoResponse,
            Failure::ErrorCode("HTTP-request-denied".into()),
            Failure::Host("cannot open /secret/path: permission denied".into()),
        ];
        for f in &all {
            match f {
                Failure::Trap(_)
                | Failure::Exit(_)
                | Failure::Timeout(_)
                | Failure::MemoryLimit
                | Failure::BodyTooLarge(_)
                | Failure::NoResponse
                | Failure::ErrorCode(_)
                | Failure::Host(_) => {}
            }
        }
        all
    }

    #[test]
    fn every_failure_has_its_status() {
        let statuses: Vec<u16> = every_failure().iter().map(|f| status_for(f).as_u16()).collect();
        assert_eq!(statuses, [500, 500, 504, 500, 413, 502, 502, 500]);
    }

    #[test]
    fn every_failure_has_its_public_message() {
        let messages: Vec<String> = every_failure().iter().map(public_message).collect();
        assert_eq!(
            messages,
            [
                "the handler failed (trap)",
                "the handler exited with status 3",
                "the handler did not finish within 1.5s",
                "the handler exceeded its memory limit",
                "request body larger than 1024 bytes",
                "the handler returned no response",
                "the handler answered with an error",
                "internal error",
            ]
        );
    }

    #[test]
    fn public_messages_keep_the_details_for_the_log() {
        for f in every_failure() {
            let public = public_message(&f);
            for detail in ["0x1234", "/secret/path", "HTTP-request-denied", "permission denied"] {
                assert!(!public.contains(detail), "{f:?} tells the client {public:?}");
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_host_message_is_plain_text_with_its_status() {
        let resp = message(StatusCode::SERVICE_UNAVAILABLE, "server busy: the request queue is full\n");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[http::header::CONTENT_TYPE], "text/plain; charset=utf-8");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "server busy: the request queue is full\n");
    }

    #[test]
    fn failures_are_counted_by_kind() {
        let metrics = Metrics::new();
        for f in every_failure() {
            metrics.record_failure(&f);
        }
        metrics.record_failure(&Failure::Timeout(Duration::from_secs(1)));
        let text = metrics.render();
        for line in ["wasmcell_traps_total 1", "wasmcell_timeouts_total 2", "wasmcell_memory_limits_total 1"] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn requests_total_counts_every_answer() {
        let metrics = Metrics::new();
        assert_eq!(metrics.requests_total(), 0);
        for status in [StatusCode::OK, StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE] {
            metrics.observe(status, Duration::from_millis(1));
        }
        assert_eq!(metrics.requests_total(), 3);
        let text = metrics.render();
        assert!(text.lines().any(|l| l.starts_with("wasmcell_http_requests_total{status=\"200\"} 2")), "{text}");
        assert!(text.lines().any(|l| l.starts_with("wasmcell_http_requests_total{status=\"503\"} 1")), "{text}");
    }
}
