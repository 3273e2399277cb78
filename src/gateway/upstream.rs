//! Forwarding: a pool of kept-alive mutual-TLS connections to one upstream (the Ministry's
//! SPOC, or the police callback receiver), with a deadline for each phase: TCP connect, TLS
//! handshake, response headers, response body. Errors say which phase failed so the pipeline
//! can answer `UpstreamUnavailable` (502) or `UpstreamTimeout` (504).
//!
//! The same client serves tools and tests that call the gateway as a police system would.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::body::{BodyError, read_limited};
use crate::config::UpstreamConfig;
use crate::tls::{self, TlsError};

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
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::ResponseTimeout(_) | UpstreamError::BodyTimeout(_))
    }

    /// True when the upstream could not be reached at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, UpstreamError::Connect(_) | UpstreamError::Handshake(_))
    }
}

/// A complete reply from the upstream.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
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
    base: Uri,
    client: Client<TlsConnect, Full<Bytes>>,
    connector: TlsConnect,
    response_timeout: Duration,
    body_timeout: Duration,
    max_response_bytes: usize,
    health: Arc<AtomicU8>,
}

impl Upstream {
    /// Builds the client; no connection is made until the first request.
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, TlsError> {
        let base = cfg.uri().map_err(|_| TlsError::ServerName(cfg.url.clone()))?;
        let host = base.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let name = cfg.server_name.clone().unwrap_or(host);
        let server_name = ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name))?;
        let connector = TlsConnect {
            tls: TlsConnector::from(tls::client_config(cfg)?),
            server_name,
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms),
        };
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_millis(cfg.pool_idle_timeout_ms))
            .pool_max_idle_per_host(cfg.pool_max_idle)
            .build(connector.clone());
        Ok(Self {
            base,
            client,
            connector,
            response_timeout: Duration::from_millis(cfg.response_timeout_ms),
            body_timeout: Duration::from_millis(cfg.body_timeout_ms),
            max_response_bytes: cfg.max_response_bytes,
            health: Arc::new(AtomicU8::new(Health::Unknown as u8)),
        })
    }

    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            x if x == Health::Up as u8 => Health::Up,
            x if x == Health::Down as u8 => Health::Down,
            _ => Health::Unknown,
        }
    }

    fn set_health(&self, h: Health) {
        self.health.store(h as u8, Ordering::Relaxed);
    }

    /// The upstream's URL (scheme, host, port).
    pub fn base(&self) -> &Uri {
        &self.base
    }

    /// POSTs `body` to `path` with exactly `headers` (the caller has filtered them) and reads
    /// the whole reply within the deadlines and the size limit.
    pub async fn post(&self, path: &str, headers: HeaderMap, body: Bytes) -> Result<Reply, UpstreamError> {
        let uri = Uri::builder()
            .scheme("https")
            .authority(self.base.authority().map(|a| a.as_str()).unwrap_or_default())
            .path_and_query(path)
            .build()
            .map_err(|e| UpstreamError::Exchange(e.to_string()))?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        // Connect and handshake have their own deadlines inside the connector.
        let overall = self.response_timeout + self.connector.connect_timeout + self.connector.handshake_timeout;
        let resp = match tokio::time::timeout(overall, self.client.request(req)).await {
            Err(_) => return Err(UpstreamError::ResponseTimeout(self.response_timeout)),
            Ok(Err(e)) => {
                let err = classify(&e);
                if err.is_unreachable() {
                    self.set_health(Health::Down);
                }
                return Err(err);
            }
            Ok(Ok(resp)) => resp,
        };
        self.set_health(Health::Up);
        let status = resp.status();
        let content_type = resp.headers().get(CONTENT_TYPE).cloned();
        let body = read_reply(resp.into_body(), self.max_response_bytes, self.body_timeout).await?;
        Ok(Reply { status, content_type, body })
    }

    /// Opens (and drops) one connection: TCP connect and TLS handshake. Used to learn whether
    /// an upstream that looked down is back.
    pub async fn probe(&self) -> Result<(), UpstreamError> {
        let result = self.connector.connect(&self.base).await.map(drop).map_err(|e| match e {
            ConnectError::Connect(m) => UpstreamError::Connect(m),
            ConnectError::Handshake(m) => UpstreamError::Handshake(m),
        });
        self.set_health(if result.is_ok() { Health::Up } else { Health::Down });
        result
    }
}

async fn read_reply(body: Incoming, limit: usize, deadline: Duration) -> Result<Bytes, UpstreamError> {
    match tokio::time::timeout(deadline, read_limited(body, limit)).await {
        Err(_) => Err(UpstreamError::BodyTimeout(deadline)),
        Ok(Err(BodyError::TooLarge)) => Err(UpstreamError::TooLarge(limit)),
        Ok(Err(BodyError::Read(e))) => Err(UpstreamError::Exchange(e)),
        Ok(Ok(b)) => Ok(b),
    }
}

fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    use std::error::Error as _;
    // Walk the source chain to find our connector's own error, which knows its phase.
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return match c {
                ConnectError::Connect(m) => UpstreamError::Connect(m.clone()),
                ConnectError::Handshake(m) => UpstreamError::Handshake(m.clone()),
            };
        }
        src = s.source();
    }
    if e.is_connect() {
        UpstreamError::Connect(e.to_string())
    } else {
        UpstreamError::Exchange(error_chain(e))
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

/// The connector the pool uses: TCP then TLS, each with its deadline.
#[derive(Clone)]
struct TlsConnect {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    connect_timeout: Duration,
    handshake_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Handshake(String),
}

impl TlsConnect {
    fn connect(&self, uri: &Uri) -> impl Future<Output = Result<TokioIo<UpstreamStream>, ConnectError>> + use<> {
        let this = self.clone();
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(443);
        async move {
            let tcp = match tokio::time::timeout(this.connect_timeout, TcpStream::connect((host.as_str(), port))).await {
                Err(_) => return Err(ConnectError::Connect(format!("no connection within {:?}", this.connect_timeout))),
                Ok(Err(e)) => return Err(ConnectError::Connect(e.to_string())),
                Ok(Ok(s)) => s,
            };
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(this.handshake_timeout, this.tls.connect(this.server_name.clone(), tcp)).await {
                Err(_) => {
                    return Err(ConnectError::Handshake(format!("no handshake within {:?}", this.handshake_timeout)));
                }
                Ok(Err(e)) => return Err(ConnectError::Handshake(e.to_string())),
                Ok(Ok(s)) => s,
            };
            Ok(TokioIo::new(UpstreamStream(tls)))
        }
    }
}

impl tower_service::Service<Uri> for TlsConnect {
    type Response = TokioIo<UpstreamStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.connect(&uri))
    }
}

/// A TLS connection to the upstream, as the pool sees it.
pub struct UpstreamStream(TlsStream<TcpStream>);

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        let c = Connected::new();
        if self.0.get_ref().1.alpn_protocol() == Some(tls::ALPN_H2) { c.negotiated_h2() } else { c }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
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
