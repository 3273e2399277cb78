//! The admin listener (plain HTTP, loopback by default): `/healthz` (the process runs),
//! `/readyz` (every part the gateway needs is usable; otherwise 503 with one line per failing
//! part) and `/metrics` (Prometheus text).

pub mod metrics;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use metrics::Exposition;

/// One part `/readyz` reports on: its lines, and whether it lets the gateway be ready. The
/// gateway builds the list; the admin listener knows nothing of the parts.
pub type ReadyCheck = Box<dyn Fn() -> (bool, String) + Send + Sync>;

/// What the admin endpoints report on.
pub struct AdminState {
    metrics: Exposition,
    checks: Vec<ReadyCheck>,
    draining: AtomicBool,
}

impl AdminState {
    pub fn new(metrics: Exposition, checks: Vec<ReadyCheck>) -> Self {
        Self { metrics, checks, draining: AtomicBool::new(false) }
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// `(ready, body)` for `/readyz`.
    pub fn readiness(&self) -> (bool, String) {
        let mut ready = true;
        let mut body = String::new();
        if self.draining.load(Ordering::Relaxed) {
            ready = false;
            body.push_str("gateway: draining\n");
        }
        for check in &self.checks {
            let (ok, lines) = check();
            ready &= ok;
            body.push_str(&lines);
        }
        (ready, body)
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, ct, body) = match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain; charset=utf-8", "ok\n".to_owned()),
            (&Method::GET, "/readyz") => {
                let (ready, body) = self.readiness();
                let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (status, "text/plain; charset=utf-8", body)
            }
            // OpenMetrics to a scraper that asks for it (Prometheus does); the Prometheus text
            // format 0.0.4 otherwise (curl, promtool check metrics).
            (&Method::GET, "/metrics") => {
                let openmetrics = req
                    .headers()
                    .get(http::header::ACCEPT)
                    .and_then(|a| a.to_str().ok())
                    .is_some_and(|a| a.contains("application/openmetrics-text"));
                if openmetrics {
                    (
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        self.metrics.encode(),
                    )
                } else {
                    (
                        StatusCode::OK,
                        "text/plain; version=0.0.4; charset=utf-8",
                        metrics::prometheus_text(&self.metrics.encode()),
                    )
                }
            }
            _ => (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n".to_owned()),
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        if let Ok(v) = ct.parse() {
            resp.headers_mut().insert(CONTENT_TYPE, v);
        }
        resp
    }
}

/// Accepts connections on `tcp` until `stop` turns true and hands each to `serve`; a failed
/// accept (out of file descriptors and the like) backs off instead of spinning.
pub async fn accept_until_stopped(
    tcp: TcpListener,
    listener: &'static str,
    mut stop: watch::Receiver<bool>,
    serve: impl Fn(tokio::net::TcpStream),
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            a = tcp.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => serve(stream),
            Err(e) => {
                tracing::warn!(listener, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves the admin endpoints until `stop` turns true.
pub async fn serve(tcp: TcpListener, state: Arc<AdminState>, stop: watch::Receiver<bool>) {
    accept_until_stopped(tcp, "admin", stop, |stream| {
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(state.respond(&req)) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    })
    .await;
}
