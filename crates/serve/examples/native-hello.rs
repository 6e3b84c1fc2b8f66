//! The native baseline of `bench/serve`: the hello handler written directly against hyper 1, served the
//! way `wasmcell serve` serves (hyper-util's auto builder, HTTP/1.1 keep-alive and h2c, a multi-thread
//! tokio runtime, TCP_NODELAY), answering every request with 200 `hello from wasi:http\n` text/plain.
//!
//!   cargo run --release -p wasmcell-serve --example native-hello -- 127.0.0.1:8081
//!
//! Prints `serving native-hello on http://ADDR` on stdout once it listens (port 0 picks one).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const BODY: &[u8] = b"hello from wasi:http\n";

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args().nth(1).ok_or("usage: native-hello ADDR")?.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        println!("serving native-hello on http://{}", listener.local_addr()?);
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("native-hello: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let builder = builder.clone();
            tokio::spawn(async move {
                let _ = builder.serve_connection(TokioIo::new(stream), hyper::service::service_fn(hello)).await;
            });
        }
    })
}
