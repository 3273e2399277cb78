//! The gateway: listeners, routes, the request pipeline and the upstream pools, started from a
//! [`GatewayConfig`] and stopped with a graceful drain.

pub mod admission;
pub mod body;
pub mod breaker;
pub mod config;
pub mod fault;
pub mod listener;
pub mod pipeline;
pub mod refusals;
pub mod routes;
pub mod upstream;
pub mod wsdl;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::gateway::listener::Open;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState, metrics::Metrics};
use crate::audit::Audit;
use crate::config::ConfigError;
use crate::keys::{KeyRef, KeyStore};
use crate::policy::PolicyState;
use crate::tls;
use crate::tls::crl::CrlSet;
use crate::tpm::Tpm;
use crate::xml::xsd::Schema;
use config::{GatewayConfig, ListenerConfig};
pub use fault::Refusal;
use listener::ListenerSpec;
use pipeline::Pipeline;
use routes::{ListenerKind, RouteTable};
use rustls::sign::SigningKey;
use upstream::{Health, Upstream};

/// A running gateway.
pub struct Gateway {
    pub police_addr: SocketAddr,
    pub callback_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    listeners: Vec<JoinHandle<Open>>,
    background: Vec<JoinHandle<()>>,
    admin: Arc<AdminState>,
    audit: Arc<Audit>,
    load_refusals: Arc<refusals::RequestRefusals>,
    drain_timeout: Duration,
}

async fn bind(addr: SocketAddr, file: &Path, key: &str) -> Result<TcpListener, ConfigError> {
    TcpListener::bind(addr).await.map_err(|e| ConfigError::new(file, key, format!("cannot listen on {addr}: {e}")))
}

fn spec(
    name: &'static str,
    l: &ListenerConfig,
    file: &Path,
    table: &str,
    audit: &Arc<Audit>,
    key: Arc<dyn SigningKey>,
) -> Result<(ListenerSpec, Arc<CrlSet>), ConfigError> {
    let (tls, crls) =
        tls::server_config_with_crls(name, &l.server_tls(), key).map_err(|e| ConfigError::new(file, table, e))?;
    let spec = ListenerSpec {
        refusals: Some(Arc::new(refusals::HandshakeRefusals::new(name, audit.clone()))),
        name,
        tls,
        handshake_timeout: l.handshake_timeout(),
        max_connections: l.max_connections,
        max_per_source: l.max_connections_per_source,
        max_per_client: l.max_connections_per_client,
        header_timeout: l.request_timeout(),
        crls: Some(crls.clone()),
    };
    Ok((spec, crls))
}

/// How often the listeners' CRL files are checked for changes.
const CRL_CHECK: Duration = Duration::from_secs(2);

/// Reloads a listener's CRLs whenever their files change: a set that loads is in force from
/// the next handshake on; one that does not leaves the previous set and says why (log, audit
/// record, metric, `/readyz`), and is not tried again until the files change again.
async fn watch_crls(crls: Arc<CrlSet>, metrics: Arc<Metrics>, audit: Arc<Audit>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(CRL_CHECK) => {}
        }
        let Some(result) = crls.reload_if_changed() else { continue };
        let listener = crls.listener();
        let mut r = crate::audit::Record::now("crl_reload");
        r.listener = Some(listener.to_owned());
        let outcome = match &result {
            Ok(()) => {
                tracing::info!(listener, "CRLs reloaded");
                r.detail = Some("new revocation lists in force".into());
                "ok"
            }
            Err(e) => {
                tracing::error!(listener, error = %e, "CRL reload refused; the previous lists stay in force");
                r.detail = Some(format!("refused, previous lists in force: {e}"));
                "refused"
            }
        };
        r.code = Some(outcome.to_owned());
        audit.append(&r);
        metrics.crl_reloads.get_or_create(&admin::metrics::ListenerResult { listener, result: outcome }).inc();
    }
}

impl Gateway {
    /// Builds every TLS configuration and upstream client, binds every listener, and starts
    /// serving. Any problem is a [`ConfigError`] naming the key behind it; nothing is served
    /// unless everything could be set up.
    pub async fn start(cfg: &GatewayConfig, file: &Path) -> Result<Self, ConfigError> {
        let metrics = Arc::new(Metrics::new());
        // Key custody talks to the TPM, which blocks: off the async workers.
        let (c, f) = (cfg.clone(), file.to_path_buf());
        let keys = tokio::task::spawn_blocking(move || Keys::load(&c, &f))
            .await
            .map_err(|e| ConfigError::new(file, "tpm", format!("key loading stopped: {e}")))??;
        if let Some(t) = &keys.tpm {
            t.observe(metrics.clone());
        }
        let keys_tpm = keys.tpm.clone();
        let audit = Audit::start_with(&cfg.audit, keys.checkpoint, keys.pseudonym)
            .map_err(|e| ConfigError::new(file, "audit", e))?;
        audit.attach_metrics(metrics.audit.clone());
        let (police_spec, police_crls) = spec("police", &cfg.police, file, "police", &audit, keys.police)?;
        let mut crl_sets = vec![police_crls];
        let callback_spec = match (&cfg.callback, keys.callback) {
            (Some(c), Some(k)) => {
                let (s, crls) = spec("callback", c, file, "callback", &audit, k)?;
                crl_sets.push(crls);
                Some(s)
            }
            _ => None,
        };
        let ministry = Upstream::with_key(&cfg.upstream.ministry, keys.ministry)
            .map_err(|e| ConfigError::new(file, "upstream.ministry", e))?;
        let police_callback = match (&cfg.upstream.police_callback, keys.police_callback) {
            (Some(u), Some(k)) => {
                Some(Upstream::with_key(u, k).map_err(|e| ConfigError::new(file, "upstream.police_callback", e))?)
            }
            _ => None,
        };
        let schema = Arc::new(match &cfg.xml.schemas {
            Some(dir) => Schema::load_dir(dir).map_err(|e| ConfigError::new(file, "xml.schemas", e))?,
            None => Schema::embedded().map_err(|e| ConfigError::new(file, "xml.schemas", e))?,
        });
        let routes = RouteTable::new(&cfg.routes, &cfg.xml);
        if let Some((route, name)) = routes.undeclared_header(&schema) {
            return Err(ConfigError::new(
                file,
                format!("xml.headers.{route}"),
                format!("no schema declares the header entry {name} globally, so it cannot be validated"),
            ));
        }
        let policy = Arc::new(PolicyState::load(&cfg.policy).map_err(|e| ConfigError::new(file, "policy", e))?);
        tracing::info!(digest = %policy.current().digest, origin = %policy.current().origin, "policy bundle loaded");
        audit.append(&key_event(cfg));
        let police_tcp = bind(cfg.police.listen, file, "police.listen").await?;
        let callback_tcp = match &cfg.callback {
            Some(c) => Some(bind(c.listen, file, "callback.listen").await?),
            None => None,
        };
        let admin_tcp = bind(cfg.admin.listen, file, "admin.listen").await?;
        let addr = |t: &TcpListener, key: &str| {
            t.local_addr().map_err(|e| ConfigError::new(file, key, format!("cannot read the bound address: {e}")))
        };
        let police_addr = addr(&police_tcp, "police.listen")?;
        let callback_addr = match &callback_tcp {
            Some(t) => Some(addr(t, "callback.listen")?),
            None => None,
        };
        let admin_addr = addr(&admin_tcp, "admin.listen")?;

        let load_refusals = Arc::new(refusals::RequestRefusals::new(audit.clone()));
        // The schemas the WSDLs import: the ones the gateway validates with.
        let schema_files: Vec<(String, String)> = match &cfg.xml.schemas {
            Some(dir) => std::fs::read_dir(dir)
                .map_err(|e| ConfigError::new(file, "xml.schemas", e))?
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "xsd"))
                .filter_map(|e| Some((e.file_name().to_str()?.to_owned(), std::fs::read_to_string(e.path()).ok()?)))
                .collect(),
            None => crate::xml::xsd::EMBEDDED.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect(),
        };
        let pipeline = Arc::new(Pipeline {
            routes,
            schema,
            policy: policy.clone(),
            audit: audit.clone(),
            ministry: ministry.clone(),
            police_callback: police_callback.clone(),
            metrics: metrics.clone(),
            in_flight: Semaphore::new(cfg.limits.max_in_flight),
            in_flight_per_client: admission::PerKey::new(cfg.limits.max_in_flight_per_client),
            load_refusals: load_refusals.clone(),
            documents: wsdl::Documents::new(&cfg.police.public_url(), schema_files),
            request_timeout: cfg.police.request_timeout(),
            bare: cfg.bare_proxy,
            bare_audit: cfg.bare_proxy_audit,
        });
        if cfg.bare_proxy_audit {
            tracing::warn!(
                "bare_proxy = true, bare_proxy_audit = true: BENCHMARK MODE, requests are audited and forwarded without validation or policy"
            );
        } else if cfg.bare_proxy {
            tracing::warn!(
                "bare_proxy = true: BENCHMARK MODE, requests are forwarded without validation, policy or audit"
            );
        }
        let (stop, stopped) = watch::channel(false);
        let mut listeners = Vec::new();
        for (tcp, spec, kind) in [
            (Some(police_tcp), Some(police_spec), ListenerKind::Police),
            (callback_tcp, callback_spec, ListenerKind::Callback),
        ] {
            let (Some(tcp), Some(spec)) = (tcp, spec) else { continue };
            let p = pipeline.clone();
            let handler = move |peer: Arc<tls::PeerIdentity>, req| {
                let p = p.clone();
                async move {
                    p.handle(kind, &peer, req).await.map_err(|e| std::io::Error::new(std::io::ErrorKind::TimedOut, e))
                }
            };
            tracing::info!(listener = spec.name, addr = %tcp.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
            listeners.push(tokio::spawn(listener::serve(tcp, spec, Some(metrics.clone()), handler, stopped.clone())));
        }

        let mut upstreams = vec![("ministry", ministry)];
        if let Some(u) = police_callback {
            upstreams.push(("police_callback", u));
        }
        let admin = Arc::new(AdminState::new(
            metrics.clone(),
            readiness(&upstreams, &audit, keys_tpm.as_ref(), &policy, &crl_sets),
        ));
        tracing::info!(listener = "admin", addr = %admin_addr, "listening");
        let mut background = vec![tokio::spawn(admin::serve(admin_tcp, admin.clone(), stopped.clone()))];
        background.push(tokio::spawn(watch_policy(policy.clone(), metrics.clone(), audit.clone(), stopped.clone())));
        background.push(tokio::spawn({
            let r = load_refusals.clone();
            async move {
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + refusals::WINDOW, refusals::WINDOW);
                loop {
                    tick.tick().await;
                    r.end_window();
                }
            }
        }));
        for (name, u) in upstreams {
            let opened =
                metrics.upstream_connections_opened.get_or_create(&admin::metrics::UpstreamLabels { upstream: name });
            u.count_connections(opened.clone());
            u.show_breaker(
                metrics
                    .upstream_breaker_state
                    .get_or_create(&admin::metrics::UpstreamLabels { upstream: name })
                    .clone(),
            );
            background.push(tokio::spawn(watch_upstream(name, u, metrics.clone(), stopped.clone())));
        }
        if let Some(t) = keys_tpm {
            background.push(tokio::spawn(watch_tpm(t, stopped.clone())));
        }
        for crls in crl_sets.into_iter().filter(|c| !c.is_empty()) {
            background.push(tokio::spawn(watch_crls(crls, metrics.clone(), audit.clone(), stopped.clone())));
        }
        Ok(Self {
            police_addr,
            callback_addr,
            admin_addr,
            stop,
            listeners,
            background,
            admin,
            audit,
            load_refusals,
            drain_timeout: Duration::from_millis(cfg.limits.drain_timeout_ms),
        })
    }

    /// True when `/readyz` would answer 200.
    pub fn is_ready(&self) -> bool {
        self.admin.readiness().0
    }

    /// Stops accepting, lets in-flight requests finish within the drain deadline, and stops.
    /// Returns true when every connection finished in time.
    pub async fn shutdown(self) -> bool {
        self.admin.set_draining();
        let _ = self.stop.send(true);
        let mut drains = Vec::new();
        for l in self.listeners {
            if let Ok(g) = l.await {
                drains.push(listener::drain(g, self.drain_timeout));
            }
        }
        let mut all = true;
        for d in drains {
            all &= d.await;
        }
        for b in self.background {
            b.abort();
        }
        self.load_refusals.end_window();
        if let Err(e) = self.audit.checkpoint_now().await {
            tracing::error!(error = %e, "final audit checkpoint failed");
        }
        all
    }
}

/// Every key the gateway signs or keys with, taken from their custody.
struct Keys {
    tpm: Option<Arc<Tpm>>,
    police: Arc<dyn SigningKey>,
    callback: Option<Arc<dyn SigningKey>>,
    ministry: Arc<dyn SigningKey>,
    police_callback: Option<Arc<dyn SigningKey>>,
    checkpoint: Box<dyn crate::audit::CheckpointSigner>,
    pseudonym: zeroize::Zeroizing<Vec<u8>>,
}

impl Keys {
    fn load(cfg: &GatewayConfig, file: &Path) -> Result<Keys, ConfigError> {
        let store = KeyStore::open(cfg.tpm.as_ref()).map_err(|e| ConfigError::new(file, "tpm", e))?;
        let tls = |r: &KeyRef, key: &str| store.tls_key(r).map_err(|e| ConfigError::new(file, key, e));
        let keys = Keys {
            police: tls(&cfg.police.key, "police.key")?,
            callback: cfg.callback.as_ref().map(|c| tls(&c.key, "callback.key")).transpose()?,
            ministry: tls(&cfg.upstream.ministry.key, "upstream.ministry.key")?,
            police_callback: cfg
                .upstream
                .police_callback
                .as_ref()
                .map(|u| tls(&u.key, "upstream.police_callback.key"))
                .transpose()?,
            checkpoint: store
                .checkpoint_signer(&cfg.audit.checkpoint_key)
                .map_err(|e| ConfigError::new(file, "audit.checkpoint_key", e))?,
            pseudonym: store
                .secret(&cfg.audit.pseudonym_key)
                .map_err(|e| ConfigError::new(file, "audit.pseudonym_key", e))?,
            tpm: store.tpm().cloned(),
        };
        Ok(keys)
    }
}

/// The `key_event` record of a start: which certificates and keys this run speaks with (their
/// SHA-256 fingerprints, never the keys), and where each private key lives.
fn key_event(cfg: &GatewayConfig) -> crate::audit::Record {
    let fingerprint = |p: &Path| {
        tls::load_certs(p)
            .ok()
            .and_then(|c| c.first().map(|c| crate::encoding::sha256_hex(c.as_ref())))
            .unwrap_or_else(|| "unreadable".into())
    };
    let mut parts = vec![format!("police listener certificate {}", fingerprint(&cfg.police.cert))];
    if let Some(c) = &cfg.callback {
        parts.push(format!("callback listener certificate {}", fingerprint(&c.cert)));
    }
    parts.push(format!("ministry client certificate {}", fingerprint(&cfg.upstream.ministry.cert)));
    if let Some(u) = &cfg.upstream.police_callback {
        parts.push(format!("police callback client certificate {}", fingerprint(&u.cert)));
    }
    let custody: Vec<String> = cfg.key_refs().iter().map(|(k, r)| format!("{k} {}", r.custody())).collect();
    let mut r = crate::audit::Record::now("key_event");
    r.detail = Some(format!(
        "{}; key custody: {}",
        parts.join("; "),
        if cfg.tpm.is_some() { custody.join(", ") } else { format!("files, no TPM ({})", custody.join(", ")) }
    ));
    r
}

/// Reloads the policy bundle on SIGHUP and whenever its files change (checked every
/// `reload_interval_ms`); a failed reload keeps the old bundle and is not retried until the
/// files change again.
async fn watch_policy(
    policy: Arc<PolicyState>,
    metrics: Arc<Metrics>,
    audit: Arc<Audit>,
    mut stop: watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut published = policy.current().digest.clone();
    metrics.policy_bundle.get_or_create(&admin::metrics::BundleLabels { digest: published.clone() }).set(1);
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
                metrics.policy_reloads.get_or_create(&admin::metrics::ResultLabels { result: "ok" }).inc();
                if digest != published {
                    metrics
                        .policy_bundle
                        .get_or_create(&admin::metrics::BundleLabels { digest: published.clone() })
                        .set(0);
                    metrics
                        .policy_bundle
                        .get_or_create(&admin::metrics::BundleLabels { digest: digest.clone() })
                        .set(1);
                    tracing::info!(digest = %digest, "policy bundle reloaded");
                    published = digest;
                }
            }
            Err(e) => {
                metrics.policy_reloads.get_or_create(&admin::metrics::ResultLabels { result: "refused" }).inc();
                tracing::error!(error = %e, active = %policy.current().digest, "policy reload refused; the previous bundle stays active");
            }
        }
    }
}

/// Keeps an eye on an upstream that is down (or not yet tried): one handshake every two
/// seconds until it answers. An upstream in use needs no probe: each request tells.
/// Asks the TPM for a few random bytes every second, so `/readyz` knows whether it answers
/// (and the owner reconnects when it returns).
async fn watch_tpm(tpm: Arc<Tpm>, mut stop: watch::Receiver<bool>) {
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
fn readiness(
    upstreams: &[(&'static str, Upstream)],
    audit: &Arc<Audit>,
    tpm: Option<&Arc<Tpm>>,
    policy: &Arc<PolicyState>,
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
    for c in crls.iter().filter(|c| !c.is_empty()) {
        let c = c.clone();
        checks.push(Box::new(move || c.status()));
    }
    checks
}

async fn watch_upstream(
    name: &'static str,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let gauge = metrics.upstream_up.get_or_create(&admin::metrics::UpstreamLabels { upstream: name }).clone();
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
