//! What one client connection may hold, so that no client can keep the server's sockets, memory or
//! instance permits by being slow: the cap on open connections, hyper's limits (header read time, which
//! also bounds an idle keep-alive connection; header sizes; HTTP/2 streams per connection and keep-alive
//! pings), a deadline for a connection's first byte (before hyper knows which protocol it speaks), and a
//! deadline for every write to a client that stopped reading.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The connection limits of a server.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Open client connections at most; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long a client may take to send a request's header, counted from its connection or its
    /// previous response (so an idle keep-alive connection closes after it too).
    pub header_timeout: Duration,
    /// How long one write to a client may wait for it to read.
    pub write_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams: u32,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 16_384,
            header_timeout: Duration::from_secs(20),
            write_timeout: Duration::from_secs(30),
            max_streams: 100,
        }
    }
}

/// Largest request header section (HTTP/1.1 and HTTP/2), and the most header fields of one request.
const MAX_HEADER_BYTES: usize = 64 << 10;
const MAX_HEADERS: usize = 100;

/// hyper's connection builder with `limits` applied.
pub(crate) fn builder(limits: &ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES.max(8192))
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_pending_accept_reset_streams(Some(limits.max_streams as usize))
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    builder
}

/// A client socket with deadlines: its first byte must come within the header timeout, and a write may
/// wait at most the write timeout for the client to read.
pub(crate) struct GuardedIo<S> {
    inner: S,
    first_byte: Option<Pin<Box<Sleep>>>,
    write_timeout: Duration,
    write_deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> GuardedIo<S> {
    pub(crate) fn new(inner: S, limits: &ConnLimits) -> GuardedIo<S> {
        GuardedIo {
            inner,
            first_byte: Some(Box::pin(tokio::time::sleep(limits.header_timeout))),
            write_timeout: limits.write_timeout,
            write_deadline: None,
        }
    }

    /// Pending with the write deadline armed; an error once it passes.
    fn write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.write_timeout;
        let deadline = self.write_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading"))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.first_byte = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.first_byte.as_mut().map(|s| s.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no request from the client"))),
                _ => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                self.write_deadline = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.write_pending(cx).map(Err),
        }
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                self.write_deadline = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.write_pending(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                self.write_deadline = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.write_pending(cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
