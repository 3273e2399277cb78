//! Accepting mutual-TLS connections: a connection cap (connections over it are closed at
//! once), a handshake deadline, the peer's identity taken from its verified certificate, then
//! HTTP/1.1 or HTTP/2 (by ALPN) until the connection ends or the listener drains.
//!
//! The same loop serves the gateway's listeners and the simulators, so tests exercise the
//! code that runs in production.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::admin::metrics::{ListenerLabels, ListenerReason, Metrics};
use crate::tls::{PeerIdentity, handshake_failure_reason};

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
    /// Deadline for a request's headers (HTTP/1.1) once a connection is idle or reading.
    pub header_timeout: Duration,
    /// Where refused handshakes are recorded (the gateway's listeners; not the simulators).
    pub audit: Option<Arc<crate::audit::Audit>>,
}

/// Serves connections on `tcp` until `shutdown` turns true; returns the handle that drains
/// the connections still open. `handler` gets the peer's identity and each request.
pub async fn serve<H, Fut, B>(
    tcp: TcpListener,
    spec: ListenerSpec,
    metrics: Option<Arc<Metrics>>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) -> GracefulShutdown
where
    H: Fn(Arc<PeerIdentity>, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, std::io::Error>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(spec.max_connections));
    let acceptor = TlsAcceptor::from(spec.tls.clone());
    let name = spec.name;
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
            if let Some(m) = &metrics {
                m.connections_refused.get_or_create(&ListenerReason { listener: name, reason: "connection_cap" }).inc();
            }
            tracing::warn!(listener = name, peer_addr = %addr, "connection cap reached; connection closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let metrics = metrics.clone();
        let handler = handler.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let refused = |reason: &'static str| {
                if let Some(m) = &metrics {
                    m.handshake_failures.get_or_create(&ListenerReason { listener: name, reason }).inc();
                }
                if let Some(audit) = &spec.audit {
                    let mut r = crate::audit::Record::now("handshake_refusal");
                    r.listener = Some(name.to_owned());
                    r.code = Some(reason.to_owned());
                    r.detail = Some(format!("TLS handshake from {addr} refused: {reason}"));
                    audit.append(r);
                }
                tracing::warn!(listener = name, peer_addr = %addr, reason, "TLS handshake refused");
            };
            let tls = match tokio::time::timeout(spec.handshake_timeout, acceptor.accept(stream)).await {
                Err(_) => return refused("timeout"),
                Ok(Err(e)) => return refused(handshake_failure_reason(&e)),
                Ok(Ok(t)) => t,
            };
            let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| PeerIdentity::from_der(c));
            let peer = match peer {
                Some(Ok(p)) => Arc::new(p),
                _ => return refused("bad_certificate"),
            };
            tracing::debug!(listener = name, peer_subject = %peer.subject, peer_fingerprint = %peer.fingerprint, "connection");
            let open =
                metrics.as_ref().map(|m| m.connections_open.get_or_create(&ListenerLabels { listener: name }).clone());
            if let Some(g) = &open {
                g.inc();
            }
            // The request future is boxed: hyper keeps room for one in every connection, and an
            // idle connection should not carry the pipeline's whole state machine.
            let svc = service_fn(move |req| {
                let handler = handler.clone();
                let peer = peer.clone();
                Box::pin(async move { handler(peer, req).await })
                    as std::pin::Pin<Box<dyn Future<Output = Result<Response<B>, std::io::Error>> + Send>>
            });
            // ALPN decides the protocol; without ALPN the first bytes do (`auto`).
            let alpn = match tls.get_ref().1.alpn_protocol() {
                Some(crate::tls::ALPN_HTTP11) => Some(false),
                Some(crate::tls::ALPN_H2) => Some(true),
                _ => None,
            };
            let io = TokioIo::new(tls);
            let ended = match alpn {
                Some(false) => {
                    let conn = http1_builder(&spec).serve_connection(io, svc);
                    watcher.watch(conn).await.map_err(BoxError::from)
                }
                Some(true) => {
                    let conn = http2_builder().serve_connection(io, svc);
                    watcher.watch(conn).await.map_err(BoxError::from)
                }
                _ => {
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http1().timer(TokioTimer::new()).header_read_timeout(spec.header_timeout).keep_alive(true);
                    builder
                        .http2()
                        .timer(TokioTimer::new())
                        .max_concurrent_streams(H2_MAX_STREAMS)
                        .keep_alive_interval(Some(H2_KEEP_ALIVE));
                    watcher.watch(builder.serve_connection(io, svc).into_owned()).await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(listener = name, error = %e, "connection ended with an error");
            }
            if let Some(g) = &open {
                g.dec();
            }
        });
    }
    drop(tcp);
    graceful
}

/// HTTP/2 streams at once per connection, and the interval of its keep-alive pings (both the
/// ALPN-chosen and the sniffed HTTP/2 connections).
const H2_MAX_STREAMS: u32 = 256;
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

/// Waits for every watched connection to finish, at most `deadline`; true when all did.
pub async fn drain(graceful: GracefulShutdown, deadline: Duration) -> bool {
    tokio::time::timeout(deadline, graceful.shutdown()).await.is_ok()
}
