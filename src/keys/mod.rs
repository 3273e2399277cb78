//! Key custody: where each private key lives, turned into what its user needs. A key named in
//! gateway.toml is either a PEM file (development) or `tpm:NAME`, a key of the TPM's
//! provisioning record (DESIGN.md "Key custody"):
//!
//! - a TPM-resident key (`ministry-client`, `audit-checkpoint`) signs inside the TPM, through
//!   [`TpmKey`] (a rustls and an rcgen `SigningKey`; `tpm::key`), or as the audit's
//!   [`CheckpointSigner`] with the TPM's checkpoint counter;
//! - a sealed key (`police-server`, `callback-server`, `audit-pseudonym`) is unsealed once at
//!   start, under the PCR policy, into zeroizing memory.

mod file;

pub use file::{CheckpointSigner, FileSigner, load_pseudonym_key};

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use rustls::sign::SigningKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::config::ConfigError;
use crate::tpm::provision::{self, KeyKind, Manifest};
use crate::tpm::{Tpm, TpmConfig, TpmError};

/// A private key named in a configuration file: a PEM file, or `tpm:NAME`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum KeyRef {
    File(PathBuf),
    Tpm(String),
}

impl TryFrom<String> for KeyRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.strip_prefix("tpm:") {
            Some("") => Err("`tpm:` needs a key name, e.g. tpm:ministry-client".into()),
            Some(name) => Ok(KeyRef::Tpm(name.to_owned())),
            None if s.is_empty() => Err("empty key path".into()),
            None => Ok(KeyRef::File(PathBuf::from(s))),
        }
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::File(p) => write!(f, "file {}", p.display()),
            KeyRef::Tpm(n) => write!(f, "tpm:{n}"),
        }
    }
}

impl From<&Path> for KeyRef {
    fn from(p: &Path) -> Self {
        KeyRef::File(p.to_path_buf())
    }
}

impl KeyRef {
    /// Resolves a relative file against `base` and checks it exists; TPM names are checked
    /// against the provisioning record when the key store opens.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `key` when a key file does not exist.
    pub fn resolve(&mut self, base: &Path, file: &Path, key: &str) -> Result<(), ConfigError> {
        match self {
            KeyRef::File(p) => crate::config::resolve_file(p, base, file, key),
            KeyRef::Tpm(_) => Ok(()),
        }
    }

    pub fn is_file(&self) -> bool {
        matches!(self, KeyRef::File(_))
    }

    /// The signing key of a file key (simulators, tools, tests); a TPM key needs the gateway's
    /// [`KeyStore`].
    ///
    /// # Errors
    /// The file cannot be read as a key, or the key is in the TPM.
    pub fn file_key(&self) -> Result<Arc<dyn SigningKey>, crate::tls::TlsError> {
        match self {
            KeyRef::File(path) => crate::tls::file_key(path),
            KeyRef::Tpm(name) => {
                Err(crate::tls::TlsError::KeyPair(format!("tpm:{name} needs the gateway's key store")))
            }
        }
    }

    /// Where the key lives, for the `key_event` audit record and logs.
    pub fn custody(&self) -> String {
        match self {
            KeyRef::File(_) => "file".into(),
            KeyRef::Tpm(n) => format!("tpm:{n}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error(transparent)]
    Tpm(#[from] TpmError),
    #[error("{0}: cannot read the key: {1}")]
    File(PathBuf, String),
    #[error("{0} needs a [tpm] section in the configuration")]
    NoTpm(String),
    #[error("tpm:{name} is a {kind} key and cannot be used {purpose}")]
    WrongKind { name: String, kind: KeyKind, purpose: &'static str },
    #[error("{0}")]
    Invalid(String),
}

pub use crate::encoding::{spki_der, spki_pem};
pub use crate::tpm::TpmKey;

/// The TPM's checkpoint signer: the resident `audit-checkpoint` key, and the TPM's audit
/// counter advanced once per checkpoint.
struct TpmCheckpointSigner(TpmKey);

impl CheckpointSigner for TpmCheckpointSigner {
    fn public_key(&self) -> Vec<u8> {
        self.0.point().to_vec()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.0.sign_digest(crate::encoding::sha256(message)).map_err(|e| e.to_string())
    }

    fn count(&self) -> Result<Option<u64>, String> {
        self.0.tpm().count_checkpoint().map(Some).map_err(|e| e.to_string())
    }
}

/// Every private key the gateway uses, from files or from the TPM.
pub struct KeyStore {
    tpm: Option<(Arc<Tpm>, TpmConfig, Manifest)>,
    unsealed: Mutex<HashMap<String, Zeroizing<Vec<u8>>>>,
}

impl KeyStore {
    /// Without `[tpm]`: file keys only. With it: starts the TPM's owner thread and reads the
    /// provisioning record.
    ///
    /// # Errors
    /// The TPM's provisioning record cannot be read, or the TPM's signed PCR policy does not check.
    pub fn open(cfg: Option<&TpmConfig>) -> Result<Self, KeyError> {
        let tpm = match cfg {
            None => None,
            Some(c) => {
                let manifest = Manifest::load(&c.dir)?;
                let tpm = Tpm::start(c)?;
                manifest.authorize(c, &tpm)?;
                Some((tpm, c.clone(), manifest))
            }
        };
        Ok(Self { tpm, unsealed: Mutex::new(HashMap::new()) })
    }

    pub fn tpm(&self) -> Option<&Arc<Tpm>> {
        self.tpm.as_ref().map(|(t, _, _)| t)
    }

    fn tpm_parts(&self, name: &str) -> Result<(&Arc<Tpm>, &TpmConfig, &Manifest), KeyError> {
        self.tpm.as_ref().map(|(t, c, m)| (t, c, m)).ok_or_else(|| KeyError::NoTpm(format!("tpm:{name}")))
    }

    /// A sealed secret, unsealed once and kept in zeroizing memory.
    fn unseal(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if let Some(v) = self.unsealed.lock().ok().and_then(|m| m.get(name).cloned()) {
            return Ok(v);
        }
        let (tpm, cfg, manifest) = self.tpm_parts(name)?;
        let blob = manifest.sealed_blob(&cfg.dir, name)?;
        let secret = tpm.unseal(name, &blob)?;
        if let Ok(mut m) = self.unsealed.lock() {
            m.insert(name.to_owned(), secret.clone());
        }
        Ok(secret)
    }

    /// The key a TLS endpoint signs its handshakes with.
    ///
    /// # Errors
    /// A key file that cannot be read, a TPM key the provisioning record does not name, or a TPM
    /// that does not hold it.
    pub fn tls_key(&self, r: &KeyRef) -> Result<Arc<dyn SigningKey>, KeyError> {
        match r {
            KeyRef::File(path) => crate::tls::file_key(path).map_err(|e| KeyError::File(path.clone(), e.to_string())),
            KeyRef::Tpm(name) => {
                let (tpm, _, manifest) = self.tpm_parts(name)?;
                let entry = manifest.entry(name)?;
                match entry.kind {
                    KeyKind::Resident => Ok(Arc::new(self.resident(tpm, name, entry)?)),
                    KeyKind::SealedEc => {
                        let scalar = self.unseal(name)?;
                        let point = entry
                            .public_point()
                            .ok_or_else(|| KeyError::Invalid(format!("tpm:{name}: no public key recorded")))?;
                        let pair = EcdsaKeyPair::from_private_key_and_public_key(
                            &ECDSA_P256_SHA256_ASN1_SIGNING,
                            &scalar,
                            &point,
                        )
                        .map_err(|_| {
                            KeyError::Invalid(format!(
                                "tpm:{name}: the unsealed key does not match its recorded public key"
                            ))
                        })?;
                        let pkcs8 = Zeroizing::new(
                            pair.to_pkcs8v1()
                                .map_err(|_| KeyError::Invalid(format!("tpm:{name}: cannot encode the key")))?
                                .as_ref()
                                .to_vec(),
                        );
                        // Borrowed, not copied: the only encoded copy is the zeroizing one.
                        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.as_slice()));
                        rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&der)
                            .map_err(|e| KeyError::Invalid(e.to_string()))
                    }
                    kind => Err(KeyError::WrongKind { name: name.clone(), kind, purpose: "for TLS" }),
                }
            }
        }
    }

    fn resident(&self, tpm: &Arc<Tpm>, name: &str, entry: &provision::KeyEntry) -> Result<TpmKey, KeyError> {
        let handle = entry
            .handle_u32()
            .ok_or_else(|| KeyError::Invalid(format!("tpm:{name}: no persistent handle recorded")))?;
        let point =
            entry.public_point().ok_or_else(|| KeyError::Invalid(format!("tpm:{name}: no public key recorded")))?;
        match tpm.public_point(handle)? {
            Some(p) if p == point => Ok(TpmKey::new(tpm.clone(), handle, point)),
            Some(_) => Err(KeyError::Invalid(format!(
                "tpm:{name}: the TPM holds a different key at {handle:#010x} than the provisioning record"
            ))),
            None => Err(KeyError::Invalid(format!(
                "tpm:{name}: the TPM holds no key at {handle:#010x} (cleared, or a different TPM?)"
            ))),
        }
    }

    /// The signer of audit checkpoints.
    ///
    /// # Errors
    /// As [`KeyStore::tls_key`].
    pub fn checkpoint_signer(&self, r: &KeyRef) -> Result<Box<dyn CheckpointSigner>, KeyError> {
        match r {
            KeyRef::File(path) => FileSigner::load(path)
                .map(|s| Box::new(s) as Box<dyn CheckpointSigner>)
                .map_err(|e| KeyError::File(path.clone(), e)),
            KeyRef::Tpm(name) => {
                let (tpm, _, manifest) = self.tpm_parts(name)?;
                let entry = manifest.entry(name)?;
                if entry.kind != KeyKind::Resident {
                    return Err(KeyError::WrongKind {
                        name: name.clone(),
                        kind: entry.kind,
                        purpose: "to sign checkpoints",
                    });
                }
                Ok(Box::new(TpmCheckpointSigner(self.resident(tpm, name, entry)?)))
            }
        }
    }

    /// A symmetric secret (the pseudonymisation key).
    ///
    /// # Errors
    /// A secret file that cannot be read or is not 32 bytes of hex, or a sealed secret the TPM will
    /// not unseal (another boot state, another TPM).
    pub fn secret(&self, r: &KeyRef) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        match r {
            KeyRef::File(path) => load_pseudonym_key(path).map_err(|e| KeyError::File(path.clone(), e)),
            KeyRef::Tpm(name) => {
                let (_, _, manifest) = self.tpm_parts(name)?;
                let kind = manifest.entry(name)?.kind;
                if kind != KeyKind::SealedSecret {
                    return Err(KeyError::WrongKind { name: name.clone(), kind, purpose: "as a secret" });
                }
                self.unseal(name)
            }
        }
    }
}
