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

use super::crl::CrlSet;

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

/// Verifies with the revocation lists in force at the handshake (webpki's chain, validity and
/// CRL checks) and adds the explicit clientAuth EKU requirement.
#[derive(Debug)]
pub struct RequireClientAuthEku {
    crls: Arc<CrlSet>,
}

impl RequireClientAuthEku {
    pub fn new(crls: Arc<CrlSet>) -> Self {
        Self { crls }
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
        self.crls.root_hints()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .crls
            .current()
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|_| note_refused(end_entity))?;
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
        self.crls.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.crls.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.crls.current().supported_verify_schemes()
    }
}
