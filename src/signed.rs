//! Signed bundles: one mechanism for every set of files the gateway accepts only when someone
//! it trusts signed it (officers' policy bundles, the appliance's configuration from a
//! provisioning medium, channel packs). A bundle is a directory's files; its `bundle.sig`
//! carries a domain (what kind of bundle, so a signature over one kind never passes for
//! another), a serial (which only goes up: an older bundle put back is a rollback, refused by
//! whoever keeps the high-water mark) and an ECDSA P-256 signature over the domain, the serial
//! and the canonical digest of the files.
//!
//! The digest: SHA-256 over, for each file in sorted name order, its name (relative, `/`
//! between folders), a NUL, its length in decimal, a NUL and its bytes; `bundle.sig` is not
//! part of it.

use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, SubjectPublicKeyInfoDer};
use x509_parser::prelude::FromDer;

use crate::encoding::sha256_hex;

/// The signature's file name in a bundle.
pub const SIGNATURE_FILE: &str = "bundle.sig";
/// Bundles larger than this are refused when read (a provisioning medium is not a file store).
const MAX_TREE_BYTES: u64 = 64 << 20;
const MAX_TREE_FILES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignedError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{0}")]
    Key(String),
    #[error("the bundle is not signed (no {SIGNATURE_FILE})")]
    Unsigned,
    #[error("{SIGNATURE_FILE}: {0}")]
    Malformed(String),
    #[error("{SIGNATURE_FILE} signs a {found:?} bundle, not a {expected:?} one")]
    WrongDomain { expected: &'static str, found: String },
    #[error("the bundle changed after it was signed (its digest differs from the signed one)")]
    Altered,
    #[error("the signature does not verify under {0}")]
    UntrustedSigner(String),
}

fn io(path: &Path, e: impl std::fmt::Display) -> SignedError {
    SignedError::Io { path: path.to_path_buf(), reason: e.to_string() }
}

/// A bundle's files: relative names and bytes.
pub type Files = Vec<(String, Vec<u8>)>;

/// The canonical digest of `files` (hex), `bundle.sig` left out.
pub fn canonical_digest(files: &[(String, Vec<u8>)]) -> String {
    let mut sorted: Vec<&(String, Vec<u8>)> = files.iter().filter(|(n, _)| n != SIGNATURE_FILE).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut buf = Vec::new();
    for (name, bytes) in sorted {
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        buf.extend_from_slice(bytes.len().to_string().as_bytes());
        buf.push(0);
        buf.extend_from_slice(bytes);
    }
    sha256_hex(&buf)
}

/// Every regular file under `dir`, with names relative to it. Symbolic links, special files
/// and names that are not plain (`..`, control characters, backslashes) are refused: a bundle
/// is exactly the bytes it names.
///
/// # Errors
/// A file that cannot be read, a link or special file, an odd name, or a tree over the limits.
pub fn read_tree(dir: &Path) -> Result<Files, SignedError> {
    let mut files = Vec::new();
    let mut total = 0u64;
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
            let entry = entry.map_err(|e| io(&d, e))?;
            let path = entry.path();
            let name = entry.file_name().into_string().map_err(|_| io(&path, "the name is not UTF-8"))?;
            if name == "." || name == ".." || name.chars().any(|c| c.is_control() || c == '\\') {
                return Err(io(&path, "not a plain file name"));
            }
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let kind = entry.file_type().map_err(|e| io(&path, e))?;
            if kind.is_dir() {
                stack.push((path, rel));
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
                total += bytes.len() as u64;
                files.push((rel, bytes));
                if total > MAX_TREE_BYTES || files.len() > MAX_TREE_FILES {
                    return Err(io(dir, format!("more than {MAX_TREE_FILES} files or {MAX_TREE_BYTES} bytes")));
                }
            } else {
                return Err(io(&path, "a link or special file (a bundle holds regular files only)"));
            }
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

fn message(domain: &str, serial: u64, digest: &str) -> Vec<u8> {
    format!("{domain}\0{serial}\0{digest}").into_bytes()
}

/// The serial a `bundle.sig` text carries, if it parses that far.
pub fn serial_of(sig_text: &str) -> Option<u64> {
    sig_text.lines().find_map(|l| l.strip_prefix("serial: ")).and_then(|n| n.parse().ok())
}

/// The `bundle.sig` text for `files` under `domain` and `serial`, signed with the PKCS#8 P-256
/// key in `key`.
///
/// # Errors
/// Serial 0, or a key that cannot be read or is not PKCS#8 P-256.
pub fn sign(files: &[(String, Vec<u8>)], key: &Path, domain: &str, serial: u64) -> Result<String, SignedError> {
    if serial == 0 {
        return Err(SignedError::Key("serials start at 1".into()));
    }
    let digest = canonical_digest(files);
    let der = match PrivateKeyDer::from_pem_file(key)
        .map_err(|e| SignedError::Key(format!("{}: {e}", key.display())))?
    {
        PrivateKeyDer::Pkcs8(k) => k,
        _ => return Err(SignedError::Key(format!("{}: the key must be PKCS#8 (BEGIN PRIVATE KEY)", key.display()))),
    };
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der.secret_pkcs8_der())
        .map_err(|_| SignedError::Key(format!("{}: not an ECDSA P-256 key", key.display())))?;
    let sig = pair
        .sign(&SystemRandom::new(), &message(domain, serial, &digest))
        .map_err(|_| SignedError::Key("signing failed".into()))?;
    Ok(format!("{domain}\nserial: {serial}\ndigest: {digest}\nsignature: {}\n", B64.encode(sig.as_ref())))
}

/// What a verified signature says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub serial: u64,
    /// The canonical digest (hex) of the files it covers.
    pub digest: String,
    /// The index in `signers` of the key that signed.
    pub signer: usize,
}

/// Checks the signature in `files`' `bundle.sig` under `domain` against `signers` (uncompressed
/// P-256 points, as [`signer_point`] reads them).
///
/// # Errors
/// No signature, one of another domain or malformed, files that changed since, or none of the
/// signers signed it.
pub fn verify(files: &[(String, Vec<u8>)], signers: &[Vec<u8>], domain: &'static str) -> Result<Verified, SignedError> {
    let text = files
        .iter()
        .find(|(n, _)| n == SIGNATURE_FILE)
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .ok_or(SignedError::Unsigned)?;
    let mut lines = text.lines();
    match lines.next() {
        Some(d) if d == domain => {}
        Some(d) => return Err(SignedError::WrongDomain { expected: domain, found: d.chars().take(64).collect() }),
        None => return Err(SignedError::Malformed("empty".into())),
    }
    let field = |l: Option<&str>, name: &str| -> Result<String, SignedError> {
        l.and_then(|l| l.strip_prefix(name))
            .map(str::to_owned)
            .ok_or_else(|| SignedError::Malformed(format!("no {name}")))
    };
    let serial: u64 = field(lines.next(), "serial: ")?
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| SignedError::Malformed("the serial is not a number from 1".into()))?;
    let signed_digest = field(lines.next(), "digest: ")?;
    let sig =
        B64.decode(field(lines.next(), "signature: ")?).map_err(|_| SignedError::Malformed("bad base64".into()))?;
    let digest = canonical_digest(files);
    if signed_digest != digest {
        return Err(SignedError::Altered);
    }
    let msg = message(domain, serial, &digest);
    for (i, point) in signers.iter().enumerate() {
        if UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point).verify(&msg, &sig).is_ok() {
            return Ok(Verified { serial, digest, signer: i });
        }
    }
    Err(SignedError::UntrustedSigner(if signers.len() == 1 {
        "the trusted key".into()
    } else {
        "any trusted key".into()
    }))
}

/// The EC point of a signer: a PEM public key (SubjectPublicKeyInfo) or certificate, as bytes.
///
/// # Errors
/// Neither a PEM public key nor a certificate.
pub fn signer_point_pem(pem: &[u8], what: &str) -> Result<Vec<u8>, SignedError> {
    let bad = |e: &dyn std::fmt::Display| SignedError::Key(format!("{what}: {e}"));
    let spki: Vec<u8> = match SubjectPublicKeyInfoDer::from_pem_slice(pem) {
        Ok(spki) => spki.as_ref().to_vec(),
        Err(_) => {
            let cert = CertificateDer::from_pem_slice(pem).map_err(|e| bad(&e))?;
            let (_, c) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref()).map_err(|e| bad(&e))?;
            c.public_key().raw.to_vec()
        }
    };
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).map_err(|e| bad(&e))?;
    Ok(info.subject_public_key.data.to_vec())
}

/// [`signer_point_pem`] of a file.
///
/// # Errors
/// The file cannot be read, or holds neither a PEM public key nor a certificate.
pub fn signer_point(path: &Path) -> Result<Vec<u8>, SignedError> {
    let pem = std::fs::read(path).map_err(|e| io(path, e))?;
    signer_point_pem(&pem, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
        let k = rcgen::KeyPair::generate().unwrap();
        let p = dir.join(name);
        std::fs::write(&p, k.serialize_pem()).unwrap();
        (p, signer_point_pem(k.public_key_pem().as_bytes(), "k").unwrap())
    }

    #[test]
    fn a_signature_binds_domain_serial_and_every_byte() {
        let d = tempfile::tempdir().unwrap();
        let (k, point) = key(d.path(), "k.pem");
        let mut files: Files = vec![("a.toml".into(), b"x = 1".to_vec()), ("certs/ca.pem".into(), b"CA".to_vec())];
        let sig = sign(&files, &k, "spocgw-test-v1", 7).unwrap();
        files.push((SIGNATURE_FILE.into(), sig.into_bytes()));
        let v = verify(&files, std::slice::from_ref(&point), "spocgw-test-v1").unwrap();
        assert_eq!((v.serial, v.signer), (7, 0));
        assert!(matches!(
            verify(&files, std::slice::from_ref(&point), "spocgw-other-v1"),
            Err(SignedError::WrongDomain { .. })
        ));
        files[1].1 = b"CB".to_vec();
        assert_eq!(verify(&files, std::slice::from_ref(&point), "spocgw-test-v1"), Err(SignedError::Altered));
        let (_, stranger) = key(d.path(), "stranger.pem");
        files[1].1 = b"CA".to_vec();
        assert!(matches!(verify(&files, &[stranger], "spocgw-test-v1"), Err(SignedError::UntrustedSigner(_))));
        assert_eq!(verify(&files[..2], &[point], "spocgw-test-v1"), Err(SignedError::Unsigned));
    }

    #[test]
    fn a_tree_is_its_regular_files_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("certs")).unwrap();
        std::fs::write(d.path().join("gateway.toml"), "x").unwrap();
        std::fs::write(d.path().join("certs/ca.pem"), "y").unwrap();
        let names: Vec<String> = read_tree(d.path()).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["certs/ca.pem", "gateway.toml"]);
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("certs/link")).unwrap();
        assert!(read_tree(d.path()).unwrap_err().to_string().contains("link"));
    }
}
