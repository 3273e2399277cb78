//! What a pair adds to verifying a log (docs/pair.md): the peer's cosignatures on its checkpoints,
//! the peer's own record of the newest checkpoint it witnessed (which no one with root on this
//! appliance can change: a cut log shows against it), and the rebuild of a lost log from the
//! copy the peer holds.

use std::path::Path;

use super::note::{NoteBody, Vkey};
use super::verify::{LogContents, Summary, check_signature, holds};
use super::witness::Witnessed;
use super::{COSIGNATURES, Checkpoint};

/// The newest checkpoint both this log's key and the peer's witness signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    pub notes: usize,
    pub newest_size: u64,
    pub newest_root: String,
}

/// The log's checkpoint a note stands for, checked with the log's key: the same size and root
/// as one of the log's (already verified) checkpoints.
fn in_log<'a>(
    log: &'a LogContents,
    body: &NoteBody,
    sigs: &[super::note::SigLine],
    point: &[u8],
) -> Result<&'a Checkpoint, String> {
    let cp = sigs
        .iter()
        .filter_map(|s| body.checkpoint(s, point))
        .find(|cp| check_signature(cp, point))
        .ok_or_else(|| format!("tree size {}: no valid signature of this log's key on the note", body.size))?;
    log.checkpoints.iter().find(|c| c.tree_size == cp.tree_size && c.root_hash == cp.root_hash).ok_or_else(|| {
        format!("tree size {}: a signed checkpoint this log no longer holds (checkpoints removed)", cp.tree_size)
    })
}

/// Checks every cosigned note beside the log (`cosignatures.jsonl`) with the peer's witness key.
///
/// # Errors
/// A note that does not parse, whose log signature or cosignature does not verify, or that is
/// not one of the log's checkpoints.
pub fn check_cosignatures(
    dir: &Path,
    log: &LogContents,
    point: &[u8],
    vkey: &Vkey,
) -> Result<Option<Cosigned>, String> {
    let path = dir.join(COSIGNATURES);
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let mut newest: Option<Cosigned> = None;
    for (i, line) in text.lines().enumerate() {
        let at = format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{at}: {e}"))?;
        let note = v.get("note").and_then(|n| n.as_str()).ok_or_else(|| format!("{at}: no note"))?;
        let (body, sigs) = NoteBody::parse(note).map_err(|e| format!("{at}: {e}"))?;
        let cp = in_log(log, &body, &sigs, point).map_err(|e| format!("{at}: {e}"))?;
        vkey.verify(&body, &sigs).ok_or_else(|| format!("{at}: no valid cosignature of {}", vkey.name))?;
        let notes = newest.as_ref().map_or(0, |n| n.notes) + 1;
        newest = match newest {
            Some(n) if n.newest_size >= cp.tree_size => Some(Cosigned { notes, ..n }),
            _ => Some(Cosigned { notes, newest_size: cp.tree_size, newest_root: cp.root_hash.clone() }),
        };
    }
    Ok(newest)
}

/// Checks the log against the peer's record of the newest checkpoint it witnessed: the records
/// (already verified) must hash to that checkpoint's root at its size, so nothing before it was
/// cut, rewritten or hidden behind a retention anchor.
///
/// # Errors
/// The note is not signed by this log's key and the witness, the log is shorter than what the
/// peer witnessed, the witnessed size lies below a pruned prefix, or the records there give
/// another root.
pub fn check_witnessed(s: &Summary, point: &[u8], vkey: &Vkey, w: &Witnessed) -> Result<u64, String> {
    vkey.verify(&w.body, &w.sigs)
        .ok_or_else(|| format!("the witnessed note carries no valid cosignature of {}", vkey.name))?;
    let cp =
        w.sigs.iter().filter_map(|l| w.body.checkpoint(l, point)).find(|cp| check_signature(cp, point)).ok_or_else(
            || format!("the witnessed note (tree size {}) carries no valid signature of this log's key", w.body.size),
        )?;
    holds(s, cp.tree_size, &cp.root_hash, &format!("{} witnessed", vkey.name))?;
    Ok(cp.tree_size)
}

/// Rebuilds a lost log in `to` (absent or empty) from a copy (`from`: the peer's `pair.dir/log`,
/// or a backup directory): its segments and checkpoints, the files the copy holds, and nothing
/// else. `audit verify` then checks it.
///
/// # Errors
/// `to` holds files, `from` holds no segment, or a file cannot be copied.
pub fn restore(from: &Path, to: &Path) -> Result<usize, String> {
    if to.exists() && std::fs::read_dir(to).map_err(|e| format!("{}: {e}", to.display()))?.next().is_some() {
        return Err(format!("{}: not empty; restore goes into an empty directory", to.display()));
    }
    let segments = super::segments(from).map_err(|e| e.to_string())?;
    if segments.is_empty() {
        return Err(format!("{}: no audit segment to restore from", from.display()));
    }
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let mut files = segments;
    files.push(from.join(super::CHECKPOINTS_FILE));
    let mut copied = 0;
    for f in files.iter().filter(|f| f.exists()) {
        let name = f.file_name().ok_or_else(|| format!("{}: no file name", f.display()))?;
        std::fs::copy(f, to.join(name)).map_err(|e| format!("{}: {e}", f.display()))?;
        std::fs::File::open(to.join(name)).and_then(|c| c.sync_all()).map_err(|e| format!("{}: {e}", f.display()))?;
        copied += 1;
    }
    std::fs::File::open(to).and_then(|d| d.sync_all()).map_err(|e| format!("{}: {e}", to.display()))?;
    Ok(copied)
}
