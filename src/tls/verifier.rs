//! Client certificate verification: webpki's chain, validity and CRL checks, plus what webpki
//! leaves open: a client certificate must *carry* an extended key usage naming clientAuth
//! (webpki accepts a certificate without any EKU extension for every purpose).

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

tokio::task_local! {
    /// The end-entity certificate verification refused in the handshake this task runs: the
    /// verifier sees it, the connection does not keep it when verification fails.
    static REFUSED: RefCell<Option<Vec<u8>>>;
}

/// Runs a handshake and returns its result with the certificate the client presented, if the
/// verifier refused one in it (for the listener's refusal record: who tried).
pub async fn with_refused_certificate<F: Future>(handshake: F) -> (F::Output, Option<Vec<u8>>) {
    REFUSED
        .scope(RefCell::new(None), async move {
            let out = handshake.await;
            (out, REFUSED.with(|c| c.borrow_mut().take()))
        })
        .await
}

fn note_refused(der: &[u8]) {
    let _ = REFUSED.try_with(|c| *c.borrow_mut() = Some(der.to_vec()));
}

/// Wraps a verifier and adds the explicit clientAuth EKU requirement.
#[derive(Debug)]
pub struct RequireClientAuthEku {
    inner: Arc<dyn ClientCertVerifier>,
}

impl RequireClientAuthEku {
    pub fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        Self { inner }
    }
}

/// True when the certificate has an EKU extension that includes clientAuth.
pub fn has_client_auth_eku(der: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return false };
    matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth)
}

impl ClientCertVerifier for RequireClientAuthEku {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified =
            self.inner.verify_client_cert(end_entity, intermediates, now).inspect_err(|_| note_refused(end_entity))?;
        if !has_client_auth_eku(end_entity) {
            note_refused(end_entity);
            return Err(Error::InvalidCertificate(CertificateError::InvalidPurpose));
        }
        Ok(verified)
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
