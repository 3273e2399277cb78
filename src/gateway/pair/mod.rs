//! The pair link: two appliances behind one balancer share what must be shared over mutual TLS,
//! and nothing else (docs/pair.md).
//!
//! - **Callback correlation.** A messageID the Ministry will answer is replicated to the peer
//!   before the police system gets its reply ([`PairLink::remember`], bounded by `timeout_ms`),
//!   so that the callback is accepted on either appliance. A callback claims its messageID on both
//!   (a replay is refused on both); one that finds no local entry asks the peer. Operations the
//!   peer could not take wait in a bounded queue, and a (re)started appliance first takes the
//!   peer's whole table.
//! - **Witness.** Each appliance cosigns the peer's audit checkpoints (c2sp.org/tlog-witness),
//!   so neither can rewrite or cut its history alone.
//! - **Recovery copy.** Each ships its audit segments and checkpoints to the peer (and to a
//!   backup directory) before it asks for the cosignature: the peer holds the log up to the
//!   newest checkpoint it witnessed, which `spocgw audit restore` rebuilds from.
//!
//! Rate limits stay per appliance: no counter crosses the link.

mod server;
mod ship;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::UpstreamConfig;
use super::upstream::{Reply, Upstream, UpstreamError};
use crate::audit::Audit;
pub use crate::audit::copy::Replica;
use crate::audit::note::{Vkey, WitnessKey};
use crate::audit::witness::{TrustedLog, Witness};
use crate::config::{ConfigError, resolve_file};

/// `[pair]` in gateway.toml: this appliance's side of the pair link.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairConfig {
    /// This appliance's name: the CN and DNS name of its pair-link certificate; its witness
    /// signs as `NAME/witness`.
    pub name: String,
    /// Where the peer connects (mutual TLS).
    pub listen: SocketAddr,
    /// The peer's pair link, `https://host:port`.
    pub peer_url: String,
    /// The peer's name: its pair-link certificate must carry it (as CN and DNS name).
    pub peer_name: String,
    /// This appliance's pair-link certificate chain (server and client authentication).
    pub cert: PathBuf,
    /// Its key: a PEM file, or `tpm:NAME`.
    pub key: crate::keys::KeyRef,
    /// The CA both pair-link certificates chain to (and nothing else).
    pub ca: PathBuf,
    /// The witness's Ed25519 seed: `tpm:NAME` (sealed, 32 bytes), or a file of 32 bytes (hex).
    pub witness_key: crate::keys::KeyRef,
    /// The peer's audit log: its origin and checkpoint public key (PEM), which this witness trusts.
    pub peer_origin: String,
    pub peer_checkpoint_key: PathBuf,
    /// The peer's witness vkey (`NAME+KEYID+BASE64`): its cosignatures on this log are checked
    /// with it.
    pub peer_witness: PathBuf,
    /// This appliance's copy of the peer's log (`DIR/log`) and its witness state (`DIR/witness`).
    pub dir: PathBuf,
    /// Also copy this appliance's own closed log here (another disk, a mounted backup).
    #[serde(default)]
    pub backup_dir: Option<PathBuf>,
    /// How long a request waits for the peer to take a messageID before it is answered anyway.
    #[serde(
        deserialize_with = "crate::config::units::millis_within::<_, 1, { crate::config::units::DAY_MS }>",
        default = "default_timeout_ms"
    )]
    pub timeout_ms: u64,
    /// How often the log is shipped and its newest checkpoint submitted to the peer's witness.
    #[serde(
        deserialize_with = "crate::config::units::millis_within::<_, 100, { crate::config::units::DAY_MS }>",
        default = "default_interval_ms"
    )]
    pub sync_interval_ms: u64,
    /// Revocation lists of the pair CA (PEM), reloaded when they change like the listeners':
    /// a replaced or stolen appliance's certificate is refused.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// The most the peer's log copy (`DIR/log`) may hold: past it the copy takes nothing more
    /// (507), so that a compromised peer cannot fill the partition the audit log needs.
    #[serde(deserialize_with = "crate::config::units::bytes", default = "default_copy_max_bytes")]
    pub copy_max_bytes: u64,
}

fn default_copy_max_bytes() -> u64 {
    4 << 30
}

fn default_timeout_ms() -> u64 {
    1000
}
fn default_interval_ms() -> u64 {
    1000
}

impl PairConfig {
    /// # Errors
    /// A [`ConfigError`] naming the `pair.` key of a file that does not exist, a bad URL, or a
    /// peer witness key that is not a vkey.
    pub fn resolve(&mut self, base: &Path, file: &Path) -> Result<(), ConfigError> {
        resolve_file(&mut self.cert, base, file, "pair.cert")?;
        resolve_file(&mut self.ca, base, file, "pair.ca")?;
        resolve_file(&mut self.peer_checkpoint_key, base, file, "pair.peer_checkpoint_key")?;
        resolve_file(&mut self.peer_witness, base, file, "pair.peer_witness")?;
        for (i, c) in self.crls.iter_mut().enumerate() {
            resolve_file(c, base, file, &format!("pair.crls[{i}]"))?;
        }
        self.key.resolve(base, file, "pair.key")?;
        self.witness_key.resolve(base, file, "pair.witness_key")?;
        if self.dir.is_relative() {
            self.dir = base.join(&self.dir);
        }
        if let Some(b) = self.backup_dir.as_mut().filter(|b| b.is_relative()) {
            *b = base.join(&*b);
        }
        self.upstream().uri().map_err(|p| ConfigError::new(file, "pair.peer_url", p))?;
        self.peer_vkey().map_err(|e| ConfigError::new(file, "pair.peer_witness", e))?;
        if self.name == self.peer_name {
            return Err(ConfigError::new(file, "pair.peer_name", "must differ from pair.name"));
        }
        Ok(())
    }

    /// The peer's pair link as an upstream: its certificate must chain to `ca` and name the peer.
    fn upstream(&self) -> UpstreamConfig {
        let mut u = UpstreamConfig::client(self.peer_url.clone(), &self.ca, &self.cert, Path::new(""));
        u.key = self.key.clone();
        u.server_name = Some(self.peer_name.clone());
        u.response_timeout_ms = self.timeout_ms.max(1000) * 5;
        u.body_timeout_ms = u.response_timeout_ms;
        u.max_response_bytes = 64 << 20;
        u.breaker_open_ms = 1000;
        u
    }

    /// # Errors
    /// The file cannot be read or is not a vkey.
    pub fn peer_vkey(&self) -> Result<Vkey, String> {
        let text =
            std::fs::read_to_string(&self.peer_witness).map_err(|e| format!("{}: {e}", self.peer_witness.display()))?;
        Vkey::parse(&text).map_err(|e| e.to_string())
    }

    pub fn witness_name(name: &str) -> String {
        format!("{name}/witness")
    }
}

/// The pair link's metrics.
#[derive(Default)]
pub struct PairMetrics {
    up: Gauge,
    calls: Family<[(&'static str, &'static str); 2], Counter>,
    cosigned: Gauge,
    pending: Gauge,
    partition_claims: Counter,
    pub(crate) copy_bytes: Gauge,
    pub(crate) copy_quota: Gauge,
}

impl PairMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "pair_link_up",
            "Whether the peer appliance answered the last call (1) or not (0)",
            self.up.clone(),
        );
        registry.register(
            "pair_calls",
            "Calls over the pair link by kind (remember, forget, flush, claim, snapshot, ship, witness) and result",
            self.calls.clone(),
        );
        registry.register(
            "pair_cosigned_size",
            "Tree size of this log's newest checkpoint the peer's witness cosigned",
            self.cosigned.clone(),
        );
        registry.register(
            "pair_pending",
            "Correlation operations waiting for the peer to be reachable again",
            self.pending.clone(),
        );
        registry.register("pair_copy_bytes", "Bytes of the peer's log copy on this appliance", self.copy_bytes.clone());
        registry.register(
            "pair_copy_quota_bytes",
            "The most the peer's log copy may hold (pair.copy_max_bytes)",
            self.copy_quota.clone(),
        );
        registry.register(
            "pair_partition_claims",
            "Callbacks accepted for a messageID the peer forwarded while the peer did not answer (the peer may accept a replay of it too)",
            self.partition_claims.clone(),
        );
    }

    fn call(&self, kind: &'static str, ok: bool) {
        self.calls.get_or_create(&[("call", kind), ("result", if ok { "ok" } else { "failed" })]).inc();
        self.up.set(i64::from(ok));
    }
}

/// A correlation operation the peer has not taken yet.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum IdOp {
    /// Remembered `age_ms` ago.
    Remember {
        id: String,
        age_ms: u64,
    },
    Forget {
        id: String,
    },
}

const PENDING_MAX: usize = 65_536;

/// The peer did not answer a call in time (or the link is down).
#[derive(Debug, Clone, Copy)]
pub struct Unreachable;

/// This appliance's end of the pair link, shared by the pipeline and the background tasks.
pub struct PairLink {
    client: Upstream,
    correlation: Arc<super::correlation::Correlation>,
    timeout: Duration,
    pending: Mutex<VecDeque<(IdOp, std::time::Instant)>>,
    pub(crate) metrics: Arc<PairMetrics>,
    synced: AtomicBool,
    cosigned: AtomicU64,
    status: Mutex<String>,
    /// The pair CA's revocation lists, which the gateway's watcher reloads with the listeners'.
    pub(crate) crls: Arc<crate::tls::crl::CrlSet>,
}

impl PairLink {
    async fn call(&self, kind: &'static str, path: &str, body: Vec<u8>) -> Result<Reply, UpstreamError> {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/octet-stream"));
        let r = self.client.post(path, headers, Bytes::from(body)).await;
        self.metrics
            .call(kind, r.as_ref().is_ok_and(|r| r.status.is_success() || r.status == http::StatusCode::NOT_FOUND));
        r
    }

    async fn send_ops(&self, kind: &'static str, ops: &[IdOp]) -> bool {
        let body = serde_json::to_vec(ops).unwrap_or_default();
        let sent = tokio::time::timeout(self.timeout, self.call(kind, "/pair/v1/ids", body)).await;
        matches!(sent, Ok(Ok(r)) if r.status.is_success())
    }

    fn queue(&self, op: IdOp) {
        if let Ok(mut q) = self.pending.lock() {
            if q.len() >= PENDING_MAX {
                q.pop_front();
            }
            q.push_back((op, std::time::Instant::now()));
            self.metrics.pending.set(q.len() as i64);
        }
    }

    /// Replicates a forwarded messageID to the peer, waiting at most `timeout_ms`; if the peer
    /// does not take it in time it is queued (and the reply goes out: the peer may be down).
    pub async fn remember(&self, id: &str) {
        let op = IdOp::Remember { id: id.to_owned(), age_ms: 0 };
        if !self.send_ops("remember", std::slice::from_ref(&op)).await {
            tracing::warn!(peer = "pair", "the peer did not take a callback correlation in time; queued");
            self.queue(op);
        }
    }

    /// Tells the peer a callback consumed `id` (in the background; queued if it cannot be told).
    pub fn forget(self: &Arc<Self>, id: String) {
        let me = self.clone();
        tokio::spawn(async move {
            let op = IdOp::Forget { id };
            if !me.send_ops("forget", std::slice::from_ref(&op)).await {
                me.queue(op);
            }
        });
    }

    /// Gives a messageID back to the peer after a callback that claimed it was not delivered
    /// (in the background; queued if the peer cannot take it).
    pub fn give_back(self: &Arc<Self>, id: String, age: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            let op = IdOp::Remember { id, age_ms: age.as_millis() as u64 };
            if !me.send_ops("remember", std::slice::from_ref(&op)).await {
                me.queue(op);
            }
        });
    }

    /// Asks the peer to give up `id` for a callback that arrived here: Ok(Some(its age)) when
    /// the peer had it (and no longer has), Ok(None) when the peer does not know it (never had
    /// it, or a callback consumed it there), Err when the peer does not answer in time.
    ///
    /// # Errors
    /// [`Unreachable`]: the link is down or slow; nothing can be said of the peer's table.
    pub async fn claim(&self, id: &str) -> Result<Option<Duration>, Unreachable> {
        let body = serde_json::to_vec(id).map_err(|_| Unreachable)?;
        let r = tokio::time::timeout(self.timeout, self.call("claim", "/pair/v1/ids/claim", body))
            .await
            .map_err(|_| Unreachable)?
            .map_err(|_| Unreachable)?;
        match r.status {
            http::StatusCode::OK => Ok(serde_json::from_slice::<u64>(&r.body).ok().map(Duration::from_millis)),
            http::StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Unreachable),
        }
    }

    /// A callback accepted during a partition on a messageID the peer forwarded (availability
    /// first: the peer may accept a replay of it too).
    pub fn partition_claim(&self) {
        self.metrics.partition_claims.inc();
    }

    /// Sends what is queued, oldest first, with each entry's age at sending.
    async fn flush(&self) {
        let batch: Vec<IdOp> = match self.pending.lock() {
            Ok(q) => q
                .iter()
                .map(|(op, at)| match op {
                    IdOp::Remember { id, age_ms } => {
                        IdOp::Remember { id: id.clone(), age_ms: age_ms + at.elapsed().as_millis() as u64 }
                    }
                    f => f.clone(),
                })
                .collect(),
            Err(_) => return,
        };
        if batch.is_empty() || !self.send_ops("flush", &batch).await {
            return;
        }
        if let Ok(mut q) = self.pending.lock() {
            let n = batch.len().min(q.len());
            q.drain(..n);
            self.metrics.pending.set(q.len() as i64);
        }
    }

    /// Takes the peer's whole table once (a started appliance catches up).
    async fn catch_up(&self) {
        if self.synced.load(Ordering::Relaxed) {
            return;
        }
        let Ok(r) = self.call("snapshot", "/pair/v1/ids/snapshot", Vec::new()).await else { return };
        let Ok(entries) = serde_json::from_slice::<Vec<(String, u64)>>(&r.body) else { return };
        for (id, age) in &entries {
            self.correlation.remember_aged(id, Duration::from_millis(*age));
        }
        tracing::info!(peer = "pair", entries = entries.len(), "took the peer's callback correlations");
        self.synced.store(true, Ordering::Relaxed);
    }

    /// The `/readyz` line: informative only, a lone appliance serves (that is the point of a pair).
    pub fn readiness(&self) -> (bool, String) {
        let status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        (true, format!("pair: {status}\n"))
    }
}

/// What [`start`] needs from the gateway.
pub struct PairStart<'a> {
    pub cfg: &'a PairConfig,
    pub audit_dir: &'a Path,
    /// This log's checkpoint public key (P-256 point): the key ID in its notes.
    pub checkpoint_point: Vec<u8>,
    pub file: &'a Path,
    pub tls_key: Arc<dyn rustls::sign::SigningKey>,
    pub witness_seed: zeroize::Zeroizing<Vec<u8>>,
    pub correlation: Arc<super::correlation::Correlation>,
    pub audit: Arc<Audit>,
    pub metrics: Arc<PairMetrics>,
}

/// Binds the pair link and starts its server and its sync task.
///
/// # Errors
/// A [`ConfigError`] naming the `pair.` key behind the first part that cannot be set up.
pub async fn start(
    p: PairStart<'_>,
    stopped: &watch::Receiver<bool>,
) -> Result<(Arc<PairLink>, Vec<JoinHandle<()>>), ConfigError> {
    let cfg = p.cfg;
    let err = |key: &str, e: String| ConfigError::new(p.file, format!("pair.{key}"), e);
    let client = Upstream::with_key(&cfg.upstream(), p.tls_key.clone()).map_err(|e| err("peer_url", e.to_string()))?;
    let key = WitnessKey::from_seed(&PairConfig::witness_name(&cfg.name), &p.witness_seed)
        .map_err(|e| err("witness_key", e.to_string()))?;
    let point =
        crate::audit::verify::public_point(&cfg.peer_checkpoint_key).map_err(|e| err("peer_checkpoint_key", e))?;
    let replica = Arc::new(
        Replica::open(&cfg.dir.join("log"), point.clone()).map_err(|e| err("dir", e))?.with_quota(cfg.copy_max_bytes),
    );
    let (held, quota) = replica.usage();
    p.metrics.copy_bytes.set(held as i64);
    p.metrics.copy_quota.set(quota.min(i64::MAX as u64) as i64);
    let trusted = TrustedLog { origin: cfg.peer_origin.clone(), point, copy: replica.clone() };
    let witness = Witness::open(&cfg.dir.join("witness"), key, vec![trusted]).map_err(|e| err("dir", e))?;
    tracing::info!(vkey = %witness.key().vkey().text(), "pair witness key");
    let (tls, crls) = crate::tls::server_config_with_crls(
        "pair",
        &crate::tls::ServerTlsConfig {
            cert: cfg.cert.clone(),
            client_ca: cfg.ca.clone(),
            crls: cfg.crls.clone(),
            crl_expired: crate::tls::crl::ExpiredCrl::Refuse,
            tls12: false,
        },
        p.tls_key,
    )
    .map_err(|e| err("cert", e.to_string()))?;
    let tcp = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| err("listen", format!("cannot listen on {}: {e}", cfg.listen)))?;
    let link = Arc::new(PairLink {
        client,
        correlation: p.correlation.clone(),
        timeout: Duration::from_millis(cfg.timeout_ms),
        pending: Mutex::new(VecDeque::new()),
        metrics: p.metrics,
        synced: AtomicBool::new(false),
        cosigned: AtomicU64::new(0),
        status: Mutex::new("starting".into()),
        crls,
    });
    let served = server::Served {
        peer_name: cfg.peer_name.clone(),
        correlation: p.correlation,
        witness,
        replica,
        audit: p.audit,
        witness_records: server::RecordBudget::default(),
        metrics: link.metrics.clone(),
    };
    tracing::info!(listener = "pair", addr = %cfg.listen, "listening");
    let mut tasks = vec![tokio::spawn(server::serve(tcp, tls, Arc::new(served), stopped.clone()))];
    let shipper =
        ship::Shipper::new(p.audit_dir, p.checkpoint_point, cfg, link.clone()).map_err(|e| err("peer_witness", e))?;
    tasks.push(tokio::spawn(shipper.run(Duration::from_millis(cfg.sync_interval_ms), stopped.clone())));
    Ok((link, tasks))
}
