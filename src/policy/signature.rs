//! Signed bundles: `spocgw policy sign --key KEY DIR` writes `DIR/bundle.sig`, an ECDSA P-256
//! signature over the bundle's canonical digest. With `require_signed = true` the gateway loads
//! only bundles whose signature verifies under one of the configured officer keys.

use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, SubjectPublicKeyInfoDer};
use x509_parser::prelude::FromDer;

use super::bundle::{BundleError, SIGNATURE_FILE, canonical_digest, read_dir};

const DOMAIN: &str = "spocgw-policy-bundle-v1";

fn message(digest: &str) -> Vec<u8> {
    format!("{DOMAIN}\0{digest}").into_bytes()
}

fn sig_err(m: impl Into<String>) -> BundleError {
    BundleError::Signature(m.into())
}

/// Signs the bundle in `dir` with the PKCS#8 P-256 key in `key`; returns the digest signed.
pub fn sign(dir: &Path, key: &Path) -> Result<String, BundleError> {
    let files = read_dir(dir)?;
    let digest = canonical_digest(&files);
    let der = match PrivateKeyDer::from_pem_file(key).map_err(|e| sig_err(format!("{}: {e}", key.display())))? {
        PrivateKeyDer::Pkcs8(k) => k,
        _ => return Err(sig_err(format!("{}: the key must be PKCS#8 (BEGIN PRIVATE KEY)", key.display()))),
    };
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der.secret_pkcs8_der())
        .map_err(|_| sig_err(format!("{}: not an ECDSA P-256 key", key.display())))?;
    let sig = pair.sign(&SystemRandom::new(), &message(&digest)).map_err(|_| sig_err("signing failed"))?;
    let text = format!("{DOMAIN}\ndigest: {digest}\nsignature: {}\n", B64.encode(sig.as_ref()));
    std::fs::write(dir.join(SIGNATURE_FILE), text)
        .map_err(|e| BundleError::Io { path: dir.join(SIGNATURE_FILE), reason: e.to_string() })?;
    Ok(digest)
}

/// The EC point of a signer key: a PEM public key (SPKI) or a certificate.
fn signer_point(path: &Path) -> Result<Vec<u8>, BundleError> {
    let spki: Vec<u8> = match SubjectPublicKeyInfoDer::from_pem_file(path) {
        Ok(spki) => spki.as_ref().to_vec(),
        Err(_) => {
            let cert = CertificateDer::from_pem_file(path).map_err(|e| sig_err(format!("{}: {e}", path.display())))?;
            let (_, c) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref())
                .map_err(|e| sig_err(format!("{}: {e}", path.display())))?;
            c.public_key().raw.to_vec()
        }
    };
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki)
        .map_err(|e| sig_err(format!("{}: {e}", path.display())))?;
    Ok(info.subject_public_key.data.to_vec())
}

/// Checks `files`' signature against `signers`.
pub fn verify(files: &[(String, Vec<u8>)], signers: &[PathBuf]) -> Result<(), BundleError> {
    let sig_text = files
        .iter()
        .find(|(n, _)| n == SIGNATURE_FILE)
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(|| sig_err("the bundle is not signed (no bundle.sig) and require_signed is set"))?;
    let mut lines = sig_text.lines();
    if lines.next() != Some(DOMAIN) {
        return Err(sig_err("bundle.sig is not a spocgw bundle signature"));
    }
    let field = |l: Option<&str>, name: &str| -> Result<String, BundleError> {
        l.and_then(|l| l.strip_prefix(name))
            .map(str::to_owned)
            .ok_or_else(|| sig_err(format!("bundle.sig has no {name}")))
    };
    let signed_digest = field(lines.next(), "digest: ")?;
    let sig = B64.decode(field(lines.next(), "signature: ")?).map_err(|_| sig_err("bundle.sig: bad base64"))?;
    let digest = canonical_digest(files);
    if signed_digest != digest {
        return Err(sig_err("the bundle changed after it was signed (digest differs)"));
    }
    for s in signers {
        let point = signer_point(s)?;
        if UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &point).verify(&message(&digest), &sig).is_ok() {
            return Ok(());
        }
    }
    Err(sig_err("the signature does not verify under any configured officer key"))
}

/// Verifies the signature of the bundle in `dir`.
pub fn verify_dir(dir: &Path, signers: &[PathBuf]) -> Result<(), BundleError> {
    verify(&read_dir(dir)?, signers)
}
