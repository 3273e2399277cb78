//! Access policy (Cedar): who may ask what, for which purpose, how often, and what may flow
//! back. The active bundle sits behind an `ArcSwap`: a reload (SIGHUP, or a change of its files)
//! parses, validates and tests the whole new bundle first, and swaps it in only then; a bad
//! bundle keeps the old one and says why.

pub mod bundle;
pub mod cache;
pub mod cases;
pub mod correlation;
pub mod engine;
pub mod minimise;
pub mod rate;
pub mod signature;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Deserialize;

pub use bundle::{Bundle, BundleError};
pub use engine::{Caller, Decision};

/// `[policy]` in gateway.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Bundle directory; the compiled-in default bundle when absent.
    pub dir: Option<PathBuf>,
    /// Load only bundles signed by one of `signers`.
    #[serde(default)]
    pub require_signed: bool,
    /// Officer public keys (PEM SPKI) or certificates.
    #[serde(default)]
    pub signers: Vec<PathBuf>,
    /// How often the bundle's files are checked for changes.
    #[serde(default = "default_reload_ms")]
    pub reload_interval_ms: u64,
    /// Forwarded CSN messageIDs remembered for callbacks, at most, and for how long.
    #[serde(default = "default_callback_ids")]
    pub callback_ids: usize,
    #[serde(default = "default_callback_ttl")]
    pub callback_ttl_s: u64,
}

fn default_reload_ms() -> u64 {
    2_000
}
fn default_callback_ids() -> usize {
    100_000
}
fn default_callback_ttl() -> u64 {
    7 * 24 * 3600
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: None,
            require_signed: false,
            signers: Vec::new(),
            reload_interval_ms: default_reload_ms(),
            callback_ids: default_callback_ids(),
            callback_ttl_s: default_callback_ttl(),
        }
    }
}

/// The policy stage's state, shared by every request.
pub struct PolicyState {
    bundle: ArcSwap<Bundle>,
    rates: ArcSwap<rate::RateLimits>,
    pub forwarded: correlation::ForwardedIds,
    config: PolicyConfig,
    /// Why the last reload failed, while the old bundle stays active.
    last_error: Mutex<Option<(String, String)>>,
}

impl PolicyState {
    /// Loads the configured bundle (verifying its signature when required).
    pub fn load(config: &PolicyConfig) -> Result<Self, BundleError> {
        let bundle = Self::read(config)?;
        Ok(Self {
            rates: ArcSwap::from_pointee(rate::RateLimits::new(&bundle.routes.rate)),
            bundle: ArcSwap::from_pointee(bundle),
            forwarded: correlation::ForwardedIds::new(config.callback_ids, Duration::from_secs(config.callback_ttl_s)),
            config: config.clone(),
            last_error: Mutex::new(None),
        })
    }

    fn read(config: &PolicyConfig) -> Result<Bundle, BundleError> {
        match &config.dir {
            None if config.require_signed => Err(BundleError::Signature(
                "require_signed needs a bundle directory ([policy] dir); the built-in bundle is not signed".into(),
            )),
            None => Bundle::embedded(),
            Some(dir) => {
                let files = bundle::read_dir(dir)?;
                if config.require_signed {
                    signature::verify(&files, &config.signers)?;
                }
                Bundle::from_files(&dir.display().to_string(), &files)
            }
        }
    }

    pub fn current(&self) -> Arc<Bundle> {
        self.bundle.load_full()
    }

    /// The digest of the bundle files on disk now (None for the built-in bundle).
    pub fn disk_digest(&self) -> Option<String> {
        let dir = self.config.dir.as_ref()?;
        bundle::read_dir(dir).ok().map(|f| bundle::canonical_digest(&f))
    }

    /// Re-reads the bundle. On success the new bundle is active and its digest returned; on
    /// failure the old one stays and the reason is kept for `/readyz`.
    pub fn reload(&self) -> Result<String, BundleError> {
        match Self::read(&self.config) {
            Ok(b) => {
                let digest = b.digest.clone();
                if !self.rates.load().same_rates(&b.routes.rate) {
                    self.rates.store(Arc::new(rate::RateLimits::new(&b.routes.rate)));
                }
                self.bundle.store(Arc::new(b));
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                Ok(digest)
            }
            Err(e) => {
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some((self.disk_digest().unwrap_or_default(), e.to_string()));
                }
                Err(e)
            }
        }
    }

    /// The digest whose reload last failed (not retried until the files change again).
    pub fn failed_digest(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.as_ref().map(|(d, _)| d.clone()))
    }

    pub fn check_rate(&self, route: &str, caller: &str) -> Result<(), Duration> {
        self.rates.load().check(route, caller)
    }

    pub fn prune_rates(&self) {
        self.rates.load().prune();
    }

    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.config.reload_interval_ms.max(100))
    }

    /// One line for `/readyz`.
    pub fn status_line(&self) -> String {
        let b = self.current();
        let short = &b.digest[..16];
        match self.last_error.lock().ok().and_then(|e| e.clone()) {
            None => format!("policy: ok {short} ({})\n", b.origin),
            Some((_, reason)) => format!("policy: reload-failed, {short} still active: {reason}\n"),
        }
    }
}
