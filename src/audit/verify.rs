//! Officer tools on an audit log: verify it end to end (every record, the sequence, the Merkle
//! tree and every checkpoint signature), and read it (query, export, inclusion proofs).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::FromDer;

use super::merkle::{self, CompactTree, Hash};
use super::{Checkpoint, Record, segments};

/// Where a record is.
#[derive(Debug, Clone)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
}

/// Every record of the log, in order, with its exact bytes.
pub struct LogContents {
    pub records: Vec<(Record, Vec<u8>, Location)>,
    pub checkpoints: Vec<Checkpoint>,
}

/// Reads the log; the first record that does not parse is an error naming it.
///
/// # Errors
/// A segment that cannot be read, a record that does not parse (named by file and line), or a
/// checkpoint line that does not parse.
pub fn read_log(dir: &Path) -> Result<LogContents, String> {
    let mut records = Vec::new();
    for path in segments(dir).map_err(|e| e.to_string())? {
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // The active segment of a running gateway ends in zero-filled space.
        bytes.truncate(super::writer::records_end(&bytes));
        if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
            return Err(format!("{}: the last record is incomplete (torn tail)", path.display()));
        }
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let loc = Location { file: path.clone(), line: i + 1 };
            let r: Record = serde_json::from_slice(line)
                .map_err(|e| format!("record at {}:{} does not parse: {e}", loc.file.display(), loc.line))?;
            records.push((r, line.to_vec(), loc));
        }
    }
    let mut checkpoints = Vec::new();
    let cp_path = dir.join("checkpoints.jsonl");
    if let Ok(text) = std::fs::read_to_string(&cp_path) {
        for (i, line) in text.lines().enumerate() {
            let cp: Checkpoint = serde_json::from_str(line)
                .map_err(|e| format!("checkpoint at {}:{}: {e}", cp_path.display(), i + 1))?;
            checkpoints.push(cp);
        }
    }
    Ok(LogContents { records, checkpoints })
}

/// The EC point of a checkpoint public key (PEM SPKI).
///
/// # Errors
/// The file cannot be read or is not a P-256 public key in PEM.
pub fn public_point(path: &Path) -> Result<Vec<u8>, String> {
    let spki = SubjectPublicKeyInfoDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(info.subject_public_key.data.to_vec())
}

pub fn check_signature(cp: &Checkpoint, point: &[u8]) -> bool {
    let Ok(sig) = B64.decode(&cp.signature) else { return false };
    let msg = cp.message();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point).verify(&msg, &sig).is_ok()
}

/// What a successful verification found.
#[derive(Debug)]
pub struct Summary {
    pub records: u64,
    pub checkpoints: usize,
    pub root: String,
    pub last_checkpoint: Option<Checkpoint>,
}

/// Verifies the whole log; the error names the first bad record or checkpoint and what is wrong.
///
/// # Errors
/// The first record or checkpoint that does not verify, and why: a sequence gap, a record not in
/// canonical form, a root that does not match, a bad signature, an anchor without its signed
/// checkpoint, a TPM counter going backwards.
pub fn verify(dir: &Path, key: &Path) -> Result<Summary, String> {
    let point = public_point(key)?;
    let log = read_log(dir)?;
    // After retention pruning the log resumes from its anchor; checkpoints of the pruned part
    // can no longer be recomputed and are only signature-checked.
    let anchor = super::read_anchor(dir)?;
    let mut tree = match &anchor {
        Some(a) => anchored_tree(a, &point, key)?,
        None => CompactTree::default(),
    };
    let base = tree.size();
    let roots = replay(&log, &mut tree)?;
    for (i, cp) in log.checkpoints.iter().enumerate() {
        if !check_signature(cp, &point) {
            return Err(format!(
                "checkpoint {i} (tree size {}): the signature does not verify under {}",
                cp.tree_size,
                key.display()
            ));
        }
        // Before the retention anchor: the signature is all that can be checked.
        if cp.tree_size >= base {
            covers(&log, i, &roots, tree.size())?;
        }
    }
    // The TPM counter, where checkpoints carry it, only goes up.
    let counters: Vec<(usize, u64)> =
        log.checkpoints.iter().enumerate().filter_map(|(i, c)| c.tpm_counter.map(|n| (i, n))).collect();
    if let Some(w) = counters.windows(2).find(|w| w[1].1 <= w[0].1) {
        return Err(format!(
            "checkpoint {}: the TPM counter goes from {} to {} (not increasing)",
            w[1].0, w[0].1, w[1].1
        ));
    }
    Ok(Summary {
        records: tree.size(),
        checkpoints: log.checkpoints.len(),
        root: merkle::hex(&tree.root()),
        last_checkpoint: log.checkpoints.last().cloned(),
    })
}

/// Replays the records after `tree`'s (the anchor's) into it, each in sequence and canonical;
/// the roots at every size a checkpoint covers.
fn replay(log: &LogContents, tree: &mut CompactTree) -> Result<std::collections::HashMap<u64, String>, String> {
    let base = tree.size();
    // Roots at every checkpointed size, computed in the same pass.
    let mut wanted: Vec<u64> = log.checkpoints.iter().map(|c| c.tree_size).collect();
    wanted.sort_unstable();
    let mut roots = std::collections::HashMap::new();
    if wanted.binary_search(&base).is_ok() {
        roots.insert(base, merkle::hex(&tree.root()));
    }
    for (i, (r, bytes, loc)) in log.records.iter().enumerate() {
        let i = i + base as usize;
        if r.seq != i as u64 {
            return Err(format!(
                "record {i} at {}:{}: sequence number {} (records are missing, added or reordered)",
                loc.file.display(),
                loc.line,
                r.seq
            ));
        }
        if r.canonical() != *bytes {
            return Err(format!("record {i} at {}:{}: not in canonical form (altered)", loc.file.display(), loc.line));
        }
        tree.push(merkle::leaf_hash(bytes));
        if wanted.binary_search(&tree.size()).is_ok() {
            roots.insert(tree.size(), merkle::hex(&tree.root()));
        }
    }
    Ok(roots)
}

/// Checkpoint `i` against the roots the records hash to: its size reached, its root the
/// records' root at that size, sizes not going backwards.
fn covers(
    log: &LogContents,
    i: usize,
    roots: &std::collections::HashMap<u64, String>,
    log_size: u64,
) -> Result<(), String> {
    let cp = &log.checkpoints[i];
    match roots.get(&cp.tree_size) {
        None => {
            return Err(format!(
                "checkpoint {i} covers {} records but the log has {} (records were removed)",
                cp.tree_size, log_size
            ));
        }
        Some(root) if *root != cp.root_hash => {
            // Find the first record that differs from what the checkpoint signed is not
            // possible from a root alone; name the range.
            let prev = log.checkpoints[..i]
                .iter()
                .filter(|c| c.tree_size < cp.tree_size && roots.get(&c.tree_size) == Some(&c.root_hash))
                .map(|c| c.tree_size)
                .max()
                .unwrap_or(0);
            let first = log
                .records
                .get(prev as usize)
                .map(|(_, _, l)| format!("{}:{}", l.file.display(), l.line))
                .unwrap_or_default();
            return Err(format!(
                "checkpoint {i} (tree size {}): the records do not hash to its root; a record between {prev} ({first}) and {} was altered",
                cp.tree_size,
                cp.tree_size - 1
            ));
        }
        Some(_) => {}
    }
    if i > 0 && cp.tree_size < log.checkpoints[i - 1].tree_size {
        return Err(format!("checkpoint {i}: tree size goes backwards"));
    }
    Ok(())
}

/// The tree a pruned log resumes from: the anchor's peaks, trusted only because a checkpoint
/// signed by `point` for exactly that size and root comes with them.
fn anchored_tree(a: &super::Anchor, point: &[u8], key: &Path) -> Result<CompactTree, String> {
    let tree = a.tree().ok_or("anchor.json: its peaks do not fit its tree size")?;
    let cp = a.checkpoint.as_ref().ok_or(
        "anchor.json carries no signed checkpoint: the start of the log cannot be trusted (segments removed by hand?)",
    )?;
    if !check_signature(cp, point) {
        return Err(format!("anchor.json: its checkpoint's signature does not verify under {}", key.display()));
    }
    if cp.tree_size != tree.size() || cp.root_hash != merkle::hex(&tree.root()) {
        return Err(format!(
            "anchor.json: its peaks ({} records) are not the tree its signed checkpoint covers ({} records): altered",
            tree.size(),
            cp.tree_size
        ));
    }
    Ok(tree)
}

/// How a log stands against a checkpoint an auditor kept.
#[derive(Debug)]
pub struct Consistency {
    pub from: u64,
    pub to: u64,
    pub proof_len: usize,
}

/// Proves that the log (already verified) extends `kept`, a checkpoint signed by `key` that an
/// auditor kept: an RFC 9162 consistency proof from its tree to the log's newest checkpoint,
/// built from the records and checked as a remote verifier would.
///
/// # Errors
/// `kept` does not verify under `key`, is larger than the log, or the log's records do not extend
/// it (history rewritten or truncated).
pub fn consistent_with(dir: &Path, key: &Path, kept: &Checkpoint) -> Result<Consistency, String> {
    let point = public_point(key)?;
    if !check_signature(kept, &point) {
        return Err(format!("the kept checkpoint's signature does not verify under {}", key.display()));
    }
    if super::read_anchor(dir)?.is_some_and(|a| a.tree_size > 0) {
        return Err("the log was pruned by retention: prove consistency before pruning, or from the anchor's checkpoint                     with a log that still holds every record"
            .into());
    }
    let log = read_log(dir)?;
    let newest = log.checkpoints.iter().max_by_key(|c| c.tree_size).ok_or("the log has no checkpoint")?;
    if newest.origin != kept.origin {
        return Err(format!("the kept checkpoint is of log {:?}, this one is {:?}", kept.origin, newest.origin));
    }
    if kept.tree_size > newest.tree_size || kept.tree_size > log.records.len() as u64 {
        return Err(format!(
            "the kept checkpoint signs {} records but this log's newest checkpoint covers {}: records were removed",
            kept.tree_size, newest.tree_size
        ));
    }
    let leaves: Vec<Hash> =
        log.records.iter().take(newest.tree_size as usize).map(|(_, b, _)| merkle::leaf_hash(b)).collect();
    let proof = merkle::consistency_proof(&leaves, kept.tree_size as usize);
    let (old, new) = match (merkle::unhex(&kept.root_hash), merkle::unhex(&newest.root_hash)) {
        (Some(o), Some(n)) => (o, n),
        _ => return Err("a checkpoint's root is not a hex hash".into()),
    };
    if !merkle::verify_consistency(kept.tree_size, newest.tree_size, &old, &new, &proof) {
        return Err(format!(
            "this log does not extend the kept checkpoint of {} records: its history was rewritten",
            kept.tree_size
        ));
    }
    Ok(Consistency { from: kept.tree_size, to: newest.tree_size, proof_len: proof.len() })
}

/// An inclusion proof for one record against a checkpoint, self-contained for an external
/// verifier who has only the checkpoint public key.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Proof {
    /// The record's exact bytes (its canonical JSON).
    pub record: String,
    pub leaf_index: u64,
    pub checkpoint: Checkpoint,
    /// Audit path, hex, leaf to root.
    pub path: Vec<String>,
}

/// Builds the proof for the record of `incident` (its first record) against the latest
/// checkpoint that covers it.
///
/// # Errors
/// No record of `incident`, or no checkpoint covers it yet.
pub fn prove(dir: &Path, incident: &str) -> Result<Proof, String> {
    if super::read_anchor(dir)?.is_some() {
        return Err("inclusion proofs for a log pruned by retention are not supported yet".into());
    }
    let log = read_log(dir)?;
    let (index, (_, bytes, _)) = log
        .records
        .iter()
        .enumerate()
        .find(|(_, (r, _, _))| r.incident_id.as_deref() == Some(incident))
        .ok_or_else(|| format!("no record has incident ID {incident}"))?;
    let cp = log
        .checkpoints
        .iter()
        .filter(|c| c.tree_size > index as u64)
        .max_by_key(|c| c.tree_size)
        .ok_or("no checkpoint covers this record yet; try again in a moment")?
        .clone();
    let leaves: Vec<Hash> =
        log.records.iter().take(cp.tree_size as usize).map(|(_, b, _)| merkle::leaf_hash(b)).collect();
    let path = merkle::inclusion_proof(&leaves, index).iter().map(merkle::hex).collect();
    Ok(Proof { record: String::from_utf8_lossy(bytes).into_owned(), leaf_index: index as u64, checkpoint: cp, path })
}

/// Checks a proof with only the checkpoint public key.
///
/// # Errors
/// The checkpoint's signature does not verify under `key`, or the path does not lead from the
/// record to the checkpoint's root.
pub fn verify_proof(proof: &Proof, key: &Path) -> Result<(), String> {
    let point = public_point(key)?;
    if !check_signature(&proof.checkpoint, &point) {
        return Err("the checkpoint's signature does not verify".into());
    }
    let path: Option<Vec<Hash>> = proof.path.iter().map(|h| merkle::unhex(h)).collect();
    let path = path.ok_or("the proof's path is not hex hashes")?;
    let leaf = merkle::leaf_hash(proof.record.as_bytes());
    let root = merkle::root_from_proof(leaf, proof.leaf_index, proof.checkpoint.tree_size, &path)
        .ok_or("the proof's path does not fit the tree size")?;
    if merkle::hex(&root) != proof.checkpoint.root_hash {
        return Err("the record is not in the log the checkpoint signs (root differs)".into());
    }
    Ok(())
}
