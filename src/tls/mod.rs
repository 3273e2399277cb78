//! TLS for every side of the gateway: the listeners' rustls server configurations (client
//! certificates required, verified against CA bundles and CRLs, EKU clientAuth required), the
//! upstreams' client configurations (server pinned to its CA, our client certificate), and the
//! [`PeerIdentity`] taken from a verified peer certificate.
//!
//! One crypto provider (aws-lc-rs) serves the whole process, restricted to ECDHE key exchange
//! and AEAD suites; TLS 1.3 only unless a listener or upstream enables TLS 1.2.

pub mod crl;
pub mod expiry;
mod identity;
pub mod pinned;
mod stream;
pub mod verifier;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

pub use identity::{IdentityError, PeerCache, PeerIdentity};
pub use stream::ServerTls;
pub use verifier::RequireClientAuthEku;

/// Why a TLS configuration could not be built; each names the file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("{path}: cannot read PEM: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path}: no {what} found in the PEM file")]
    Empty { path: PathBuf, what: &'static str },
    #[error("{path}: certificate not usable as a trust anchor: {reason}")]
    TrustAnchor { path: PathBuf, reason: String },
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("certificate and key do not fit together or are unsupported: {0}")]
    KeyPair(String),
    #[error("server name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
}

/// The process's crypto provider: aws-lc-rs, ECDHE key exchange and AEAD suites only.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{self, cipher_suite as cs, kx_group};
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        ..aws_lc_rs::default_provider()
    })
}

fn versions(tls12: bool) -> &'static [&'static SupportedProtocolVersion] {
    static TLS13_AND_12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
    static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
    if tls12 { TLS13_AND_12 } else { TLS13_ONLY }
}

/// Reads every certificate in a PEM file.
///
/// # Errors
/// The file cannot be read, holds no certificate, or its PEM does not parse.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem { path: path.into(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { path: path.into(), what: "certificate" });
    }
    Ok(certs)
}

/// Reads the private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
///
/// # Errors
/// The file cannot be read or holds no private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty { path: path.into(), what: "private key" },
        other => TlsError::Pem { path: path.into(), reason: other.to_string() },
    })
}

fn load_crls(paths: &[PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for path in paths {
        let crls = CertificateRevocationListDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsError::Pem { path: path.clone(), reason: e.to_string() })?;
        if crls.is_empty() {
            return Err(TlsError::Empty { path: path.clone(), what: "CRL" });
        }
        out.extend(crls);
    }
    Ok(out)
}

fn root_store(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::TrustAnchor { path: path.into(), reason: e.to_string() })?;
    }
    Ok(Arc::new(roots))
}

/// ALPN identifiers the listeners offer.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The signing key of a PEM key file (development keys, simulators, tools).
///
/// # Errors
/// As [`load_key`], or a key type rustls cannot sign with.
pub fn file_key(path: &Path) -> Result<Arc<dyn SigningKey>, TlsError> {
    provider()
        .key_provider
        .load_private_key(load_key(path)?)
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), reason: e.to_string() })
}

/// The certificate chain with its key, checked to belong together.
fn certified(cert: &Path, key: Arc<dyn SigningKey>) -> Result<Arc<CertifiedKey>, TlsError> {
    let ck = CertifiedKey::new(load_certs(cert)?, key);
    ck.keys_match().map_err(|e| {
        TlsError::KeyPair(format!("{}: the certificate does not carry this key's public key ({e})", cert.display()))
    })?;
    Ok(Arc::new(ck))
}

/// The rustls configuration of a mutual-TLS listener.
/// What a listener's TLS needs: its certificate chain, the CA its clients chain to, the
/// revocation lists and what an expired one does, whether TLS 1.2 is offered.
#[derive(Debug, Clone)]
pub struct ServerTlsConfig {
    pub cert: PathBuf,
    pub client_ca: PathBuf,
    pub crls: Vec<PathBuf>,
    pub crl_expired: crl::ExpiredCrl,
    pub tls12: bool,
}

/// What an upstream's TLS needs: the CA its certificate chains to, SPKI pins, our certificate
/// chain, TLS 1.2, whether HTTP/2 is offered.
#[derive(Debug, Clone)]
pub struct ClientTlsConfig {
    pub ca: PathBuf,
    pub spki_sha256: Vec<String>,
    pub cert: PathBuf,
    pub tls12: bool,
    pub http2: bool,
}

/// # Errors
/// As [`server_config_with_crls`].
pub fn server_config(l: &ServerTlsConfig, key: Arc<dyn SigningKey>) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with_crls("listener", l, key).map(|(c, _)| c)
}

/// The rustls configuration of a mutual-TLS listener, and its revocation lists (which the
/// caller reloads while the listener serves: [`crl::CrlSet::reload_if_changed`]).
///
/// # Errors
/// The certificate chain, the client CA or a CRL cannot be read or used, or the key does not fit
/// the certificate.
pub fn server_config_with_crls(
    listener: &'static str,
    l: &ServerTlsConfig,
    key: Arc<dyn SigningKey>,
) -> Result<(Arc<ServerConfig>, Arc<crl::CrlSet>), TlsError> {
    let provider = provider();
    let roots = root_store(&l.client_ca)?;
    let crls = Arc::new(crl::CrlSet::load(listener, &l.crls, roots, l.crl_expired)?);
    let verifier = Arc::new(RequireClientAuthEku::new(crls.clone()));
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(l.tls12))
        .map_err(|e| TlsError::Verifier(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified(&l.cert, key)?)));
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    // Tickets would let a revoked client resume without its certificate being checked again.
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok((Arc::new(cfg), crls))
}

/// The rustls configuration for talking to an upstream: its certificate must chain to the
/// configured CA (and carry a pinned key, when `spki_sha256` names some); ours comes from the
/// configured key pair.
///
/// # Errors
/// The CA or the client certificate cannot be read or used, or a pin is malformed.
pub fn client_config(u: &ClientTlsConfig, key: Arc<dyn SigningKey>) -> Result<Arc<ClientConfig>, TlsError> {
    let pins = pinned::parse_pins(&u.spki_sha256).map_err(TlsError::Verifier)?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(u.tls12))
        .map_err(|e| TlsError::Verifier(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(pinned::PinnedServer::new(root_store(&u.ca)?, pins)?)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified(&u.cert, key)?)));
    cfg.alpn_protocols =
        if u.http2 { vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()] } else { vec![ALPN_HTTP11.to_vec()] };
    Ok(Arc::new(cfg))
}

/// Every word [`handshake_failure_reason`] gives: the codes of `handshake_refusal` records.
pub const HANDSHAKE_REASONS: [&str; 13] = [
    "closed",
    "io",
    "no_certificate",
    "revoked",
    "expired",
    "not_yet_valid",
    "untrusted",
    "wrong_purpose",
    "revocation_unknown",
    "bad_certificate",
    "incompatible",
    "alert_received",
    "protocol",
];

/// Why a handshake failed, as one word for metrics and logs (one of [`HANDSHAKE_REASONS`]).
pub fn handshake_failure_reason(err: &std::io::Error) -> &'static str {
    use rustls::{CertificateError as C, Error as E};
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<E>()) else {
        return match err.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => "closed",
            _ => "io",
        };
    };
    match tls {
        E::NoCertificatesPresented => "no_certificate",
        E::InvalidCertificate(c) => match c {
            C::Revoked => "revoked",
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not_yet_valid",
            C::UnknownIssuer => "untrusted",
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => "wrong_purpose",
            C::UnknownRevocationStatus | C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => {
                "revocation_unknown"
            }
            _ => "bad_certificate",
        },
        E::PeerIncompatible(_) | E::NoApplicationProtocol => "incompatible",
        E::AlertReceived(_) => "alert_received",
        _ => "protocol",
    }
}
