//! The pair link's listener: mutual TLS with the pair CA, and only the peer's certificate (its
//! name as CN) is served. Every call is a POST under `/pair/v1/`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::IdOp;
use crate::audit::Audit;
use crate::audit::copy::Replica;
use crate::audit::witness::Witness;

/// A log append over this is refused (a segment is shipped in pieces below it).
const MAX_BODY: usize = 16 << 20;
/// Any other call's body: a batch of IDs, a checkpoint.
const MAX_CALL: usize = 256 << 10;
/// IDs in one `/pair/v1/ids` batch, at most.
const MAX_BATCH: usize = 1024;

/// `pair_witness` records a minute, at most: a peer sending malformed checkpoints cannot fill
/// the audit log; the refusals past the bound are counted into the next record.
const WITNESS_RECORDS_PER_MINUTE: u32 = 10;

/// The bound on `pair_witness` records: (window start, records in it, refusals not recorded).
#[derive(Debug)]
pub(super) struct RecordBudget(std::sync::Mutex<(std::time::Instant, u32, u64)>);

impl Default for RecordBudget {
    fn default() -> Self {
        RecordBudget(std::sync::Mutex::new((std::time::Instant::now(), 0, 0)))
    }
}

impl RecordBudget {
    /// Some(refusals not recorded since the last record) when this one may be recorded.
    fn take(&self) -> Option<u64> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if s.0.elapsed() >= Duration::from_secs(60) {
            (s.0, s.1) = (std::time::Instant::now(), 0);
        }
        if s.1 < WITNESS_RECORDS_PER_MINUTE {
            s.1 += 1;
            Some(std::mem::take(&mut s.2))
        } else {
            s.2 += 1;
            None
        }
    }
}

/// What the pair link serves.
pub(super) struct Served {
    pub(super) peer_name: String,
    pub(super) correlation: Arc<super::super::correlation::Correlation>,
    pub(super) witness: Witness,
    pub(super) replica: Arc<Replica>,
    pub(super) audit: Arc<Audit>,
    pub(super) witness_records: RecordBudget,
    pub(super) metrics: Arc<super::PairMetrics>,
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body)
}

fn json(body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    reply(StatusCode::OK, "application/json", serde_json::to_vec(body).unwrap_or_default())
}

impl Served {
    /// Reads the body, then answers off the async workers: the witness and the copy sync
    /// their files before they answer.
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
        }
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let limit = if path == "/pair/v1/log/append" { MAX_BODY } else { MAX_CALL };
        let body = match Limited::new(req.into_body(), limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return text(StatusCode::PAYLOAD_TOO_LARGE, format!("body: {e}\n")),
        };
        tokio::task::spawn_blocking(move || self.answer(&path, &query, &body))
            .await
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "the call stopped\n"))
    }

    fn answer(&self, path: &str, query: &str, body: &Bytes) -> Response<Full<Bytes>> {
        match path {
            "/pair/v1/ids" => self.ids(body),
            "/pair/v1/ids/claim" => match serde_json::from_slice::<String>(body) {
                Ok(id) if !self.correlation.rule().valid_id(&id) => {
                    text(StatusCode::BAD_REQUEST, "not a messageID the schema allows\n")
                }
                Ok(id) => match self.correlation.claim(&id) {
                    Some(p) => json(&super::super::correlation::now_ms().saturating_sub(p.at_ms)),
                    None => text(StatusCode::NOT_FOUND, "unknown messageID\n"),
                },
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            },
            "/pair/v1/ids/snapshot" => {
                let all: Vec<(String, u64)> =
                    self.correlation.snapshot().into_iter().map(|(id, age)| (id, age.as_millis() as u64)).collect();
                json(&all)
            }
            "/pair/v1/witness/add-checkpoint" => self.add_checkpoint(body),
            "/pair/v1/log/sizes" => json(&self.replica.sizes()),
            "/pair/v1/log/append" => {
                let (mut file, mut offset) = (None, None);
                for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
                    match k {
                        "file" => file = Some(v.to_owned()),
                        "offset" => offset = v.parse::<u64>().ok(),
                        _ => {}
                    }
                }
                let (Some(file), Some(offset)) = (file, offset) else {
                    return text(StatusCode::BAD_REQUEST, "file= and offset= are required\n");
                };
                let appended = self.replica.append(&file, offset, body);
                self.metrics.copy_bytes.set(self.replica.usage().0 as i64);
                match appended {
                    Ok(len) => json(&len),
                    Err(e @ crate::audit::copy::CopyError::Full { .. }) => {
                        tracing::warn!(peer = %self.peer_name, error = %e, "the peer's log copy is full (pair.copy_max_bytes)");
                        text(StatusCode::INSUFFICIENT_STORAGE, format!("{e}\n"))
                    }
                    Err(e) => text(StatusCode::CONFLICT, format!("{e}\n")),
                }
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn ids(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let ops: Vec<IdOp> = match serde_json::from_slice(body) {
            Ok(o) => o,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
        // Held to what the schema allows, in bounded batches: a peer cannot make this
        // appliance keep what no callback could name.
        if ops.len() > MAX_BATCH {
            return text(StatusCode::BAD_REQUEST, format!("more than {MAX_BATCH} IDs in one call\n"));
        }
        let rule = self.correlation.rule();
        if ops.iter().any(|op| match op {
            IdOp::Remember { id, .. } | IdOp::Forget { id } => !rule.valid_id(id),
        }) {
            return text(StatusCode::BAD_REQUEST, "not a messageID the schema allows\n");
        }
        for op in ops {
            match op {
                IdOp::Remember { id, age_ms } => self.correlation.remember_aged(&id, Duration::from_millis(age_ms)),
                IdOp::Forget { id } => {
                    self.correlation.claim(&id);
                }
            }
        }
        text(StatusCode::NO_CONTENT, "")
    }

    fn add_checkpoint(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let Ok(request) = std::str::from_utf8(body) else {
            return text(StatusCode::BAD_REQUEST, "not UTF-8\n");
        };
        match self.witness.add_checkpoint(request) {
            Ok(line) => text(StatusCode::OK, line),
            Err(e) => {
                // A size conflict is how a (re)started log learns the witness's size; any
                // other refusal may be evidence of the peer's misbehaviour: on record.
                if !matches!(e, crate::audit::witness::WitnessError::Conflict { .. })
                    && let Some(unrecorded) = self.witness_records.take()
                {
                    tracing::warn!(peer = %self.peer_name, error = %e, "witness refused a checkpoint");
                    let mut r = crate::audit::Record::now("pair_witness");
                    let more = if unrecorded > 0 {
                        format!(
                            " ({unrecorded} more refused since the last record, over the bound of {WITNESS_RECORDS_PER_MINUTE} a minute)"
                        )
                    } else {
                        String::new()
                    };
                    r.detail = Some(format!("refused a checkpoint of {}: {e}{more}", self.peer_name));
                    self.audit.append(&r);
                }
                let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
                let ct = if status == StatusCode::CONFLICT { "text/x.tlog.size" } else { "text/plain; charset=utf-8" };
                reply(status, ct, e.body())
            }
        }
    }
}

/// Serves the pair link until `stop` turns true.
pub(super) async fn serve(
    tcp: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    served: Arc<Served>,
    stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    crate::admin::accept_until_stopped(tcp, "pair", stop, |stream| {
        let (acceptor, served) = (acceptor.clone(), served.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
                return;
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| crate::tls::PeerIdentity::from_der(c.as_ref()));
            let name = match peer {
                Some(Ok(p)) => p.common_name,
                _ => None,
            };
            if name.as_deref() != Some(served.peer_name.as_str()) {
                tracing::warn!(listener = "pair", peer = ?name, "refused: not the peer appliance's certificate");
                return;
            }
            let svc = service_fn(move |req| {
                let served = served.clone();
                async move { Ok::<_, std::convert::Infallible>(served.handle(req).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
        });
    })
    .await;
}
