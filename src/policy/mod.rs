//! Access policy (Cedar): who may ask what, for which purpose, how often, and what may flow
//! back. The active bundle sits behind an `ArcSwap`: a reload (SIGHUP, or a change of its files)
//! parses, validates and tests the whole new bundle first, and swaps it in only then; a bad
//! bundle keeps the old one and says why.

pub mod bundle;
pub mod cache;
pub mod cases;
pub mod engine;
pub mod minimise;
pub mod rate;
pub mod signature;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::reload::Reloadable;
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
    #[serde(deserialize_with = "crate::config::units::millis", default = "default_reload_ms")]
    pub reload_interval_ms: u64,
    /// Forwarded CSN messageIDs remembered for callbacks, at most, and for how long.
    #[serde(default = "default_callback_ids")]
    pub callback_ids: usize,
    #[serde(
        deserialize_with = "crate::config::units::seconds_within::<_, 1, { crate::config::units::YEAR_S }>",
        default = "default_callback_ttl"
    )]
    pub callback_ttl_s: u64,
    /// Where the serial of the newest signed bundle loaded is kept, so that an older one is
    /// refused after a restart too (default: `policy.serial` in the audit directory).
    #[serde(default)]
    pub serial_file: Option<PathBuf>,
}

/// The default name of [`PolicyConfig::serial_file`].
pub const SERIAL_FILE: &str = "policy.serial";

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
            serial_file: None,
        }
    }
}

/// The policy stage's state, shared by every request.
pub struct PolicyState {
    /// The bundle in force, and the files refused last and why (kept for `/readyz`).
    bundle: Reloadable<Bundle>,
    rates: ArcSwap<rate::RateLimits>,
    config: PolicyConfig,
    /// The active signed bundle's serial and digest (signed bundles only).
    serial: Mutex<Option<(u64, String)>>,
}

/// The serial and digest last recorded in `file`, if any.
fn recorded_serial(file: &std::path::Path) -> Result<Option<(u64, String)>, BundleError> {
    match std::fs::read_to_string(file) {
        Ok(t) => {
            let mut parts = t.split_whitespace();
            let serial = parts.next().and_then(|n| n.parse().ok());
            let digest = parts.next().map(str::to_owned);
            match (serial, digest) {
                (Some(s), Some(d)) => Ok(Some((s, d))),
                _ => Err(BundleError::Io { path: file.to_path_buf(), reason: "not \"SERIAL DIGEST\"".into() }),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BundleError::Io { path: file.to_path_buf(), reason: e.to_string() }),
    }
}

fn record_serial(file: &std::path::Path, serial: u64, digest: &str) -> Result<(), BundleError> {
    use std::io::Write as _;
    let io = |e: std::io::Error| BundleError::Io { path: file.to_path_buf(), reason: e.to_string() };
    if let Some(d) = file.parent() {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(format!("{serial} {digest}\n").as_bytes()).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, file).map_err(io)
}

/// Whether a signed bundle (`serial`, `digest`) may replace `known`: never an older serial,
/// never another bundle under the same serial.
fn admissible(known: Option<&(u64, String)>, serial: u64, digest: &str) -> Result<(), BundleError> {
    match known {
        Some((s, _)) if serial < *s => Err(BundleError::Signature(format!(
            "serial {serial} is older than the bundle this gateway loaded before (serial {s}): rollback refused"
        ))),
        Some((s, d)) if serial == *s && d != digest => Err(BundleError::Signature(format!(
            "serial {serial} was already loaded with other contents: a changed bundle needs a higher serial"
        ))),
        _ => Ok(()),
    }
}

impl PolicyState {
    /// Loads the configured bundle (verifying its signature when required).
    ///
    /// # Errors
    /// As [`Bundle::from_files`], plus a missing or invalid signature when signatures are required,
    /// or a signed serial older than the one kept.
    pub fn load(config: &PolicyConfig) -> Result<Self, BundleError> {
        let (bundle, serial) = Self::read(config)?;
        let serial = match (serial, &config.serial_file) {
            (Some(n), Some(file)) => {
                admissible(recorded_serial(file)?.as_ref(), n, &bundle.digest)?;
                record_serial(file, n, &bundle.digest)?;
                Some((n, bundle.digest.clone()))
            }
            (Some(n), None) => Some((n, bundle.digest.clone())),
            (None, _) => None,
        };
        Ok(Self {
            serial: Mutex::new(serial),
            rates: ArcSwap::from_pointee(rate::RateLimits::new(&bundle.routes.rate)),
            bundle: Reloadable::new(bundle),
            config: config.clone(),
        })
    }

    /// The bundle, and its serial when it is signed.
    fn read(config: &PolicyConfig) -> Result<(Bundle, Option<u64>), BundleError> {
        match &config.dir {
            None if config.require_signed => Err(BundleError::Signature(
                "require_signed needs a bundle directory ([policy] dir); the built-in bundle is not signed".into(),
            )),
            None => Ok((Bundle::embedded()?, None)),
            Some(dir) => {
                let files = bundle::read_dir(dir)?;
                let serial =
                    if config.require_signed { Some(signature::verify(&files, &config.signers)?) } else { None };
                Ok((Bundle::from_files(&dir.display().to_string(), &files)?, serial))
            }
        }
    }

    /// Checks a signed bundle against the serial in use and records its own.
    fn admit(&self, serial: Option<u64>, digest: &str) -> Result<(), BundleError> {
        let Some(n) = serial else { return Ok(()) };
        let mut known = self.serial.lock().map_err(|_| BundleError::Signature("serial state poisoned".into()))?;
        admissible(known.as_ref(), n, digest)?;
        if let Some(file) = &self.config.serial_file {
            record_serial(file, n, digest)?;
        }
        *known = Some((n, digest.to_owned()));
        Ok(())
    }

    pub fn current(&self) -> Arc<Bundle> {
        self.bundle.get()
    }

    /// The digest of the bundle files on disk now (None for the built-in bundle).
    pub fn disk_digest(&self) -> Option<String> {
        let dir = self.config.dir.as_ref()?;
        bundle::read_dir(dir).ok().map(|f| bundle::canonical_digest(&f))
    }

    /// Re-reads the bundle. On success the new bundle is active and its digest returned; on
    /// failure the old one stays and the reason is kept for `/readyz`.
    ///
    /// # Errors
    /// As [`PolicyState::load`]; the bundle in force stays.
    pub fn reload(&self) -> Result<String, BundleError> {
        match Self::read(&self.config).and_then(|(b, serial)| self.admit(serial, &b.digest).map(|()| b)) {
            Ok(b) => {
                let digest = b.digest.clone();
                if !self.rates.load().same_rates(&b.routes.rate) {
                    self.rates.store(Arc::new(rate::RateLimits::new(&b.routes.rate)));
                }
                self.bundle.put(b);
                Ok(digest)
            }
            Err(e) => {
                self.bundle.refuse(self.disk_digest().unwrap_or_default(), e.to_string());
                Err(e)
            }
        }
    }

    /// The digest whose reload last failed (not retried until the files change again).
    pub fn failed_digest(&self) -> Option<String> {
        self.bundle.refused().map(|(d, _)| d)
    }

    /// # Errors
    /// How long the caller must wait, when it is over its rate on `route`.
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
        let serial = match self.serial.lock().ok().and_then(|s| s.as_ref().map(|(n, _)| *n)) {
            Some(n) => format!(", serial {n}"),
            None => String::new(),
        };
        match self.bundle.refused() {
            None => format!("policy: ok {short} ({}{serial})\n", b.origin),
            Some((_, reason)) => format!("policy: reload-failed, {short} still active: {reason}\n"),
        }
    }
}
