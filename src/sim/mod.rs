//! Simulators for tests, demos and benchmarks: the Ministry's National SPOC
//! ([`ministry`]) and the police side's callback receiver ([`receiver`]), both served by the
//! gateway's own listener code over mutual TLS; and example messages ([`messages`]).

pub mod messages;
pub mod ministry;
pub mod receiver;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ConfigError;
use crate::gateway::config::ListenerConfig;
use crate::gateway::listener::{self, ListenerSpec};
use crate::tls;

/// A running simulator; dropping the handle does not stop it, [`Running::stop`] does.
pub struct Running {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<crate::gateway::listener::OpenConnections>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Ok(g) = self.task.await {
            listener::drain(g, Duration::from_secs(2)).await;
        }
    }
}

async fn bind(
    name: &'static str,
    server: &ListenerConfig,
    file: &std::path::Path,
) -> Result<(TcpListener, ListenerSpec), ConfigError> {
    let spec = ListenerSpec {
        name,
        tls: server
            .key
            .file_key()
            .and_then(|k| tls::server_config(&server.server_tls(), k))
            .map_err(|e| ConfigError::new(file, "server", e))?,
        handshake_timeout: server.handshake_timeout(),
        max_connections: server.max_connections,
        max_per_source: server.max_connections_per_source,
        max_per_client: server.max_connections_per_client,
        header_timeout: server.request_timeout(),
        refusals: None,
        crls: None,
    };
    let tcp = TcpListener::bind(server.listen)
        .await
        .map_err(|e| ConfigError::new(file, "server.listen", format!("cannot listen on {}: {e}", server.listen)))?;
    Ok((tcp, spec))
}

/// Starts the simulated Ministry.
///
/// # Errors
/// A [`ConfigError`]: the TLS configuration cannot be built or the address cannot be bound.
pub async fn start_ministry(cfg: &ministry::MinistryConfig, file: &std::path::Path) -> Result<Running, ConfigError> {
    let schema = Arc::new(crate::xml::xsd::Schema::embedded().map_err(|e| ConfigError::new(file, "", e))?);
    let sim = Arc::new(ministry::Ministry::new(cfg, schema).map_err(|e| ConfigError::new(file, "callback", e))?);
    let (tcp, spec) = bind("sim-ministry", &cfg.server, file).await?;
    let addr = tcp.local_addr().map_err(|e| ConfigError::new(file, "server.listen", e))?;
    let (stop, stopped) = watch::channel(false);
    let handler = move |peer: Arc<tls::PeerIdentity>, req| {
        tracing::info!(subject = %peer.subject, public_key_sha256 = %peer.public_key_sha256, "client");
        sim.clone().answer(req)
    };
    tracing::info!(listener = "sim-ministry", addr = %addr, "listening");
    let task = tokio::spawn(listener::serve(tcp, spec, None, handler, stopped));
    Ok(Running { addr, stop, task })
}

/// Starts the police callback receiver; the returned [`receiver::Receiver`] tells what arrived.
///
/// # Errors
/// A [`ConfigError`]: the TLS configuration cannot be built or the address cannot be bound.
pub async fn start_receiver(
    cfg: &receiver::ReceiverConfig,
    file: &std::path::Path,
) -> Result<(Running, receiver::Receiver), ConfigError> {
    let schema = Arc::new(crate::xml::xsd::Schema::embedded().map_err(|e| ConfigError::new(file, "", e))?);
    let rx = receiver::Receiver::new(schema);
    let (tcp, spec) = bind("sim-receiver", &cfg.server, file).await?;
    let addr = tcp.local_addr().map_err(|e| ConfigError::new(file, "server.listen", e))?;
    let (stop, stopped) = watch::channel(false);
    let r = rx.clone();
    let handler = move |_peer, req| r.clone().answer(req);
    tracing::info!(listener = "sim-receiver", addr = %addr, "listening");
    let task = tokio::spawn(listener::serve(tcp, spec, None, handler, stopped));
    Ok((Running { addr, stop, task }, rx))
}
