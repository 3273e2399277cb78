//! The gateway: listeners, routes, the request pipeline and the upstream pools, started from a
//! [`GatewayConfig`] and stopped with a graceful drain.

pub mod body;
pub mod breaker;
pub mod config;
pub mod correlation;
mod custody;
pub mod listener;
pub mod pair;
pub mod per_key;
pub mod pipeline;
pub mod refusal;
pub mod refusal_log;
pub mod routes;
pub mod schemas;
pub mod upstream;
mod watchers;
pub mod wsdl;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::audit::Audit;
use crate::config::ConfigError;
use crate::policy::PolicyState;
use crate::tls;
use crate::tls::crl::CrlSet;
use config::{GatewayConfig, ListenerConfig};
use custody::{Keys, key_event};
use listener::{ListenerMetrics, ListenerSpec, OpenConnections};
use pipeline::{Pipeline, RequestMetrics};
pub use refusal::Refusal;
use routes::{ListenerKind, RouteTable};
use rustls::sign::SigningKey;
use schemas::{Schemas, SchemasError};
use upstream::{Upstream, UpstreamMetrics};
use watchers::{ReloadMetrics, TpmMetrics};

/// A running gateway.
pub struct Gateway {
    pub police_addr: SocketAddr,
    pub callback_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    listeners: Vec<JoinHandle<OpenConnections>>,
    background: Vec<JoinHandle<()>>,
    admin: Arc<AdminState>,
    audit: Arc<Audit>,
    load_refusals: Arc<refusal_log::RequestRefusals>,
    drain_timeout: Duration,
}

/// Each stage's metrics, registered in the one exposition the admin listener serves.
#[derive(Default)]
struct Metrics {
    listener: Arc<ListenerMetrics>,
    requests: RequestMetrics,
    upstream: Arc<UpstreamMetrics>,
    reload: Arc<ReloadMetrics>,
    tpm: Arc<TpmMetrics>,
    audit: crate::audit::AuditMetrics,
    pair: Arc<pair::PairMetrics>,
    correlation: correlation::CorrelationMetrics,
}

impl Metrics {
    fn exposition(&self, certs: tls::expiry::CertExpiry) -> admin::metrics::Exposition {
        let mut registry = admin::metrics::registry();
        registry.register_collector(Box::new(certs));
        self.requests.register(&mut registry);
        self.listener.register(&mut registry);
        self.upstream.register(&mut registry);
        self.reload.register(&mut registry);
        self.tpm.register(&mut registry);
        self.audit.register(&mut registry);
        self.pair.register(&mut registry);
        self.correlation.register(&mut registry);
        admin::metrics::register_build_info(&mut registry);
        admin::metrics::Exposition::new(registry)
    }
}

/// The listeners' TLS and limits, with the revocation lists each one reloads.
struct Listeners {
    police: ListenerSpec,
    callback: Option<ListenerSpec>,
    crls: Vec<Arc<CrlSet>>,
}

fn spec(
    name: &'static str,
    l: &ListenerConfig,
    file: &Path,
    audit: &Arc<Audit>,
    key: Arc<dyn SigningKey>,
) -> Result<(ListenerSpec, Arc<CrlSet>), ConfigError> {
    let (tls, crls) =
        tls::server_config_with_crls(name, &l.server_tls(), key).map_err(|e| ConfigError::new(file, name, e))?;
    let spec = ListenerSpec {
        refusals: Some(Arc::new(refusal_log::HandshakeRefusals::new(name, audit.clone()))),
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

impl Listeners {
    fn build(
        cfg: &GatewayConfig,
        file: &Path,
        audit: &Arc<Audit>,
        police: Arc<dyn SigningKey>,
        callback: Option<Arc<dyn SigningKey>>,
    ) -> Result<Self, ConfigError> {
        let (police, police_crls) = spec("police", &cfg.police, file, audit, police)?;
        let mut crls = vec![police_crls];
        let callback = match (&cfg.callback, callback) {
            (Some(c), Some(k)) => {
                let (s, c) = spec("callback", c, file, audit, k)?;
                crls.push(c);
                Some(s)
            }
            _ => None,
        };
        Ok(Self { police, callback, crls })
    }
}

/// The upstream clients: the Ministry's, and the police callback receiver's when configured.
fn upstreams(cfg: &GatewayConfig, file: &Path, keys: &Keys) -> Result<(Upstream, Option<Upstream>), ConfigError> {
    let ministry = Upstream::with_key(&cfg.upstream.ministry, keys.ministry.clone())
        .map_err(|e| ConfigError::new(file, "upstream.ministry", e))?;
    let police_callback = match (&cfg.upstream.police_callback, &keys.police_callback) {
        (Some(u), Some(k)) => {
            Some(Upstream::with_key(u, k.clone()).map_err(|e| ConfigError::new(file, "upstream.police_callback", e))?)
        }
        _ => None,
    };
    Ok((ministry, police_callback))
}

/// The schemas the gateway validates with and the routes checked against them; an undeclared
/// header entry is named by its `xml.headers` key.
fn schemas(cfg: &GatewayConfig, file: &Path) -> Result<(Arc<Schemas>, RouteTable), ConfigError> {
    let routes = RouteTable::new(&cfg.routes, &cfg.xml);
    match Schemas::load(cfg.xml.schemas.as_deref(), &cfg.police.public_url(), &routes) {
        Ok(s) => Ok((Arc::new(s), routes)),
        Err(SchemasError::UndeclaredHeader { route, name }) => Err(ConfigError::new(
            file,
            format!("xml.headers.{route}"),
            format!("no schema declares the header entry {name} globally, so it cannot be validated"),
        )),
        Err(e) => Err(ConfigError::new(file, "xml.schemas", e)),
    }
}

/// The listening sockets, bound before anything is served, and their addresses.
struct BoundSockets {
    police: TcpListener,
    callback: Option<TcpListener>,
    admin: TcpListener,
}

impl BoundSockets {
    async fn bind(cfg: &GatewayConfig, file: &Path) -> Result<Self, ConfigError> {
        async fn bind(addr: SocketAddr, file: &Path, key: &str) -> Result<TcpListener, ConfigError> {
            TcpListener::bind(addr)
                .await
                .map_err(|e| ConfigError::new(file, key, format!("cannot listen on {addr}: {e}")))
        }
        let police = bind(cfg.police.listen, file, "police.listen").await?;
        let callback = match &cfg.callback {
            Some(c) => Some(bind(c.listen, file, "callback.listen").await?),
            None => None,
        };
        let admin = bind(cfg.admin.listen, file, "admin.listen").await?;
        Ok(Self { police, callback, admin })
    }

    fn addrs(&self, file: &Path) -> Result<(SocketAddr, Option<SocketAddr>, SocketAddr), ConfigError> {
        let addr = |t: &TcpListener, key: &str| {
            t.local_addr().map_err(|e| ConfigError::new(file, key, format!("cannot read the bound address: {e}")))
        };
        let callback = self.callback.as_ref().map(|t| addr(t, "callback.listen")).transpose()?;
        Ok((addr(&self.police, "police.listen")?, callback, addr(&self.admin, "admin.listen")?))
    }
}

fn warn_benchmark_mode(cfg: &GatewayConfig) {
    if cfg.bare_proxy_audit {
        tracing::warn!(
            "bare_proxy = true, bare_proxy_audit = true: BENCHMARK MODE, requests are audited and forwarded without validation or policy"
        );
    } else if cfg.bare_proxy {
        tracing::warn!("bare_proxy = true: BENCHMARK MODE, requests are forwarded without validation, policy or audit");
    }
}

/// Serves the pipeline on a listener, until `stopped`.
fn listen(
    tcp: TcpListener,
    spec: ListenerSpec,
    kind: ListenerKind,
    pipeline: &Arc<Pipeline>,
    metrics: &Metrics,
    stopped: &watch::Receiver<bool>,
) -> JoinHandle<OpenConnections> {
    let p = pipeline.clone();
    let handler = move |peer: Arc<tls::PeerIdentity>, req| {
        let p = p.clone();
        async move { p.handle(kind, &peer, req).await.map_err(|e| std::io::Error::new(std::io::ErrorKind::TimedOut, e)) }
    };
    tracing::info!(listener = spec.name, addr = %tcp.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
    metrics.listener.zero_series(spec.name);
    tokio::spawn(listener::serve(tcp, spec, Some(metrics.listener.clone()), handler, stopped.clone()))
}

/// What runs beside the listeners, each until `stopped`.
struct Background<'a> {
    admin_tcp: TcpListener,
    admin: &'a Arc<AdminState>,
    policy: Arc<PolicyState>,
    audit: &'a Arc<Audit>,
    load_refusals: &'a Arc<refusal_log::RequestRefusals>,
    upstreams: Vec<(&'static str, Upstream)>,
    tpm: Option<Arc<crate::tpm::Tpm>>,
    crls: Vec<Arc<CrlSet>>,
    pipeline: &'a Arc<Pipeline>,
    metrics: &'a Metrics,
    stopped: &'a watch::Receiver<bool>,
}

/// Starts the admin listener, the reload watchers (policy, schemas, revocation lists), the upstream and
/// TPM watchers and the load refusals' summary window.
fn background(b: Background<'_>) -> Vec<JoinHandle<()>> {
    let (metrics, stopped) = (b.metrics, b.stopped);
    let mut tasks = vec![tokio::spawn(admin::serve(b.admin_tcp, b.admin.clone(), stopped.clone()))];
    tasks.push(tokio::spawn(watchers::watch_policy(
        b.policy,
        metrics.reload.clone(),
        b.audit.clone(),
        stopped.clone(),
    )));
    let r = b.load_refusals.clone();
    tasks.push(tokio::spawn(refusal_log::every_window(move || r.end_window())));
    for (name, u) in b.upstreams {
        metrics.upstream.attach(name, &u);
        tasks.push(tokio::spawn(watchers::watch_upstream(name, u, metrics.upstream.clone(), stopped.clone())));
    }
    if let Some(t) = b.tpm {
        tasks.push(tokio::spawn(watchers::watch_tpm(t, stopped.clone())));
    }
    if b.pipeline.schemas().reloadable() {
        let (p, m, a) = (b.pipeline.clone(), metrics.reload.clone(), b.audit.clone());
        tasks.push(tokio::spawn(watchers::watch_schemas(p, m, a, stopped.clone())));
    }
    for crls in b.crls.into_iter().filter(|c| !c.is_empty()) {
        metrics.reload.expect_crls(crls.listener());
        let (m, a) = (metrics.reload.clone(), b.audit.clone());
        tasks.push(tokio::spawn(watchers::watch_crls(crls, m, a, stopped.clone())));
    }
    tasks
}

/// The keys, from their custody; the TPM's calls counted in `metrics`.
async fn load_keys(cfg: &GatewayConfig, file: &Path, metrics: &Metrics) -> Result<Keys, ConfigError> {
    // Key custody talks to the TPM, which blocks: off the async workers.
    let (c, f) = (cfg.clone(), file.to_path_buf());
    let keys = tokio::task::spawn_blocking(move || Keys::load(&c, &f))
        .await
        .map_err(|e| ConfigError::new(file, "tpm", format!("key loading stopped: {e}")))??;
    if let Some(t) = &keys.tpm {
        metrics.tpm.zero_series();
        t.observe(metrics.tpm.clone());
    }
    Ok(keys)
}

/// What the pair link needs from the gateway's start.
struct PairWiring<'a> {
    keys: Option<custody::PairKeys>,
    checkpoint_point: Vec<u8>,
    correlation: &'a Arc<correlation::Correlation>,
    audit: &'a Arc<Audit>,
    metrics: &'a Metrics,
}

impl PairWiring<'_> {
    /// Starts the pair link with `[pair]`: the link the pipeline shares, and its tasks.
    async fn start(
        self,
        cfg: &GatewayConfig,
        file: &Path,
        stopped: &watch::Receiver<bool>,
    ) -> Result<(Option<Arc<pair::PairLink>>, Vec<JoinHandle<()>>), ConfigError> {
        let (Some(p), Some((tls_key, witness_seed))) = (&cfg.pair, self.keys) else { return Ok((None, Vec::new())) };
        let start = pair::PairStart {
            cfg: p,
            audit_dir: &cfg.audit.dir,
            checkpoint_point: self.checkpoint_point,
            file,
            tls_key,
            witness_seed,
            correlation: self.correlation.clone(),
            audit: self.audit.clone(),
            metrics: self.metrics.pair.clone(),
        };
        let (link, tasks) = pair::start(start, stopped).await?;
        Ok((Some(link), tasks))
    }
}

/// The policy bundle, and the callbacks awaited as the journal beside the audit log holds them.
fn policy_and_correlation(
    cfg: &GatewayConfig,
    file: &Path,
    metrics: &Metrics,
) -> Result<(Arc<PolicyState>, Arc<correlation::Correlation>), ConfigError> {
    let policy = Arc::new(PolicyState::load(&cfg.policy).map_err(|e| ConfigError::new(file, "policy", e))?);
    tracing::info!(digest = %policy.current().digest, origin = %policy.current().origin, "policy bundle loaded");
    let rule = correlation::Rule::csn369791(Duration::from_secs(cfg.policy.callback_ttl_s));
    let correlation =
        correlation::Correlation::open(&cfg.audit.dir, rule, cfg.policy.callback_ids, metrics.correlation.clone())
            .map_err(|e| ConfigError::new(file, "audit.dir", format!("the correlation journal: {e}")))?;
    Ok((policy, Arc::new(correlation)))
}

impl Gateway {
    /// Builds every TLS configuration and upstream client, binds every listener, and starts
    /// serving. Any problem is a [`ConfigError`] naming the key behind it; nothing is served
    /// unless everything could be set up.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the configuration key behind the first part that could not be
    /// set up (a key, a certificate, the audit log, the schemas, the policy, an address).
    pub async fn start(cfg: &GatewayConfig, file: &Path) -> Result<Self, ConfigError> {
        let metrics = Metrics::default();
        let keys = load_keys(cfg, file, &metrics).await?;
        let (ministry, police_callback) = upstreams(cfg, file, &keys)?;
        let Keys { tpm, police, callback, checkpoint, pseudonym, pair, .. } = keys;
        let checkpoint_point = checkpoint.public_key();
        let audit =
            Audit::start_with(&cfg.audit, checkpoint, pseudonym).map_err(|e| ConfigError::new(file, "audit", e))?;
        audit.attach_metrics(metrics.audit.clone());
        let mut listeners = Listeners::build(cfg, file, &audit, police, callback)?;
        let (schemas, routes) = schemas(cfg, file)?;
        let (policy, correlation) = policy_and_correlation(cfg, file, &metrics)?;
        audit.append(&key_event(cfg));
        let bound = BoundSockets::bind(cfg, file).await?;
        let (police_addr, callback_addr, admin_addr) = bound.addrs(file)?;
        let (stop, stopped) = watch::channel(false);
        let pair_wiring =
            PairWiring { keys: pair, checkpoint_point, correlation: &correlation, audit: &audit, metrics: &metrics };
        let (pair, pair_tasks) = pair_wiring.start(cfg, file, &stopped).await?;
        listeners.crls.extend(pair.as_ref().map(|p| p.crls.clone()));
        let load_refusals = Arc::new(refusal_log::RequestRefusals::new(audit.clone()));
        let pipeline = Arc::new(Pipeline::new(pipeline::PipelineParts {
            routes,
            schemas: schemas.clone(),
            policy: policy.clone(),
            audit: audit.clone(),
            ministry: ministry.clone(),
            police_callback: police_callback.clone(),
            metrics: metrics.requests.clone(),
            upstream_metrics: metrics.upstream.clone(),
            max_in_flight: cfg.limits.max_in_flight,
            max_in_flight_per_client: cfg.limits.max_in_flight_per_client,
            load_refusals: load_refusals.clone(),
            request_timeout: cfg.police.request_timeout(),
            bare: cfg.bare_proxy,
            bare_audit: cfg.bare_proxy_audit,
            pair: pair.clone(),
            correlation: correlation.clone(),
        }));
        warn_benchmark_mode(cfg);
        let mut serving =
            vec![listen(bound.police, listeners.police, ListenerKind::Police, &pipeline, &metrics, &stopped)];
        if let (Some(tcp), Some(spec)) = (bound.callback, listeners.callback) {
            serving.push(listen(tcp, spec, ListenerKind::Callback, &pipeline, &metrics, &stopped));
        }
        let mut upstreams = vec![("ministry", ministry)];
        upstreams.extend(police_callback.map(|u| ("police_callback", u)));
        let mut checks = watchers::readiness(&upstreams, &audit, tpm.as_ref(), &policy, &schemas, &listeners.crls);
        if let Some(p) = pair {
            checks.push(Box::new(move || p.readiness()));
        }
        let admin = Arc::new(AdminState::new(metrics.exposition(custody::cert_expiry(cfg)), checks));
        tracing::info!(listener = "admin", addr = %admin_addr, "listening");
        let mut background = background(Background {
            admin_tcp: bound.admin,
            admin: &admin,
            policy,
            audit: &audit,
            load_refusals: &load_refusals,
            upstreams,
            tpm,
            crls: listeners.crls,
            pipeline: &pipeline,
            metrics: &metrics,
            stopped: &stopped,
        });
        background.extend(pair_tasks);
        Ok(Self {
            police_addr,
            callback_addr,
            admin_addr,
            stop,
            listeners: serving,
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
