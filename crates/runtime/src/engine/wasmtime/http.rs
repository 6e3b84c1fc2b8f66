//! wasi:http handlers: a component exporting `wasi:http/incoming-handler@0.2.x` (`ProxyPre`) or
//! `wasi:http/handler@0.3.x` (`ServicePre`), linked once and instantiated fresh for every request, so
//! no state survives between requests.
//!
//! Each request gets its own store, built from the [`Grants`] like every other store (WASI context,
//! outbound HTTP checked against the allow-list, key-value stores, memory limiter), and a deadline.
//! Nothing here knows about sockets, queues or status codes: that is the serving loop's business
//! (`wasmcell-serve`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::WasiBody;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::Request as P3Request;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode as P3ErrorCode;

use super::WasmtimeEngine;
use super::compile::Compiled;
use super::host::{self, ComponentHost, Slicing};
use super::outcome::{link_error, request_failure, root_cause};
use super::tier::Tiered;
use crate::Result;
use crate::engine::{BoxError, BoxFuture, Failure, Hold, HttpBody, HttpProgram, RequestLimits, not_runnable};
use crate::grants::Grants;
use crate::inspect::Input;
use crate::instance::{Stdio, StdioSpec};

/// A loaded wasi:http component, ready to serve requests.
#[derive(Clone)]
pub(super) enum HttpHandler {
    /// `wasi:http/incoming-handler@0.2.x`: the response comes back through an outparam.
    P2(ProxyPre<ComponentHost>),
    /// `wasi:http/handler@0.3.x`: an async export returning the response, run in the store's event loop.
    P3(ServicePre<ComponentHost>),
}

/// Loads a component that exports wasi:http/handler (0.3.x) or wasi:http/incoming-handler (0.2.x);
/// with tiered start, one that switches to Cranelift's code when it is ready.
pub(super) fn load(engine: &WasmtimeEngine, input: &Input) -> Result<Arc<dyn HttpProgram>> {
    let (compiled, upgrade) = engine.load_compiled(input)?;
    let first = handler(input, compiled)?;
    Ok(match upgrade {
        None => Arc::new(first),
        Some(upgrade) => Arc::new(Tiered::start(first, upgrade, handler)),
    })
}

/// The handler of a compiled component, linked and type-checked once.
fn handler(input: &Input, compiled: Compiled) -> Result<HttpHandler> {
    let component = match compiled {
        Compiled::Component(c) => c,
        Compiled::Module(_) => {
            return Err(not_runnable(format!(
                "{}: is a core module, not a wasi:http component (serve runs modules as WAGI handlers)",
                input.name
            )));
        }
    };
    let linker = host::component_linker(component.engine())?;
    let pre = linker.instantiate_pre(&component).map_err(|e| link_error(&input.name, &e))?;
    let exports: Vec<String> = component.component_type().exports(component.engine()).map(|(n, _)| n.to_string()).collect();
    let unsupported = |e: wasmtime::Error| {
        not_runnable(format!(
            "{}: unsupported world: serve needs a component exporting wasi:http/handler@0.3.x or \
             wasi:http/incoming-handler@0.2.x (it exports {}): {}",
            input.name,
            if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") },
            root_cause(&e)
        ))
    };
    if exports.iter().any(|e| e.starts_with("wasi:http/handler@0.3")) {
        return Ok(HttpHandler::P3(ServicePre::new(pre).map_err(unsupported)?));
    }
    Ok(HttpHandler::P2(ProxyPre::new(pre).map_err(unsupported)?))
}

impl HttpProgram for HttpHandler {
    fn handle<'a>(
        &'a self,
        req: http::Request<HttpBody>,
        grants: &'a Grants,
        limits: RequestLimits,
        hold: Hold,
    ) -> BoxFuture<'a, Result<http::Response<HttpBody>, Failure>> {
        Box::pin(async move {
            if let (Some(max), Some(len)) = (limits.max_body, declared_length(&req))
                && len > max
            {
                return Err(Failure::BodyTooLarge(max));
            }
            let stdio = Stdio { stdin: StdioSpec::Null, stdout: StdioSpec::Inherit, stderr: StdioSpec::Inherit };
            let host = ComponentHost::new(grants, &stdio).map_err(|e| Failure::Host(e.to_string()))?;
            let hit = host.limits.hit_flag();
            let engine = match self {
                HttpHandler::P2(pre) => pre.engine(),
                HttpHandler::P3(pre) => pre.engine(),
            };
            let store = Owned { store: host::new_store(engine, host, Slicing::Yield), _hold: hold };
            let too_large = Arc::new(AtomicBool::new(false));
            let req =
                req.map(|b| LimitedBody { inner: b, left: limits.max_body, max: limits.max_body.unwrap_or(0), flag: too_large.clone() });
            let ending = Ending { too_large, hit, limits };
            match self {
                HttpHandler::P2(pre) => {
                    let resp = serve_p2(pre.clone(), store, req, ending).await?;
                    Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()))
                }
                HttpHandler::P3(pre) => {
                    let resp = serve_p3(pre.clone(), store, req, ending).await?;
                    Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()))
                }
            }
        })
    }
}

/// What the guest put in its response outparam: a response, an error code, or nothing (dropped unset).
type Sent = Result<Result<http::Response<HyperOutgoingBody>, ErrorCode>, ()>;
/// How the guest's run ended: `None` inside is the deadline.
type Ran = std::result::Result<(), Option<wasmtime::Error>>;

/// The guest's run, up to its deadline (`Err(None)`).
async fn within<F: Future<Output = wasmtime::Result<()>>>(timeout: Option<std::time::Duration>, run: F) -> Ran {
    match timeout {
        Some(t) => match tokio::time::timeout(t, run).await {
            Ok(r) => r.map_err(Some),
            Err(_) => Err(None),
        },
        None => run.await.map_err(Some),
    }
}

/// Which came first: the guest's end, or its answer.
enum First<S> {
    Ran(Ran),
    Sent(S),
}

/// Runs the guest on this task (no hop to another thread) until it has answered on `rx` or ended.
/// Most handlers finish within that first stretch; one that is still writing its body goes on in a
/// task of its own while the response streams.
async fn first<S>(run: impl Future<Output = Ran> + Send + 'static, rx: &mut tokio::sync::oneshot::Receiver<S>) -> First<S> {
    let mut run = Box::pin(run);
    let sent = std::future::poll_fn(|cx| {
        if let Poll::Ready(ran) = run.as_mut().poll(cx) {
            return Poll::Ready(Err(ran));
        }
        Pin::new(&mut *rx).poll(cx).map(Ok)
    })
    .await;
    match sent {
        Err(ran) => First::Ran(ran),
        Ok(Ok(sent)) => {
            tokio::spawn(run);
            First::Sent(sent)
        }
        // Dropped without an answer: the guest's end says why.
        Ok(Err(_)) => First::Ran(run.await),
    }
}

/// Serves one request with a WASI 0.2 handler: the response comes through its outparam.
async fn serve_p2(
    pre: ProxyPre<ComponentHost>,
    mut owned: Owned,
    req: http::Request<LimitedBody<HttpBody>>,
    ending: Ending,
) -> Result<http::Response<HyperOutgoingBody>, Failure> {
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let (req, out) = {
        let mut view = owned.store.data_mut().http_view();
        let req = view.new_incoming_request(Scheme::Http, req).map_err(|e| Failure::Host(root_cause(&e)))?;
        let out = view.new_response_outparam(tx).map_err(|e| Failure::Host(root_cause(&e)))?;
        (req, out)
    };
    let timeout = ending.limits.timeout;
    let run = within(timeout, async move {
        let store = &mut owned.store;
        let proxy = pre.instantiate_async(&mut *store).await?;
        proxy.wasi_http_incoming_handler().call_handle(store, req, out).await
    });
    match first(run, &mut rx).await {
        First::Sent(sent) => ending.answered(Ok(sent), None),
        First::Ran(ran) => ending.answered(rx.try_recv().map_err(|_| ()), Some(ran)),
    }
}

/// A request's store and the caller's [`Hold`]: fields drop in order, so the hold goes only after the
/// store (and its instance slot) is gone, whenever the run ends (answered, failed, past its deadline).
struct Owned {
    store: wasmtime::Store<ComponentHost>,
    _hold: Hold,
}

/// What a WASI 0.3 handler returned: a response, or an error code.
type P3Sent = Result<http::Response<WasiBody>, P3ErrorCode>;

/// Serves one request with a WASI 0.3 handler: `handle` returns the response, whose body the guest
/// may go on writing; the store's event loop runs until the client has it all.
async fn serve_p3(
    pre: ServicePre<ComponentHost>,
    mut owned: Owned,
    req: http::Request<LimitedBody<HttpBody>>,
    ending: Ending,
) -> Result<http::Response<WasiBody>, Failure> {
    let (tx, mut rx) = tokio::sync::oneshot::channel::<P3Sent>();
    let (req, _io) = P3Request::from_http(owned.store.data_mut().http_view().hooks, with_origin(req));
    let timeout = ending.limits.timeout;
    let run = within(timeout, async move {
        let service = pre.instantiate_async(&mut owned.store).await?;
        // The store's event loop runs until the client has the whole body (the guest may still be
        // writing it). That end is awaited out here, not inside the loop: a wake-up from inside came
        // late or not at all for some requests, whose stores then lived on to their deadline and
        // used up the instance pool (500s under load). The body ends only once the store is gone, so
        // the request's instance slot is free before the server admits the next one.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = owned.store.run_concurrent(async move |s| {
            let res = match service.handle(s, req).await? {
                Ok(res) => res,
                Err(code) => {
                    let _ = tx.send(Err(code));
                    return Ok(());
                }
            };
            let res = s.with(|s| res.into_http(s, async { Ok(()) }))?;
            let watched = |inner| Watched { inner, done: Some(done_tx), ended: ended_rx };
            let _ = tx.send(Ok(res.map(|b| watched(b).boxed_unsync())));
            std::future::pending::<()>().await;
            wasmtime::Result::<()>::Ok(())
        });
        let served = tokio::select! {
            biased;
            served = serving => served?,
            _ = done_rx => Ok(()),
        };
        drop(owned);
        drop(ended_tx);
        served
    });
    let (sent, ran) = match first(run, &mut rx).await {
        First::Sent(sent) => (Ok(sent), None),
        First::Ran(ran) => (rx.try_recv().map_err(|_| ()), Some(ran)),
    };
    match sent {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(code)) => Err(ending.too_large().unwrap_or_else(|| Failure::ErrorCode(format!("{code:?}")))),
        Err(()) => Err(ending.unanswered(ran)),
    }
}

/// The request as the guest sees it: an HTTP/1.1 request names only its path, so the scheme (`http`)
/// and the authority (its `Host`) are filled in, as `new_incoming_request` does for WASI 0.2.
fn with_origin<B>(mut req: http::Request<B>) -> http::Request<B> {
    let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).and_then(|h| h.parse().ok());
    let mut parts = req.uri().clone().into_parts();
    parts.scheme.get_or_insert(http::uri::Scheme::HTTP);
    if parts.authority.is_none() {
        parts.authority = host;
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    req
}

/// A response body that tells the guest's run when the client has all of it (or is gone, when it is
/// dropped), and ends only once the run has dropped its store.
struct Watched<B> {
    inner: B,
    /// Taken (dropped) when `inner` has ended: the run may drop the store.
    done: Option<tokio::sync::oneshot::Sender<()>>,
    /// Resolves once the store is gone.
    ended: tokio::sync::oneshot::Receiver<()>,
}

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<std::result::Result<Frame<B::Data>, B::Error>>> {
        if self.done.is_some() {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(None) => drop(self.done.take()),
                other => return other,
            }
        }
        Pin::new(&mut self.ended).poll(cx).map(|_| None)
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What decides a request's outcome once the guest answered or ended.
struct Ending {
    too_large: Arc<AtomicBool>,
    hit: Arc<AtomicBool>,
    limits: RequestLimits,
}

impl Ending {
    fn too_large(&self) -> Option<Failure> {
        self.too_large.load(Ordering::SeqCst).then(|| Failure::BodyTooLarge(self.limits.max_body.unwrap_or(0)))
    }

    fn answered(&self, sent: Sent, ran: Option<Ran>) -> Result<http::Response<HyperOutgoingBody>, Failure> {
        match sent {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(code)) => Err(self.too_large().unwrap_or_else(|| Failure::ErrorCode(format!("{code:?}")))),
            Err(()) => Err(self.unanswered(ran)),
        }
    }

    /// The guest gave no answer (the outparam dropped unset, or `handle` never returned): how it
    /// ended tells why.
    fn unanswered(&self, ran: Option<Ran>) -> Failure {
        match ran {
            Some(Ok(())) | None => self.too_large().unwrap_or(Failure::NoResponse),
            Some(Err(None)) => Failure::Timeout(self.limits.timeout.unwrap_or_default()),
            Some(Err(Some(e))) => self.too_large().unwrap_or_else(|| request_failure(&e, self.hit.load(Ordering::SeqCst))),
        }
    }
}

fn declared_length<B>(req: &http::Request<B>) -> Option<u64> {
    req.headers().get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
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
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
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
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(match e.downcast::<hyper::Error>() {
                Ok(e) => wasmtime_wasi_http::Error::Hyper(*e),
                Err(e) => wasmtime_wasi_http::Error::InternalError(Some(e.to_string())),
            }))),
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
