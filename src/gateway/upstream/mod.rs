//! Forwarding: a pool of kept-alive mutual-TLS connections to one upstream (the Ministry's
//! SPOC, or the police callback receiver), with a deadline for each phase: TCP connect, TLS
//! handshake, response headers, response body. Errors say which phase failed so the pipeline
//! can answer `UpstreamUnavailable` (502) or `UpstreamTimeout` (504).
//!
//! The same client serves tools and tests that call the gateway as a police system would.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::body::{BodyError, read_limited};
use super::breaker::{Admit, Breaker, BreakerState};
mod config;
mod metrics;

use crate::tls::{self, TlsError};
pub use config::UpstreamConfig;
pub use metrics::UpstreamMetrics;

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("no response headers within {0:?}")]
    ResponseTimeout(Duration),
    #[error("response body not complete within {0:?}")]
    BodyTimeout(Duration),
    #[error("the connection failed during the exchange: {0}")]
    Exchange(String),
    #[error("response body over {0} bytes")]
    TooLarge(usize),
    #[error("all {0} connections busy for {1:?}")]
    Busy(usize, Duration),
    #[error("circuit breaker open: the upstream was unreachable {0} times in a row; refused without trying")]
    BreakerOpen(u32),
}

impl UpstreamError {
    /// One word for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Handshake(_) => "handshake",
            UpstreamError::ResponseTimeout(_) => "response_timeout",
            UpstreamError::BodyTimeout(_) => "body_timeout",
            UpstreamError::Exchange(_) => "exchange",
            UpstreamError::TooLarge(_) => "too_large",
            UpstreamError::Busy(..) => "busy",
            UpstreamError::BreakerOpen(_) => "breaker_open",
        }
    }

    /// The upstream did not answer in time (a busy pool: earlier exchanges did not finish).
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::ResponseTimeout(_) | UpstreamError::BodyTimeout(_) | UpstreamError::Busy(..))
    }

    /// True when the upstream could not be reached at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, UpstreamError::Connect(_) | UpstreamError::Handshake(_) | UpstreamError::BreakerOpen(_))
    }
}

/// A complete reply from the upstream.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    /// `Retry-After`, when the upstream sent one (tools and tests read it).
    pub retry_after: Option<HeaderValue>,
    /// `X-Request-Id` (the gateway's incident ID), when present.
    pub request_id: Option<String>,
    pub body: Bytes,
}

/// Reachability as last seen: unknown until the first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Up,
    Down,
}

/// A pooled mutual-TLS client for one upstream.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    base: Uri,
    authority: String,
    connector: TlsConnect,
    response_timeout: Duration,
    body_timeout: Duration,
    max_response_bytes: usize,
    pool: Pool,
    health: AtomicU8,
    breaker: Breaker,
    breaker_failures: u32,
}

/// Idle HTTP/1.1 connections (one request at a time each) and at most one shared HTTP/2
/// connection (many streams at once).
///
/// HTTP/1.1 connections are bounded: an exchange holds one of `slots` while it has a
/// connection, and a connection is opened only under a slot when none is idle, so there are
/// never more than `max_connections`. Requests beyond that wait for a slot: more requests at
/// once than connections cost waiting, not a handshake each (with the key in a TPM, a signature
/// each) and a connection closed after one exchange.
struct Pool {
    idle: Mutex<Vec<(http1::SendRequest<Full<Bytes>>, Instant)>>,
    h2: Mutex<Option<http2::SendRequest<Full<Bytes>>>>,
    slots: tokio::sync::Semaphore,
    max_connections: usize,
    /// How long a request waits for a slot.
    slot_wait: Duration,
    max_idle: usize,
    idle_timeout: Duration,
    /// Connections opened (counted into the gateway's metrics once attached).
    opened: OnceLock<Counter>,
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> hyper::Result<http::Response<Incoming>> {
        match self {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => s.send_request(req).await,
        }
    }
}

impl Upstream {
    /// Builds the client with the configuration's key read from its file (tools, tests).
    ///
    /// # Errors
    /// The key file cannot be read, or as [`Upstream::with_key`].
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, TlsError> {
        Self::with_key(cfg, cfg.key.file_key()?)
    }

    /// Builds the client around `key` (a file key, or one the TPM holds); no connection is made
    /// until the first request, and pooled connections sign nothing more.
    ///
    /// # Errors
    /// The URL, the CA or the client certificate cannot be read or used, or an SPKI pin is
    /// malformed.
    pub fn with_key(cfg: &UpstreamConfig, key: Arc<dyn rustls::sign::SigningKey>) -> Result<Self, TlsError> {
        let base = cfg.uri().map_err(|_| TlsError::ServerName(cfg.url.clone()))?;
        let host = base.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let name = cfg.server_name.clone().unwrap_or_else(|| host.clone());
        let server_name = ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name))?;
        let connector = TlsConnect {
            tls: TlsConnector::from(tls::client_config(&cfg.client_tls(), key)?),
            server_name,
            host,
            port: base.port_u16().unwrap_or(443),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                authority: base.authority().map(|a| a.as_str().to_owned()).unwrap_or_default(),
                base,
                connector,
                response_timeout: Duration::from_millis(cfg.response_timeout_ms),
                body_timeout: Duration::from_millis(cfg.body_timeout_ms),
                max_response_bytes: cfg.max_response_bytes,
                pool: Pool {
                    idle: Mutex::new(Vec::new()),
                    h2: Mutex::new(None),
                    slots: tokio::sync::Semaphore::new(cfg.pool_max_connections.max(1)),
                    max_connections: cfg.pool_max_connections.max(1),
                    slot_wait: Duration::from_millis(cfg.response_timeout_ms),
                    max_idle: cfg.pool_max_idle,
                    idle_timeout: Duration::from_millis(cfg.pool_idle_timeout_ms),
                    opened: OnceLock::new(),
                },
                health: AtomicU8::new(Health::Unknown as u8),
                breaker: Breaker::new(cfg.breaker_failures, Duration::from_millis(cfg.breaker_open_ms)),
                breaker_failures: cfg.breaker_failures,
            }),
        })
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    pub fn health(&self) -> Health {
        match self.inner.health.load(Ordering::Relaxed) {
            x if x == Health::Up as u8 => Health::Up,
            x if x == Health::Down as u8 => Health::Down,
            _ => Health::Unknown,
        }
    }

    fn set_health(&self, h: Health) {
        self.inner.health.store(h as u8, Ordering::Relaxed);
    }

    /// The upstream's URL (scheme, host, port).
    pub fn base(&self) -> &Uri {
        &self.inner.base
    }

    fn request(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &Bytes,
        h2: bool,
    ) -> Result<Request<Full<Bytes>>, UpstreamError> {
        // HTTP/2 wants the full URI (:scheme, :authority); HTTP/1.1 the path and a Host header.
        let uri = if h2 {
            Uri::builder().scheme("https").authority(self.inner.authority.as_str()).path_and_query(path).build()
        } else {
            Uri::builder().path_and_query(path).build()
        }
        .map_err(|e| UpstreamError::Exchange(e.to_string()))?;
        let mut req = Request::new(Full::new(body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers.clone();
        if !h2 && let Ok(v) = HeaderValue::from_str(&self.inner.authority) {
            req.headers_mut().insert(HOST, v);
        }
        Ok(req)
    }

    /// POSTs `body` to `path` with exactly `headers` (the caller has filtered them) and reads
    /// the whole reply within the deadlines and the size limit; refused at once while the
    /// circuit breaker is open.
    ///
    /// # Errors
    /// Which phase failed ([`UpstreamError`]): the breaker open or every pooled connection busy,
    /// connect, handshake, response headers or body past their deadline, a body over its limit.
    pub async fn post(&self, path: &str, headers: HeaderMap, body: Bytes) -> Result<Reply, UpstreamError> {
        let breaker = &self.inner.breaker;
        let admit = breaker.admit();
        if admit == Admit::Refuse {
            return Err(UpstreamError::BreakerOpen(self.inner.breaker_failures));
        }
        // A trial whose request is dropped (its client went away) lets the next one try.
        let trial = Trial { breaker, armed: admit == Admit::Trial };
        let result = self.exchange(path, headers, body).await;
        match &result {
            Err(e) if e.is_unreachable() => breaker.unreachable(),
            Err(UpstreamError::Busy(..)) => {}
            _ => breaker.reached(),
        }
        drop(trial);
        result
    }

    async fn exchange(&self, path: &str, headers: HeaderMap, body: Bytes) -> Result<Reply, UpstreamError> {
        let pool = &self.inner.pool;
        // A shared HTTP/2 connection carries any number of exchanges; an HTTP/1.1 exchange
        // first takes a slot (held until it is done).
        let (_slot, checked_out) = match self.checkout_h2() {
            Some(s) => (None, Some(s)),
            None => {
                let slot = match tokio::time::timeout(pool.slot_wait, pool.slots.acquire()).await {
                    Ok(Ok(slot)) => slot,
                    _ => return Err(UpstreamError::Busy(pool.max_connections, pool.slot_wait)),
                };
                (Some(slot), self.checkout())
            }
        };
        let (mut sender, reused) = match checked_out {
            Some(s) => (s, true),
            None => (self.open().await?, false),
        };
        let h2 = matches!(sender, Sender::H2(_));
        let deadline = self.inner.response_timeout;
        let mut result = tokio::time::timeout(deadline, sender.send(self.request(path, &headers, &body, h2)?)).await;
        if reused && matches!(&result, Ok(Err(e)) if e.is_canceled() || e.is_closed()) {
            // The pooled connection had been closed by the upstream before our request went
            // out: nothing was processed, so one retry on a new connection is safe.
            sender = self.open().await?;
            let h2 = matches!(sender, Sender::H2(_));
            result = tokio::time::timeout(deadline, sender.send(self.request(path, &headers, &body, h2)?)).await;
        }
        let resp = match result {
            Err(_) => return Err(UpstreamError::ResponseTimeout(deadline)),
            Ok(Err(e)) => return Err(UpstreamError::Exchange(error_chain(&e))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let content_type = resp.headers().get(CONTENT_TYPE).cloned();
        let retry_after = resp.headers().get(http::header::RETRY_AFTER).cloned();
        let request_id = resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = read_reply(resp.into_body(), self.inner.max_response_bytes, self.inner.body_timeout).await?;
        self.checkin(sender);
        Ok(Reply { status, content_type, retry_after, request_id, body })
    }

    /// The shared HTTP/2 connection, if there is one that is open.
    fn checkout_h2(&self) -> Option<Sender> {
        let h2 = self.inner.pool.h2.lock().ok()?;
        h2.as_ref().filter(|s| !s.is_closed()).map(|s| Sender::H2(s.clone()))
    }

    /// An idle connection from the pool, if one is usable (the caller holds a slot).
    fn checkout(&self) -> Option<Sender> {
        let pool = &self.inner.pool;
        if let Some(s) = self.checkout_h2() {
            return Some(s);
        }
        let mut idle = pool.idle.lock().ok()?;
        while let Some((s, since)) = idle.pop() {
            if s.is_ready() && !s.is_closed() && since.elapsed() < pool.idle_timeout {
                return Some(Sender::H1(s));
            }
        }
        None
    }

    /// Returns a connection whose exchange completed to the pool.
    fn checkin(&self, sender: Sender) {
        let pool = &self.inner.pool;
        match sender {
            Sender::H1(s) => {
                // One clock read for the whole pool (one per idle connection showed in profiles).
                let now = Instant::now();
                if let Ok(mut idle) = pool.idle.lock() {
                    idle.retain(|(s, since)| !s.is_closed() && now.duration_since(*since) < pool.idle_timeout);
                    if idle.len() < pool.max_idle {
                        idle.push((s, now));
                    }
                }
            }
            Sender::H2(_) => {}
        }
    }

    /// Opens a new connection: TCP, TLS, then HTTP/1.1 or HTTP/2 as ALPN chose.
    async fn open(&self) -> Result<Sender, UpstreamError> {
        let stream = match self.inner.connector.connect().await {
            Ok(s) => {
                self.set_health(Health::Up);
                s
            }
            Err(e) => {
                self.set_health(Health::Down);
                return Err(e);
            }
        };
        if let Some(c) = self.inner.pool.opened.get() {
            c.inc();
        }
        let h2 = stream.get_ref().1.alpn_protocol() == Some(tls::ALPN_H2);
        let io = TokioIo::new(stream);
        if h2 {
            let (mut sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .handshake(io)
                .await
                .map_err(|e| UpstreamError::Handshake(e.to_string()))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            sender.ready().await.map_err(|e| UpstreamError::Exchange(e.to_string()))?;
            if let Ok(mut slot) = self.inner.pool.h2.lock() {
                *slot = Some(sender.clone());
            }
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) =
                http1::Builder::new().handshake(io).await.map_err(|e| UpstreamError::Handshake(e.to_string()))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
                }
            });
            let mut sender = Sender::H1(sender);
            sender.ready().await.map_err(|e| UpstreamError::Exchange(e.to_string()))?;
            Ok(sender)
        }
    }

    /// Opens (and drops) one connection: TCP connect and TLS handshake. Used to learn whether
    /// an upstream that looked down is back.
    ///
    /// # Errors
    /// The connect or the handshake failed or took too long.
    pub async fn probe(&self) -> Result<(), UpstreamError> {
        let result = self.inner.connector.connect().await.map(drop);
        self.set_health(if result.is_ok() { Health::Up } else { Health::Down });
        if result.is_ok() {
            self.inner.breaker.reached();
        }
        result
    }
}

/// The half-open trial a request carries: dropped unresolved, it lets the next request try.
struct Trial<'a> {
    breaker: &'a Breaker,
    armed: bool,
}

impl Drop for Trial<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.trial_abandoned();
        }
    }
}

async fn read_reply(mut body: Incoming, limit: usize, deadline: Duration) -> Result<Bytes, UpstreamError> {
    match tokio::time::timeout(deadline, read_limited(&mut body, limit)).await {
        Err(_) => Err(UpstreamError::BodyTimeout(deadline)),
        Ok(Err(BodyError::TooLarge)) => Err(UpstreamError::TooLarge(limit)),
        Ok(Err(BodyError::Read(e))) => Err(UpstreamError::Exchange(e)),
        Ok(Ok(b)) => Ok(b),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// TCP then TLS, each with its deadline.
#[derive(Clone)]
struct TlsConnect {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    host: String,
    port: u16,
    connect_timeout: Duration,
    handshake_timeout: Duration,
}

impl TlsConnect {
    async fn connect(&self) -> Result<TlsStream<TcpStream>, UpstreamError> {
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect((self.host.as_str(), self.port)))
            .await
        {
            Err(_) => return Err(UpstreamError::Connect(format!("no connection within {:?}", self.connect_timeout))),
            Ok(Err(e)) => return Err(UpstreamError::Connect(e.to_string())),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        match tokio::time::timeout(self.handshake_timeout, self.tls.connect(self.server_name.clone(), tcp)).await {
            Err(_) => Err(UpstreamError::Handshake(format!("no handshake within {:?}", self.handshake_timeout))),
            Ok(Err(e)) => Err(UpstreamError::Handshake(e.to_string())),
            Ok(Ok(s)) => Ok(s),
        }
    }
}

/// Builds the header map for a SOAP POST: content type, SOAPAction when given, request ID.
pub fn soap_headers(content_type: &str, soap_action: Option<&str>, request_id: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(CONTENT_TYPE, v);
    }
    if let Some(Ok(v)) = soap_action.map(HeaderValue::from_str) {
        h.insert(HeaderName::from_static("soapaction"), v);
    }
    if let Some(Ok(v)) = request_id.map(HeaderValue::from_str) {
        h.insert(HeaderName::from_static("x-request-id"), v);
    }
    h
}
