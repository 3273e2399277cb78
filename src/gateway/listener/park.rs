//! HTTP/1.1 connections parked when idle: hyper's connection (its 8 KB read and write
//! buffers) is let go without closing the TLS stream, and the client's next bytes build a new
//! one; what one connection's IO and requests did, as the driver needs to know it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::watch;

use super::{BoxError, ListenerSpec, http1_builder, now_ms, stopped};
use crate::tls::ServerTls;

/// An HTTP/1.1 connection idle this long (no request in flight, nothing written or read, the
/// client's next request awaited) is parked. Short, because the buffers of connections not yet
/// parked stay resident as the allocator's once freed: with 1,000 connections opened one after
/// another, RSS per connection 16.0-16.3 KB at 500 ms, 10.8-11.0 at 250, 8.5-9.0 at 100
/// (the marginal cost, 6.2-7.2 KB, the same); a client with a request in flight or under way is
/// never parked, and one that pauses longer only builds hyper's connection again.
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// What one connection's IO and requests did, as the HTTP/1.1 driver needs to know it.
#[derive(Default)]
pub(super) struct Traffic {
    /// Reads and writes that moved bytes.
    pub(super) moved: AtomicU64,
    /// Reads that got bytes, and how many there had been when the last answer was written.
    pub(super) reads: AtomicU64,
    pub(super) reads_at_answer: AtomicU64,
    /// The last read found nothing to read (the connection waits for the client).
    pub(super) reading: AtomicBool,
    /// The last write or flush could not go on (the client is not reading).
    pub(super) blocked: AtomicBool,
    /// Requests from the handler's call until hyper has written their answer.
    pub(super) in_flight: AtomicUsize,
    /// When a request last started or ended ([`now_ms`]).
    pub(super) last_request_ms: AtomicU64,
}

impl Traffic {
    /// Nothing moved since `seen`, the client's next request is awaited and none of it has
    /// come, nothing is being answered or written.
    fn idle(&self, seen: u64) -> bool {
        self.moved.load(Ordering::Relaxed) == seen
            && self.reading.load(Ordering::Relaxed)
            && !self.blocked.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.reads.load(Ordering::Relaxed) == self.reads_at_answer.load(Ordering::Relaxed)
    }
}

/// A request from the handler's call until its answer is written (or dropped).
pub(super) struct InFlight(Arc<Traffic>);

impl InFlight {
    pub(super) fn new(t: &Arc<Traffic>) -> InFlight {
        t.in_flight.fetch_add(1, Ordering::Relaxed);
        t.last_request_ms.store(now_ms(), Ordering::Relaxed);
        InFlight(t.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.reads_at_answer.store(self.0.reads.load(Ordering::Relaxed), Ordering::Relaxed);
        self.0.last_request_ms.store(now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted in flight until hyper drops it.
pub(super) struct Counted<B> {
    pub(super) body: B,
    pub(super) _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The TLS stream as hyper sees it: bytes hyper had read but not parsed when the connection
/// was parked come first; traffic is counted.
pub(super) struct Tracked {
    pub(super) tls: Box<ServerTls>,
    pub(super) unread: Bytes,
    pub(super) traffic: Arc<Traffic>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..n]);
            this.unread.advance(n);
            // Counted as read: a request begun in these bytes keeps the connection from being
            // parked again (which would restart hyper's deadline for its headers).
            this.traffic.moved.fetch_add(1, Ordering::Relaxed);
            this.traffic.reads.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.tls).poll_read(cx, buf);
        this.traffic.reading.store(r.is_pending(), Ordering::Relaxed);
        if buf.filled().len() > before {
            this.traffic.moved.fetch_add(1, Ordering::Relaxed);
            this.traffic.reads.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl Tracked {
    /// Notes whether a write or flush could go on, and a write that moved bytes.
    fn note<T>(&self, r: Poll<std::io::Result<T>>, moved: impl FnOnce(&T) -> bool) -> Poll<std::io::Result<T>> {
        self.traffic.blocked.store(r.is_pending(), Ordering::Relaxed);
        if let Poll::Ready(Ok(v)) = &r
            && moved(v)
        {
            self.traffic.moved.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.tls).poll_write(cx, buf);
        self.note(r, |&n| n > 0)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.tls).poll_write_vectored(cx, bufs);
        self.note(r, |&n| n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.tls).poll_flush(cx);
        self.note(r, |()| false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

/// Serves an HTTP/1.1 connection, parking it whenever it is idle for [`PARK_AFTER`] (see
/// [`Traffic::idle`]): hyper's connection is taken apart without closing the TLS stream, and
/// the client's next bytes start a new one. A parked connection silent for the header deadline
/// is closed, as hyper closes an idle one. While parked, this future holds the TLS stream and
/// little else: hyper's connection and its state live in a box of their own.
pub(super) async fn serve_http1<S>(
    mut io: Tracked,
    spec: &ListenerSpec,
    svc: S,
    parked: Option<prometheus_client::metrics::gauge::Gauge>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    S: HttpService<Incoming> + Clone + Unpin,
    S::Future: Unpin,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<BoxError>,
{
    let traffic = io.traffic.clone();
    // The parameter is the one place the stream is kept (an async fn keeps room for each).
    io = loop {
        // A statement of its own: a temporary in the awaiting one would take room here.
        let run = Box::pin(run_http1(io, spec, svc.clone(), &traffic, stop));
        io = match run.await? {
            Http1::Ended(io) => break io,
            Http1::Idle(io) => io,
        };
        // What hyper had read and not parsed (a pipelined request) goes to the next one at once.
        if io.unread.is_empty() && !park(&io.tls, spec.header_timeout, parked.as_ref(), stop).await {
            break io;
        }
    };
    close(&mut io.tls).await;
    Ok(())
}

enum Http1 {
    /// hyper finished: the client closed, keep-alive ended, or the listener stopped.
    Ended(Tracked),
    /// Idle: hyper let go of the stream.
    Idle(Tracked),
}

/// One hyper connection on the stream, until it ends or is idle for [`PARK_AFTER`].
async fn run_http1<S>(
    io: Tracked,
    spec: &ListenerSpec,
    svc: S,
    traffic: &Traffic,
    stop: &mut watch::Receiver<bool>,
) -> Result<Http1, BoxError>
where
    S: HttpService<Incoming> + Unpin,
    S::Future: Unpin,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<BoxError>,
{
    // Built here, not kept by the caller: a parked connection holds no builder.
    let mut conn = http1_builder(spec).serve_connection(TokioIo::new(io), svc);
    let mut seen = traffic.moved.load(Ordering::Relaxed);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PARK_AFTER, PARK_AFTER);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                r?;
                return Ok(Http1::Ended(conn.into_parts().io.into_inner()));
            }
            _ = tick.tick(), if !stopping => {
                if traffic.idle(seen) {
                    break;
                }
                seen = traffic.moved.load(Ordering::Relaxed);
            }
            _ = stopped(stop), if !stopping => {
                stopping = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
        }
    }
    // hyper waits for a request of which nothing came, with nothing to write.
    let http1::Parts { io, read_buf, .. } = conn.into_parts();
    let mut io = io.into_inner();
    if !read_buf.is_empty() {
        // A copy: a slice would keep hyper's whole read buffer.
        io.unread = Bytes::copy_from_slice(&read_buf);
    }
    Ok(Http1::Idle(io))
}

/// Waits, holding nothing but the stream, for the client's next bytes (true); false at the
/// header deadline or when the listener stops.
async fn park(
    tls: &ServerTls,
    deadline: Duration,
    gauge: Option<&prometheus_client::metrics::gauge::Gauge>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    if let Some(g) = gauge {
        g.inc();
    }
    let woke = tokio::select! {
        r = tls.tcp().readable() => r.is_ok(),
        _ = tokio::time::sleep(deadline) => false,
        _ = stopped(stop) => false,
    };
    if let Some(g) = gauge {
        g.dec();
    }
    woke
}

/// Ends a TLS stream hyper no longer drives: close_notify, then the TCP close.
async fn close(tls: &mut ServerTls) {
    // A peer that is gone or slow to take the alert changes nothing: the stream is dropped next.
    let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
}
