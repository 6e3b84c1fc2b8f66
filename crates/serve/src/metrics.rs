//! Prometheus metrics: requests by status, latency, live instances, traps, timeouts, queue depth.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use wasmcell_runtime::engine::Failure;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

/// The server's metrics; cheap to clone (all handles to the same values).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<StatusLabel, Counter>,
    latency: Histogram,
    pub(crate) live_instances: Gauge,
    pub(crate) queue_depth: Gauge,
    pub(crate) rejected: Counter,
    traps: Counter,
    timeouts: Counter,
    memory_limits: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wasmcell");
        let requests = Family::<StatusLabel, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 20));
        let live_instances = Gauge::default();
        let queue_depth = Gauge::default();
        let rejected = Counter::default();
        let traps = Counter::default();
        let timeouts = Counter::default();
        let memory_limits = Counter::default();
        registry.register("http_requests", "HTTP requests answered, by status", requests.clone());
        registry.register("http_request_duration_seconds", "Time to the response head", latency.clone());
        registry.register("live_instances", "Guest instances alive (handling or streaming)", live_instances.clone());
        registry.register("queue_depth", "Requests waiting for an instance", queue_depth.clone());
        registry.register("rejected", "Requests refused because the queue was full", rejected.clone());
        registry.register("traps", "Guests that trapped", traps.clone());
        registry.register("timeouts", "Guests stopped at the request timeout", timeouts.clone());
        registry.register("memory_limits", "Guests that failed at their memory limit", memory_limits.clone());
        Metrics { registry: Arc::new(registry), requests, latency, live_instances, queue_depth, rejected, traps, timeouts, memory_limits }
    }

    pub(crate) fn observe(&self, status: StatusCode, elapsed: Duration) {
        self.requests.get_or_create(&StatusLabel { status: status.as_u16() }).inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    pub(crate) fn record_failure(&self, failure: &Failure) {
        match failure {
            Failure::Trap(_) => {
                self.traps.inc();
            }
            Failure::Timeout(_) => {
                self.timeouts.inc();
            }
            Failure::MemoryLimit => {
                self.memory_limits.inc();
            }
            _ => {}
        }
    }

    /// All requests answered so far.
    pub fn requests_total(&self) -> u64 {
        // Families cannot be iterated; the histogram counts every observation once.
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text.lines()
            .find_map(|l| l.strip_prefix("wasmcell_http_request_duration_seconds_count "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }

    /// Serves `GET /metrics` on `addr` until `shutdown` resolves.
    pub async fn serve(self, listener: tokio::net::TcpListener, shutdown: impl Future<Output = ()>) {
        use http_body_util::Full;
        use hyper_util::rt::TokioIo;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let metrics = self.clone();
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let metrics = metrics.clone();
                        async move {
                            let mut resp = if req.uri().path() == "/metrics" {
                                let mut r = http::Response::new(Full::new(bytes::Bytes::from(metrics.render())));
                                r.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                                );
                                r
                            } else {
                                http::Response::new(Full::new(bytes::Bytes::from_static(b"not found; try /metrics\n")))
                            };
                            if req.uri().path() != "/metrics" {
                                *resp.status_mut() = StatusCode::NOT_FOUND;
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                    });
                }
                () = &mut shutdown => break,
            }
        }
    }
}
