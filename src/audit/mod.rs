//! The tamper-evident audit log. Records go to a bounded queue and are written in batches to the
//! current segment with one fsync per batch (group commit: the request that finds nobody
//! writing writes the batch, see [`commit`]); a request is forwarded only after its record is
//! durable. The records form an RFC 9162 Merkle
//! tree; signed checkpoints (origin, size, root, time) are written every N records or T ms.
//! If a record cannot be made durable in time (disk full, read-only, I/O error), the request
//! is refused with `AuditUnavailable` and `/readyz` turns 503.
//!
//! On disk: `segment-NNNNNN.jsonl` (records, one per line), `checkpoints.jsonl`, `anchor.json`
//! once retention pruned ([`retention`]), `writer.lock` ([`WriterLock`]).

mod commit;
pub mod copy;
pub mod merkle;
mod metrics;
pub mod note;
pub mod proof;
pub mod record;
pub mod recovery;
pub mod report;
pub mod retention;
pub mod spool;
pub mod verify;
pub mod witness;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use commit::Committer;
pub use metrics::AuditMetrics;
pub use record::{ClientCert, Record};
pub use retention::{Anchor, read_anchor};
pub use spool::{SPOOL_DIR, spool};
use writer::{Checkpointer, Writer};
pub use writer::{LOCK_FILE, WriterLock, records_end};

/// Beside the log: the peer witness's cosigned checkpoints of it, one note per line (JSON).
pub const COSIGNATURES: &str = "cosignatures.jsonl";
/// The log's signed checkpoints, one JSON object per line.
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";

/// `[audit]` in gateway.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub dir: PathBuf,
    /// The P-256 key that signs checkpoints: `tpm:audit-checkpoint`, or a PKCS#8 PEM file.
    pub checkpoint_key: crate::keys::KeyRef,
    /// The key of the HMAC of document numbers: `tpm:audit-pseudonym` (sealed), or a file of
    /// 32 random bytes (raw or hex).
    pub pseudonym_key: crate::keys::KeyRef,
    /// Name of this log in checkpoints.
    #[serde(default = "default_origin")]
    pub origin: String,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// A checkpoint at least this often while records come (10 ms to 1 h): records after the
    /// newest checkpoint older than this fail `audit verify`.
    #[serde(
        deserialize_with = "crate::config::units::millis_within::<_, 10, 3_600_000>",
        default = "default_checkpoint_ms"
    )]
    pub checkpoint_interval_ms: u64,
    /// How long a request waits for its record to be durable before it is refused.
    #[serde(deserialize_with = "crate::config::units::millis", default = "default_durable_ms")]
    pub durable_timeout_ms: u64,
    #[serde(deserialize_with = "crate::config::units::bytes", default = "default_segment_bytes")]
    pub segment_max_bytes: u64,
    /// Records waiting for the writer, at most; a full queue refuses at once.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Whole segments whose newest record is older than this are pruned (0: keep everything).
    /// Later checkpoints stay verifiable from the retention anchor (`anchor.json`). At least
    /// one year ([`crate::config::units::MIN_RETENTION_S`]): a shorter value is refused.
    #[serde(
        deserialize_with = "crate::config::units::seconds_off_or_within::<_, { crate::config::units::MIN_RETENTION_S }, { crate::config::units::MAX_DURATION_S }>",
        default
    )]
    pub retention_s: u64,
    /// A new segment after this many seconds (as well as after `segment_max_bytes`): 1 min to
    /// 1 year.
    #[serde(
        deserialize_with = "crate::config::units::seconds_within::<_, 60, { crate::config::units::YEAR_S }>",
        default = "default_segment_age"
    )]
    pub segment_max_age_s: u64,
}

fn default_segment_age() -> u64 {
    24 * 3600
}

fn default_origin() -> String {
    "spocgw".into()
}
fn default_checkpoint_every() -> u64 {
    1000
}
fn default_checkpoint_ms() -> u64 {
    1000
}
fn default_durable_ms() -> u64 {
    2000
}
fn default_segment_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_queue() -> usize {
    65_536
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{0}")]
    Key(String),
    #[error("the audit log is damaged: {0} (run `spocgw audit verify`)")]
    Damaged(String),
    #[error("the audit record could not be made durable: {0}")]
    NotDurable(String),
    #[error("{0}: another process writes this audit log")]
    InUse(PathBuf),
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> AuditError {
    AuditError::Io { path: path.to_path_buf(), reason: e.to_string() }
}

/// A signed tree head.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub origin: String,
    pub tree_size: u64,
    pub root_hash: String,
    pub time: String,
    pub key_id: String,
    pub signature: String,
    /// The TPM's monotonic checkpoint counter after this checkpoint was counted (signed with
    /// it): `audit verify --tpm` compares the newest with the TPM's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_counter: Option<u64>,
}

impl Checkpoint {
    /// The bytes the signature covers (v2 when the checkpoint carries a TPM counter).
    pub fn signed_bytes(origin: &str, tree_size: u64, root_hash: &str, time: &str, counter: Option<u64>) -> Vec<u8> {
        match counter {
            None => format!("spocgw-audit-checkpoint-v1\n{origin}\n{tree_size}\n{root_hash}\n{time}\n").into_bytes(),
            Some(c) => format!("spocgw-audit-checkpoint-v2\n{origin}\n{tree_size}\n{root_hash}\n{time}\ncounter {c}\n")
                .into_bytes(),
        }
    }

    /// The bytes this checkpoint's signature covers.
    pub fn message(&self) -> Vec<u8> {
        Checkpoint::signed_bytes(&self.origin, self.tree_size, &self.root_hash, &self.time, self.tpm_counter)
    }
}

pub use crate::keys::{CheckpointSigner, FileSigner, spki_pem};

/// The checkpoint public key, as the gateway writes it beside the log.
pub const PUBLIC_KEY_FILE: &str = "checkpoint.pub.pem";

pub fn segment_name(i: u32) -> String {
    format!("segment-{i:06}.jsonl")
}

/// The segments of `dir`, in order.
///
/// # Errors
/// [`AuditError::Io`] when `dir` cannot be listed.
pub fn segments(dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("segment-") && n.ends_with(".jsonl"))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// The key ID of a checkpoint key: the first 16 hex digits of SHA-256 over its public key.
pub fn key_id(public_key: &[u8]) -> String {
    crate::encoding::sha256_hex(public_key)[..16].to_owned()
}

struct Job {
    /// The record's canonical bytes after its sequence number (which the writer assigns):
    /// serialised by the caller's thread, so whoever writes the batch only stamps and writes.
    tail: Vec<u8>,
    done: Option<oneshot::Sender<Result<u64, String>>>,
}

/// How every canonical record begins (`seq` is its first field); the writer writes this, the
/// sequence number, then the job's tail.
const SEQ_PREFIX: &[u8] = b"{\"seq\":";

impl Job {
    fn new(record: &Record, done: Option<oneshot::Sender<Result<u64, String>>>) -> Job {
        let mut tail = Vec::with_capacity(1024);
        record.canonical_tail(&mut tail);
        Job { tail, done }
    }
}

/// The audit log's handle, shared by every request. Dropping the last one stops the log: a
/// final checkpoint, the segment cut to its records.
pub struct Audit {
    core: Arc<Committer>,
    durable_timeout: Duration,
    /// The HMAC key, its schedule computed once (aws-lc wipes it when dropped).
    pseudonym: hmac::Key,
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.core.stop();
    }
}

impl Audit {
    /// Opens with the keys of the configuration read as files (tools, tests, benchmarks).
    ///
    /// # Errors
    /// A key file that cannot be read, or any error of [`Audit::start_with`].
    pub fn start(cfg: &AuditConfig) -> Result<Arc<Audit>, AuditError> {
        let keys = crate::keys::KeyStore::open(None).map_err(|e| AuditError::Key(e.to_string()))?;
        let signer = keys.checkpoint_signer(&cfg.checkpoint_key).map_err(|e| AuditError::Key(e.to_string()))?;
        let pseudonym = keys.secret(&cfg.pseudonym_key).map_err(|e| AuditError::Key(e.to_string()))?;
        Self::start_with(cfg, signer, pseudonym)
    }

    /// Opens (recovering a torn tail) and starts the duties thread.
    ///
    /// # Errors
    /// The log is locked by another writer ([`AuditError::InUse`]), damaged (a record out of
    /// sequence or unparsable, a segment torn anywhere but at its end), or its directory cannot be
    /// created or written.
    pub fn start_with(
        cfg: &AuditConfig,
        key: Box<dyn CheckpointSigner>,
        pseudonym: Zeroizing<Vec<u8>>,
    ) -> Result<Arc<Audit>, AuditError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| io_err(&cfg.dir, e))?;
        // The public key beside the log, so `audit verify DIR` works as is; an independent check
        // passes a copy kept elsewhere with --key.
        let pub_path = cfg.dir.join(PUBLIC_KEY_FILE);
        std::fs::write(&pub_path, spki_pem(&key.public_key())).map_err(|e| io_err(&pub_path, e))?;
        let (mut writer, recovered) = Writer::open(cfg)?;
        let mut checkpointer = Checkpointer::open(cfg, key, writer.tree.size())?;
        // The first records: a recovery note if the tail was cut, and the start.
        let mut first = Vec::new();
        if let Some(detail) = recovered {
            let mut r = Record::now("recovery");
            r.detail = Some(detail);
            first.push(r);
        }
        let mut start = Record::now("start");
        start.detail = Some(format!(
            "spocgw {} audit log opened at size {}, checkpoint key {}",
            env!("CARGO_PKG_VERSION"),
            writer.tree.size(),
            checkpointer.key_id
        ));
        first.push(start);
        writer.append(first.iter().map(|record| Job::new(record, None)).collect()).map_err(AuditError::NotDurable)?;
        let size = writer.tree.size();
        checkpointer.write(size, &writer.tree.root()).map_err(|e| AuditError::NotDurable(e.to_string()))?;
        writer.checkpointed(size, checkpointer.every);
        let core =
            Committer::start(writer, checkpointer, cfg.queue).map_err(|e| AuditError::NotDurable(e.to_string()))?;
        let pseudonym = hmac::Key::new(hmac::HMAC_SHA256, &pseudonym);
        Ok(Arc::new(Audit { core, durable_timeout: Duration::from_millis(cfg.durable_timeout_ms), pseudonym }))
    }

    pub fn is_healthy(&self) -> bool {
        self.core.is_healthy()
    }

    /// Appends a record and waits until it is durable; Err if it is not within the deadline.
    /// If nobody is writing, this call writes the batch itself (blocking for the fsync).
    ///
    /// # Errors
    /// The record is not durable within the deadline, or the log cannot be written (disk full, I/O
    /// error): the caller must not forward.
    pub async fn append_durable(&self, record: &Record) -> Result<u64, String> {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        if self.core.submit(Job::new(record, Some(tx)))? {
            self.core.lead().await;
        }
        let late = || {
            self.core.set_unhealthy();
            Err(format!("not durable within {:?}", self.durable_timeout))
        };
        let Some(left) = self.durable_timeout.checked_sub(started.elapsed()) else { return late() };
        match tokio::time::timeout(left, rx).await {
            Err(_) => late(),
            Ok(Err(_)) => Err("the audit writer dropped the record".into()),
            // Durable, but later than the deadline (the leader's own fsync stalled): refused
            // all the same, as a record that waited would be.
            Ok(Ok(_)) if started.elapsed() > self.durable_timeout => late(),
            Ok(Ok(r)) => r,
        }
    }

    /// Appends a record without waiting (outcomes of requests already decided): it goes with
    /// the next batch, within [`commit::SYNC_DELAY`] at most.
    pub fn append(&self, record: &Record) {
        if self.core.submit(Job::new(record, None)).is_err() {
            self.core.set_unhealthy();
            tracing::error!("audit queue full: an outcome record was lost");
        }
    }

    /// Writes a signed checkpoint of everything appended so far and cuts the active segment to
    /// its records (used at shutdown).
    ///
    /// # Errors
    /// The checkpoint cannot be signed (the TPM does not answer) or written.
    pub async fn checkpoint_now(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.core.force_checkpoint(tx);
        rx.await.map_err(|_| "the audit writer stopped".to_owned())?
    }

    /// Counts what is written from now on into these counters (the gateway's metrics).
    pub fn attach_metrics(&self, written: AuditMetrics) {
        self.core.attach(written);
    }

    /// HMAC-SHA256 of a value under the pseudonymisation key, hex.
    pub fn pseudonym(&self, value: &str) -> String {
        pseudonym_under(&self.pseudonym, value)
    }

    /// A document's pseudonym in a record ([`document_pseudonym`]).
    pub fn document_pseudonym(&self, issuing_state: Option<&str>, number: &str) -> String {
        format!("{DOCUMENT_V2}{}", self.pseudonym(&document_key(issuing_state, number)))
    }
}

/// How a document pseudonym that covers the issuing state begins; one without it (records written
/// before) is the bare HMAC of the number as the request carried it.
pub const DOCUMENT_V2: &str = "v2:";

/// A document number as pseudonyms take it: upper case, letters and digits only (spaces,
/// hyphens and the `<` filler of a machine-readable zone dropped).
pub fn normalise_document(number: &str) -> String {
    number.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_uppercase()).collect()
}

/// What a document pseudonym is the HMAC of: the issuing state and the number, normalised, so
/// that equal numbers of different states differ.
fn document_key(issuing_state: Option<&str>, number: &str) -> String {
    format!("{}\u{1f}{}", issuing_state.unwrap_or("").trim().to_ascii_uppercase(), normalise_document(number))
}

/// The pseudonym `key` gives a document of `issuing_state` numbered `number`, in the record's
/// form ([`DOCUMENT_V2`]).
pub fn document_pseudonym(key: &[u8], issuing_state: Option<&str>, number: &str) -> String {
    format!("{DOCUMENT_V2}{}", pseudonymise(key, &document_key(issuing_state, number)))
}

/// HMAC-SHA256 of `value` under `key`, hex (what [`Audit::pseudonym`] gives with its key).
pub fn pseudonymise(key: &[u8], value: &str) -> String {
    pseudonym_under(&hmac::Key::new(hmac::HMAC_SHA256, key), value)
}

fn pseudonym_under(key: &hmac::Key, value: &str) -> String {
    crate::encoding::hex(hmac::sign(key, value.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway's pseudonyms (key scheduled once) are the officers' tools' (key given each
    /// time), and HMAC-SHA256 (RFC 4231, test case 1).
    #[test]
    fn pseudonyms_are_hmac_sha256_under_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("cp.key");
        std::fs::write(&key, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let cfg: AuditConfig = toml::from_str(&format!(
            "dir = {:?}\ncheckpoint_key = {key:?}\npseudonym_key = \"unused\"",
            tmp.path().join("log")
        ))
        .unwrap();
        let secret = [0x0b; 20];
        let audit = Audit::start_with(&cfg, Box::new(FileSigner::load(&key).unwrap()), Zeroizing::new(secret.to_vec()))
            .unwrap();
        let expected = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7";
        assert_eq!(audit.pseudonym("Hi There"), expected);
        assert_eq!(pseudonymise(&secret, "Hi There"), expected);
        assert_ne!(audit.pseudonym("Hi there"), expected);
    }

    /// What the writer writes (prefix, its sequence number, the job's tail) is the record's
    /// canonical form at that sequence number, whatever number the record carried before.
    #[test]
    fn a_job_stamped_by_the_writer_is_the_canonical_record() {
        let mut r = Record::now("request");
        r.incident_id = Some("a\"b,c".into());
        r.detail = Some("seq 12, \"seq\":3".into());
        for (carried, seq) in [(0, 0), (0, 7), (99, 123_456), (u64::MAX, 1)] {
            r.seq = carried;
            let job = Job::new(&r, None);
            let line = [SEQ_PREFIX, seq.to_string().as_bytes(), &job.tail].concat();
            assert_eq!(line, Record { seq, ..r.clone() }.canonical());
        }
    }
}
