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

use crate::gateway::upstream::{Health, Upstream};
use metrics::Metrics;

/// What the admin endpoints report on.
pub struct AdminState {
    metrics: Arc<Metrics>,
    /// The first upstream gates readiness; the others are reported only.
    upstreams: Vec<(&'static str, Upstream)>,
    policy: Arc<crate::policy::PolicyState>,
    audit: Arc<crate::audit::Audit>,
    tpm: Option<Arc<crate::tpm::Tpm>>,
    /// The listeners' revocation lists.
    crls: Vec<Arc<crate::tls::crl::CrlSet>>,
    draining: AtomicBool,
}

impl AdminState {
    pub fn new(
        metrics: Arc<Metrics>,
        upstreams: Vec<(&'static str, Upstream)>,
        policy: Arc<crate::policy::PolicyState>,
        audit: Arc<crate::audit::Audit>,
        tpm: Option<Arc<crate::tpm::Tpm>>,
        crls: Vec<Arc<crate::tls::crl::CrlSet>>,
    ) -> Self {
        Self { metrics, upstreams, policy, audit, tpm, crls, draining: AtomicBool::new(false) }
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
        for (i, (name, u)) in self.upstreams.iter().enumerate() {
            let word = match u.health() {
                Health::Up => "ok",
                Health::Down => "unreachable",
                Health::Unknown => "unchecked",
            };
            if i == 0 && u.health() != Health::Up {
                ready = false;
            }
            body.push_str(&format!("{name}: {word}\n"));
        }
        if self.audit.is_healthy() {
            body.push_str("audit: ok\n");
        } else {
            ready = false;
            body.push_str("audit: failing\n");
        }
        match &self.tpm {
            Some(t) if t.is_healthy() => body.push_str("tpm: ok\n"),
            Some(_) => {
                ready = false;
                body.push_str("tpm: unavailable\n");
            }
            None => body.push_str("tpm: none (file keys)\n"),
        }
        // A refused reload leaves the previous bundle serving: reported, not gating.
        body.push_str(&self.policy.status_line());
        for c in self.crls.iter().filter(|c| !c.is_empty()) {
            let (ok, line) = c.status();
            ready &= ok;
            body.push_str(&line);
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
            (&Method::GET, "/metrics") => {
                (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", self.metrics.encode())
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

/// Serves the admin endpoints until `stop` turns true.
pub async fn serve(tcp: TcpListener, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            a = tcp.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = "admin", error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(state.respond(&req)) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
