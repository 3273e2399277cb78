//! Verifying an audit log end to end against an explicit trust root (the checkpoint public key
//! the verifier brings, never one found beside the log): every record, the sequence, the Merkle
//! tree, every checkpoint's signature and root. Records past the newest checkpoint are reported
//! apart and fail unless the log's writer is running and they await its next checkpoint; a
//! pruned prefix is accepted only when the verifier says pruning is expected, or a copy that
//! still holds it proves it.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::FromDer;

use super::merkle::{self, CompactTree};
use super::retention::{Anchor, read_anchor};
use super::writer::WriterLock;
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

/// Whether `signature` (base64, ASN.1 ECDSA P-256) signs `message` under `point`.
pub fn signature_ok(signature: &str, message: &[u8], point: &[u8]) -> bool {
    let Ok(sig) = B64.decode(signature) else { return false };
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point).verify(message, &sig).is_ok()
}

pub fn check_signature(cp: &Checkpoint, point: &[u8]) -> bool {
    signature_ok(&cp.signature, &cp.message(), point)
}

/// What the verifier is told besides the key.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Retention pruning is expected: records older than this (a record time, UTC) may be gone.
    pub allow_pruned_before: Option<String>,
    /// A copy that still holds the pruned records (the peer's `pair.dir/log`, a backup).
    pub peer_copy: Option<PathBuf>,
    /// Sizes whose root the records must give besides the checkpoints' (a kept or witnessed
    /// checkpoint).
    pub roots_at: Vec<u64>,
    /// Records past the newest checkpoint are reported, not refused (a copy being restored:
    /// the gateway's first checkpoint after the restore signs them).
    pub unsealed_reported: bool,
}

/// What a pruned prefix was, and what vouched for it.
#[derive(Debug, Clone)]
pub struct Pruned {
    pub count: u64,
    pub newest_pruned: String,
    pub anchor_time: String,
    /// The copy whose records were checked against the anchor, if one was given.
    pub proven_by: Option<PathBuf>,
}

/// What a successful verification found.
#[derive(Debug)]
pub struct Summary {
    /// The tree's size: every record the log ever had, the pruned ones included.
    pub records: u64,
    /// The first record the log still holds (0 unless retention pruned, or a copy proved, a
    /// prefix).
    pub first_held: u64,
    pub checkpoints: usize,
    pub root: String,
    pub last_checkpoint: Option<Checkpoint>,
    /// Records covered by the newest checkpoint, and after it.
    pub sealed: u64,
    pub unsealed: u64,
    /// Why the records after the newest checkpoint were accepted, if there are any.
    pub unsealed_note: Option<String>,
    pub pruned: Option<Pruned>,
    /// The root the records give at each checkpoint's size (from `first_held` on) and at each
    /// size asked for in [`Options::roots_at`].
    pub roots: HashMap<u64, String>,
    /// The key the log was verified with: its key ID.
    pub key_id: String,
}

impl Summary {
    /// What a verification vouches for, besides its last line: the key, a pruned prefix, records
    /// past the newest checkpoint.
    pub fn describe(&self) -> Vec<String> {
        let s = self;
        let mut lines = vec![format!("checkpoint key {} (the key given with --key)", s.key_id)];
        if let Some(p) = &s.pruned {
            lines.push(match &p.proven_by {
                Some(copy) => format!(
                    "records 0..{} were pruned here; {} holds them and they give the anchor's tree",
                    p.count.saturating_sub(1),
                    copy.display()
                ),
                None => format!(
                    "pruned by retention: {} records (0..{}), the newest of {}; the log holds records from {} on (anchor written {})",
                    p.count,
                    p.count.saturating_sub(1),
                    p.newest_pruned,
                    s.first_held,
                    p.anchor_time
                ),
            });
        }
        lines.push(format!("sealed by checkpoints: {} records, up to tree size {}", s.sealed - s.first_held, s.sealed));
        if let Some(n) = &s.unsealed_note {
            lines.push(n.clone());
        }
        lines
    }
}

/// Verifies the whole log; the error names the first bad record or checkpoint and what is wrong.
///
/// # Errors
/// The first record or checkpoint that does not verify, and why: a sequence gap, a record not in
/// canonical form, a root that does not match, a bad signature, a pruned prefix not expected or
/// not proven, records past the newest checkpoint no signature covers, a TPM counter going
/// backwards.
pub fn verify(dir: &Path, key: &Path, opts: &Options) -> Result<Summary, String> {
    let point = public_point(key)?;
    let mut log = read_log(dir)?;
    let (mut tree, pruned) = match read_anchor(dir)? {
        Some(a) => resume(&a, &point, &mut log, opts)?,
        None => (CompactTree::default(), None),
    };
    let base = tree.size();
    let roots = replay(&log, &mut tree, &opts.roots_at)?;
    let origin = log.checkpoints.first().map(|c| c.origin.clone());
    let mut sealed = base;
    for (i, cp) in log.checkpoints.iter().enumerate() {
        if !check_signature(cp, &point) {
            return Err(format!(
                "checkpoint {i} (tree size {}): the signature does not verify under {}",
                cp.tree_size,
                key.display()
            ));
        }
        if origin.as_ref() != Some(&cp.origin) {
            return Err(format!("checkpoint {i}: of log {:?}, the others of {origin:?}: spliced", cp.origin));
        }
        // Below the retention anchor the signature is all that can be checked.
        if cp.tree_size >= base {
            covers(&log, i, &roots, tree.size())?;
            sealed = sealed.max(cp.tree_size);
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
    let unsealed = tree.size() - sealed;
    let unsealed_note = match unsealed {
        0 => None,
        _ => Some(past_newest(dir, &log, base, sealed, tree.size(), opts.unsealed_reported)?),
    };
    Ok(Summary {
        records: tree.size(),
        first_held: base,
        checkpoints: log.checkpoints.len(),
        root: merkle::hex(&tree.root()),
        last_checkpoint: log.checkpoints.last().cloned(),
        sealed,
        unsealed,
        unsealed_note,
        pruned,
        roots,
        key_id: super::key_id(&point),
    })
}

/// The longest a running writer may leave records without a checkpoint, whatever its lock says.
const MAX_UNSEALED_MS: u64 = 3_600_000;

/// Records `sealed..size` follow the newest checkpoint: accepted only while the log's writer
/// runs and they are younger than its checkpoint interval (they await its next checkpoint), or
/// reported when the caller restores a copy.
fn past_newest(
    dir: &Path,
    log: &LogContents,
    base: u64,
    sealed: u64,
    size: u64,
    reported: bool,
) -> Result<String, String> {
    let (first, _, loc) = &log.records[(sealed - base) as usize];
    let what = format!(
        "{} record(s) after the newest checkpoint (tree size {sealed}), from {}:{}",
        size - sealed,
        loc.file.display(),
        loc.line
    );
    if reported {
        return Ok(format!("{what}: no signature covers them yet (the gateway's next checkpoint will)"));
    }
    let writer = WriterLock::held(dir)?.ok_or_else(|| {
        format!(
            "{what} are covered by no signature, and no gateway is writing this log: appended after it, \
             or the gateway stopped without its final checkpoint"
        )
    })?;
    let window_ms = writer.checkpoint_interval_ms.min(MAX_UNSEALED_MS) + 10_000;
    let oldest_allowed = std::time::SystemTime::now()
        .checked_sub(std::time::Duration::from_millis(window_ms))
        .map(super::record::rfc3339_micros)
        .unwrap_or_default();
    if first.time < oldest_allowed {
        return Err(format!(
            "{what} are covered by no signature and older than the writer's checkpoint interval ({} ms): \
             the checkpoint signer is failing, or records were appended",
            writer.checkpoint_interval_ms
        ));
    }
    Ok(format!("{what}: they await the running gateway's next checkpoint (pid {})", writer.pid))
}

/// The tree a pruned log resumes from, and what was pruned: the anchor's signature (as an
/// anchor) verified, and either the pruned records proven by a copy or pruning expected before
/// a date the anchor respects.
fn resume(
    a: &Anchor,
    point: &[u8],
    log: &mut LogContents,
    opts: &Options,
) -> Result<(CompactTree, Option<Pruned>), String> {
    let tree = a.verified_tree(point)?;
    if let Some(c) = log.checkpoints.first()
        && c.origin != a.origin
    {
        return Err(format!("anchor.json: of log {:?}, the checkpoints of {:?}", a.origin, c.origin));
    }
    if let Some((first, _, loc)) = log.records.first()
        && first.time < a.newest_pruned
    {
        return Err(format!(
            "record {} at {}:{} is older than the newest record the anchor says was pruned ({}): reordered",
            first.seq,
            loc.file.display(),
            loc.line,
            a.newest_pruned
        ));
    }
    let mut pruned = Pruned {
        count: a.tree_size,
        newest_pruned: a.newest_pruned.clone(),
        anchor_time: a.time.clone(),
        proven_by: None,
    };
    if let Some(copy) = &opts.peer_copy {
        // The copy's first `tree_size` records must hash to the anchor's tree: then they are the
        // pruned records, and the log verifies whole.
        let held = read_log(copy)?;
        let mut prefix = LogContents {
            records: held.records.into_iter().take(a.tree_size as usize).collect(),
            checkpoints: Vec::new(),
        };
        let mut t = CompactTree::default();
        replay(&prefix, &mut t, &[]).map_err(|e| format!("--peer-copy {}: {e}", copy.display()))?;
        if t.size() != a.tree_size || t.root() != tree.root() {
            return Err(format!(
                "--peer-copy {}: its first {} records do not hash to the tree the anchor stands for ({} records): \
                 not this log's pruned prefix",
                copy.display(),
                t.size(),
                a.tree_size
            ));
        }
        prefix.records.append(&mut log.records);
        log.records = prefix.records;
        pruned.proven_by = Some(copy.clone());
        return Ok((CompactTree::default(), Some(pruned)));
    }
    match &opts.allow_pruned_before {
        Some(before) if a.newest_pruned < *before => Ok((tree, Some(pruned))),
        Some(before) => Err(format!(
            "anchor.json: records up to {} were pruned, not only before {before} (--allow-pruned-before)",
            a.newest_pruned
        )),
        None => Err(format!(
            "the log starts at record {}: records 0..{} were pruned (anchor.json, written {}, newest pruned record {}); \
             pass --allow-pruned-before DATE if retention pruning is expected, or --peer-copy DIR to prove them",
            a.tree_size,
            a.tree_size.saturating_sub(1),
            a.time,
            a.newest_pruned
        )),
    }
}

/// Replays the records after `tree`'s (the anchor's) into it, each in sequence and canonical;
/// the roots at every size a checkpoint covers, and at `also`.
fn replay(log: &LogContents, tree: &mut CompactTree, also: &[u64]) -> Result<HashMap<u64, String>, String> {
    let base = tree.size();
    // Roots at every checkpointed size, computed in the same pass.
    let mut wanted: Vec<u64> = log.checkpoints.iter().map(|c| c.tree_size).chain(also.iter().copied()).collect();
    wanted.sort_unstable();
    let mut roots = HashMap::new();
    if wanted.binary_search(&base).is_ok() {
        roots.insert(base, merkle::hex(&tree.root()));
    }
    for (i, (r, bytes, loc)) in log.records.iter().enumerate() {
        let i = i as u64 + base;
        if r.seq != i {
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
fn covers(log: &LogContents, i: usize, roots: &HashMap<u64, String>, log_size: u64) -> Result<(), String> {
    let cp = &log.checkpoints[i];
    match roots.get(&cp.tree_size) {
        None => {
            return Err(format!(
                "checkpoint {i} covers {} records but the log has {} (records were removed)",
                cp.tree_size, log_size
            ));
        }
        Some(root) if *root != cp.root_hash => {
            // Which record differs cannot be told from a root alone; name the range.
            let prev = log.checkpoints[..i]
                .iter()
                .filter(|c| c.tree_size < cp.tree_size && roots.get(&c.tree_size) == Some(&c.root_hash))
                .map(|c| c.tree_size)
                .max()
                .unwrap_or(0);
            let first = log
                .records
                .iter()
                .find(|(r, _, _)| r.seq == prev)
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

/// A checkpoint vouched for from outside the log (one an auditor kept, or the peer's witness
/// state) against a verified log: its size at or above the first record the log holds, and the
/// root the records give at that size its root.
///
/// # Errors
/// The checkpoint lies below a pruned prefix, is larger than the log, or its root is not the
/// records' (history rewritten).
/// `who` says what vouches, e.g. "gateway-b/witness witnessed" or "the kept checkpoint covers".
pub fn holds(s: &Summary, size: u64, root: &str, who: &str) -> Result<(), String> {
    if size > s.records {
        return Err(format!(
            "truncated: {who} {size} records of this log, which holds {} (records were removed)",
            s.records
        ));
    }
    if size < s.first_held {
        return Err(format!(
            "{who} {size} records, below the retention anchor (this log holds records from {} on): what it vouches \
             for cannot be checked; pass --peer-copy DIR, a copy that still holds them",
            s.first_held
        ));
    }
    match s.roots.get(&size) {
        Some(r) if r == root => Ok(()),
        _ => Err(format!(
            "{who} {size} records, with a root this log's records do not give at that size: its history was rewritten"
        )),
    }
}
