//! Keys read from files (development, tools, tests): a checkpoint signing key (PKCS#8 P-256)
//! and the pseudonymisation key; and what every checkpoint signer is.

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use zeroize::Zeroizing;

/// What signs audit checkpoints: a TPM-resident key (`TpmKey`) or, in development, a file key
/// ([`FileSigner`]).
pub trait CheckpointSigner: Send {
    /// The uncompressed P-256 public point.
    fn public_key(&self) -> Vec<u8>;
    /// An ASN.1 DER ECDSA P-256/SHA-256 signature of `message`.
    ///
    /// # Errors
    /// The key cannot sign (a TPM that does not answer, or a policy that does not allow it).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String>;
    /// Advances a monotonic checkpoint counter kept outside the disk (the TPM's) and returns
    /// its new value; `None` where there is none.
    ///
    /// # Errors
    /// The counter cannot be advanced (the TPM does not answer, or its policy does not allow it).
    fn count(&self) -> Result<Option<u64>, String> {
        Ok(None)
    }
}

/// A PKCS#8 P-256 key from a file (development).
pub struct FileSigner(EcdsaKeyPair);

impl FileSigner {
    /// # Errors
    /// The file cannot be read, or holds no PKCS#8 ECDSA P-256 key.
    pub fn load(path: &Path) -> Result<Self, String> {
        let der = match PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))? {
            PrivateKeyDer::Pkcs8(k) => k,
            _ => return Err(format!("{}: the checkpoint key must be PKCS#8", path.display())),
        };
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der.secret_pkcs8_der())
            .map(FileSigner)
            .map_err(|_| format!("{}: not an ECDSA P-256 key", path.display()))
    }
}

impl CheckpointSigner for FileSigner {
    fn public_key(&self) -> Vec<u8> {
        self.0.public_key().as_ref().to_vec()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.0
            .sign(&SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| "checkpoint signing failed".into())
    }
}

/// The pseudonymisation key from a file: 64 hex digits, or at least 32 raw bytes.
///
/// # Errors
/// The file cannot be read, or holds fewer than 32 bytes.
pub fn load_pseudonym_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let raw = Zeroizing::new(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?);
    let text = String::from_utf8_lossy(&raw).trim().to_owned();
    let bytes: Vec<u8> = match crate::encoding::unhex_array::<32>(&text) {
        Some(key) => key.to_vec(),
        None => raw.to_vec(),
    };
    if bytes.len() < 32 {
        return Err(format!("{}: the pseudonymisation key needs at least 32 bytes", path.display()));
    }
    Ok(Zeroizing::new(bytes))
}
