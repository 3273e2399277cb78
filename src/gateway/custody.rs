//! The keys the gateway signs and keys with, taken from their custody (the TPM, or files), and
//! the record of a start that says which certificates and keys it speaks with.

use std::path::Path;
use std::sync::Arc;

use rustls::sign::SigningKey;

use super::config::GatewayConfig;
use crate::config::ConfigError;
use crate::keys::{KeyRef, KeyStore};
use crate::tls;
use crate::tpm::Tpm;

/// Every key the gateway signs or keys with, taken from their custody.
/// The pair link's TLS key and the witness's Ed25519 seed.
pub(super) type PairKeys = (Arc<dyn SigningKey>, zeroize::Zeroizing<Vec<u8>>);

pub(super) struct Keys {
    pub(super) tpm: Option<Arc<Tpm>>,
    pub(super) police: Arc<dyn SigningKey>,
    pub(super) callback: Option<Arc<dyn SigningKey>>,
    pub(super) ministry: Arc<dyn SigningKey>,
    pub(super) police_callback: Option<Arc<dyn SigningKey>>,
    pub(super) checkpoint: Box<dyn crate::audit::CheckpointSigner>,
    pub(super) pseudonym: zeroize::Zeroizing<Vec<u8>>,
    /// The pair link's TLS key and the witness's seed, with `[pair]`.
    pub(super) pair: Option<PairKeys>,
}

impl Keys {
    pub(super) fn load(cfg: &GatewayConfig, file: &Path) -> Result<Keys, ConfigError> {
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
            pair: match &cfg.pair {
                Some(p) => Some((
                    tls(&p.key, "pair.key")?,
                    store.secret(&p.witness_key).map_err(|e| ConfigError::new(file, "pair.witness_key", e))?,
                )),
                None => None,
            },
            tpm: store.tpm().cloned(),
        };
        Ok(keys)
    }
}

/// The `key_event` record of a start: which certificates and keys this run speaks with (their
/// SHA-256 fingerprints, never the keys), and where each private key lives.
pub(super) fn key_event(cfg: &GatewayConfig) -> crate::audit::Record {
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

/// Every certificate the gateway presents, and the CA bundles it trusts, for
/// `spocgw_certificate_expiry_seconds`.
pub(super) fn cert_expiry(cfg: &GatewayConfig) -> crate::tls::expiry::CertExpiry {
    let mut e = crate::tls::expiry::CertExpiry::default();
    e.add("police", "server", &cfg.police.cert);
    e.add("police", "client_ca", &cfg.police.client_ca);
    if let Some(c) = &cfg.callback {
        e.add("callback", "server", &c.cert);
        e.add("callback", "client_ca", &c.client_ca);
    }
    e.add("ministry", "client", &cfg.upstream.ministry.cert);
    e.add("ministry", "server_ca", &cfg.upstream.ministry.ca);
    if let Some(u) = &cfg.upstream.police_callback {
        e.add("police_callback", "client", &u.cert);
        e.add("police_callback", "server_ca", &u.ca);
    }
    if let Some(p) = &cfg.pair {
        e.add("pair", "server", &p.cert);
        e.add("pair", "client_ca", &p.ca);
    }
    e
}
