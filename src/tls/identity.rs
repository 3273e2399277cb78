//! `PeerIdentity`: who is on the other end of a mutual-TLS connection, taken once from the
//! verified peer certificate. Identity never comes from HTTP headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::encoding::{hex, sha256_hex};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the peer presented no certificate")]
    NoCertificate,
    #[error("the peer certificate cannot be parsed: {0}")]
    Parse(String),
}

/// The attributes of a verified peer certificate that routing, policy and audit use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// RFC 4514 subject, e.g. `CN=officer-0001,OU=border-verifier,O=Border Police`.
    pub subject: String,
    pub common_name: Option<String>,
    pub organization: Option<String>,
    pub organizational_unit: Option<String>,
    pub issuer: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub fingerprint: String,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo DER, lower-case hex.
    pub public_key_sha256: String,
    pub subject_alt_names: Vec<String>,
    /// Extended key usages, as names (`clientAuth`) or dotted OIDs.
    pub extended_key_usages: Vec<String>,
    /// Validity, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl PeerIdentity {
    /// Builds the identity from the peer's end-entity certificate (already verified by rustls).
    ///
    /// # Errors
    /// The certificate does not parse.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
        let subject = cert.subject();
        let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
            it.next().and_then(|a| a.as_str().ok()).map(str::to_owned)
        };
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => sans.push(format!("IP:{}", std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))),
                        16 => {
                            let mut o = [0u8; 16];
                            o.copy_from_slice(ip);
                            sans.push(format!("IP:{}", std::net::Ipv6Addr::from(o)));
                        }
                        _ => {}
                    },
                    GeneralName::RFC822Name(m) => sans.push(format!("email:{m}")),
                    GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                    _ => {}
                }
            }
        }
        let mut ekus = Vec::new();
        if let Ok(Some(ext)) = cert.extended_key_usage() {
            let e = ext.value;
            for (set, name) in [
                (e.server_auth, "serverAuth"),
                (e.client_auth, "clientAuth"),
                (e.code_signing, "codeSigning"),
                (e.email_protection, "emailProtection"),
                (e.time_stamping, "timeStamping"),
                (e.ocsp_signing, "OCSPSigning"),
            ] {
                if set {
                    ekus.push(name.to_owned());
                }
            }
            ekus.extend(e.other.iter().map(|oid| oid.to_id_string()));
        }
        Ok(Self {
            subject: subject.to_string(),
            common_name: first(&mut subject.iter_common_name()),
            organization: first(&mut subject.iter_organization()),
            organizational_unit: first(&mut subject.iter_organizational_unit()),
            issuer: cert.issuer().to_string(),
            serial: hex(cert.raw_serial()),
            fingerprint: sha256_hex(der),
            public_key_sha256: sha256_hex(cert.public_key().raw),
            subject_alt_names: sans,
            extended_key_usages: ekus,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

/// The identities of the certificates on a listener's open connections, shared: a client that
/// opens many connections with one certificate (the police border system, an HTTP client's
/// pool) has its certificate parsed once and its identity held once. An identity lives as long
/// as a connection holds it; the map forgets the others as it grows.
#[derive(Default)]
pub struct PeerCache {
    known: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    /// By the certificate's DER bytes (the same bytes are the same verified certificate).
    by_der: HashMap<Box<[u8]>, Weak<PeerIdentity>>,
    /// Size at which entries of closed connections are swept out.
    sweep_at: usize,
}

impl PeerCache {
    /// The identity of a verified end-entity certificate: the one an open connection already
    /// holds, or newly parsed.
    ///
    /// # Errors
    /// The certificate does not parse.
    pub fn identity(&self, der: &[u8]) -> Result<Arc<PeerIdentity>, IdentityError> {
        if let Some(known) = self.known().by_der.get(der).and_then(Weak::upgrade) {
            return Ok(known);
        }
        let peer = Arc::new(PeerIdentity::from_der(der)?);
        let mut k = self.known();
        if k.by_der.len() >= k.sweep_at {
            k.by_der.retain(|_, w| w.strong_count() > 0);
            k.sweep_at = (2 * k.by_der.len()).max(64);
        }
        k.by_der.insert(der.into(), Arc::downgrade(&peer));
        Ok(peer)
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        // The map holds no invariant a panicking holder could break.
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn connections_with_one_certificate_share_its_identity() {
        let cache = PeerCache::default();
        let (a, b) = (cert("terminal-a"), cert("terminal-b"));
        let first = cache.identity(&a).unwrap();
        let second = cache.identity(&a).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        let other = cache.identity(&b).unwrap();
        assert_eq!(other.common_name.as_deref(), Some("terminal-b"));
        assert_eq!(first.common_name.as_deref(), Some("terminal-a"));
        // Once no connection holds it, the identity is gone and is parsed anew.
        drop((first, second));
        let again = cache.identity(&a).unwrap();
        assert_eq!(again.fingerprint, sha256_hex(&a));
        assert!(cache.identity(b"not a certificate").is_err());
    }

    #[test]
    fn identities_of_closed_connections_are_swept_out() {
        let cache = PeerCache::default();
        let held: Vec<_> = (0..10).map(|i| cache.identity(&cert(&format!("held-{i}"))).unwrap()).collect();
        for i in 0..300 {
            drop(cache.identity(&cert(&format!("gone-{i}"))).unwrap());
        }
        let k = cache.known();
        assert!(k.by_der.len() <= 128, "{} entries kept", k.by_der.len());
        assert_eq!(k.by_der.values().filter(|w| w.strong_count() > 0).count(), held.len());
    }
}
