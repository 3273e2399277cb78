//! A P-256 key resident in the TPM, as its users need it: a rustls `SigningKey` (the client
//! key toward the Ministry) and an rcgen `SigningKey` (its CSR at provisioning).

use std::fmt;
use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::sign::{Signer, SigningKey};
use rustls_pki_types::SubjectPublicKeyInfoDer;

use super::{Tpm, TpmError};

/// A P-256 key resident in the TPM.
#[derive(Clone)]
pub struct TpmKey {
    tpm: Arc<Tpm>,
    handle: u32,
    point: Vec<u8>,
    spki: Vec<u8>,
}

impl fmt::Debug for TpmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TpmKey({:#010x})", self.handle)
    }
}

impl TpmKey {
    pub fn new(tpm: Arc<Tpm>, handle: u32, point: Vec<u8>) -> Self {
        let spki = crate::encoding::spki_der(&point);
        Self { tpm, handle, point, spki }
    }

    pub fn point(&self) -> &[u8] {
        &self.point
    }

    pub fn tpm(&self) -> &Arc<Tpm> {
        &self.tpm
    }

    /// Signs a SHA-256 digest in the TPM; DER signature. Blocks (never call it on an async
    /// worker without `block_in_place`).
    ///
    /// # Errors
    /// As [`Tpm::sign`].
    pub fn sign_digest(&self, digest: [u8; 32]) -> Result<Vec<u8>, TpmError> {
        self.tpm.sign(self.handle, digest)
    }

    /// Hashes `message` (SHA-256) and signs the digest in the TPM; DER signature. Blocks: on a
    /// multi-threaded runtime's worker the wait is announced with `block_in_place`.
    ///
    /// # Errors
    /// As [`Tpm::sign`].
    pub fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, TpmError> {
        let digest = crate::encoding::sha256(message);
        let on_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_worker {
            tokio::task::block_in_place(|| self.tpm.sign(self.handle, digest))
        } else {
            self.tpm.sign(self.handle, digest)
        }
    }
}

impl SigningKey for TpmKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered.contains(&SignatureScheme::ECDSA_NISTP256_SHA256).then(|| Box::new(self.clone()) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki.as_slice()))
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::ECDSA
    }
}

impl Signer for TpmKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.sign_message(message).map_err(|e| {
            tracing::error!(error = %e, "TLS signature with the TPM key failed");
            rustls::Error::General(format!("TPM signature failed: {e}"))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

impl rcgen::PublicKeyData for TpmKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for TpmKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.sign_message(msg).map_err(|_| rcgen::Error::RingUnspecified)
    }
}
