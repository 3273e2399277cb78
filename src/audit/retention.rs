//! Retention: whole old segments are removed, and the log then resumes from an anchor (the tree
//! state before its first remaining record), signed in a domain of its own. A checkpoint's
//! signature can therefore never stand for an anchor, and a verifier accepts an anchor only when
//! it is told that pruning is expected (`audit verify --allow-pruned-before DATE`), or when a copy
//! that still holds the pruned records proves them (`--peer-copy DIR`).

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::merkle::{self, CompactTree};
use super::writer::{Checkpointer, records_end};
use super::{Record, record, segment_name, segments};

/// Beside the log after retention pruned its oldest segments.
pub const ANCHOR_FILE: &str = "anchor.json";

/// Where the log starts after retention pruned its oldest segments: the tree state (size and
/// peaks) before the first remaining record, and the time of the newest record pruned, signed by
/// the checkpoint key as an anchor ([`Anchor::signed_bytes`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    pub origin: String,
    pub tree_size: u64,
    /// (height, hash hex), largest first.
    pub peaks: Vec<(u32, String)>,
    /// When the pruning happened.
    pub time: String,
    /// The time of the newest record pruned: every pruned record is at least this old.
    pub newest_pruned: String,
    /// The last segment removed.
    pub pruned_through: String,
    pub key_id: String,
    /// ECDSA P-256 over [`Anchor::signed_bytes`], base64.
    pub signature: String,
}

impl Anchor {
    pub fn tree(&self) -> Option<CompactTree> {
        let peaks: Option<Vec<(u32, merkle::Hash)>> =
            self.peaks.iter().map(|(h, x)| merkle::unhex(x).map(|x| (*h, x))).collect();
        CompactTree::from_peaks(self.tree_size, peaks?)
    }

    /// What the signature covers: its own domain (no checkpoint's bytes are ever these), the
    /// tree's size and root, and what was pruned when.
    pub fn signed_bytes(&self, root_hex: &str) -> Vec<u8> {
        format!(
            "spocgw-audit-anchor-v1\n{}\n{}\n{root_hex}\n{}\nnewest-pruned {}\nthrough {}\n",
            self.origin, self.tree_size, self.time, self.newest_pruned, self.pruned_through
        )
        .into_bytes()
    }

    /// The tree the log resumes from, if the anchor's signature verifies under `point`.
    ///
    /// # Errors
    /// The peaks do not fit the size, or the signature does not verify (a self-made anchor, or a
    /// checkpoint's signature reused for one).
    pub fn verified_tree(&self, point: &[u8]) -> Result<CompactTree, String> {
        let tree = self.tree().ok_or("anchor.json: its peaks do not fit its tree size")?;
        let msg = self.signed_bytes(&merkle::hex(&tree.root()));
        if !super::verify::signature_ok(&self.signature, &msg, point) {
            return Err(format!(
                "anchor.json (records 0..{} pruned): its signature does not verify as an anchor of this key: \
                 a forged retention anchor hides removed records",
                self.tree_size
            ));
        }
        Ok(tree)
    }
}

/// The retention anchor of `dir`, if segments were pruned.
///
/// # Errors
/// `anchor.json` that cannot be read or parsed (an anchor of an older format is not trusted).
pub fn read_anchor(dir: &Path) -> Result<Option<Anchor>, String> {
    match std::fs::read_to_string(dir.join(ANCHOR_FILE)) {
        Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| format!("{ANCHOR_FILE}: not a signed anchor: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{ANCHOR_FILE}: {e}")),
    }
}

/// The cutoff for `retention` before now, as records write times; None when the calendar does
/// not reach that far back (checked: an unchecked subtraction panicked the duties thread).
fn cutoff(retention: Duration) -> Option<String> {
    let back = time::Duration::try_from(retention).ok()?;
    let at = time::OffsetDateTime::now_utc().checked_sub(back)?;
    Some(record::rfc3339_micros(at.into()))
}

/// Removes whole closed segments (those before segment `active`) whose newest record is older
/// than `retention`, oldest first, after writing the anchor (tree state at the new start)
/// durably. Runs beside the writer: it reads closed segments only.
pub(super) fn prune(dir: &Path, active: u32, retention: Duration, cp: &Checkpointer) -> Result<(), String> {
    let Some(cutoff) = cutoff(retention) else { return Ok(()) };
    let segs = segments(dir).map_err(|e| e.to_string())?;
    // Names sort by index: those before the active one are closed.
    let active = dir.join(segment_name(active));
    let mut tree = match read_anchor(dir)? {
        Some(a) => a.verified_tree(&cp.public_key())?,
        None => CompactTree::default(),
    };
    let mut prune = Vec::new();
    let mut newest_pruned = String::new();
    for path in segs.iter().filter(|p| **p < active) {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let lines: Vec<&[u8]> = text[..records_end(&text)].split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        let newest =
            lines.last().and_then(|l| serde_json::from_slice::<Record>(l).ok()).map(|r| r.time).unwrap_or_default();
        if newest.as_str() >= cutoff.as_str() {
            break; // segments are in time order: the rest are newer
        }
        for l in lines {
            tree.push(merkle::leaf_hash(l));
        }
        prune.push(path.clone());
        newest_pruned = newest;
    }
    let Some(last) = prune.last() else { return Ok(()) };
    let mut anchor = Anchor {
        origin: cp.origin().to_owned(),
        tree_size: tree.size(),
        peaks: tree.peaks().iter().map(|(h, x)| (*h, merkle::hex(x))).collect(),
        time: record::now_rfc3339_micros(),
        newest_pruned,
        pruned_through: last.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned(),
        key_id: cp.key_id.clone(),
        signature: String::new(),
    };
    anchor.signature = cp.sign_message(&anchor.signed_bytes(&merkle::hex(&tree.root())))?;
    let tmp = dir.join("anchor.json.tmp");
    let bytes = serde_json::to_vec(&anchor).map_err(|e| e.to_string())?;
    let mut f = File::create(&tmp).map_err(|e| e.to_string())?;
    f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, dir.join(ANCHOR_FILE)).map_err(|e| e.to_string())?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    for p in &prune {
        std::fs::remove_file(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    tracing::info!(segments = prune.len(), tree_size = anchor.tree_size, "audit retention: pruned old segments");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A retention period the clock cannot subtract prunes nothing (it used to panic the duties
    /// thread), and the longest configurable one still gives a cutoff.
    #[test]
    fn a_retention_longer_than_the_clock_prunes_nothing() {
        assert_eq!(cutoff(Duration::from_secs(u64::MAX / 4)), None);
        let century = Duration::from_secs(crate::config::units::MAX_DURATION_S);
        assert!(cutoff(century).is_some_and(|c| c.starts_with("19")), "{:?}", cutoff(century));
        assert!(cutoff(Duration::from_secs(365 * 86_400)).is_some_and(|c| c < record::now_rfc3339_micros()));
    }
}
