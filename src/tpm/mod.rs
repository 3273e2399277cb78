//! The TPM, through tss-esapi: one owner thread holds the ESAPI context (it is not `Send`), and
//! every TPM command is a job sent to it, answered over a channel within a deadline. Nothing
//! here runs on the async runtime. Every transient object and session a job creates is flushed
//! before the job returns, whether it succeeded or not.
//!
//! When the TPM stops answering (a TCTI error, a dead swtpm, a reset), the owner drops the
//! context; the next job connects again, so the gateway recovers when the TPM returns.

pub mod attest;
pub mod counter;
mod der;
pub mod eventlog;
mod key;
pub mod policy;
pub mod provision;
pub mod record;
mod session;
pub mod status;
pub mod swtpm;
mod templates;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Data, Digest, HashScheme, HashcheckTicket, PcrSelectionList, PcrSelectionListBuilder, PcrSlot, Private, Public,
    SignatureScheme,
};
use tss_esapi::traits::Marshall;
use tss_esapi::{Context, TctiNameConf};
use zeroize::Zeroizing;

pub use counter::{AUDIT_COUNTER, Pinned};
pub use key::TpmKey;
pub use policy::{Authorization, SignedPolicy};
pub use record::{CONFIG_RECORD, ConfigRecord};
pub use session::{SealedBlob, ecdsa_der, point_of};

/// `[tpm]` in gateway.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmConfig {
    /// `device:/dev/tpmrm0` on the appliance; `swtpm:host=127.0.0.1,port=2321` in tests.
    pub tcti: String,
    /// The provisioning record: `keys.json`, sealed blobs, CSRs and public keys. Holds no
    /// secret a thief can use without this TPM in its measured state.
    pub dir: PathBuf,
    /// PCRs (SHA-256 bank) the sealed keys are bound to.
    #[serde(default = "default_pcrs")]
    pub pcrs: Vec<u8>,
    /// How long a TPM command may take before the caller gives up.
    #[serde(
        deserialize_with = "crate::config::units::millis_within::<_, 1, { crate::config::units::DAY_MS }>",
        default = "default_timeout_ms"
    )]
    pub timeout_ms: u64,
    /// The signed PCR policy the keys are used under (`spocgw tpm authorize` writes it); a
    /// new image release ships a new one. Default: `pcr-policy.json` in `dir`.
    #[serde(default)]
    pub signed_policy: Option<PathBuf>,
}

fn default_pcrs() -> Vec<u8> {
    vec![0, 2, 4, 7]
}
fn default_timeout_ms() -> u64 {
    5_000
}

impl TpmConfig {
    /// A configuration with the defaults for everything but the TPM and the directory.
    pub fn new(tcti: String, dir: PathBuf, pcrs: Vec<u8>) -> TpmConfig {
        TpmConfig { tcti, dir, pcrs, timeout_ms: default_timeout_ms(), signed_policy: None }
    }

    /// Where the signed PCR policy is read.
    pub fn signed_policy_path(&self) -> PathBuf {
        match &self.signed_policy {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => self.dir.join(p),
            None => self.dir.join(policy::POLICY_FILE),
        }
    }

    /// # Errors
    /// What is wrong in the `[tpm]` table: a TCTI that does not parse, more than 8 PCRs, a PCR
    /// out of range.
    pub fn check(&self) -> Result<(), String> {
        TctiNameConf::from_str(&self.tcti).map_err(|e| format!("tcti {:?}: {e}", self.tcti))?;
        if self.pcrs.len() > 8 {
            return Err("pcrs: at most 8 PCRs".into());
        }
        if let Some(p) = self.pcrs.iter().find(|p| **p > 23) {
            return Err(format!("pcrs: {p} is not a PCR (0-23)"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    #[error("cannot reach the TPM at {tcti}: {reason}")]
    Connect { tcti: String, reason: String },
    #[error("the TPM did not answer {op} within {0:?}", .timeout)]
    Timeout { op: &'static str, timeout: Duration },
    #[error("the TPM owner thread has stopped")]
    Stopped,
    #[error("TPM {op} failed: {reason}")]
    Command { op: &'static str, reason: String },
    #[error(
        "the TPM refused to use {name}: the PCR values no longer match the signed PCR policy \
         (PCRs {pcrs:?}); the appliance's boot state changed: install a policy signed for this \
         state (`spocgw tpm authorize`) only after checking why"
    )]
    PcrMismatch { name: String, pcrs: Vec<u8> },
    #[error("{0}")]
    Provisioning(String),
    /// A quote that does not prove the expected boot state ([`attest::verify_quote`]).
    #[error("quote refused: {0}")]
    QuoteRefused(String),
}

/// The ESAPI context and the persistent handles resolved on it.
pub struct Conn {
    pub ctx: Context,
    resolved: Vec<(u32, ObjectHandle)>,
    /// The policy key's name and the ticket of the approved policy.
    policy: Option<policy::Loaded>,
    /// The policy session the keys are used in, kept between uses.
    session: Option<AuthSession>,
}

impl Conn {
    /// Whether a persistent handle holds an object (asked without provoking a TPM error).
    ///
    /// # Errors
    /// The TPM does not answer.
    pub fn exists(&mut self, handle: u32) -> tss_esapi::Result<bool> {
        use tss_esapi::constants::CapabilityType;
        use tss_esapi::structures::CapabilityData;
        let (data, _) = self.ctx.get_capability(CapabilityType::Handles, handle, 1)?;
        Ok(match data {
            CapabilityData::Handles(list) => list.iter().any(|h| u32::from(*h) == handle),
            _ => false,
        })
    }

    /// The ESAPI handle of a persistent object (resolved once per connection).
    ///
    /// # Errors
    /// The handle holds no object, or the TPM does not answer.
    pub fn persistent(&mut self, handle: u32) -> tss_esapi::Result<ObjectHandle> {
        if let Some((_, h)) = self.resolved.iter().find(|(p, _)| *p == handle) {
            return Ok(*h);
        }
        let h = self.ctx.tr_from_tpm_public(TpmHandle::Persistent(PersistentTpmHandle::new(handle)?))?;
        self.resolved.push((handle, h));
        Ok(h)
    }

    /// Forgets resolved handles (after provisioning changed them) and the loaded policy key.
    pub fn forget(&mut self) {
        for (_, mut h) in std::mem::take(&mut self.resolved) {
            let _ = self.ctx.tr_close(&mut h);
        }
        self.policy = None;
        if let Some(s) = self.session.take() {
            let _ = self.ctx.flush_context(tss_esapi::handles::SessionHandle::from(s).into());
        }
    }
}

type Job = Box<dyn FnOnce(&mut Option<Conn>) + Send>;

/// Who is told of each TPM operation (the gateway's metrics): its name, whether it succeeded,
/// how long it took.
pub trait Observer: Send + Sync {
    fn operation(&self, op: &'static str, ok: bool, took: Duration);
}

/// The handle every part of the gateway shares.
pub struct Tpm {
    tx: Sender<Job>,
    tcti: String,
    timeout: Duration,
    healthy: AtomicBool,
    signatures: AtomicU64,
    observer: OnceLock<Arc<dyn Observer>>,
    authorization: RwLock<Option<Arc<Authorization>>>,
}

/// Whether an error leaves the connection usable (the TPM answered, and said no).
fn keeps_connection(e: &tss_esapi::Error) -> bool {
    match e {
        tss_esapi::Error::Tss2Error(rc) => matches!(
            rc.kind(),
            Some(
                Tss2ResponseCodeKind::PolicyFail
                    | Tss2ResponseCodeKind::Pcr
                    | Tss2ResponseCodeKind::PcrChanged
                    | Tss2ResponseCodeKind::Value
                    | Tss2ResponseCodeKind::Handle
            )
        ),
        tss_esapi::Error::WrapperError(_) => true,
    }
}

fn owner(rx: Receiver<Job>) {
    let mut conn: Option<Conn> = None;
    while let Ok(job) = rx.recv() {
        job(&mut conn);
    }
    if let Some(mut c) = conn {
        c.forget();
    }
}

impl Drop for Tpm {
    fn drop(&mut self) {
        self.close();
    }
}

impl Tpm {
    /// Starts the owner thread. Connects lazily: a TPM that is down at start is reported by
    /// the first operation (and by [`Tpm::probe`]).
    ///
    /// # Errors
    /// The owner thread cannot be started.
    pub fn start(cfg: &TpmConfig) -> Result<Arc<Tpm>, TpmError> {
        TctiNameConf::from_str(&cfg.tcti)
            .map_err(|e| TpmError::Connect { tcti: cfg.tcti.clone(), reason: e.to_string() })?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("tpm-owner".into())
            .spawn(move || owner(rx))
            .map_err(|e| TpmError::Connect { tcti: cfg.tcti.clone(), reason: e.to_string() })?;
        Ok(Arc::new(Tpm {
            tx,
            tcti: cfg.tcti.clone(),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            healthy: AtomicBool::new(true),
            signatures: AtomicU64::new(0),
            observer: OnceLock::new(),
            authorization: RwLock::new(None),
        }))
    }

    /// Flushes the policy session and closes the handles this process holds (also when the
    /// `Tpm` is dropped): without a resource manager (swtpm, a TPM reached directly) the TPM
    /// would keep the session past the process, and a few short-lived commands would fill its
    /// session slots.
    pub fn close(&self) {
        let _ = self.call("flush", |c| {
            c.forget();
            Ok(())
        });
    }

    /// Tells `observer` of every operation from now on (the gateway's metrics).
    pub fn observe(&self, observer: Arc<dyn Observer>) {
        let _ = self.observer.set(observer);
    }

    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Signatures made with TPM-resident keys since start.
    pub fn signatures(&self) -> u64 {
        self.signatures.load(Ordering::Relaxed)
    }

    /// Runs `f` on the owner thread with a connected context; blocks the calling thread (never
    /// an async worker: use `spawn_blocking` or `block_in_place`) for at most the timeout.
    ///
    /// # Errors
    /// What `f` returned, [`TpmError::Timeout`] when the owner did not answer in time, or a
    /// connection that could not be made.
    pub fn call<R, F>(&self, op: &'static str, f: F) -> Result<R, TpmError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<R, TpmError> + Send + 'static,
    {
        let (rtx, rrx) = mpsc::sync_channel(1);
        let tcti = self.tcti.clone();
        let job: Job = Box::new(move |slot: &mut Option<Conn>| {
            if slot.is_none() {
                let made = TctiNameConf::from_str(&tcti)
                    .and_then(Context::new)
                    .map_err(|e| TpmError::Connect { tcti: tcti.clone(), reason: e.to_string() });
                match made {
                    Ok(ctx) => *slot = Some(Conn { ctx, resolved: Vec::new(), policy: None, session: None }),
                    Err(e) => {
                        let _ = rtx.send(Err(e));
                        return;
                    }
                }
            }
            let Some(conn) = slot.as_mut() else { return };
            let (result, keep) = match f(conn) {
                Ok(r) => (Ok(r), true),
                Err(e) => {
                    let keep = matches!(e, TpmError::PcrMismatch { .. } | TpmError::Provisioning(_));
                    (Err(e), keep)
                }
            };
            if !keep && let Some(mut c) = slot.take() {
                c.forget();
            }
            let _ = rtx.send(result);
        });
        let start = Instant::now();
        if self.tx.send(job).is_err() {
            return Err(TpmError::Stopped);
        }
        let result = match rrx.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(TpmError::Timeout { op, timeout: self.timeout }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(TpmError::Stopped),
        };
        let ok = match &result {
            Ok(_) => true,
            // The TPM answered: it is there, it said no.
            Err(TpmError::PcrMismatch { .. } | TpmError::Provisioning(_)) => true,
            Err(_) => false,
        };
        self.healthy.store(ok, Ordering::Relaxed);
        if let Some(o) = self.observer.get() {
            o.operation(op, result.is_ok(), start.elapsed());
        }
        result
    }

    /// Closes the connection to the TPM now (a swtpm serves one connection at a time); the
    /// next operation connects again.
    pub fn disconnect(&self) {
        let (rtx, rrx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |slot: &mut Option<Conn>| {
            if let Some(mut c) = slot.take() {
                c.forget();
            }
            let _ = rtx.send(());
        });
        if self.tx.send(job).is_ok() {
            let _ = rrx.recv_timeout(self.timeout);
        }
    }

    /// A cheap command that proves the TPM answers (for `/readyz`).
    ///
    /// # Errors
    /// The TPM does not answer.
    pub fn probe(&self) -> Result<(), TpmError> {
        self.call("probe", |c| c.ctx.get_random(8).map(|_| ()).map_err(|e| cmd("GetRandom", &e)))
    }

    /// Uses `auth` for every later sign and unseal (a checked signed PCR policy).
    pub fn authorize(&self, auth: Authorization) {
        if let Ok(mut a) = self.authorization.write() {
            *a = Some(Arc::new(auth));
        }
    }

    /// The signed PCR policy in use.
    ///
    /// # Errors
    /// No signed PCR policy was handed over yet.
    pub fn authorization(&self) -> Result<Arc<Authorization>, TpmError> {
        self.authorization
            .read()
            .ok()
            .and_then(|a| a.clone())
            .ok_or_else(|| TpmError::Provisioning("no signed PCR policy is loaded: the keys cannot be used".into()))
    }

    /// ECDSA P-256 signature (DER) of a SHA-256 digest with a persistent key, in a policy
    /// session that satisfies the signed PCR policy.
    ///
    /// # Errors
    /// The PCRs are not in a state the signed policy approves ([`TpmError::PcrMismatch`]), the key
    /// is absent, or the TPM does not answer.
    pub fn sign(&self, handle: u32, digest: [u8; 32]) -> Result<Vec<u8>, TpmError> {
        let auth = self.authorization()?;
        let r = self.call("sign", move |c| {
            let key = c.persistent(handle).map_err(|e| cmd("sign", &e))?;
            let digest = Digest::try_from(digest.to_vec()).map_err(|e| cmd("sign", &e))?;
            let scheme = SignatureScheme::EcDsa { hash_scheme: HashScheme::new(HashingAlgorithm::Sha256) };
            let name = provision::RESIDENT.iter().find(|(_, h)| *h == handle).map_or("a resident key", |(n, _)| *n);
            let sig = policy::with_authorized(c, &auth, name, "sign", |ctx| {
                ctx.sign(KeyHandle::from(key), digest, scheme, null_ticket()?)
            })?;
            ecdsa_der(&sig).ok_or_else(|| TpmError::Command { op: "sign", reason: "not an ECDSA signature".into() })
        });
        if r.is_ok() {
            self.signatures.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Advances the audit checkpoint counter (under the signed PCR policy); its new value.
    ///
    /// # Errors
    /// As [`Tpm::sign`] (the counter is written only under the signed PCR policy).
    pub fn count_checkpoint(&self) -> Result<u64, TpmError> {
        let auth = self.authorization()?;
        self.call("nv_increment", move |c| counter::increment(c, &auth))
    }

    /// The audit checkpoint counter's value, read only once the index checks out against
    /// `pinned` ([`counter::Pinned`]).
    ///
    /// # Errors
    /// The counter is not defined, is not the counter provisioning defined (an index replaced),
    /// or the TPM does not answer.
    pub fn checkpoint_counter(&self, pinned: Pinned) -> Result<u64, TpmError> {
        self.call("nv_read", move |c| counter::read(c, &pinned))
    }

    /// The configuration record ([`record`]), checked against the policy of keys bound to
    /// `policy_key` (an uncompressed P-256 point); `None` when the TPM has none.
    ///
    /// # Errors
    /// The index is not the record provisioning defined, or the TPM does not answer.
    pub fn config_record(&self, policy_key: Vec<u8>) -> Result<Option<ConfigRecord>, TpmError> {
        self.call("nv_read", move |c| {
            let policy = policy::keys_policy(c, &policy_key)?;
            record::read(c, &policy)
        })
    }

    /// Writes the configuration record, under the signed PCR policy.
    ///
    /// # Errors
    /// As [`Tpm::sign`]: only in a boot state the signed policy approves.
    pub fn write_config_record(&self, r: ConfigRecord) -> Result<(), TpmError> {
        let auth = self.authorization()?;
        self.call("nv_write", move |c| record::write(c, &auth, &r))
    }

    /// The uncompressed P-256 point of a persistent key (None when the handle is empty).
    ///
    /// # Errors
    /// The TPM does not answer, or the object is not a P-256 key.
    pub fn public_point(&self, handle: u32) -> Result<Option<Vec<u8>>, TpmError> {
        self.call("read_public", move |c| read_point(c, handle))
    }

    /// Unseals a blob under the storage primary in a session satisfying the signed PCR policy.
    ///
    /// # Errors
    /// As [`Tpm::sign`], or a blob this TPM did not seal.
    pub fn unseal(&self, name: &str, blob: &SealedBlob) -> Result<Zeroizing<Vec<u8>>, TpmError> {
        let auth = self.authorization()?;
        let (name, blob) = (name.to_owned(), blob.clone());
        self.call("unseal", move |c| session::unseal(c, &name, &blob, &auth))
    }

    /// A quote over `pcrs` with the attestation key, qualified by `nonce`.
    ///
    /// # Errors
    /// The attestation key is absent, a PCR is out of range, or the TPM does not answer.
    pub fn quote(&self, ak: u32, nonce: Vec<u8>, pcrs: Vec<u8>) -> Result<Quote, TpmError> {
        self.call("quote", move |c| {
            let key = c.persistent(ak).map_err(|e| cmd("quote", &e))?;
            let selection = pcr_selection(&pcrs).map_err(|e| cmd("quote", &e))?;
            let nonce = Data::try_from(nonce).map_err(|e| cmd("quote", &e))?;
            let scheme = SignatureScheme::EcDsa { hash_scheme: HashScheme::new(HashingAlgorithm::Sha256) };
            let (attest, sig) = c
                .ctx
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.quote(KeyHandle::from(key), nonce, scheme, selection)
                })
                .map_err(|e| cmd("quote", &e))?;
            let sel = pcr_selection(&pcrs).map_err(|e| cmd("quote", &e))?;
            let (_, _, values) =
                c.ctx.execute_without_session(|ctx| ctx.pcr_read(sel)).map_err(|e| cmd("PCR_Read", &e))?;
            Ok(Quote {
                attest: attest.marshall().map_err(|e| cmd("quote", &e))?,
                signature: sig.marshall().map_err(|e| cmd("quote", &e))?,
                pcr_values: values.value().iter().map(|d| d.value().to_vec()).collect(),
            })
        })
    }

    /// Current values of `pcrs` (SHA-256 bank), in PCR order.
    ///
    /// # Errors
    /// A PCR out of range, or the TPM does not answer.
    pub fn pcr_values(&self, pcrs: Vec<u8>) -> Result<Vec<(u8, Vec<u8>)>, TpmError> {
        self.call("pcr_read", move |c| {
            let selection = pcr_selection(&pcrs).map_err(|e| cmd("PCR_Read", &e))?;
            let (_, _, values) =
                c.ctx.execute_without_session(|ctx| ctx.pcr_read(selection)).map_err(|e| cmd("PCR_Read", &e))?;
            let mut sorted = pcrs.clone();
            sorted.sort_unstable();
            sorted.dedup();
            Ok(sorted.into_iter().zip(values.value().iter().map(|d| d.value().to_vec())).collect())
        })
    }
}

/// What `tpm quote` writes: the TPMS_ATTEST and TPMT_SIGNATURE as the TPM marshals them, and
/// the PCR values quoted.
pub struct Quote {
    pub attest: Vec<u8>,
    pub signature: Vec<u8>,
    pub pcr_values: Vec<Vec<u8>>,
}

pub(crate) fn cmd(op: &'static str, e: &tss_esapi::Error) -> TpmError {
    let reason = match e {
        // Not a TPM response: the transport (TCTI) or the software stack failed.
        tss_esapi::Error::Tss2Error(rc) if rc.kind().is_none() => {
            format!("no answer from the TPM (connection lost or TPM reset; {e})")
        }
        _ => e.to_string(),
    };
    TpmError::Command { op, reason }
}

fn null_ticket() -> tss_esapi::Result<HashcheckTicket> {
    use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
    use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
    HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: Default::default(),
    })
}

pub(crate) fn pcr_selection(pcrs: &[u8]) -> tss_esapi::Result<PcrSelectionList> {
    let slots: Vec<PcrSlot> = pcrs.iter().map(|p| PcrSlot::try_from(1u32 << p)).collect::<Result<_, _>>()?;
    PcrSelectionListBuilder::new().with_selection(HashingAlgorithm::Sha256, &slots).build()
}

pub(crate) fn read_point(c: &mut Conn, handle: u32) -> Result<Option<Vec<u8>>, TpmError> {
    if !c.exists(handle).map_err(|e| cmd("GetCapability", &e))? {
        return Ok(None);
    }
    let obj = match c.persistent(handle) {
        Ok(o) => o,
        Err(e) if keeps_connection(&e) => return Ok(None),
        Err(e) => return Err(cmd("ReadPublic", &e)),
    };
    let (public, _, _) = c.ctx.read_public(KeyHandle::from(obj)).map_err(|e| cmd("ReadPublic", &e))?;
    Ok(point_of(&public))
}

/// Marshals a TPM public area (for the sealed-blob files).
pub(crate) fn marshal_public(p: &Public) -> Result<Vec<u8>, TpmError> {
    p.marshall().map_err(|e| cmd("marshal", &e))
}

pub(crate) fn private_bytes(p: &Private) -> Vec<u8> {
    p.value().to_vec()
}
