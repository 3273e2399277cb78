//! `[upstream.ministry]` and `[upstream.police_callback]`: where an upstream is, how the
//! gateway proves itself to it and checks it, and the pool's and breaker's limits.

use std::path::{Path, PathBuf};

use http::Uri;
use serde::Deserialize;

use super::super::config::defaults;
use crate::config::{ConfigError, resolve_file};

/// A mutual-TLS upstream, reached through a pool of kept-alive connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `https://host:port`; requests go to the same path as they arrived on.
    pub url: String,
    /// CA certificates the upstream's server certificate must chain to (pinning).
    pub ca: PathBuf,
    /// Client certificate chain and key the gateway presents (`tpm:NAME` for a TPM key).
    pub cert: PathBuf,
    pub key: crate::keys::KeyRef,
    /// Name checked against the server certificate; the URL's host when absent.
    pub server_name: Option<String>,
    /// SHA-256 (hex) of the SubjectPublicKeyInfo the upstream's certificate must carry, one of
    /// these, on top of chaining to `ca` (key pinning; several for a key rollover).
    #[serde(default)]
    pub spki_sha256: Vec<String>,
    #[serde(default)]
    pub tls12: bool,
    /// Offer HTTP/2 by ALPN (HTTP/1.1 keep-alive otherwise).
    #[serde(default)]
    pub http2: bool,
    #[serde(deserialize_with = "crate::config::units::millis", default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(deserialize_with = "crate::config::units::millis", default = "defaults::handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// From the request sent to the response's headers.
    #[serde(deserialize_with = "crate::config::units::millis", default = "defaults::response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// From the response's headers to the end of its body.
    #[serde(deserialize_with = "crate::config::units::millis", default = "defaults::response_timeout_ms")]
    pub body_timeout_ms: u64,
    #[serde(deserialize_with = "crate::config::units::bytes", default = "defaults::max_response_bytes")]
    pub max_response_bytes: usize,
    /// HTTP/1.1 connections to this upstream at once (each carries one exchange at a time);
    /// a request finding them all busy waits for one, up to `response_timeout_ms` (it waits on
    /// earlier exchanges with the upstream).
    #[serde(default = "defaults::pool_max_connections")]
    pub pool_max_connections: usize,
    #[serde(default = "defaults::pool_max_idle")]
    pub pool_max_idle: usize,
    #[serde(deserialize_with = "crate::config::units::millis", default = "defaults::pool_idle_timeout_ms")]
    pub pool_idle_timeout_ms: u64,
    /// Attempts in a row that cannot reach the upstream before the circuit breaker opens
    /// (requests refused at once); 0 turns it off.
    #[serde(default = "defaults::breaker_failures")]
    pub breaker_failures: u32,
    /// How long the breaker stays open before one trial request may go.
    #[serde(deserialize_with = "crate::config::units::millis", default = "defaults::breaker_open_ms")]
    pub breaker_open_ms: u64,
}

impl UpstreamConfig {
    /// What the upstream's TLS needs.
    pub fn client_tls(&self) -> crate::tls::ClientTlsConfig {
        crate::tls::ClientTlsConfig {
            ca: self.ca.clone(),
            spki_sha256: self.spki_sha256.clone(),
            cert: self.cert.clone(),
            tls12: self.tls12,
            http2: self.http2,
        }
    }

    /// # Errors
    /// A [`ConfigError`] naming the upstream's key whose file does not exist.
    pub fn resolve(&mut self, base: &Path, file: &Path, table: &str) -> Result<(), ConfigError> {
        resolve_file(&mut self.ca, base, file, &format!("{table}.ca"))?;
        resolve_file(&mut self.cert, base, file, &format!("{table}.cert"))?;
        self.key.resolve(base, file, &format!("{table}.key"))?;
        self.uri().map_err(|p| ConfigError::new(file, format!("{table}.url"), p))?;
        if self.pool_max_connections == 0 {
            return Err(ConfigError::new(file, format!("{table}.pool_max_connections"), "must be at least 1"));
        }
        crate::tls::pinned::parse_pins(&self.spki_sha256)
            .map_err(|p| ConfigError::new(file, format!("{table}.spki_sha256"), p))?;
        Ok(())
    }

    /// The upstream's base URI: `https`, a host and a port, nothing else.
    ///
    /// # Errors
    /// The URL does not parse, is not `https`, or lacks a host.
    pub fn uri(&self) -> Result<Uri, String> {
        let uri: Uri = self.url.parse().map_err(|e| format!("not a URL: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err("must start with https://".into());
        }
        if uri.host().is_none() {
            return Err("has no host".into());
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err("must not have a path (requests keep the path they arrived on)".into());
        }
        Ok(uri)
    }

    /// A client-side upstream for tools and tests: a URL with the given key pair and CA.
    pub fn client(url: impl Into<String>, ca: &Path, cert: &Path, key: &Path) -> Self {
        Self {
            url: url.into(),
            ca: ca.to_path_buf(),
            cert: cert.to_path_buf(),
            key: key.into(),
            server_name: None,
            spki_sha256: Vec::new(),
            tls12: false,
            http2: false,
            connect_timeout_ms: defaults::connect_timeout_ms(),
            handshake_timeout_ms: defaults::handshake_timeout_ms(),
            response_timeout_ms: defaults::response_timeout_ms(),
            body_timeout_ms: defaults::response_timeout_ms(),
            max_response_bytes: defaults::max_response_bytes(),
            pool_max_connections: defaults::pool_max_connections(),
            pool_max_idle: defaults::pool_max_idle(),
            pool_idle_timeout_ms: defaults::pool_idle_timeout_ms(),
            breaker_failures: defaults::breaker_failures(),
            breaker_open_ms: defaults::breaker_open_ms(),
        }
    }
}
