//! A listener's certificate revocation lists, kept current while it serves. The set is read
//! whole (every file parsed, every list checked by webpki when the verifier is built) and
//! swapped in atomically; a set that does not load leaves the previous one in force and says
//! why on `/readyz`. A list past its nextUpdate is treated as the configuration says:
//! `refuse` (the default: a client whose revocation status cannot be known is refused, and
//! the gateway is not ready) or `alarm` (the list is still used, and `/readyz` says it expired).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{DistinguishedName, RootCertStore};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::{TlsError, load_crls, provider};
use crate::reload::Reloadable;

/// What an expired list does (`crl_expired` in a listener's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpiredCrl {
    Refuse,
    Alarm,
}

/// The revocation lists of one listener and the verifier built from them.
pub struct CrlSet {
    listener: &'static str,
    paths: Vec<PathBuf>,
    roots: Arc<RootCertStore>,
    expired: ExpiredCrl,
    hints: Vec<DistinguishedName>,
    /// The lists in force; the files refused last and why; a new generation each time new
    /// lists come into force (connections verified under an older set check their certificate
    /// again before their next request).
    verifier: Reloadable<Loaded>,
}

/// One loaded set.
struct Loaded {
    verifier: Arc<dyn ClientCertVerifier>,
    /// SHA-256 over the files' names and bytes.
    digest: String,
    /// The earliest nextUpdate of the lists (Unix seconds), if any list has one.
    next_update: Option<i64>,
    lists: usize,
}

impl std::fmt::Debug for CrlSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrlSet").field("listener", &self.listener).field("paths", &self.paths).finish()
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl CrlSet {
    /// Loads the lists of `paths` for a listener whose clients chain to `roots`.
    ///
    /// # Errors
    /// A file that cannot be read or holds no valid CRL, or a verifier webpki will not build.
    pub fn load(
        listener: &'static str,
        paths: &[PathBuf],
        roots: Arc<RootCertStore>,
        expired: ExpiredCrl,
    ) -> Result<Self, TlsError> {
        let (digest, _) = files_digest(paths);
        let loaded = build(paths, &roots, expired, digest)?;
        Ok(Self {
            listener,
            paths: paths.to_vec(),
            hints: roots.subjects(),
            roots,
            expired,
            verifier: Reloadable::new(loaded),
        })
    }

    /// Loads the files again if they changed: Some(Ok) when a new set is in force, Some(Err)
    /// when the new files were refused (the previous set stays, and `/readyz` says why), None
    /// when nothing changed (or the refused files did not change either).
    pub fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let (digest, readable) = files_digest(&self.paths);
        if digest == self.verifier.peek().digest || self.verifier.refused().is_some_and(|(d, _)| d == digest) {
            return None;
        }
        let built = if readable {
            build(&self.paths, &self.roots, self.expired, digest.clone()).map_err(|e| e.to_string())
        } else {
            Err("a CRL file cannot be read".to_owned())
        };
        match built {
            Ok(loaded) => {
                self.verifier.put(loaded);
                Some(Ok(()))
            }
            Err(e) => {
                self.verifier.refuse(digest, e.clone());
                Some(Err(e))
            }
        }
    }

    /// Whether the lists in force are past their nextUpdate.
    pub fn expired(&self) -> bool {
        self.verifier.peek().next_update.is_some_and(|t| t < now_unix())
    }

    /// `/readyz`'s line for this set, and whether it lets the gateway be ready: an expired
    /// list under `refuse` refuses every client, so it does not.
    pub fn status(&self) -> (bool, String) {
        let loaded = self.verifier.peek();
        let failed = self.verifier.refused().map(|(_, e)| e);
        let (ok, state) = match (self.expired(), self.expired, failed) {
            (true, ExpiredCrl::Refuse, _) => (false, "expired, every client refused".to_owned()),
            (true, ExpiredCrl::Alarm, _) => (true, "expired (crl_expired = \"alarm\": still used)".to_owned()),
            (false, _, Some(e)) => (true, format!("reload-failed, previous lists still in force: {e}")),
            (false, _, None) => (true, "ok".to_owned()),
        };
        let next = loaded.next_update.map(|t| format!(", next update in {} s", t - now_unix())).unwrap_or_default();
        (ok, format!("crl {}: {state} ({} lists{next})\n", self.listener, loaded.lists))
    }

    pub fn listener(&self) -> &'static str {
        self.listener
    }

    /// The verifier of the lists in force now (for one handshake).
    pub fn current(&self) -> Arc<dyn ClientCertVerifier> {
        self.verifier.peek().verifier.clone()
    }

    /// Which set of lists is in force (a new number each time new lists come into force).
    pub fn generation(&self) -> u64 {
        self.verifier.generation()
    }

    /// Whether a client certificate chain verified at its handshake still passes under the
    /// lists in force now (revoked since, or every client under an expired list: no).
    pub fn still_valid(&self, chain: &[rustls::pki_types::CertificateDer<'static>]) -> bool {
        let Some((end_entity, intermediates)) = chain.split_first() else { return false };
        self.current().verify_client_cert(end_entity, intermediates, rustls::pki_types::UnixTime::now()).is_ok()
    }

    /// The CA names a client is told its certificate must chain to.
    pub fn root_hints(&self) -> &[DistinguishedName] {
        &self.hints
    }

    /// True for a listener configured without CRLs.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// The digest of the files as they are on disk now, and whether every one could be read.
fn files_digest(paths: &[PathBuf]) -> (String, bool) {
    let mut all = Vec::new();
    let mut readable = true;
    for p in paths {
        all.extend_from_slice(p.display().to_string().as_bytes());
        all.push(0);
        match std::fs::read(p) {
            Ok(b) => all.extend_from_slice(&b),
            Err(_) => readable = false,
        }
        all.push(0);
    }
    (crate::encoding::sha256_hex(&all), readable)
}

/// Reads and checks the lists of `paths` and builds their verifier.
fn build(
    paths: &[PathBuf],
    roots: &Arc<RootCertStore>,
    expired: ExpiredCrl,
    digest: String,
) -> Result<Loaded, TlsError> {
    let crls = load_crls(paths)?;
    let mut next_update = None;
    for crl in &crls {
        let (_, parsed) = CertificateRevocationList::from_der(crl.as_ref()).map_err(|e| TlsError::Pem {
            path: paths.first().cloned().unwrap_or_default(),
            reason: format!("not a CRL: {e}"),
        })?;
        if let Some(t) = parsed.next_update() {
            let t = t.timestamp();
            next_update = Some(next_update.map_or(t, |n: i64| n.min(t)));
        }
    }
    let lists = crls.len();
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider()).with_crls(crls);
    if expired == ExpiredCrl::Refuse {
        builder = builder.enforce_revocation_expiration();
    }
    let verifier = builder.build().map_err(|e| TlsError::Verifier(e.to_string()))?;
    Ok(Loaded { verifier, digest, next_update, lists })
}
