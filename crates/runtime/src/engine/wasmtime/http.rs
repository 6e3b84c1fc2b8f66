//! wasi:http handlers: a component exporting `wasi:http/incoming-handler@0.2.x`, linked once
//! (`ProxyPre`) and instantiated fresh for every request, so no state survives between requests.
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
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::WasmtimeEngine;
use super::compile::Compiled;
use super::host::{self, ComponentHost, ComponentImports, Slicing};
use super::outcome::{link_error, request_failure, root_cause};
use crate::Result;
use crate::engine::{BoxError, BoxFuture, Failure, HttpBody, HttpProgram, RequestLimits, not_runnable};
use crate::grants::Grants;
use crate::inspect::Input;
use crate::instance::{Stdio, StdioSpec};

/// A loaded wasi:http component, ready to serve requests.
#[derive(Clone)]
pub(super) struct HttpHandler {
    pre: ProxyPre<ComponentHost>,
}

/// Loads a component that exports wasi:http/incoming-handler (0.2.x) for serving.
pub(super) fn load(engine: &WasmtimeEngine, input: &Input) -> Result<HttpHandler> {
    let component = match engine.load_compiled(input)? {
        Compiled::Component(c) => c,
        Compiled::Module(_) => {
            return Err(not_runnable(format!(
                "{}: is a core module, not a wasi:http component (serve runs modules as WAGI handlers)",
                input.name
            )));
        }
    };
    let linker = host::component_linker(&engine.engine, ComponentImports::Http)?;
    let pre = linker.instantiate_pre(&component).map_err(|e| link_error(&input.name, &e))?;
    let pre = ProxyPre::new(pre).map_err(|e| {
        let exports: Vec<String> = component.component_type().exports(&engine.engine).map(|(n, _)| n.to_string()).collect();
        not_runnable(format!(
            "{}: unsupported world: serve needs a component exporting wasi:http/incoming-handler@0.2.x (it exports {}): {}",
            input.name,
            if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") },
            root_cause(&e)
        ))
    })?;
    Ok(HttpHandler { pre })
}

impl HttpProgram for HttpHandler {
    fn handle<'a>(
        &'a self,
        req: http::Request<HttpBody>,
        grants: &'a Grants,
        limits: RequestLimits,
    ) -> BoxFuture<'a, Result<http::Response<HttpBody>, Failure>> {
        Box::pin(async move {
            let resp = self.serve(req, grants, limits).await?;
            Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()))
        })
    }
}

/// What the guest put in its response outparam: a response, an error code, or nothing (dropped unset).
type Sent = Result<Result<http::Response<HyperOutgoingBody>, ErrorCode>, ()>;
/// How the guest's run ended: `None` inside is the deadline.
type Ran = std::result::Result<(), Option<wasmtime::Error>>;

impl HttpHandler {
    async fn serve(
        &self,
        req: http::Request<HttpBody>,
        grants: &Grants,
        limits: RequestLimits,
    ) -> Result<http::Response<HyperOutgoingBody>, Failure> {
        if let (Some(max), Some(len)) = (limits.max_body, declared_length(&req))
            && len > max
        {
            return Err(Failure::BodyTooLarge(max));
        }
        let stdio = Stdio { stdin: StdioSpec::Null, stdout: StdioSpec::Inherit, stderr: StdioSpec::Inherit };
        let host = ComponentHost::new(grants, &stdio).map_err(|e| Failure::Host(e.to_string()))?;
        let hit = host.limits.hit_flag();
        let mut store = host::new_store(self.pre.engine(), host, Slicing::Yield);
        let too_large = Arc::new(AtomicBool::new(false));
        let req = req.map(|b| LimitedBody { inner: b, left: limits.max_body, max: limits.max_body.unwrap_or(0), flag: too_large.clone() });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (req, out) = {
            let mut view = store.data_mut().http_view();
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
        let ending = Ending { too_large, hit, limits };
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
            First::Ran(ran) => ending.answered(rx.try_recv().map_err(|_| ()), Some(ran)),
            First::Sent(Ok(sent)) => {
                tokio::spawn(run);
                ending.answered(Ok(sent), None)
            }
            First::Sent(Err(_)) => {
                let ran = run.await;
                ending.answered(Err(()), Some(ran))
            }
        }
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
            // The outparam was dropped unset: how the guest ended tells why.
            Err(()) => match ran {
                Some(Ok(())) | None => Err(self.too_large().unwrap_or(Failure::NoResponse)),
                Some(Err(None)) => Err(Failure::Timeout(self.limits.timeout.unwrap_or_default())),
                Some(Err(Some(e))) => Err(self.too_large().unwrap_or_else(|| request_failure(&e, self.hit.load(Ordering::SeqCst)))),
            },
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
