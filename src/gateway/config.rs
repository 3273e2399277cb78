//! `gateway.toml`: the gateway's configuration model, wired where the gateway is (the listeners'
//! and upstreams' tables are also the simulators'). Problems are reported as one line naming
//! the file, the key and what is wrong (`config::ConfigError`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use super::upstream::UpstreamConfig;
pub use crate::config::{ConfigError, read_toml, resolve_file};
use crate::xml::limits::LimitsOverride;

/// `gateway.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where police systems connect.
    pub police: ListenerConfig,
    /// Where the Ministry's CSN 36 9791 callbacks arrive (optional).
    pub callback: Option<ListenerConfig>,
    pub admin: AdminConfig,
    pub upstream: Upstreams,
    #[serde(default)]
    pub routes: RouteLimits,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub xml: XmlConfig,
    #[serde(default)]
    pub policy: crate::policy::PolicyConfig,
    /// The audit log; required: the gateway forwards nothing it cannot audit.
    pub audit: crate::audit::AuditConfig,
    /// The TPM that holds (or seals) the appliance's keys; keys named `tpm:NAME` live there.
    pub tpm: Option<crate::tpm::TpmConfig>,
    /// Refuse to start with any key read from a file.
    #[serde(default)]
    pub require_tpm: bool,
    /// The pair link to the other appliance of an active-active pair (docs/pair.md).
    #[serde(default)]
    pub pair: Option<super::pair::PairConfig>,
    /// Benchmarks only: forward without validation, policy or audit (the floor `make bench`
    /// compares against). Refused together with `require_tpm`.
    #[serde(default)]
    pub bare_proxy: bool,
    /// Benchmarks only, with `bare_proxy`: still audit every request as the full pipeline does
    /// (the request's record durable before forwarding, the outcome after), so that `make
    /// bench` can tell what the audit stage alone costs.
    #[serde(default)]
    pub bare_proxy_audit: bool,
}

/// `[xml]`: the schemas and the XML firewall's limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmlConfig {
    /// Directory of `.xsd` files; the schemas compiled into the binary when absent.
    pub schemas: Option<PathBuf>,
    /// Changes to the firewall's default limits, for every route.
    #[serde(default)]
    pub limits: LimitsOverride,
    /// Changes for one route (`bio_v1`, `csn369791`, `csn369791_callback`), on top of `limits`.
    #[serde(default)]
    pub routes: std::collections::BTreeMap<String, LimitsOverride>,
    /// SOAP Header entries a route lets through (`[xml.headers.<route>]`); none by default:
    /// every other entry is dropped, or refused when it must be understood.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, HeaderAllow>,
}

/// `[xml.headers.<route>]`: header entries let through, as `{namespace}local` names of
/// elements the schemas declare globally (validated like the Body).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderAllow {
    /// In requests, toward the upstream.
    #[serde(default)]
    pub request: Vec<String>,
    /// In replies, back to the caller.
    #[serde(default)]
    pub reply: Vec<String>,
}

/// Splits a `{namespace}local` name.
pub fn clark_name(name: &str) -> Option<(String, String)> {
    let (ns, local) = name.strip_prefix('{')?.split_once('}')?;
    (!ns.is_empty() && !local.is_empty() && !local.contains(['{', '}', ':'])).then(|| (ns.to_owned(), local.to_owned()))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstreams {
    /// The Ministry's National SPOC.
    pub ministry: UpstreamConfig,
    /// The police system's endpoint that receives forwarded callbacks; required with `[callback]`.
    pub police_callback: Option<UpstreamConfig>,
}

/// A mutual-TLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub listen: SocketAddr,
    /// The URL clients reach this listener at (behind a balancer or a name): the service
    /// address in the WSDLs it serves. Default `https://LISTEN`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Server certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Server private key: a PEM file (PKCS#8 or SEC1), or `tpm:NAME` (sealed by the TPM).
    pub key: crate::keys::KeyRef,
    /// CA certificates that client certificates must chain to (PEM, one or more).
    pub client_ca: PathBuf,
    /// CRLs (PEM) checked for every client certificate.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// What a CRL past its nextUpdate does: `refuse` (every client refused, not ready) or
    /// `alarm` (still used; `/readyz` says it expired).
    #[serde(default = "defaults::crl_expired")]
    pub crl_expired: crate::tls::crl::ExpiredCrl,
    /// Also accept TLS 1.2 (ECDHE with AEAD suites only). TLS 1.3 only when false.
    #[serde(default)]
    pub tls12: bool,
    #[serde(deserialize_with = "crate::config::units::millis", default = "defaults::handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Open connections at most; further ones are closed at once.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Connections one source address may hold at once (handshaking or open).
    #[serde(default = "defaults::max_connections_per_source")]
    pub max_connections_per_source: usize,
    /// Connections one client certificate may hold at once.
    #[serde(default = "defaults::max_connections_per_client")]
    pub max_connections_per_client: usize,
    /// Time allowed for a request's headers, and then for its whole body.
    #[serde(deserialize_with = "crate::config::units::millis", default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
}

impl ListenerConfig {
    /// What the listener's TLS needs.
    pub fn server_tls(&self) -> crate::tls::ServerTlsConfig {
        crate::tls::ServerTlsConfig {
            cert: self.cert.clone(),
            client_ca: self.client_ca.clone(),
            crls: self.crls.clone(),
            crl_expired: self.crl_expired,
            tls12: self.tls12,
        }
    }

    /// [`Self::public_url`], or the listen address.
    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("https://{}", self.listen))
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Plain HTTP; keep it on loopback or a management network.
    pub listen: SocketAddr,
}

/// Request body limits per route, in bytes; a body over its limit is refused (413) as soon as
/// the limit is passed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteLimits {
    #[serde(deserialize_with = "crate::config::units::bytes", default = "defaults::bio_max_body")]
    pub bio_max_body_bytes: usize,
    #[serde(deserialize_with = "crate::config::units::bytes", default = "defaults::csn_max_body")]
    pub csn_max_body_bytes: usize,
    #[serde(deserialize_with = "crate::config::units::bytes", default = "defaults::csn_max_body")]
    pub callback_max_body_bytes: usize,
}

impl Default for RouteLimits {
    fn default() -> Self {
        Self {
            bio_max_body_bytes: defaults::bio_max_body(),
            csn_max_body_bytes: defaults::csn_max_body(),
            callback_max_body_bytes: defaults::csn_max_body(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests being processed at once; more are shed with 503 Overloaded.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// Requests one client certificate may have in process at once (within `max_in_flight`).
    #[serde(default = "defaults::max_in_flight_per_client")]
    pub max_in_flight_per_client: usize,
    /// On SIGTERM, how long in-flight requests get to finish.
    #[serde(deserialize_with = "crate::config::units::millis", default = "defaults::drain_timeout_ms")]
    pub drain_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: defaults::max_in_flight(),
            max_in_flight_per_client: defaults::max_in_flight_per_client(),
            drain_timeout_ms: defaults::drain_timeout_ms(),
        }
    }
}

/// Defaults, chosen for a gateway in front of a national service: short handshakes (a slow
/// handshake is an attack or a broken peer), bodies sized for two to six fingerprint images.
pub mod defaults {
    pub fn crl_expired() -> crate::tls::crl::ExpiredCrl {
        crate::tls::crl::ExpiredCrl::Refuse
    }
    pub fn handshake_timeout_ms() -> u64 {
        5_000
    }
    pub fn max_connections() -> usize {
        4_096
    }
    pub fn max_connections_per_source() -> usize {
        512
    }
    pub fn max_connections_per_client() -> usize {
        256
    }
    pub fn max_in_flight_per_client() -> usize {
        128
    }
    pub fn request_timeout_ms() -> u64 {
        30_000
    }
    pub fn connect_timeout_ms() -> u64 {
        2_000
    }
    pub fn response_timeout_ms() -> u64 {
        15_000
    }
    pub fn max_response_bytes() -> usize {
        4 * 1024 * 1024
    }
    pub fn pool_max_connections() -> usize {
        64
    }
    pub fn pool_max_idle() -> usize {
        64
    }
    pub fn pool_idle_timeout_ms() -> u64 {
        90_000
    }
    pub fn breaker_failures() -> u32 {
        5
    }
    pub fn breaker_open_ms() -> u64 {
        2_000
    }
    /// Six fingerprints of up to 50 KB each, base64-encoded, plus the envelope.
    pub fn bio_max_body() -> usize {
        512 * 1024
    }
    pub fn csn_max_body() -> usize {
        256 * 1024
    }
    pub fn max_in_flight() -> usize {
        1_024
    }
    pub fn drain_timeout_ms() -> u64 {
        10_000
    }
}

impl GatewayConfig {
    /// Loads `gateway.toml`: parses it, resolves relative paths, checks that every file exists
    /// and that the settings agree with each other.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key at fault: a parse error, a file or directory that does not
    /// exist, settings that disagree (a callback listener without its upstream, `require_signed`
    /// without signers, an unknown route).
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let mut cfg: GatewayConfig = read_toml(file)?;
        let base = file.parent().unwrap_or(Path::new("."));
        cfg.resolve(base, file)?;
        if cfg.callback.is_some() && cfg.upstream.police_callback.is_none() {
            return Err(ConfigError::new(
                file,
                "upstream.police_callback",
                "missing: the [callback] listener needs somewhere to deliver callbacks",
            ));
        }
        cfg.check_custody(file)?;
        if cfg.policy.require_signed && cfg.policy.signers.is_empty() {
            return Err(ConfigError::new(
                file,
                "policy.signers",
                "require_signed = true needs at least one officer key",
            ));
        }
        cfg.check_xml(file)?;
        cfg.check_positive(file)?;
        if !cfg.admin.listen.ip().is_loopback() {
            tracing::warn!(
                admin = %cfg.admin.listen,
                "admin.listen is not a loopback address: /healthz, /readyz and /metrics answer anyone who reaches it, without authentication (firewall it to the balancer and the monitoring)"
            );
        }
        Ok(cfg)
    }

    /// Settings where 0 would switch something essential off without saying so: refused, the
    /// key named.
    fn check_positive(&self, file: &Path) -> Result<(), ConfigError> {
        let a = &self.audit;
        let mut values: Vec<(String, u64)> = vec![
            ("audit.durable_timeout_ms".into(), a.durable_timeout_ms),
            ("audit.checkpoint_every".into(), a.checkpoint_every),
            ("audit.checkpoint_interval_ms".into(), a.checkpoint_interval_ms),
            ("audit.segment_max_bytes".into(), a.segment_max_bytes),
            ("audit.segment_max_age_s".into(), a.segment_max_age_s),
            ("audit.queue".into(), a.queue as u64),
            ("limits.max_in_flight".into(), self.limits.max_in_flight as u64),
            ("limits.max_in_flight_per_client".into(), self.limits.max_in_flight_per_client as u64),
        ];
        let mut listener = |name: &str, l: &ListenerConfig| {
            values.push((format!("{name}.handshake_timeout_ms"), l.handshake_timeout_ms));
            values.push((format!("{name}.request_timeout_ms"), l.request_timeout_ms));
            values.push((format!("{name}.max_connections"), l.max_connections as u64));
        };
        listener("police", &self.police);
        if let Some(c) = &self.callback {
            listener("callback", c);
        }
        let mut upstream = |name: &str, u: &UpstreamConfig| {
            for (key, v) in [
                ("connect_timeout_ms", u.connect_timeout_ms),
                ("handshake_timeout_ms", u.handshake_timeout_ms),
                ("response_timeout_ms", u.response_timeout_ms),
                ("body_timeout_ms", u.body_timeout_ms),
                ("max_response_bytes", u.max_response_bytes as u64),
            ] {
                values.push((format!("upstream.{name}.{key}"), v));
            }
        };
        upstream("ministry", &self.upstream.ministry);
        if let Some(u) = &self.upstream.police_callback {
            upstream("police_callback", u);
        }
        match values.into_iter().find(|(_, v)| *v == 0) {
            Some((key, _)) => Err(ConfigError::new(file, key, "must be more than 0")),
            None => Ok(()),
        }
    }

    /// Every path relative to the file's directory (`base`), and checked to exist where it must.
    fn resolve(&mut self, base: &Path, file: &Path) -> Result<(), ConfigError> {
        let cfg = self;
        cfg.police.resolve(base, file, "police")?;
        if let Some(cb) = cfg.callback.as_mut() {
            cb.resolve(base, file, "callback")?;
        }
        cfg.upstream.ministry.resolve(base, file, "upstream.ministry")?;
        if let Some(up) = cfg.upstream.police_callback.as_mut() {
            up.resolve(base, file, "upstream.police_callback")?;
        }
        if let Some(dir) = cfg.xml.schemas.as_mut() {
            resolve_dir(dir, base, file, "xml.schemas")?;
        }
        if cfg.audit.dir.is_relative() {
            cfg.audit.dir = base.join(&cfg.audit.dir);
        }
        cfg.audit.checkpoint_key.resolve(base, file, "audit.checkpoint_key")?;
        cfg.audit.pseudonym_key.resolve(base, file, "audit.pseudonym_key")?;
        if let Some(p) = cfg.pair.as_mut() {
            p.resolve(base, file)?;
        }
        if let Some(t) = cfg.tpm.as_mut() {
            if t.dir.is_relative() {
                t.dir = base.join(&t.dir);
            }
            t.check().map_err(|p| ConfigError::new(file, "tpm", p))?;
        }
        if let Some(dir) = cfg.policy.dir.as_mut() {
            resolve_dir(dir, base, file, "policy.dir")?;
        }
        for (i, signer) in cfg.policy.signers.iter_mut().enumerate() {
            resolve_file(signer, base, file, &format!("policy.signers[{i}]"))?;
        }
        // The newest signed bundle's serial is kept with the gateway's other state.
        match cfg.policy.serial_file.as_mut() {
            Some(f) if f.is_relative() => *f = base.join(&*f),
            Some(_) => {}
            None => cfg.policy.serial_file = Some(cfg.audit.dir.join(crate::policy::SERIAL_FILE)),
        }
        Ok(())
    }

    /// `[xml]`: route names known, header entries named as `{namespace}local`.
    fn check_xml(&self, file: &Path) -> Result<(), ConfigError> {
        for (table, name) in
            self.xml.routes.keys().map(|n| ("routes", n)).chain(self.xml.headers.keys().map(|n| ("headers", n)))
        {
            if crate::config::RouteName::parse(name).is_none() {
                return Err(ConfigError::new(
                    file,
                    format!("xml.{table}.{name}"),
                    format!("unknown route ({})", crate::config::RouteName::list()),
                ));
            }
        }
        for (route, allow) in &self.xml.headers {
            for (dir, names) in [("request", &allow.request), ("reply", &allow.reply)] {
                if let Some(bad) = names.iter().find(|n| clark_name(n).is_none()) {
                    return Err(ConfigError::new(
                        file,
                        format!("xml.headers.{route}.{dir}"),
                        format!("{bad:?} is not a {{namespace}}local name"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A directory named by `key`, relative to `base`; it must exist.
fn resolve_dir(dir: &mut PathBuf, base: &Path, file: &Path, key: &str) -> Result<(), ConfigError> {
    if dir.is_relative() {
        *dir = base.join(&*dir);
    }
    if !dir.is_dir() {
        return Err(ConfigError::new(file, key, format!("{} is not a directory", dir.display())));
    }
    Ok(())
}

impl GatewayConfig {
    /// Every private key the configuration names, with its key path.
    pub fn key_refs(&self) -> Vec<(String, &crate::keys::KeyRef)> {
        let mut v = vec![("police.key".to_owned(), &self.police.key)];
        if let Some(c) = &self.callback {
            v.push(("callback.key".into(), &c.key));
        }
        v.push(("upstream.ministry.key".into(), &self.upstream.ministry.key));
        if let Some(u) = &self.upstream.police_callback {
            v.push(("upstream.police_callback.key".into(), &u.key));
        }
        v.push(("audit.checkpoint_key".into(), &self.audit.checkpoint_key));
        v.push(("audit.pseudonym_key".into(), &self.audit.pseudonym_key));
        if let Some(p) = &self.pair {
            v.push(("pair.key".into(), &p.key));
            v.push(("pair.witness_key".into(), &p.witness_key));
        }
        v
    }

    /// `tpm:` keys need `[tpm]`; `require_tpm` refuses every file key.
    fn check_custody(&self, file: &Path) -> Result<(), ConfigError> {
        for (key, r) in self.key_refs() {
            match r {
                crate::keys::KeyRef::Tpm(name) if self.tpm.is_none() => {
                    return Err(ConfigError::new(file, key, format!("tpm:{name} needs a [tpm] section")));
                }
                crate::keys::KeyRef::File(p) if self.require_tpm => {
                    return Err(ConfigError::new(
                        file,
                        key,
                        format!(
                            "require_tpm = true refuses the file key {}; name a TPM key (tpm:NAME) \
                             provisioned with `spocgw tpm provision`",
                            p.display()
                        ),
                    ));
                }
                _ => {}
            }
        }
        if self.bare_proxy && self.require_tpm {
            return Err(ConfigError::new(
                file,
                "bare_proxy",
                "bare_proxy (benchmark mode: no validation, policy or audit) is refused with require_tpm = true",
            ));
        }
        if self.bare_proxy_audit && !self.bare_proxy {
            return Err(ConfigError::new(file, "bare_proxy_audit", "bare_proxy_audit needs bare_proxy = true"));
        }
        if self.require_tpm && self.tpm.is_none() {
            return Err(ConfigError::new(file, "require_tpm", "require_tpm = true needs a [tpm] section"));
        }
        Ok(())
    }
}

impl ListenerConfig {
    /// # Errors
    /// A [`ConfigError`] naming the listener's key whose file does not exist.
    pub fn resolve(&mut self, base: &Path, file: &Path, table: &str) -> Result<(), ConfigError> {
        resolve_file(&mut self.cert, base, file, &format!("{table}.cert"))?;
        self.key.resolve(base, file, &format!("{table}.key"))?;
        resolve_file(&mut self.client_ca, base, file, &format!("{table}.client_ca"))?;
        for (i, crl) in self.crls.iter_mut().enumerate() {
            resolve_file(crl, base, file, &format!("{table}.crls[{i}]"))?;
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new(file, format!("{table}.max_connections"), "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("g.toml");
        std::fs::write(&f, "[admin]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap();
        let e = read_toml::<Upstreams>(&f).unwrap_err().to_string();
        assert!(e.contains("g.toml"), "{e}");
        let e2 = read_toml::<GatewayConfig>(&f).unwrap_err().to_string();
        assert!(e2.contains("bogus") && e2.contains("admin"), "{e2}");
    }

    #[test]
    fn an_upstream_pool_of_no_connections_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, "").unwrap();
            p
        };
        let mut u = UpstreamConfig::client("https://127.0.0.1:1", &f("ca.pem"), &f("c.pem"), &f("c.key"));
        let file = dir.path().join("gateway.toml");
        assert!(u.resolve(dir.path(), &file, "upstream.ministry").is_ok());
        u.pool_max_connections = 0;
        let e = u.resolve(dir.path(), &file, "upstream.ministry").unwrap_err().to_string();
        assert!(e.contains("upstream.ministry.pool_max_connections") && e.contains("at least 1"), "{e}");
    }
}
