//! Inclusion proofs: one record against a checkpoint, self-contained for an external verifier
//! who has only the checkpoint public key.

use std::path::Path;

use super::Checkpoint;
use super::merkle::{self, Hash};
use super::verify::{check_signature, public_point, read_log};

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
    if super::retention::read_anchor(dir)?.is_some() {
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
