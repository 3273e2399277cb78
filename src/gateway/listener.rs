//! Accepting mutual-TLS connections: a connection cap (connections over it are closed at
//! once), a handshake deadline, the peer's identity taken from its verified certificate, then
//! HTTP/1.1 or HTTP/2 (by ALPN) until the connection ends or the listener drains.
//!
//! An HTTP/1.1 connection idle for [`PARK_AFTER`] is parked: hyper's connection (its 8 KB read
//! and write buffers) is let go without closing the TLS stream, and the client's next bytes
//! build a new one. An idle connection then holds its TLS state and little else.
//!
//! The same loop serves the gateway's listeners and the simulators, so tests exercise the
//! code that runs in production.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::{HttpService, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

use super::admission::PerKey;
use crate::admin::metrics::{ListenerLabels, ListenerReason, Metrics};
use crate::tls::verifier::with_refused_certificate;
use crate::tls::{PeerCache, PeerIdentity, ServerTls, handshake_failure_reason};

/// The error type request handlers and bodies report.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How one listener behaves.
#[derive(Clone)]
pub struct ListenerSpec {
    /// Name for logs and metrics (`police`, `callback`, `sim`...).
    pub name: &'static str,
    pub tls: Arc<ServerConfig>,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    /// Connections one source address may hold (handshaking or open).
    pub max_per_source: usize,
    /// Connections one client certificate may hold.
    pub max_per_client: usize,
    /// Deadline for a request's headers (HTTP/1.1) once a connection is idle or reading.
    pub header_timeout: Duration,
    /// Where refused handshakes are recorded (the gateway's listeners; not the simulators).
    pub refusals: Option<Arc<super::refusals::HandshakeRefusals>>,
    /// The listener's revocation lists: when new ones come into force, an open connection's
    /// certificate is checked again before its next request.
    pub crls: Option<Arc<crate::tls::crl::CrlSet>>,
}

/// The connections a listener still has open, once it stopped accepting: [`drain`] waits for
/// them. Each connection holds a sender; the channel closes when the last one ends.
pub struct Open(mpsc::Receiver<()>);

/// Serves connections on `tcp` until `shutdown` turns true; returns the connections still open,
/// which finish their requests and close (they see `shutdown` too). `handler` gets the peer's
/// identity and each request.
pub async fn serve<H, Fut, B>(
    tcp: TcpListener,
    spec: ListenerSpec,
    metrics: Option<Arc<Metrics>>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) -> Open
where
    H: Fn(Arc<PeerIdentity>, Request<Incoming>) -> Fut + Clone + Send + Sync + Unpin + 'static,
    Fut: Future<Output = Result<Response<B>, std::io::Error>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let (open, open_rx) = mpsc::channel::<()>(1);
    let permits = Arc::new(Semaphore::new(spec.max_connections));
    let sources = Arc::new(PerKey::<IpAddr>::new(spec.max_per_source));
    let clients = Arc::new(PerKey::<String>::new(spec.max_per_client));
    let peers = Arc::new(PeerCache::default());
    let name = spec.name;
    // A refusal at a cap: counted (and summarised on record), never a log line or a record each.
    let at_cap = {
        let (metrics, refusals) = (metrics.clone(), spec.refusals.clone());
        move |addr: std::net::SocketAddr, reason: &'static str, presented: Option<&[u8]>| {
            if let Some(m) = &metrics {
                m.connections_refused.get_or_create(&ListenerReason { listener: name, reason }).inc();
            }
            match &refusals {
                Some(r) => r.refused(addr, reason, presented),
                None => tracing::debug!(listener = name, peer_addr = %addr, reason, "connection refused"),
            }
        }
    };
    // Each window of refused handshakes ends in its summary record.
    let summaries = spec.refusals.clone().map(|r| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + super::refusals::WINDOW,
                super::refusals::WINDOW,
            );
            loop {
                tick.tick().await;
                r.end_window();
            }
        })
    });
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            a = tcp.accept() => a,
        };
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            at_cap(addr, "connection_cap", None);
            continue;
        };
        let Some(source) = sources.take(&addr.ip()) else {
            at_cap(addr, "source_cap", None);
            continue;
        };
        // Under pressure (a quarter of the slots left) a handshake gets a short budget: slots
        // held by connections that never finish theirs come back quickly.
        let budget = if permits.available_permits() < spec.max_connections / 4 {
            spec.handshake_timeout.min(PRESSED_HANDSHAKE)
        } else {
            spec.handshake_timeout
        };
        let _ = stream.set_nodelay(true);
        let open = open.clone();
        let mut stop = shutdown.clone();
        let metrics = metrics.clone();
        let handler = handler.clone();
        let spec = spec.clone();
        let peers = peers.clone();
        let (clients, at_cap) = (clients.clone(), at_cap.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _source = source;
            let _open = open;
            let refused = |reason: &'static str, presented: Option<&[u8]>| {
                if let Some(m) = &metrics {
                    m.handshake_failures.get_or_create(&ListenerReason { listener: name, reason }).inc();
                }
                match &spec.refusals {
                    Some(r) => r.refused(addr, reason, presented),
                    None => tracing::warn!(listener = name, peer_addr = %addr, reason, "TLS handshake refused"),
                }
            };
            // The stream (rustls's connection is over 1 KB) lives in a box of its own from here
            // on: this task and the HTTP/1.1 driver hold a pointer, not room for it each.
            let config = spec.tls.clone();
            let accept = Box::pin(async move { ServerTls::accept(stream, config).await.map(Box::new) });
            let (accepted, presented) = with_refused_certificate(tokio::time::timeout(budget, accept)).await;
            let tls = match accepted {
                Err(_) => return refused("timeout", presented.as_deref()),
                Ok(Err(e)) => return refused(handshake_failure_reason(&e), presented.as_deref()),
                Ok(Ok(t)) => t,
            };
            let der = tls.connection().peer_certificates().and_then(|c| c.first());
            let peer: Arc<PeerIdentity> = match der.map(|c| peers.identity(c)) {
                Some(Ok(p)) => p,
                _ => return refused("bad_certificate", der.map(|c| c.as_ref())),
            };
            let Some(_client) = clients.take(&peer.fingerprint) else {
                return at_cap(addr, "client_cap", der.map(|c| c.as_ref()));
            };
            tracing::debug!(listener = name, peer_subject = %peer.subject, peer_fingerprint = %peer.fingerprint, "connection");
            let open =
                metrics.as_ref().map(|m| m.connections_open.get_or_create(&ListenerLabels { listener: name }).clone());
            if let Some(g) = &open {
                g.inc();
            }
            // The request future is boxed: hyper keeps room for one in every connection, and an
            // idle connection should not carry the pipeline's whole state machine.
            let traffic = Arc::new(Traffic::default());
            traffic.last_request_ms.store(now_ms(), Ordering::Relaxed);
            let t = traffic.clone();
            // The chain and the lists it was verified under, for a check when they change.
            let recheck = spec.crls.clone().filter(|c| !c.is_empty()).map(|crls| {
                let chain: Vec<_> = tls
                    .connection()
                    .peer_certificates()
                    .unwrap_or_default()
                    .iter()
                    .map(|c| c.clone().into_owned())
                    .collect();
                (crls.clone(), Arc::new(chain), Arc::new(AtomicU64::new(crls.generation())))
            });
            let revoked = {
                let (metrics, refusals) = (metrics.clone(), spec.refusals.clone());
                move |chain: &[rustls::pki_types::CertificateDer<'static>]| {
                    if let Some(m) = &metrics {
                        m.handshake_failures
                            .get_or_create(&ListenerReason { listener: name, reason: "revoked_in_session" })
                            .inc();
                    }
                    if let Some(r) = &refusals {
                        r.refused(addr, "revoked_in_session", chain.first().map(|c| c.as_ref()));
                    }
                }
            };
            let svc = service_fn(move |req| {
                let handler = handler.clone();
                let peer = peer.clone();
                let in_flight = InFlight::new(&t);
                // New lists since this connection's certificate was last checked: check it
                // again; one no longer valid ends the connection, unanswered.
                let refused = recheck.as_ref().is_some_and(|(crls, chain, seen)| {
                    let now = crls.generation();
                    if seen.load(Ordering::Relaxed) == now {
                        return false;
                    }
                    if crls.still_valid(chain) {
                        seen.store(now, Ordering::Relaxed);
                        return false;
                    }
                    revoked(chain);
                    true
                });
                Box::pin(async move {
                    if refused {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::PermissionDenied,
                            "the client certificate is no longer valid under the revocation lists in force",
                        ));
                    }
                    let response = handler(peer, req).await?;
                    // Counted until hyper has written the whole body and drops it.
                    Ok(response.map(|body| Counted { body, _in_flight: in_flight }))
                }) as Pin<Box<dyn Future<Output = Result<Response<Counted<B>>, std::io::Error>> + Send>>
            });
            // ALPN decides the protocol; without ALPN the first bytes do (`auto`).
            let alpn = match tls.connection().alpn_protocol() {
                Some(crate::tls::ALPN_HTTP11) => Some(false),
                Some(crate::tls::ALPN_H2) => Some(true),
                _ => None,
            };
            let ended = match alpn {
                Some(false) => {
                    let parked = metrics
                        .as_ref()
                        .map(|m| m.connections_parked.get_or_create(&ListenerLabels { listener: name }).clone());
                    let io = Tracked { tls, unread: Bytes::new(), traffic };
                    // Boxed, and in a statement of its own (a temporary would take room here).
                    let http1 = Box::pin(serve_http1(io, &spec, svc, parked, &mut stop));
                    http1.await
                }
                // Built inside their boxes: a connection held in this task would take room in
                // every connection's task, whatever its protocol.
                // An HTTP/2 connection with no request for `request_timeout_ms` is closed (GOAWAY),
                // PINGs or not: an idle one holds a connection slot for nothing.
                Some(true) => {
                    let idle_after = spec.header_timeout;
                    let h2 = Box::pin(async move {
                        let conn = http2_builder().serve_connection(TokioIo::new(tls), svc);
                        until_stopped(conn, &mut stop, idle_for(&traffic, idle_after), |c| c.graceful_shutdown())
                            .await
                            .map_err(BoxError::from)
                    });
                    h2.await
                }
                _ => {
                    let sniffed = Box::pin(async move {
                        let mut builder = auto::Builder::new(TokioExecutor::new());
                        builder
                            .http1()
                            .timer(TokioTimer::new())
                            .header_read_timeout(spec.header_timeout)
                            .keep_alive(true);
                        builder
                            .http2()
                            .timer(TokioTimer::new())
                            .max_concurrent_streams(H2_MAX_STREAMS)
                            .keep_alive_interval(Some(H2_KEEP_ALIVE));
                        let conn = builder.serve_connection(TokioIo::new(tls), svc).into_owned();
                        until_stopped(conn, &mut stop, std::future::pending(), |c| c.graceful_shutdown()).await
                    });
                    sniffed.await
                }
            };
            if let Err(e) = ended {
                // A client that did not send a request's headers within the deadline: closed
                // without an answer, as nginx does; counted, and summarised on record (a
                // slow-header flood writes no record or log line per connection).
                if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) {
                    at_cap(addr, "header_timeout", None);
                }
                tracing::debug!(listener = name, error = %e, "connection ended with an error");
            }
            if let Some(g) = &open {
                g.dec();
            }
        });
    }
    drop(tcp);
    if let Some(t) = summaries {
        t.abort();
    }
    if let Some(r) = &spec.refusals {
        r.end_window();
    }
    Open(open_rx)
}

/// Runs a connection; when the listener stops, or `idle` resolves, asks it to finish its
/// requests and close.
async fn until_stopped<C, T, E>(
    conn: C,
    stop: &mut watch::Receiver<bool>,
    idle: impl Future<Output = ()>,
    graceful: impl FnOnce(Pin<&mut C>),
) -> Result<T, E>
where
    C: Future<Output = Result<T, E>>,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r,
        _ = stopped(stop) => graceful(conn.as_mut()),
        _ = idle => graceful(conn.as_mut()),
    }
    conn.await
}

/// Resolves once a connection has had no request in flight for `after`.
async fn idle_for(traffic: &Traffic, after: Duration) {
    let check = (after / 4).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(check).await;
        let quiet = now_ms().saturating_sub(traffic.last_request_ms.load(Ordering::Relaxed));
        if traffic.in_flight.load(Ordering::Relaxed) == 0 && quiet >= after.as_millis() as u64 {
            return;
        }
    }
}

/// Milliseconds on a process-wide monotonic clock.
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

/// Resolves when the listener stops (or whoever stops it is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// An HTTP/1.1 connection idle this long (no request in flight, nothing written or read, the
/// client's next request awaited) is parked. Short, because the buffers of connections not yet
/// parked stay resident as the allocator's once freed: with 1,000 connections opened one after
/// another, RSS per connection 16.0-16.3 KB at 500 ms, 10.8-11.0 at 250, 8.5-9.0 at 100
/// (the marginal cost, 6.2-7.2 KB, the same); a client with a request in flight or under way is
/// never parked, and one that pauses longer only builds hyper's connection again.
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// What one connection's IO and requests did, as the HTTP/1.1 driver needs to know it.
#[derive(Default)]
struct Traffic {
    /// Reads and writes that moved bytes.
    moved: AtomicU64,
    /// Reads that got bytes, and how many there had been when the last answer was written.
    reads: AtomicU64,
    reads_at_answer: AtomicU64,
    /// The last read found nothing to read (the connection waits for the client).
    reading: AtomicBool,
    /// The last write or flush could not go on (the client is not reading).
    blocked: AtomicBool,
    /// Requests from the handler's call until hyper has written their answer.
    in_flight: AtomicUsize,
    /// When a request last started or ended ([`now_ms`]).
    last_request_ms: AtomicU64,
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
struct InFlight(Arc<Traffic>);

impl InFlight {
    fn new(t: &Arc<Traffic>) -> InFlight {
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
struct Counted<B> {
    body: B,
    _in_flight: InFlight,
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
struct Tracked {
    tls: Box<ServerTls>,
    unread: Bytes,
    traffic: Arc<Traffic>,
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
async fn serve_http1<S>(
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

/// HTTP/2 streams at once per connection, and the interval of its keep-alive pings (both the
/// ALPN-chosen and the sniffed HTTP/2 connections).
const H2_MAX_STREAMS: u32 = 256;
/// The handshake budget when a quarter of a listener's connection slots are left.
const PRESSED_HANDSHAKE: Duration = Duration::from_secs(1);
const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);

fn http1_builder(spec: &ListenerSpec) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new()).header_read_timeout(spec.header_timeout).keep_alive(true);
    b
}

fn http2_builder() -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new()).max_concurrent_streams(H2_MAX_STREAMS).keep_alive_interval(Some(H2_KEEP_ALIVE));
    b
}

/// Waits for every open connection to finish, at most `deadline`; true when all did.
pub async fn drain(mut open: Open, deadline: Duration) -> bool {
    tokio::time::timeout(deadline, open.0.recv()).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle connection holds: its TLS state once, in its own box, and pointers to it
    /// (the task and the HTTP/1.1 driver each kept room for the whole stream before).
    #[test]
    fn the_stream_is_held_by_pointer() {
        assert!(std::mem::size_of::<ServerTls>() > 1024);
        assert!(std::mem::size_of::<Tracked>() <= 64, "{}", std::mem::size_of::<Tracked>());
    }
}
