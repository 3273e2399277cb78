//! Signed bundles: `spocgw policy sign --key KEY [--serial N] DIR` writes `DIR/bundle.sig`, an
//! ECDSA P-256 signature over the bundle's serial and canonical digest. With
//! `require_signed = true` the gateway loads only bundles whose signature verifies under one of
//! the configured officer keys, and never one with a lower serial than it has loaded before
//! (an older signed bundle put back is a rollback).

use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, SubjectPublicKeyInfoDer};
use x509_parser::prelude::FromDer;

use super::bundle::{BundleError, SIGNATURE_FILE, canonical_digest, read_dir};

const DOMAIN: &str = "spocgw-policy-bundle-v2";
const DOMAIN_V1: &str = "spocgw-policy-bundle-v1";

fn message(serial: u64, digest: &str) -> Vec<u8> {
    format!("{DOMAIN}\0{serial}\0{digest}").into_bytes()
}

/// The serial in `dir/bundle.sig`, if there is a readable one.
fn previous_serial(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(SIGNATURE_FILE)).ok()?;
    text.lines().find_map(|l| l.strip_prefix("serial: ")).and_then(|n| n.parse().ok())
}

fn sig_err(m: impl Into<String>) -> BundleError {
    BundleError::Signature(m.into())
}

/// Signs the bundle in `dir` with the PKCS#8 P-256 key in `key` under `serial` (default: one
/// more than the serial of the signature it replaces, or 1); returns the serial and digest.
///
/// # Errors
/// The key cannot be read or is not a PKCS#8 P-256 key, or the bundle cannot be read or the
/// signature written.
pub fn sign(dir: &Path, key: &Path, serial: Option<u64>) -> Result<(u64, String), BundleError> {
    let serial = match serial {
        Some(0) => return Err(sig_err("serials start at 1")),
        Some(n) => n,
        None => previous_serial(dir).map_or(1, |n| n.saturating_add(1)),
    };
    let files = read_dir(dir)?;
    let digest = canonical_digest(&files);
    let der = match PrivateKeyDer::from_pem_file(key).map_err(|e| sig_err(format!("{}: {e}", key.display())))? {
        PrivateKeyDer::Pkcs8(k) => k,
        _ => return Err(sig_err(format!("{}: the key must be PKCS#8 (BEGIN PRIVATE KEY)", key.display()))),
    };
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der.secret_pkcs8_der())
        .map_err(|_| sig_err(format!("{}: not an ECDSA P-256 key", key.display())))?;
    let sig = pair.sign(&SystemRandom::new(), &message(serial, &digest)).map_err(|_| sig_err("signing failed"))?;
    let text = format!("{DOMAIN}\nserial: {serial}\ndigest: {digest}\nsignature: {}\n", B64.encode(sig.as_ref()));
    std::fs::write(dir.join(SIGNATURE_FILE), text)
        .map_err(|e| BundleError::Io { path: dir.join(SIGNATURE_FILE), reason: e.to_string() })?;
    Ok((serial, digest))
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

/// Checks `files`' signature against `signers`; the serial it signs.
///
/// # Errors
/// No signature file, a signature over other files, or none of `signers` signed it.
pub fn verify(files: &[(String, Vec<u8>)], signers: &[PathBuf]) -> Result<u64, BundleError> {
    let sig_text = files
        .iter()
        .find(|(n, _)| n == SIGNATURE_FILE)
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(|| sig_err("the bundle is not signed (no bundle.sig) and require_signed is set"))?;
    let mut lines = sig_text.lines();
    match lines.next() {
        Some(DOMAIN) => {}
        Some(DOMAIN_V1) => {
            return Err(sig_err(
                "bundle.sig is a version-1 signature, without a serial: sign the bundle again \
                 (`spocgw policy sign` adds one)",
            ));
        }
        _ => return Err(sig_err("bundle.sig is not a spocgw bundle signature")),
    }
    let field = |l: Option<&str>, name: &str| -> Result<String, BundleError> {
        l.and_then(|l| l.strip_prefix(name))
            .map(str::to_owned)
            .ok_or_else(|| sig_err(format!("bundle.sig has no {name}")))
    };
    let serial: u64 = field(lines.next(), "serial: ")?
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| sig_err("bundle.sig: the serial is not a number from 1"))?;
    let signed_digest = field(lines.next(), "digest: ")?;
    let sig = B64.decode(field(lines.next(), "signature: ")?).map_err(|_| sig_err("bundle.sig: bad base64"))?;
    let digest = canonical_digest(files);
    if signed_digest != digest {
        return Err(sig_err("the bundle changed after it was signed (digest differs)"));
    }
    for s in signers {
        let point = signer_point(s)?;
        if UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &point).verify(&message(serial, &digest), &sig).is_ok() {
            return Ok(serial);
        }
    }
    Err(sig_err("the signature does not verify under any configured officer key"))
}

/// Verifies the signature of the bundle in `dir`.
///
/// # Errors
/// As [`read_dir`] and [`verify`].
pub fn verify_dir(dir: &Path, signers: &[PathBuf]) -> Result<u64, BundleError> {
    verify(&read_dir(dir)?, signers)
}
