//! An append-only copy of another appliance's audit log (the pair link's recovery copy), or of
//! this appliance's own (the backup directory). Bytes once held are never rewritten; and only
//! evidence is taken: whole records that parse, are canonical and continue the copy's sequence,
//! and checkpoints signed by the log's key whose root the held records give. The copy can then
//! tell its witness the root of any checkpoint it holds ([`Replica::held_root`]): the witness
//! cosigns only what the copy can restore.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::merkle::{self, CompactTree, Hash};
use super::verify::check_signature;
use super::{CHECKPOINTS_FILE, Checkpoint, Record};

/// How many recent checkpoint roots the copy remembers for its witness.
const REMEMBERED: usize = 1024;

/// Whether `name` is a file of a log: a segment or the checkpoints.
pub fn log_file(name: &str) -> bool {
    name == CHECKPOINTS_FILE
        || name
            .strip_prefix("segment-")
            .and_then(|n| n.strip_suffix(".jsonl"))
            .is_some_and(|n| n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// An append-only copy of a log whose checkpoints `point` signs.
pub struct Replica {
    dir: PathBuf,
    point: Vec<u8>,
    state: Mutex<State>,
    /// The most the copy may hold, in bytes.
    quota: u64,
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CopyError {
    /// Not evidence, not this copy's, or an I/O error: nothing was written.
    #[error("{0}")]
    Refused(String),
    /// The copy holds its quota.
    #[error("the copy holds {held} bytes; {more} more would pass its quota of {quota}")]
    Full { held: u64, more: u64, quota: u64 },
}

/// What the copy holds, as far as the evidence goes.
#[derive(Default, Clone)]
struct State {
    /// The segment the last record went to.
    last_segment: Option<String>,
    /// Records held (the next record's sequence number).
    records: u64,
    /// Bytes held, every file.
    bytes: u64,
    /// The tree at the newest checkpoint the copy matched, and where its records end on disk.
    base: CompactTree,
    cursor: (String, u64),
    /// Roots of recent checkpoints the copy matched, by size.
    roots: BTreeMap<u64, Hash>,
    /// Set when what is on disk is not evidence (written before these checks, or by hand): the
    /// copy then takes nothing and its witness cosigns nothing, until an operator deals with it.
    damaged: Option<String>,
}

impl Replica {
    /// Opens the copy in `dir`, checking what it already holds.
    ///
    /// # Errors
    /// The directory cannot be created or listed. A copy whose files are not evidence opens
    /// damaged (see [`Replica::damaged`]).
    pub fn open(dir: &Path, point: Vec<u8>) -> Result<Replica, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let r = Replica { dir: dir.to_path_buf(), point, state: Mutex::new(State::default()), quota: u64::MAX };
        if let Err(e) = r.load() {
            tracing::error!(copy = %dir.display(), error = %e, "the audit copy is damaged: it takes nothing more");
            r.lock().damaged = Some(e);
        }
        Ok(r)
    }

    /// The copy takes at most `bytes`.
    pub fn with_quota(mut self, bytes: u64) -> Replica {
        self.quota = bytes;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes the copy holds, and its quota.
    pub fn usage(&self) -> (u64, u64) {
        (self.lock().bytes, self.quota)
    }

    /// Why the copy takes nothing, if it does not.
    pub fn damaged(&self) -> Option<String> {
        self.lock().damaged.clone()
    }

    /// Replays what is on disk as if it arrived now.
    fn load(&self) -> Result<(), String> {
        let mut st = self.lock();
        for seg in super::segments(&self.dir).map_err(|e| e.to_string())? {
            let name = file_name(&seg);
            let bytes = std::fs::read(&seg).map_err(|e| format!("{}: {e}", seg.display()))?;
            st.take_records(&name, &bytes)?;
            st.bytes += bytes.len() as u64;
        }
        let cps = self.dir.join(CHECKPOINTS_FILE);
        if let Ok(bytes) = std::fs::read(&cps) {
            st.take_checkpoints(&self.dir, &self.point, &bytes)?;
            st.bytes += bytes.len() as u64;
        }
        Ok(())
    }

    /// Each file's length.
    pub fn sizes(&self) -> BTreeMap<String, u64> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return BTreeMap::new() };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                Some((e.file_name().to_str().filter(|n| log_file(n))?.to_owned(), e.metadata().ok()?.len()))
            })
            .collect()
    }

    /// Appends `bytes` at `offset` of `file`: bytes already there must be the same (a retry);
    /// what is new must be whole records continuing the copy (a segment) or whole checkpoints
    /// the records give (the checkpoints). Returns the file's new length.
    ///
    /// # Errors
    /// Not a log file name, an offset past the end, bytes that differ from those already held,
    /// new bytes that are not such evidence, a damaged copy, or an I/O error ([`CopyError::Refused`]);
    /// new bytes past the quota ([`CopyError::Full`]). Nothing is written then.
    pub fn append(&self, file: &str, offset: u64, bytes: &[u8]) -> Result<u64, CopyError> {
        let refused = CopyError::Refused;
        if !log_file(file) {
            return Err(refused(format!("{file}: not a log file")));
        }
        let mut st = self.lock();
        if let Some(d) = &st.damaged {
            return Err(refused(format!("the copy is damaged ({d}); it takes nothing until an operator restores it")));
        }
        let path = self.dir.join(file);
        let io = |e: std::io::Error| CopyError::Refused(format!("{}: {e}", path.display()));
        let mut f = std::fs::OpenOptions::new().create(true).read(true).append(true).open(&path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        if offset > len {
            return Err(refused(format!("{file}: offset {offset} is past the copy's end {len}")));
        }
        let overlap = ((len - offset) as usize).min(bytes.len());
        let mut held = vec![0u8; overlap];
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        f.read_exact(&mut held).map_err(io)?;
        if held != bytes[..overlap] {
            return Err(refused(format!("{file}: refused, the bytes from {offset} differ from those shipped before")));
        }
        let new = &bytes[overlap..];
        if new.is_empty() {
            return Ok(len);
        }
        // Checked on a copy of the state: refused bytes change nothing.
        let mut next = st.clone();
        if file == CHECKPOINTS_FILE {
            next.take_checkpoints(&self.dir, &self.point, new).map_err(refused)?;
        } else {
            next.take_records(file, new).map_err(refused)?;
        }
        let more = new.len() as u64;
        if st.bytes.saturating_add(more) > self.quota {
            return Err(CopyError::Full { held: st.bytes, more, quota: self.quota });
        }
        next.bytes += more;
        f.write_all(new).and_then(|()| f.sync_data()).map_err(|e| {
            // A half-written append is not evidence either.
            let _ = f.set_len(len);
            io(e)
        })?;
        *st = next;
        Ok(len + new.len() as u64)
    }

    /// The root the copy's records give at `size`, if it holds them and a checkpoint of that
    /// size (or a later one) reached it.
    pub fn held_root(&self, size: u64) -> Option<Hash> {
        let st = self.lock();
        if st.damaged.is_some() {
            return None;
        }
        if size == st.base.size() {
            return Some(st.base.root());
        }
        st.roots.get(&size).copied()
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned()
}

/// `bytes` as whole lines: refused unless they end with a newline.
fn whole_lines<'a>(what: &str, bytes: &'a [u8]) -> Result<impl Iterator<Item = &'a [u8]>, String> {
    if bytes.last() != Some(&b'\n') {
        return Err(format!("{what}: not whole lines (no newline at the end)"));
    }
    Ok(bytes[..bytes.len() - 1].split(|&b| b == b'\n'))
}

impl State {
    /// Whole canonical records, continuing the sequence, into segment `file` (the copy's newest
    /// segment, or a later one).
    fn take_records(&mut self, file: &str, bytes: &[u8]) -> Result<(), String> {
        if self.last_segment.as_deref().is_some_and(|last| file < last) {
            return Err(format!("{file}: records after those of a later segment"));
        }
        let lines = whole_lines(file, bytes)?;
        for line in lines {
            let r: Record = serde_json::from_slice(line)
                .map_err(|e| format!("{file}: record {} does not parse: {e}", self.records))?;
            if r.seq != self.records {
                return Err(format!("{file}: record with sequence {} where {} comes next", r.seq, self.records));
            }
            if r.canonical() != line {
                return Err(format!("{file}: record {} is not in canonical form", r.seq));
            }
            self.records += 1;
        }
        if self.last_segment.is_none() {
            self.cursor = (file.to_owned(), 0);
        }
        self.last_segment = Some(file.to_owned());
        Ok(())
    }

    /// Whole checkpoints signed by `point`, each of records the copy holds, whose root the held
    /// records give; the base moves to each.
    fn take_checkpoints(&mut self, dir: &Path, point: &[u8], bytes: &[u8]) -> Result<(), String> {
        for line in whole_lines(CHECKPOINTS_FILE, bytes)? {
            let cp: Checkpoint = serde_json::from_slice(line)
                .map_err(|e| format!("{CHECKPOINTS_FILE}: a line that is not a checkpoint: {e}"))?;
            if !check_signature(&cp, point) {
                return Err(format!(
                    "{CHECKPOINTS_FILE}: checkpoint of size {} not signed by the log's key",
                    cp.tree_size
                ));
            }
            if cp.tree_size > self.records {
                return Err(format!(
                    "{CHECKPOINTS_FILE}: a checkpoint of {} records; the copy holds {}",
                    cp.tree_size, self.records
                ));
            }
            let root = self.root_at(dir, cp.tree_size)?;
            if merkle::hex(&root) != cp.root_hash {
                return Err(format!(
                    "{CHECKPOINTS_FILE}: the checkpoint of size {} has a root the copy's records do not give",
                    cp.tree_size
                ));
            }
            self.roots.insert(cp.tree_size, root);
            while self.roots.len() > REMEMBERED {
                self.roots.pop_first();
            }
        }
        Ok(())
    }

    /// The root at `size` (at least the base's), read on from the base's cursor; the base then
    /// moves there.
    fn root_at(&mut self, dir: &Path, size: u64) -> Result<Hash, String> {
        if size < self.base.size() {
            return self.roots.get(&size).copied().ok_or_else(|| {
                format!("{CHECKPOINTS_FILE}: a checkpoint of size {size} after one of {}", self.base.size())
            });
        }
        let segments = super::segments(dir).map_err(|e| e.to_string())?;
        let (mut seg, mut offset) = self.cursor.clone();
        let from = seg.clone();
        for path in segments.iter().filter(|p| file_name(p) >= from) {
            if self.base.size() == size {
                break;
            }
            if file_name(path) != seg {
                (seg, offset) = (file_name(path), 0);
            }
            let mut f =
                std::io::BufReader::new(std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?);
            f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
            let mut line = Vec::new();
            while self.base.size() < size {
                line.clear();
                let n = f.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
                if n == 0 || line.last() != Some(&b'\n') {
                    break;
                }
                self.base.push(merkle::leaf_hash(&line[..n - 1]));
                offset += n as u64;
            }
        }
        self.cursor = (seg, offset);
        if self.base.size() != size {
            return Err(format!("the copy's segments hold {} records, not {size}", self.base.size()));
        }
        Ok(self.base.root())
    }
}
