//! `spocgw tpm provision` and `tpm status`: the appliance's keys created in (or sealed by) the
//! TPM, and the provisioning record (`keys.json`) that says where each one is.
//!
//! | name | kind | where |
//! |---|---|---|
//! | `ministry-client` | ECDSA P-256 signing key, non-exportable, policy only | persistent handle 0x81000010 |
//! | `audit-checkpoint` | ECDSA P-256 signing key, non-exportable, policy only | persistent handle 0x81000011 |
//! | `attestation` | restricted ECDSA P-256 signing key (quotes) | persistent handle 0x81000012 |
//! | `police-server`, `callback-server` | P-256 private scalar, sealed | `sealed/NAME.json` |
//! | `audit-pseudonym` | 32 random bytes, sealed | `sealed/NAME.json` |
//!
//! All under the storage primary (ECC P-256, AES-128-CFB) at persistent handle 0x81000001.
//! "Policy only" and "sealed" mean: no password use (`userWithAuth` clear), and the object's
//! authorisation policy is PolicyAuthorize by the policy key recorded here, so it works only in
//! a boot state a signed PCR policy approves (see [`super::policy`]). The attestation key
//! quotes in any state: a verifier must be able to see a wrong one; being restricted, it signs
//! nothing but the TPM's own attestations.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::encoding::{AsBigEndian, EcPrivateKeyBin};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Digest, Public};
use zeroize::Zeroizing;

use super::templates::{signing_template, storage_primary_template};
use super::{Authorization, Conn, SealedBlob, SignedPolicy, Tpm, TpmConfig, TpmError, cmd, session};

pub const PRIMARY_HANDLE: u32 = 0x8100_0001;
pub const MINISTRY_CLIENT: &str = "ministry-client";
pub const AUDIT_CHECKPOINT: &str = "audit-checkpoint";
pub const ATTESTATION: &str = "attestation";
pub const POLICE_SERVER: &str = "police-server";
pub const CALLBACK_SERVER: &str = "callback-server";
pub const AUDIT_PSEUDONYM: &str = "audit-pseudonym";
/// The pair link's TLS key (sealed, like the police-side server key).
pub const PAIR_LINK: &str = "pair-link";
/// The seed of the witness's Ed25519 key: TPM 2.0 as deployed has no Ed25519, so it is sealed.
pub const PAIR_WITNESS: &str = "pair-witness";

/// Keys that live in the TPM, and their persistent handles.
pub const RESIDENT: [(&str, u32); 3] =
    [(MINISTRY_CLIENT, 0x8100_0010), (AUDIT_CHECKPOINT, 0x8100_0011), (ATTESTATION, 0x8100_0012)];
/// Secrets sealed to the PCR policy.
pub const SEALED: [&str; 5] = [POLICE_SERVER, CALLBACK_SERVER, AUDIT_PSEUDONYM, PAIR_LINK, PAIR_WITNESS];

pub const MANIFEST: &str = "keys.json";
/// The provisioning record's format: 2 since keys are bound to a signed PCR policy.
const MANIFEST_VERSION: u32 = 2;

/// `keys.json`: what provisioning made, where it is, and the policy the sealed keys need.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    pub created: String,
    pub primary_handle: String,
    pub pcr_bank: String,
    /// PCRs quoted for attestation.
    pub pcrs: Vec<u8>,
    /// The policy key (uncompressed P-256 point, hex): its signed PCR policies open the keys.
    pub policy_key: String,
    /// The authorisation policy every bound key and sealed object requires
    /// (PolicyAuthorize by the policy key), hex.
    pub policy_digest: String,
    /// The NV counter index audit checkpoints advance, hex.
    pub audit_counter: String,
    /// Its Name once written (hex), pinned here: `audit verify --tpm` trusts the counter only
    /// while the TPM's index has this Name (and the type, attributes and write policy it covers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_counter_name: Option<String>,
    pub keys: BTreeMap<String, KeyEntry>,
}

/// What a provisioned key is, as `keys.json` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// A signing key resident in the TPM (`tpm`).
    #[serde(rename = "tpm")]
    Resident,
    /// The restricted attestation key (quotes only).
    Attestation,
    /// A P-256 private scalar sealed by the TPM.
    SealedEc,
    /// Secret bytes sealed by the TPM.
    SealedSecret,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyKind::Resident => "tpm",
            KeyKind::Attestation => "attestation",
            KeyKind::SealedEc => "sealed-ec",
            KeyKind::SealedSecret => "sealed-secret",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub kind: KeyKind,
    /// Persistent handle, for resident keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// Sealed blob file, relative to the provisioning directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// Uncompressed P-256 public point, hex (not for secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<String>,
    /// CSR written for this key, relative to the provisioning directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
}

impl KeyEntry {
    pub fn handle_u32(&self) -> Option<u32> {
        self.handle.as_deref().and_then(|h| u32::from_str_radix(h.trim_start_matches("0x"), 16).ok())
    }
    pub fn public_point(&self) -> Option<Vec<u8>> {
        self.public.as_deref().and_then(unhex)
    }
}

pub use crate::encoding::{hex, unhex};

impl Manifest {
    /// # Errors
    /// `keys.json` cannot be read, does not parse, or is of an unknown version.
    pub fn load(dir: &Path) -> Result<Manifest, TpmError> {
        let path = dir.join(MANIFEST);
        let text = fs::read_to_string(&path).map_err(|e| {
            TpmError::Provisioning(format!("{}: {e} (run `spocgw tpm provision` first)", path.display()))
        })?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| {
            TpmError::Provisioning(format!(
                "{}: {e} (a record from before keys were bound to a signed PCR policy? \
                 `spocgw tpm provision --force --policy-key ...` provisions anew)",
                path.display()
            ))
        })?;
        if m.version != MANIFEST_VERSION {
            return Err(TpmError::Provisioning(format!(
                "{}: version {} (this spocgw reads version {MANIFEST_VERSION}; provision anew)",
                path.display(),
                m.version
            )));
        }
        Ok(m)
    }

    /// The recorded policy key's point.
    ///
    /// # Errors
    /// The record names no policy key, or not a valid point.
    pub fn policy_key(&self) -> Result<Vec<u8>, TpmError> {
        unhex(&self.policy_key)
            .filter(|p| p.len() == 65)
            .ok_or_else(|| TpmError::Provisioning(format!("{MANIFEST}: policy_key is not a P-256 point")))
    }

    /// What the audit counter must be, as this record pins it: its write policy and, when
    /// recorded, its Name.
    ///
    /// # Errors
    /// The record's policy digest or counter Name is not hex.
    pub fn pinned_counter(&self) -> Result<super::Pinned, TpmError> {
        let bad = |what: &str| TpmError::Provisioning(format!("{MANIFEST}: {what} is not hex"));
        let policy = unhex(&self.policy_digest).filter(|p| p.len() == 32).ok_or_else(|| bad("policy_digest"))?;
        let name = self.audit_counter_name.as_deref().map(|n| unhex(n).ok_or_else(|| bad("audit_counter_name")));
        Ok(super::Pinned { policy: Some(policy), name: name.transpose()? })
    }

    /// Reads the signed PCR policy named by `cfg`, checks it against the recorded policy key
    /// and hands it to `tpm` for every later use of the keys.
    ///
    /// # Errors
    /// The policy file cannot be read, or does not check against the recorded policy key.
    pub fn authorize(&self, cfg: &TpmConfig, tpm: &Tpm) -> Result<Arc<Authorization>, TpmError> {
        let path = cfg.signed_policy_path();
        let auth = SignedPolicy::load(&path)?
            .check(&self.policy_key()?)
            .map_err(|e| TpmError::Provisioning(format!("{}: {e}", path.display())))?;
        tpm.authorize(auth);
        tpm.authorization()
    }

    /// # Errors
    /// The record has no key of that name.
    pub fn entry(&self, name: &str) -> Result<&KeyEntry, TpmError> {
        self.keys.get(name).ok_or_else(|| TpmError::Provisioning(format!("{MANIFEST} has no key named {name:?}")))
    }

    /// # Errors
    /// As [`Manifest::entry`], or the blob's files cannot be read.
    pub fn sealed_blob(&self, dir: &Path, name: &str) -> Result<SealedBlob, TpmError> {
        let entry = self.entry(name)?;
        let file = entry.sealed.as_deref().ok_or_else(|| TpmError::Provisioning(format!("{name} is not sealed")))?;
        let path = dir.join(file);
        let text = fs::read_to_string(&path).map_err(|e| TpmError::Provisioning(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| TpmError::Provisioning(format!("{}: {e}", path.display())))
    }
}

/// What `provision` did.
pub enum Outcome {
    Created(Manifest),
    AlreadyProvisioned(Manifest),
}

fn perr(msg: impl Into<String>) -> TpmError {
    TpmError::Provisioning(msg.into())
}

pub(crate) fn write_file(path: &Path, contents: &[u8]) -> Result<(), TpmError> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).map_err(|e| perr(format!("{}: {e}", d.display())))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(|e| perr(format!("{}: {e}", tmp.display())))?;
    f.write_all(contents).and_then(|()| f.sync_all()).map_err(|e| perr(format!("{}: {e}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(|e| perr(format!("{}: {e}", path.display())))
}

fn persist(c: &mut Conn, object: ObjectHandle, handle: u32) -> Result<(), TpmError> {
    let p = Persistent::Persistent(PersistentTpmHandle::new(handle).map_err(|e| cmd("EvictControl", &e))?);
    c.ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| ctx.evict_control(Provision::Owner, object, p))
        .map(|_| ())
        .map_err(|e| cmd("EvictControl", &e))
}

/// Removes a persistent object if there is one at `handle`.
fn evict(c: &mut Conn, handle: u32) -> Result<(), TpmError> {
    if !c.exists(handle).map_err(|e| cmd("GetCapability", &e))? {
        return Ok(());
    }
    let obj = c.persistent(handle).map_err(|e| cmd("ReadPublic", &e))?;
    let p = Persistent::Persistent(PersistentTpmHandle::new(handle).map_err(|e| cmd("EvictControl", &e))?);
    c.ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| ctx.evict_control(Provision::Owner, obj, p))
        .map(|_| ())
        .map_err(|e| cmd("EvictControl", &e))?;
    c.forget();
    Ok(())
}

/// Creates a key under `parent`, makes it persistent at `handle`, returns its public point.
fn create_resident(c: &mut Conn, parent: KeyHandle, template: Public, handle: u32) -> Result<Vec<u8>, TpmError> {
    let created = c
        .ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| ctx.create(parent, template, None, None, None, None))
        .map_err(|e| cmd("Create", &e))?;
    let point = super::point_of(&created.out_public).ok_or_else(|| perr("the TPM returned a non-P-256 key"))?;
    let loaded = c
        .ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.load(parent, created.out_private, created.out_public)
        })
        .map_err(|e| cmd("Load", &e))?;
    let r = persist(c, loaded.into(), handle);
    let _ = c.ctx.flush_context(loaded.into());
    r.map(|()| point)
}

/// What the TPM part of provisioning returns.
struct Made {
    points: Vec<(String, Vec<u8>)>,
    sealed: Vec<(String, SealedBlob)>,
    policy_digest: Vec<u8>,
    counter_name: Vec<u8>,
}

/// Subjects of the CSRs provisioning writes; the CA decides the rest.
fn csr_params(name: &str) -> Result<rcgen::CertificateParams, TpmError> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| perr(e.to_string()))?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, format!("spocgw {name}"));
    Ok(p)
}

/// Reads the signed PCR policy `cfg` names, checks it against `policy_key` and the TPM's current
/// PCR values, and hands it to `tpm`: keys bound to a policy that does not approve this state
/// would be unusable here.
fn authorize_current(cfg: &TpmConfig, tpm: &Tpm, policy_key: &[u8]) -> Result<(), TpmError> {
    let path = cfg.signed_policy_path();
    let auth = SignedPolicy::load(&path)?.check(policy_key).map_err(|e| perr(format!("{}: {e}", path.display())))?;
    let current: Vec<[u8; 32]> = tpm
        .pcr_values(auth.policy.pcrs.clone())?
        .into_iter()
        .map(|(_, v)| <[u8; 32]>::try_from(v).map_err(|_| perr("the TPM returned a PCR value that is not SHA-256")))
        .collect::<Result<_, _>>()?;
    if !auth.matches(&current) {
        return Err(perr(format!(
            "{}: the signed PCR policy does not approve this TPM's current PCR values (PCRs {:?}); \
             keys bound to it would be unusable here",
            path.display(),
            auth.policy.pcrs
        )));
    }
    tpm.authorize(auth);
    Ok(())
}

/// The provisioning record in `dir`, checked against the TPM: the same policy key, and every
/// resident key still there.
fn still_provisioned(dir: &Path, tpm: &Tpm, policy_key: &[u8]) -> Result<Manifest, TpmError> {
    let m = Manifest::load(dir)?;
    if m.policy_key()? != policy_key {
        return Err(perr(format!(
            "{}/{MANIFEST} records another policy key; `spocgw tpm provision --force` provisions anew",
            dir.display()
        )));
    }
    for (name, handle) in RESIDENT {
        let want = m.entry(name)?.public_point();
        let have = tpm.public_point(handle)?;
        if have.is_none() || have != want {
            return Err(perr(format!(
                "{}/{MANIFEST} records key {name} at {handle:#x}, but this TPM does not hold it \
                 (a cleared or different TPM?); `spocgw tpm provision --force` provisions anew",
                dir.display()
            )));
        }
    }
    Ok(m)
}

/// Creates every key, seals the secrets and writes `keys.json`, the sealed blobs, public keys and
/// CSRs into `cfg.dir`. Without `force`, an existing provisioning that the TPM still holds is
/// left as it is (and reported), and any other key in the way is an error.
///
/// The keys are bound to `policy_key` (a P-256 point): the signed PCR policy `cfg` names must
/// be signed by it and approve the current PCR values, or nothing is made.
///
/// # Errors
/// The signed policy does not approve the current PCRs, a key or a seal the TPM refuses, a file
/// that cannot be written; without `force`, a provisioning the TPM no longer holds.
pub fn provision(cfg: &TpmConfig, tpm: &Arc<Tpm>, force: bool, policy_key: &[u8]) -> Result<Outcome, TpmError> {
    let dir = cfg.dir.clone();
    authorize_current(cfg, tpm, policy_key)?;
    if dir.join(MANIFEST).exists() && !force {
        return still_provisioned(&dir, tpm, policy_key).map(Outcome::AlreadyProvisioned);
    }
    if !force {
        for h in std::iter::once(PRIMARY_HANDLE).chain(RESIDENT.iter().map(|(_, h)| *h)) {
            if tpm.public_point(h)?.is_some() || (h == PRIMARY_HANDLE && primary_exists(tpm)?) {
                return Err(perr(format!(
                    "persistent handle {h:#x} is in use and {} has no {MANIFEST}; \
                     `spocgw tpm provision --force` replaces it",
                    dir.display()
                )));
            }
        }
    }

    let (server_keys, secrets) = fresh_secrets()?;
    let made = make_in_tpm(tpm, policy_key, secrets)?;
    let mut keys = record_keys(&dir, &made, &server_keys)?;
    write_csrs(&dir, tpm, &mut keys, &server_keys)?;
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        created: crate::encoding::now_rfc3339_micros(),
        primary_handle: format!("{PRIMARY_HANDLE:#010x}"),
        pcr_bank: "sha256".into(),
        pcrs: cfg.pcrs.clone(),
        policy_key: hex(policy_key),
        policy_digest: hex(&made.policy_digest),
        audit_counter: format!("{:#010x}", super::AUDIT_COUNTER),
        audit_counter_name: Some(hex(&made.counter_name)),
        keys,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| perr(e.to_string()))?;
    write_file(&dir.join(MANIFEST), &json)?;
    Ok(Outcome::Created(manifest))
}

/// A server key made at provisioning: its name, PKCS#8 (for its CSR, then dropped) and point.
type ServerKey = (&'static str, Zeroizing<Vec<u8>>, Vec<u8>);

/// A secret to seal, by its key name.
type Secret = (String, Zeroizing<Vec<u8>>);

/// The server keys and the pseudonymisation key, generated here, to be sealed by the TPM and
/// never written in clear: the keys, and the secrets to seal (the server keys' scalars too).
fn fresh_secrets() -> Result<(Vec<ServerKey>, Vec<Secret>), TpmError> {
    let mut server_keys = Vec::new();
    let mut secrets: Vec<Secret> = Vec::new();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    for name in [POLICE_SERVER, CALLBACK_SERVER, PAIR_LINK] {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| perr("cannot generate a P-256 key"))?;
        let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8)
            .map_err(|_| perr("cannot read the generated key"))?;
        let scalar: EcPrivateKeyBin<'static> = pair.private_key().as_be_bytes().map_err(|_| perr("key export"))?;
        let scalar = Zeroizing::new(scalar.as_ref().to_vec());
        secrets.push((name.to_owned(), scalar));
        server_keys.push((name, pkcs8, pair.public_key().as_ref().to_vec()));
    }
    let mut pseudonym = Zeroizing::new(vec![0u8; 32]);
    aws_lc_rs::rand::fill(&mut pseudonym).map_err(|_| perr("no randomness"))?;
    secrets.push((AUDIT_PSEUDONYM.to_owned(), pseudonym));
    let mut witness = Zeroizing::new(vec![0u8; 32]);
    aws_lc_rs::rand::fill(&mut witness).map_err(|_| perr("no randomness"))?;
    secrets.push((PAIR_WITNESS.to_owned(), witness));
    Ok((server_keys, secrets))
}

/// In the TPM: a new storage primary, the resident keys and the sealed secrets, all bound to
/// PolicyAuthorize by `policy_key`, and the audit counter.
fn make_in_tpm(tpm: &Tpm, policy_key: &[u8], secrets: Vec<Secret>) -> Result<Made, TpmError> {
    let policy_point = policy_key.to_vec();
    let auth = tpm.authorization()?;
    tpm.call("provision", move |c| {
        c.forget();
        for h in std::iter::once(PRIMARY_HANDLE).chain(RESIDENT.iter().map(|(_, h)| *h)) {
            evict(c, h)?;
        }
        let template = storage_primary_template()?;
        let primary = c
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .map_err(|e| cmd("CreatePrimary", &e))?
            .key_handle;
        let result = (|| {
            let (key, key_name) = super::policy::load_policy_key(c, &policy_point)?;
            let _ = c.ctx.flush_context(key.into());
            let policy = Digest::try_from(super::policy::authorize_digest(key_name.value()).to_vec())
                .map_err(|e| cmd("Create", &e))?;
            let mut points = Vec::new();
            for (name, handle) in RESIDENT {
                let template = signing_template((name != ATTESTATION).then_some(&policy))?;
                points.push((name.to_owned(), create_resident(c, primary, template, handle)?));
            }
            let mut sealed = Vec::new();
            for (name, secret) in &secrets {
                sealed.push((name.clone(), session::seal(c, primary, policy.clone(), secret)?));
            }
            persist(c, primary.into(), PRIMARY_HANDLE)?;
            super::counter::define(c, &policy, &auth)?;
            super::record::define(c, &policy, &auth)?;
            let pinned = super::Pinned { policy: Some(policy.value().to_vec()), name: None };
            let counter_name = super::counter::name(c, &pinned)?;
            Ok(Made { points, sealed, policy_digest: policy.value().to_vec(), counter_name })
        })();
        let _ = c.ctx.flush_context(primary.into());
        c.forget();
        result
    })
}

/// Writes the public keys and the sealed blobs into `dir`; their entries in the record.
fn record_keys(dir: &Path, made: &Made, server_keys: &[ServerKey]) -> Result<BTreeMap<String, KeyEntry>, TpmError> {
    let mut keys = BTreeMap::new();
    for (name, point) in &made.points {
        let handle = RESIDENT.iter().find(|(n, _)| n == name).map(|(_, h)| *h).unwrap_or_default();
        write_file(&dir.join(format!("{name}.pub.pem")), crate::encoding::spki_pem(point).as_bytes())?;
        keys.insert(
            name.clone(),
            KeyEntry {
                kind: if name == ATTESTATION { KeyKind::Attestation } else { KeyKind::Resident },
                handle: Some(format!("{handle:#010x}")),
                sealed: None,
                public: Some(hex(point)),
                csr: None,
            },
        );
    }
    for (name, blob) in &made.sealed {
        let file = format!("sealed/{name}.json");
        let json = serde_json::to_vec_pretty(blob).map_err(|e| perr(e.to_string()))?;
        write_file(&dir.join(&file), &json)?;
        let public = server_keys.iter().find(|(n, _, _)| n == name).map(|(_, _, p)| hex(p));
        let kind = if public.is_some() { KeyKind::SealedEc } else { KeyKind::SealedSecret };
        keys.insert(name.clone(), KeyEntry { kind, handle: None, sealed: Some(file), public, csr: None });
    }
    Ok(keys)
}

/// CSRs: the Ministry-side key signs its own inside the TPM; the server keys sign theirs here,
/// before their only clear copy is dropped.
fn write_csrs(
    dir: &Path,
    tpm: &Arc<Tpm>,
    keys: &mut BTreeMap<String, KeyEntry>,
    server_keys: &[ServerKey],
) -> Result<(), TpmError> {
    let ministry = keys.get(MINISTRY_CLIENT).and_then(KeyEntry::public_point).ok_or_else(|| perr("no ministry key"))?;
    let signer = super::TpmKey::new(tpm.clone(), RESIDENT[0].1, ministry);
    let csr = csr_params(MINISTRY_CLIENT)?.serialize_request(&signer).map_err(|e| perr(format!("CSR: {e}")))?;
    write_csr(dir, keys, MINISTRY_CLIENT, &csr.pem().map_err(|e| perr(e.to_string()))?)?;
    for (name, pkcs8, _) in server_keys {
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_slice());
        let kp = rcgen::KeyPair::try_from(&der).map_err(|e| perr(format!("CSR key: {e}")))?;
        let csr = csr_params(name)?.serialize_request(&kp).map_err(|e| perr(format!("CSR: {e}")))?;
        write_csr(dir, keys, name, &csr.pem().map_err(|e| perr(e.to_string()))?)?;
    }
    Ok(())
}

fn write_csr(dir: &Path, keys: &mut BTreeMap<String, KeyEntry>, name: &str, pem: &str) -> Result<(), TpmError> {
    let file = format!("csr/{name}.csr.pem");
    write_file(&dir.join(&file), pem.as_bytes())?;
    if let Some(e) = keys.get_mut(name) {
        e.csr = Some(file);
    }
    Ok(())
}

pub(super) fn primary_exists(tpm: &Tpm) -> Result<bool, TpmError> {
    tpm.call("read_public", |c| c.exists(PRIMARY_HANDLE).map_err(|e| cmd("GetCapability", &e)))
}

/// The provisioning directory's public key file of a key.
pub fn public_key_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pub.pem"))
}
