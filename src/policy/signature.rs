//! Signed bundles: `spocgw policy sign --key KEY [--serial N] DIR` writes `DIR/bundle.sig`, an
//! ECDSA P-256 signature over the bundle's serial and canonical digest. With
//! `require_signed = true` the gateway loads only bundles whose signature verifies under one of
//! the configured officer keys, and never one with a lower serial than it has loaded before
//! (an older signed bundle put back is a rollback).

use std::path::{Path, PathBuf};

use super::bundle::{BundleError, SIGNATURE_FILE, read_dir};
use crate::signed::{self, SignedError};

const DOMAIN: &str = "spocgw-policy-bundle-v2";
const DOMAIN_V1: &str = "spocgw-policy-bundle-v1";

/// The serial in `dir/bundle.sig`, if there is a readable one.
fn previous_serial(dir: &Path) -> Option<u64> {
    signed::serial_of(&std::fs::read_to_string(dir.join(SIGNATURE_FILE)).ok()?)
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
    let text = signed::sign(&files, key, DOMAIN, serial).map_err(|e| sig_err(e.to_string()))?;
    std::fs::write(dir.join(SIGNATURE_FILE), text)
        .map_err(|e| BundleError::Io { path: dir.join(SIGNATURE_FILE), reason: e.to_string() })?;
    Ok((serial, signed::canonical_digest(&files)))
}

/// Checks `files`' signature against `signers`; the serial it signs.
///
/// # Errors
/// No signature file, a signature over other files, or none of `signers` signed it.
pub fn verify(files: &[(String, Vec<u8>)], signers: &[PathBuf]) -> Result<u64, BundleError> {
    let points = signers.iter().map(|s| signed::signer_point(s)).collect::<Result<Vec<_>, _>>();
    let points = points.map_err(|e| sig_err(e.to_string()))?;
    match signed::verify(files, &points, DOMAIN) {
        Ok(v) => Ok(v.serial),
        Err(SignedError::Unsigned) => {
            Err(sig_err("the bundle is not signed (no bundle.sig) and require_signed is set"))
        }
        Err(SignedError::WrongDomain { found, .. }) if found == DOMAIN_V1 => Err(sig_err(
            "bundle.sig is a version-1 signature, without a serial: sign the bundle again \
             (`spocgw policy sign` adds one)",
        )),
        Err(SignedError::WrongDomain { .. }) => Err(sig_err("bundle.sig is not a spocgw bundle signature")),
        Err(SignedError::Altered) => Err(sig_err("the bundle changed after it was signed (digest differs)")),
        Err(SignedError::UntrustedSigner(_)) => {
            Err(sig_err("the signature does not verify under any configured officer key"))
        }
        Err(e) => Err(sig_err(e.to_string())),
    }
}

/// Verifies the signature of the bundle in `dir`.
///
/// # Errors
/// As [`read_dir`] and [`verify`].
pub fn verify_dir(dir: &Path, signers: &[PathBuf]) -> Result<u64, BundleError> {
    verify(&read_dir(dir)?, signers)
}
