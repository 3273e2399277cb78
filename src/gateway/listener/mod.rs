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
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::{HttpService, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::ServerConfig;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

mod park;

pub use park::PARK_AFTER;
use park::{Counted, InFlight, Tracked, Traffic, serve_http1};

use super::per_key::{PerKey, Slot};
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
    pub refusals: Option<Arc<super::refusal_log::HandshakeRefusals>>,
    /// The listener's revocation lists: when new ones come into force, an open connection's
    /// certificate is checked again before its next request.
    pub crls: Option<Arc<crate::tls::crl::CrlSet>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerReason {
    listener: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

/// The listeners' connection metrics, by listener name.
#[derive(Default)]
pub struct ListenerMetrics {
    handshake_failures: Family<ListenerReason, Counter>,
    connections_refused: Family<ListenerReason, Counter>,
    connections_open: Family<ListenerLabels, Gauge>,
    connections_parked: Family<ListenerLabels, Gauge>,
}

impl ListenerMetrics {
    /// A listener's series at 0 from the start: its caps and its open connections.
    pub fn zero_series(&self, listener: &'static str) {
        for reason in ["connection_cap", "source_cap", "client_cap", "header_timeout"] {
            drop(self.connections_refused.get_or_create(&ListenerReason { listener, reason }));
        }
        drop(self.connections_open.get_or_create(&ListenerLabels { listener }));
        drop(self.connections_parked.get_or_create(&ListenerLabels { listener }));
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tls_handshake_failures",
            "Refused or failed TLS handshakes by reason",
            self.handshake_failures.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed unserved, by reason: a cap (connection, source, client) or headers not received in time",
            self.connections_refused.clone(),
        );
        registry.register("connections_open", "Open client connections", self.connections_open.clone());
        registry.register(
            "connections_parked",
            "Open HTTP/1.1 client connections parked while idle (no HTTP buffers held)",
            self.connections_parked.clone(),
        );
    }
}

/// The connections a listener still has open, once it stopped accepting: [`drain`] waits for
/// them. Each connection holds a sender; the channel closes when the last one ends.
pub struct OpenConnections(mpsc::Receiver<()>);

/// What every connection of one listener shares.
struct Listener<H> {
    spec: ListenerSpec,
    metrics: Option<Arc<ListenerMetrics>>,
    handler: H,
    sources: PerKey<IpAddr>,
    clients: PerKey<String>,
    peers: PeerCache,
}

/// What one accepted connection holds until it ends: its connection slot, its source's, and
/// its place among the listener's open connections.
struct Held {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _source: Slot<IpAddr>,
    _open: mpsc::Sender<()>,
}

impl<H> Listener<H> {
    /// A connection closed unserved (at a cap, or headers not received in time): counted, and
    /// summarised on record; never a log line or a record each.
    fn at_cap(&self, addr: SocketAddr, reason: &'static str, presented: Option<&[u8]>) {
        let listener = self.spec.name;
        if let Some(m) = &self.metrics {
            m.connections_refused.get_or_create(&ListenerReason { listener, reason }).inc();
        }
        match &self.spec.refusals {
            Some(r) => r.refused(addr, reason, presented),
            None => tracing::debug!(listener, peer_addr = %addr, reason, "connection refused"),
        }
    }

    /// A refused handshake, or a certificate revoked while its connection was open.
    fn refused(&self, addr: SocketAddr, reason: &'static str, presented: Option<&[u8]>) {
        let listener = self.spec.name;
        if let Some(m) = &self.metrics {
            m.handshake_failures.get_or_create(&ListenerReason { listener, reason }).inc();
        }
        match &self.spec.refusals {
            Some(r) => r.refused(addr, reason, presented),
            None => tracing::warn!(listener, peer_addr = %addr, reason, "TLS handshake refused"),
        }
    }

    fn gauge(&self, of: impl Fn(&ListenerMetrics) -> &Family<ListenerLabels, Gauge>) -> Option<Gauge> {
        let labels = ListenerLabels { listener: self.spec.name };
        self.metrics.as_ref().map(|m| of(m).get_or_create(&labels).clone())
    }
}

/// Serves connections on `tcp` until `shutdown` turns true; returns the connections still open,
/// which finish their requests and close (they see `shutdown` too). `handler` gets the peer's
/// identity and each request.
pub async fn serve<H, Fut, B>(
    tcp: TcpListener,
    spec: ListenerSpec,
    metrics: Option<Arc<ListenerMetrics>>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) -> OpenConnections
where
    H: Fn(Arc<PeerIdentity>, Request<Incoming>) -> Fut + Clone + Send + Sync + Unpin + 'static,
    Fut: Future<Output = Result<Response<B>, std::io::Error>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let (open, open_rx) = mpsc::channel::<()>(1);
    let permits = Arc::new(Semaphore::new(spec.max_connections));
    let summaries =
        spec.refusals.clone().map(|r| tokio::spawn(super::refusal_log::every_window(move || r.end_window())));
    let listener = Arc::new(Listener {
        sources: PerKey::new(spec.max_per_source),
        clients: PerKey::new(spec.max_per_client),
        peers: PeerCache::default(),
        spec,
        metrics,
        handler,
    });
    let name = listener.spec.name;
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
            listener.at_cap(addr, "connection_cap", None);
            continue;
        };
        let Some(source) = listener.sources.take(&addr.ip()) else {
            listener.at_cap(addr, "source_cap", None);
            continue;
        };
        // Under pressure (a quarter of the slots left) a handshake gets a short budget: slots
        // held by connections that never finish theirs come back quickly.
        let spec = &listener.spec;
        let budget = if permits.available_permits() < spec.max_connections / 4 {
            spec.handshake_timeout.min(PRESSED_HANDSHAKE)
        } else {
            spec.handshake_timeout
        };
        let _ = stream.set_nodelay(true);
        let held = Held { _permit: permit, _source: source, _open: open.clone() };
        tokio::spawn(connection(listener.clone(), stream, addr, budget, held, shutdown.clone()));
    }
    drop(tcp);
    if let Some(t) = summaries {
        t.abort();
    }
    if let Some(r) = &listener.spec.refusals {
        r.end_window();
    }
    OpenConnections(open_rx)
}

/// One connection: the handshake within `budget`, the peer's identity and its client slot,
/// then HTTP until the connection ends or the listener stops.
async fn connection<H, Fut, B>(
    listener: Arc<Listener<H>>,
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    budget: Duration,
    _held: Held,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Arc<PeerIdentity>, Request<Incoming>) -> Fut + Clone + Send + Sync + Unpin + 'static,
    Fut: Future<Output = Result<Response<B>, std::io::Error>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let name = listener.spec.name;
    // The stream (rustls's connection is over 1 KB) lives in a box of its own from here on:
    // this task and the HTTP/1.1 driver hold a pointer, not room for it each.
    let config = listener.spec.tls.clone();
    let accept = Box::pin(async move { ServerTls::accept(stream, config).await.map(Box::new) });
    let (accepted, presented) = with_refused_certificate(tokio::time::timeout(budget, accept)).await;
    let tls = match accepted {
        Err(_) => return listener.refused(addr, "timeout", presented.as_deref()),
        Ok(Err(e)) => return listener.refused(addr, handshake_failure_reason(&e), presented.as_deref()),
        Ok(Ok(t)) => t,
    };
    let der = tls.connection().peer_certificates().and_then(|c| c.first());
    let peer: Arc<PeerIdentity> = match der.map(|c| listener.peers.identity(c)) {
        Some(Ok(p)) => p,
        _ => return listener.refused(addr, "bad_certificate", der.map(|c| c.as_ref())),
    };
    let Some(_client) = listener.clients.take(&peer.fingerprint) else {
        return listener.at_cap(addr, "client_cap", der.map(|c| c.as_ref()));
    };
    tracing::debug!(listener = name, peer_subject = %peer.subject, peer_fingerprint = %peer.fingerprint, "connection");
    let open = listener.gauge(|m| &m.connections_open);
    if let Some(g) = &open {
        g.inc();
    }
    let traffic = Arc::new(Traffic::default());
    traffic.last_request_ms.store(now_ms(), Ordering::Relaxed);
    let svc = service(&listener, &tls, addr, peer, traffic.clone());
    // ALPN decides the protocol; without ALPN the first bytes do (`auto`).
    let ended = match tls.connection().alpn_protocol() {
        Some(crate::tls::ALPN_HTTP11) => {
            let parked = listener.gauge(|m| &m.connections_parked);
            let io = Tracked { tls, unread: Bytes::new(), traffic };
            // Boxed, and in a statement of its own (a temporary would take room here).
            let http1 = Box::pin(serve_http1(io, &listener.spec, svc, parked, &mut stop));
            http1.await
        }
        Some(crate::tls::ALPN_H2) => Box::pin(serve_h2(tls, svc, traffic, listener.spec.header_timeout, stop)).await,
        _ => Box::pin(serve_sniffed(tls, svc, listener.spec.header_timeout, stop)).await,
    };
    if let Err(e) = ended {
        // A client that did not send a request's headers within the deadline: closed without
        // an answer, as nginx does; counted, and summarised on record (a slow-header flood
        // writes no record or log line per connection).
        if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) {
            listener.at_cap(addr, "header_timeout", None);
        }
        tracing::debug!(listener = name, error = %e, "connection ended with an error");
    }
    if let Some(g) = &open {
        g.dec();
    }
}

/// The boxed future of one request: hyper keeps room for one in every connection, and an idle
/// connection should not carry the pipeline's whole state machine.
type Answer<B> = Pin<Box<dyn Future<Output = Result<Response<Counted<B>>, std::io::Error>> + Send>>;

/// The connection's service: each request counted in flight until its answer is written, and
/// refused unanswered when revocation lists that came into force since the certificate was
/// last checked no longer accept it.
fn service<H, Fut, B>(
    listener: &Arc<Listener<H>>,
    tls: &ServerTls,
    addr: SocketAddr,
    peer: Arc<PeerIdentity>,
    traffic: Arc<Traffic>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Counted<B>>,
    Error = std::io::Error,
    Future = Answer<B>,
> + Clone
+ Unpin
+ use<H, Fut, B>
where
    H: Fn(Arc<PeerIdentity>, Request<Incoming>) -> Fut + Clone + Send + Sync + Unpin + 'static,
    Fut: Future<Output = Result<Response<B>, std::io::Error>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    // The chain and the lists it was verified under, for a check when they change.
    let recheck = listener.spec.crls.clone().filter(|c| !c.is_empty()).map(|crls| {
        let chain: Vec<_> =
            tls.connection().peer_certificates().unwrap_or_default().iter().map(|c| c.clone().into_owned()).collect();
        let seen = crls.generation();
        Arc::new(Recheck { crls, chain, seen: AtomicU64::new(seen) })
    });
    let listener = listener.clone();
    service_fn(move |req| {
        let handler = listener.handler.clone();
        let peer = peer.clone();
        let in_flight = InFlight::new(&traffic);
        let revoked = recheck.as_ref().is_some_and(|r| r.revoked());
        if revoked {
            let presented = recheck.as_ref().and_then(|r| r.chain.first()).map(|c| c.as_ref());
            listener.refused(addr, "revoked_in_session", presented);
        }
        Box::pin(async move {
            if revoked {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the client certificate is no longer valid under the revocation lists in force",
                ));
            }
            let response = handler(peer, req).await?;
            // Counted until hyper has written the whole body and drops it.
            Ok(response.map(|body| Counted { body, _in_flight: in_flight }))
        }) as Answer<B>
    })
}

/// A connection's certificate chain and the generation of the revocation lists it was last
/// found valid under.
struct Recheck {
    crls: Arc<crate::tls::crl::CrlSet>,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    seen: AtomicU64,
}

impl Recheck {
    /// True when new lists came into force and the chain is no longer valid under them.
    fn revoked(&self) -> bool {
        let now = self.crls.generation();
        if self.seen.load(Ordering::Relaxed) == now {
            return false;
        }
        if self.crls.still_valid(&self.chain) {
            self.seen.store(now, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// An HTTP/2 connection (by ALPN), closed (GOAWAY) once it had no request for `idle_after`,
/// PINGs or not: an idle one holds a connection slot for nothing.
async fn serve_h2<S>(
    tls: Box<ServerTls>,
    svc: S,
    traffic: Arc<Traffic>,
    idle_after: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    S: HttpService<Incoming> + Clone + Send + Unpin + 'static,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as Body>::Data: Send,
    <S::ResBody as Body>::Error: Into<BoxError>,
{
    let conn = http2_builder().serve_connection(TokioIo::new(tls), svc);
    until_stopped(conn, &mut stop, idle_for(&traffic, idle_after), |c| c.graceful_shutdown())
        .await
        .map_err(BoxError::from)
}

/// A connection without ALPN: its first bytes choose HTTP/1.1 or HTTP/2.
async fn serve_sniffed<S, RB>(
    tls: Box<ServerTls>,
    svc: S,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    RB: Body + Send + 'static,
    RB::Data: Send,
    RB::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .keep_alive_interval(Some(H2_KEEP_ALIVE));
    let conn = builder.serve_connection(TokioIo::new(tls), svc).into_owned();
    until_stopped(conn, &mut stop, std::future::pending(), |c| c.graceful_shutdown()).await
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
pub async fn drain(mut open: OpenConnections, deadline: Duration) -> bool {
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
