//! The upstream's server certificate check: it must chain to the configured CA (webpki, with
//! the name checked), and, when SPKI pins are configured, carry a public key whose
//! SubjectPublicKeyInfo SHA-256 is one of them (DESIGN.md: "pinned to its CA, and optionally
//! SPKI hashes"). A CA that issues a certificate for the Ministry's name to someone else does
//! not get through a pinned upstream.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, RootCertStore, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::TlsError;

#[derive(Debug)]
pub struct PinnedServer {
    inner: Arc<WebPkiServerVerifier>,
    pins: Vec<[u8; 32]>,
}

/// The certificate's key is not one of the pinned ones.
#[derive(Debug)]
struct PinMismatch(String);

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the server's public key (SPKI SHA-256 {}) is not one of the pinned keys", self.0)
    }
}

impl std::error::Error for PinMismatch {}

/// Parses pins: SHA-256 of a SubjectPublicKeyInfo, 64 hex digits each.
///
/// # Errors
/// A pin that is not 64 hex digits.
pub fn parse_pins(pins: &[String]) -> Result<Vec<[u8; 32]>, String> {
    pins.iter()
        .map(|p| {
            let p = p.trim();
            crate::encoding::unhex_array(p).ok_or_else(|| format!("{p:?} is not a SHA-256 in hex (64 digits)"))
        })
        .collect()
}

impl PinnedServer {
    /// # Errors
    /// The roots cannot make a verifier (an empty store).
    pub fn new(roots: Arc<RootCertStore>, pins: Vec<[u8; 32]>) -> Result<Arc<Self>, TlsError> {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, super::provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        Ok(Arc::new(Self { inner, pins }))
    }
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verified = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        if self.pins.is_empty() {
            return Ok(verified);
        }
        let (_, cert) = X509Certificate::from_der(end_entity.as_ref())
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let digest = crate::encoding::Sha256::of(cert.public_key().raw);
        if self.pins.contains(&digest.0) {
            return Ok(verified);
        }
        let mismatch = PinMismatch(digest.to_string());
        tracing::warn!(error = %mismatch, "upstream certificate refused: not a pinned key");
        Err(Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(mismatch)))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
