//! wasi:http handlers: a component exporting `wasi:http/incoming-handler@0.2.x`, linked once
//! (`ProxyPre`) and instantiated fresh for every request, so no state survives between requests.
//!
//! Each request gets its own store with the WASI context built from the sandbox policy (the same
//! `wasi_builder` as `run`), a memory limiter, a deadline, and outbound HTTP checked against the
//! policy's allow-list (denied by default: the guest gets `HTTP-request-denied`). Nothing here knows
//! about sockets, queues or status codes: that is the serving loop's business (`wasmcell-serve`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::not_runnable;
use super::wasmtime::{Loaded, MemoryLimiter, WasmtimeEngine, engine_err, limiter_for, link_error, root_cause, wasi_builder};
use crate::inspect::Input;
use crate::instance::{Stdio, StdioSpec};
use crate::{Result, SandboxPolicy};

/// The response a handler produced; its body streams while the guest keeps writing it.
pub type Response = http::Response<HyperOutgoingBody>;

/// Why a request got no response from the guest. The serving loop maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The guest trapped (or a host call failed it).
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The guest ran past the request deadline.
    #[error("guest exceeded the request timeout of {0:?}")]
    Timeout(Duration),
    /// The guest's memory growth was denied at the cap and it failed.
    #[error("guest exceeded its memory limit")]
    MemoryLimit,
    /// The request body was larger than allowed.
    #[error("request body over {0} bytes")]
    BodyTooLarge(u64),
    /// The guest returned without setting a response.
    #[error("guest returned without a response")]
    NoResponse,
    /// The guest answered with an error code instead of a response.
    #[error("guest answered with error {0}")]
    ErrorCode(String),
    /// The host could not set up the request.
    #[error("{0}")]
    Host(String),
}

/// Per-request limits beside the sandbox policy's.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestLimits {
    /// Wall-clock deadline for the whole request, response body included.
    pub timeout: Option<Duration>,
    /// Largest request body the guest may read.
    pub max_body: Option<u64>,
}

/// A loaded wasi:http component, ready to serve requests.
#[derive(Clone)]
pub struct HttpHandler {
    pre: ProxyPre<HttpHost>,
}

impl WasmtimeEngine {
    /// Loads a component that exports wasi:http/incoming-handler (0.2.x) for serving.
    pub fn load_http(&self, input: &Input) -> Result<HttpHandler> {
        let component = match self.load_compiled(input)? {
            Loaded::Component(c) => c,
            Loaded::Module(_) => {
                return Err(not_runnable(format!(
                    "{}: is a core module, not a wasi:http component (serve runs modules as WAGI handlers)",
                    input.name
                )));
            }
        };
        let mut linker = wasmtime::component::Linker::<HttpHost>::new(self.wasmtime());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(engine_err)?;
        crate::kv::add_to_linker(&mut linker, |h: &mut HttpHost| crate::kv::KvView { ctx: &h.kv, table: &mut h.table })
            .map_err(engine_err)?;
        let pre = linker.instantiate_pre(&component).map_err(|e| link_error(&input.name, &e))?;
        let pre = ProxyPre::new(pre).map_err(|e| {
            let exports: Vec<String> = component.component_type().exports(self.wasmtime()).map(|(n, _)| n.to_string()).collect();
            not_runnable(format!(
                "{}: unsupported world: serve needs a component exporting wasi:http/incoming-handler@0.2.x (it exports {}): {}",
                input.name,
                if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") },
                root_cause(&e)
            ))
        })?;
        Ok(HttpHandler { pre })
    }
}

impl HttpHandler {
    /// Serves one request in a fresh instance. Resolves when the guest has set the response (its
    /// body may still be streaming) or failed to.
    pub async fn handle<B>(&self, req: http::Request<B>, policy: &SandboxPolicy, limits: RequestLimits) -> Result<Response, Failure>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let too_large = Arc::new(AtomicBool::new(false));
        if let (Some(max), Some(len)) = (limits.max_body, declared_length(&req)) {
            if len > max {
                return Err(Failure::BodyTooLarge(max));
            }
        }
        let stdio = Stdio { stdin: StdioSpec::Null, stdout: StdioSpec::Inherit, stderr: StdioSpec::Inherit };
        let ctx = wasi_builder(policy, &stdio).map_err(|e| Failure::Host(e.to_string()))?.build();
        let memory = limiter_for(policy);
        let hit = memory.hit.clone();
        let host = HttpHost {
            ctx,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: Outbound { policy: Arc::new(policy.http_outbound.clone()) },
            kv: crate::kv::KvCtx::new(policy),
            memory,
        };
        let mut store = Store::new(self.pre.engine(), host);
        store.limiter(|h| &mut h.memory as &mut dyn wasmtime::ResourceLimiter);
        // Yield to tokio at every epoch tick: a spinning guest shares the threads and its deadline
        // (tokio's timer below) can fire.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);

        let req = req.map(|b| LimitedBody { inner: b, left: limits.max_body, max: limits.max_body.unwrap_or(0), flag: too_large.clone() });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (req, out) = {
            let mut view = store.data_mut().http();
            let req = view.new_incoming_request(Scheme::Http, req).map_err(|e| Failure::Host(root_cause(&e)))?;
            let out = view.new_response_outparam(tx).map_err(|e| Failure::Host(root_cause(&e)))?;
            (req, out)
        };
        let pre = self.pre.clone();
        let timeout = limits.timeout;
        let run = async move {
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
            };
            match timeout {
                Some(t) => match tokio::time::timeout(t, run).await {
                    Ok(r) => r.map_err(Some),
                    Err(_) => Err(None),
                },
                None => run.await.map_err(Some),
            }
        };
        let failure = |e: Option<wasmtime::Error>| match e {
            None => Failure::Timeout(timeout.unwrap_or_default()),
            Some(_) if too_large.load(Ordering::SeqCst) => Failure::BodyTooLarge(limits.max_body.unwrap_or(0)),
            Some(_) if hit.load(Ordering::SeqCst) => Failure::MemoryLimit,
            Some(e) => match e.downcast_ref::<wasmtime::Trap>() {
                Some(trap) => Failure::Trap(trap.to_string()),
                None => Failure::Trap(root_cause(&e)),
            },
        };
        let answered = |sent: Result<Result<Response, wasmtime_wasi_http::p2::bindings::http::types::ErrorCode>, ()>,
                        ran: Option<Result<(), Option<wasmtime::Error>>>| match sent {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(code)) => {
                if too_large.load(Ordering::SeqCst) {
                    return Err(Failure::BodyTooLarge(limits.max_body.unwrap_or(0)));
                }
                Err(Failure::ErrorCode(format!("{code:?}")))
            }
            // The outparam was dropped unset: how the guest ended tells why.
            Err(()) => match ran {
                Some(Ok(())) | None if too_large.load(Ordering::SeqCst) => Err(Failure::BodyTooLarge(limits.max_body.unwrap_or(0))),
                Some(Ok(())) | None => Err(Failure::NoResponse),
                Some(Err(e)) => Err(failure(e)),
            },
        };
        // The guest runs on this task (no hop to another thread) until it has answered. Most
        // handlers finish within that first stretch; one that is still writing its body goes on in
        // a task of its own while the response streams.
        let mut run = Box::pin(run);
        let mut rx = rx;
        enum First<R, S> {
            Ran(R),
            Sent(S),
        }
        let first = std::future::poll_fn(|cx| {
            if let Poll::Ready(ran) = run.as_mut().poll(cx) {
                return Poll::Ready(First::Ran(ran));
            }
            Pin::new(&mut rx).poll(cx).map(First::Sent)
        })
        .await;
        match first {
            First::Ran(ran) => answered(rx.try_recv().map_err(|_| ()), Some(ran)),
            First::Sent(Ok(sent)) => {
                tokio::spawn(run);
                answered(Ok(sent), None)
            }
            First::Sent(Err(_)) => {
                let ran = run.await;
                answered(Err(()), Some(ran))
            }
        }
    }
}

fn declared_length<B>(req: &http::Request<B>) -> Option<u64> {
    req.headers().get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Store state for one request.
struct HttpHost {
    ctx: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: Outbound,
    kv: crate::kv::KvCtx,
    memory: MemoryLimiter,
}

impl WasiView for HttpHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

impl WasiHttpView for HttpHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Outbound HTTP, checked against the policy's allow-list before anything leaves the host.
struct Outbound {
    policy: Arc<Vec<crate::policy::OutboundRule>>,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_string();
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or(if scheme == "http" { 80 } else { 443 });
        if !self.policy.iter().any(|r| r.allows(&scheme, &host, port)) {
            tracing::info!(%scheme, %host, port, "outbound HTTP request denied by policy");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

/// The request body, cut off with an error once it passes the limit.
struct LimitedBody<B> {
    inner: B,
    left: Option<u64>,
    max: u64,
    flag: Arc<AtomicBool>,
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(left), Some(data)) = (this.left.as_mut(), frame.data_ref()) {
                    let n = data.len() as u64;
                    if n > *left {
                        this.flag.store(true, Ordering::SeqCst);
                        return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(Some(this.max)))));
                    }
                    *left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
