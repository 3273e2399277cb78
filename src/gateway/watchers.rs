//! What runs beside the listeners: the policy bundle and the revocation lists reloaded when
//! their files change, the upstreams and the TPM watched while they are down, and the checks
//! `/readyz` reports (each with the metrics it keeps).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::pipeline::Pipeline;
use super::schemas::Schemas;
use super::upstream::{Health, Upstream, UpstreamMetrics};
use crate::admin;
use crate::audit::Audit;
use crate::policy::PolicyState;
use crate::tls::crl::CrlSet;
use crate::tpm::Tpm;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BundleLabels {
    digest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerResult {
    listener: &'static str,
    result: &'static str,
}

/// Reloads of the policy bundle and the revocation lists, and the bundle in force.
#[derive(Default)]
pub struct ReloadMetrics {
    bundle: Family<BundleLabels, Gauge>,
    policies: Family<ResultLabels, Counter>,
    crls: Family<ListenerResult, Counter>,
    schemas: Family<ResultLabels, Counter>,
}

impl ReloadMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("policy_bundle", "1 for the active policy bundle's digest", self.bundle.clone());
        registry.register("policy_reloads", "Policy bundle reloads by result", self.policies.clone());
        registry.register("crl_reloads", "CRL reloads by listener and result", self.crls.clone());
        registry.register("schema_reloads", "Schema directory reloads by result", self.schemas.clone());
        // Every series from the start, at 0: an alert on a rate needs the series before the
        // first failure.
        for result in ["ok", "refused"] {
            drop(self.policies.get_or_create(&ResultLabels { result }));
            drop(self.schemas.get_or_create(&ResultLabels { result }));
        }
    }

    /// The series of a listener's revocation lists, at 0 until the first reload.
    pub fn expect_crls(&self, listener: &'static str) {
        for result in ["ok", "refused"] {
            drop(self.crls.get_or_create(&ListenerResult { listener, result }));
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TpmOp {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TpmOpResult {
    op: &'static str,
    result: &'static str,
}

/// The TPM's operations by kind and result, and the time of those that succeeded.
pub struct TpmMetrics {
    operations: Family<TpmOpResult, Counter>,
    duration: Family<TpmOp, Histogram, fn() -> Histogram>,
}

impl Default for TpmMetrics {
    fn default() -> Self {
        Self {
            operations: Family::default(),
            duration: Family::new_with_constructor(admin::metrics::latency_histogram as fn() -> Histogram),
        }
    }
}

impl TpmMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("tpm_operations", "TPM operations by kind and result", self.operations.clone());
        registry.register("tpm_operation_duration_seconds", "Time of successful TPM operations", self.duration.clone());
    }

    /// The operations' series at 0, with a TPM (an alert on TPM failures needs them).
    pub fn zero_series(&self) {
        for op in ["sign", "unseal", "nv_increment", "probe"] {
            for result in ["ok", "failed"] {
                drop(self.operations.get_or_create(&TpmOpResult { op, result }));
            }
        }
    }
}

impl crate::tpm::Observer for TpmMetrics {
    fn operation(&self, op: &'static str, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "failed" };
        self.operations.get_or_create(&TpmOpResult { op, result }).inc();
        if ok {
            self.duration.get_or_create(&TpmOp { op }).observe(took.as_secs_f64());
        }
    }
}

/// How often the listeners' CRL files and the schema directory are checked for changes.
const FILES_CHECK: Duration = Duration::from_secs(2);

/// What a file watcher reloads, as its record and log lines name it.
struct Watched {
    /// The audit record's event (`crl_reload`, `schema_reload`).
    event: &'static str,
    /// The listener whose files these are, if they are one listener's.
    listener: Option<&'static str>,
    /// What comes into force, or stays: `revocation lists`, `schemas`.
    what: &'static str,
}

/// Runs `reload` every [`FILES_CHECK`] until `stop`: each reload that ran (the files changed)
/// goes on record with its outcome (and why a new set was refused: the previous one stays),
/// in the log, and to `count` (`ok` or `refused`).
async fn watch_files<E: std::fmt::Display>(
    w: Watched,
    reload: impl Fn() -> Option<Result<(), E>>,
    count: impl Fn(&'static str),
    audit: Arc<Audit>,
    mut stop: watch::Receiver<bool>,
) {
    let (listener, what) = (w.listener.unwrap_or(""), w.what);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(FILES_CHECK) => {}
        }
        let Some(result) = reload() else { continue };
        let mut r = crate::audit::Record::now(w.event);
        r.listener = w.listener.map(str::to_owned);
        let outcome = match &result {
            Ok(()) => {
                tracing::info!(listener, "new {what} in force");
                r.detail = Some(format!("new {what} in force"));
                "ok"
            }
            Err(e) => {
                tracing::error!(listener, error = %e, "reload of the {what} refused; the previous ones stay in force");
                r.detail = Some(format!("refused, previous {what} in force: {e}"));
                "refused"
            }
        };
        r.code = Some(outcome.to_owned());
        audit.append(&r);
        count(outcome);
    }
}

/// Reloads a listener's CRLs whenever their files change: a set that loads is in force from
/// the next handshake on; one that does not leaves the previous set and says why (log, audit
/// record, metric, `/readyz`), and is not tried again until the files change again.
pub(super) async fn watch_crls(
    crls: Arc<CrlSet>,
    metrics: Arc<ReloadMetrics>,
    audit: Arc<Audit>,
    stop: watch::Receiver<bool>,
) {
    let listener = crls.listener();
    let w = Watched { event: "crl_reload", listener: Some(listener), what: "revocation lists" };
    let count = |result| {
        metrics.crls.get_or_create(&ListenerResult { listener, result }).inc();
    };
    watch_files(w, || crls.reload_if_changed(), count, audit, stop).await;
}

/// Compiles the schema directory again whenever its files change: a set that compiles and
/// still declares every header entry the routes let through is in force for the next message;
/// one that does not leaves the previous set and says why (log, audit record, metric,
/// `/readyz`), and is not tried again until the files change again.
pub(super) async fn watch_schemas(
    pipeline: Arc<Pipeline>,
    metrics: Arc<ReloadMetrics>,
    audit: Arc<Audit>,
    stop: watch::Receiver<bool>,
) {
    let w = Watched { event: "schema_reload", listener: None, what: "schemas" };
    let count = |result| {
        metrics.schemas.get_or_create(&ResultLabels { result }).inc();
    };
    watch_files(w, || pipeline.schemas().reload_if_changed(pipeline.routes()), count, audit, stop).await;
}

/// Reloads the policy bundle on SIGHUP and whenever its files change (checked every
/// `reload_interval_ms`); a failed reload keeps the old bundle and is not retried until the
/// files change again.
pub(super) async fn watch_policy(
    policy: Arc<PolicyState>,
    metrics: Arc<ReloadMetrics>,
    audit: Arc<Audit>,
    mut stop: watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut published = policy.current().digest.clone();
    metrics.bundle.get_or_create(&BundleLabels { digest: published.clone() }).set(1);
    loop {
        let hup_fired = async {
            match hup.as_mut() {
                Some(h) => h.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        let forced = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(policy.reload_interval()) => false,
            fired = hup_fired => fired,
        };
        policy.prune_rates();
        let on_disk = policy.disk_digest();
        let changed = on_disk
            .as_ref()
            .is_some_and(|d| *d != policy.current().digest && Some(d) != policy.failed_digest().as_ref());
        if !(forced || changed) {
            continue;
        }
        let result = policy.reload();
        let mut r = crate::audit::Record::now("policy_reload");
        r.bundle = Some(policy.current().digest.clone());
        r.code = Some(if result.is_ok() { "ok" } else { "refused" }.to_owned());
        r.detail = Some(match &result {
            Ok(_) => format!("bundle {} active", policy.current().origin),
            Err(e) => format!("refused, previous bundle stays active: {e}"),
        });
        audit.append(&r);
        match result {
            Ok(digest) => {
                metrics.policies.get_or_create(&ResultLabels { result: "ok" }).inc();
                if digest != published {
                    metrics.bundle.get_or_create(&BundleLabels { digest: published.clone() }).set(0);
                    metrics.bundle.get_or_create(&BundleLabels { digest: digest.clone() }).set(1);
                    tracing::info!(digest = %digest, "policy bundle reloaded");
                    published = digest;
                }
            }
            Err(e) => {
                metrics.policies.get_or_create(&ResultLabels { result: "refused" }).inc();
                tracing::error!(error = %e, active = %policy.current().digest, "policy reload refused; the previous bundle stays active");
            }
        }
    }
}

/// Asks the TPM for a few random bytes every second, so `/readyz` knows whether it answers
/// (and the owner reconnects when it returns).
pub(super) async fn watch_tpm(tpm: Arc<Tpm>, mut stop: watch::Receiver<bool>) {
    let mut was_ok = true;
    loop {
        let t = tpm.clone();
        let ok = match tokio::task::spawn_blocking(move || t.probe()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                if was_ok {
                    tracing::error!(error = %e, "the TPM does not answer: new upstream handshakes fail");
                }
                false
            }
            Err(_) => false,
        };
        if ok && !was_ok {
            tracing::info!("the TPM answers again");
        }
        was_ok = ok;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// What `/readyz` checks, in the order it reports them: the upstreams (the Ministry gates
/// readiness, the others are reported), the audit log, the TPM, the policy bundle (a refused
/// reload leaves the previous one serving: reported, not gating), the revocation lists.
pub(super) fn readiness(
    upstreams: &[(&'static str, Upstream)],
    audit: &Arc<Audit>,
    tpm: Option<&Arc<Tpm>>,
    policy: &Arc<PolicyState>,
    schemas: &Arc<Schemas>,
    crls: &[Arc<CrlSet>],
) -> Vec<admin::ReadyCheck> {
    let mut checks: Vec<admin::ReadyCheck> = Vec::new();
    for (i, (name, u)) in upstreams.iter().enumerate() {
        let (name, u) = (*name, u.clone());
        checks.push(Box::new(move || {
            let word = match u.health() {
                Health::Up => "ok",
                Health::Down => "unreachable",
                Health::Unknown => "unchecked",
            };
            (i != 0 || u.health() == Health::Up, format!("{name}: {word}\n"))
        }));
    }
    let a = audit.clone();
    checks.push(Box::new(move || {
        if a.is_healthy() { (true, "audit: ok\n".into()) } else { (false, "audit: failing\n".into()) }
    }));
    let t = tpm.cloned();
    checks.push(Box::new(move || match &t {
        Some(t) if t.is_healthy() => (true, "tpm: ok\n".into()),
        Some(_) => (false, "tpm: unavailable\n".into()),
        None => (true, "tpm: none (file keys)\n".into()),
    }));
    let p = policy.clone();
    checks.push(Box::new(move || (true, p.status_line())));
    let s = schemas.clone();
    checks.push(Box::new(move || s.status()));
    for c in crls.iter().filter(|c| !c.is_empty()) {
        let c = c.clone();
        checks.push(Box::new(move || c.status()));
    }
    checks
}

/// Keeps an eye on an upstream that is down (or not yet tried): one handshake every two
/// seconds until it answers. An upstream in use needs no probe: each request tells.
pub(super) async fn watch_upstream(
    name: &'static str,
    upstream: Upstream,
    metrics: Arc<UpstreamMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let gauge = metrics.up(name);
    // The change of state is logged, not the state: a peer down for an hour is one line, not
    // one every 2 s.
    let mut was_up: Option<bool> = None;
    loop {
        if upstream.health() != Health::Up {
            let probed = upstream.probe().await;
            let up = probed.is_ok();
            if was_up != Some(up) {
                match probed {
                    Ok(()) => tracing::info!(upstream = name, "upstream reachable"),
                    Err(e) => tracing::warn!(upstream = name, error = %e, "upstream unreachable"),
                }
            }
            was_up = Some(up);
        } else {
            was_up = Some(true);
        }
        gauge.set(i64::from(upstream.health() == Health::Up));
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
