//! The writer: appends batches to the current segment with one fsync each, keeps the Merkle
//! tree, rotates segments and replays the log at start; the checkpointer signs tree heads; and
//! retention prunes old segments. Who drives them, and when, is [`super::commit`].

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::merkle::{self, CompactTree, Hash};
use super::spool::{Spool, create_spool_dir, shared};
use super::{
    AuditConfig, AuditError, Checkpoint, CheckpointSigner, Job, Record, SEQ_PREFIX, io_err, key_id, record,
    segment_name, segments,
};

/// The writer's lock file, beside the log.
pub const LOCK_FILE: &str = "writer.lock";

/// What the lock file says while a writer holds it: `audit verify` reads it to tell records that
/// await the running writer's next checkpoint from records someone appended.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WriterLock {
    pub pid: u32,
    pub checkpoint_interval_ms: u64,
}

impl WriterLock {
    fn write(&self, lock: &File) -> std::io::Result<()> {
        shared(lock)?;
        lock.set_len(0)?;
        lock.write_all_at(&serde_json::to_vec(self).unwrap_or_default(), 0)?;
        lock.sync_data()
    }

    /// The writer that holds `dir`'s lock now, if one does.
    ///
    /// # Errors
    /// The lock file cannot be opened or tried (whether a gateway writes the log cannot be told).
    pub fn held(dir: &Path) -> Result<Option<WriterLock>, String> {
        let path = dir.join(LOCK_FILE);
        let cannot = |e: &dyn std::fmt::Display| {
            format!("{}: {e} (whether a gateway is writing this log cannot be told)", path.display())
        };
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(cannot(&e)),
        };
        match f.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = Vec::new();
                (&f).read_to_end(&mut text).map_err(|e| cannot(&e))?;
                serde_json::from_slice(&text).map(Some).map_err(|e| cannot(&e))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(cannot(&e)),
        }
    }
}

pub(super) struct Writer {
    dir: PathBuf,
    segment: File,
    segment_index: u32,
    /// Where the records of the current segment end (the next record's offset).
    segment_len: u64,
    /// How far the current segment is already written with zeros ahead of the records.
    allocated: u64,
    segment_max: u64,
    pub(super) tree: CompactTree,
    retention: Option<Duration>,
    segment_opened: Instant,
    segment_max_age: Duration,
    /// Held for the writer's life: one writer per log.
    _lock: File,
    /// Records the officer tools leave.
    pub(super) spool: Spool,
    /// The tree size at which a checkpoint is due by count, and whether it was asked for.
    pub(super) checkpoint_at: u64,
    checkpoint_asked: bool,
    /// A segment was closed since retention last looked.
    prune_due: bool,
}

/// The active segment grows in zero-filled steps of this size, written and synced ahead of the
/// records. A batch then overwrites blocks the file already owns at a size already on disk, so
/// its fdatasync flushes data only, without the inode write an append needs (on ext4 about half
/// the I/O and system time per sync). Records never contain a NUL byte (JSON escapes control
/// characters): readers take the first NUL as the end of the records ([`records_end`]); a closed
/// segment is cut to its records.
const GROW_STEP: u64 = 1 << 20;

/// Where the records of a segment end: at the first NUL byte (the zero-filled space ahead of
/// the active segment's records), or at the end of the file.
pub fn records_end(bytes: &[u8]) -> usize {
    bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())
}

/// Replays one segment's records into `tree`, each in sequence. The last segment's records may
/// end short of the file (the zero-filled space ahead of them, or a tail a crash tore): what
/// follows them was never acknowledged and is cut; the cut is described. Any other segment must
/// end with its last record.
fn replay_segment(
    path: &Path,
    tree: &mut CompactTree,
    last: bool,
    spool: &mut Spool,
) -> Result<Option<String>, AuditError> {
    // Streamed a line at a time: a start never holds a whole segment in memory.
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::new();
    let mut complete = 0u64;
    let mut line_no = 0;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(|e| io_err(path, e))?;
        // The records end at the end of the file, at a line without its newline (torn),
        // or at the first NUL (the zero-filled space ahead of the records).
        if n == 0 || line.last() != Some(&b'\n') || line.contains(&0) {
            break;
        }
        line_no += 1;
        let record = &line[..n - 1];
        if !record.is_empty() {
            let r: Record = serde_json::from_slice(record)
                .map_err(|e| AuditError::Damaged(format!("{} line {line_no}: {e}", path.display())))?;
            if r.seq != tree.size() {
                return Err(AuditError::Damaged(format!(
                    "{} line {line_no}: sequence {} where {} was expected",
                    path.display(),
                    r.seq,
                    tree.size()
                )));
            }
            tree.push(merkle::leaf_hash(record));
            spool.holds(&r);
        }
        complete += n as u64;
    }
    if complete < len {
        if !last {
            return Err(AuditError::Damaged(format!("{} ends without a newline", path.display())));
        }
        // The zero-filled space ahead of the records (the gateway stopped without closing
        // the segment), and anything a crash left after the last acknowledged record:
        // nothing after `complete` was ever acknowledged; cut it.
        let mut torn = line.iter().filter(|&&b| b != 0).count();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let k = reader.read(&mut chunk).map_err(|e| io_err(path, e))?;
            if k == 0 {
                break;
            }
            torn += chunk[..k].iter().filter(|&&b| b != 0).count();
        }
        let f = OpenOptions::new().write(true).open(path).map_err(|e| io_err(path, e))?;
        f.set_len(complete).map_err(|e| io_err(path, e))?;
        f.sync_all().map_err(|e| io_err(path, e))?;
        if torn > 0 {
            return Ok(Some(format!(
                "cut a torn tail of {torn} bytes from {}",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("")
            )));
        }
    }
    Ok(None)
}

impl Writer {
    /// Opens the log: replays every segment into the tree, cuts a torn tail of the last one.
    pub(super) fn open(cfg: &AuditConfig) -> Result<(Writer, Option<String>), AuditError> {
        let dir = cfg.dir.clone();
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        lock.try_lock().map_err(|_| AuditError::InUse(dir.clone()))?;
        WriterLock { pid: std::process::id(), checkpoint_interval_ms: cfg.checkpoint_interval_ms }
            .write(&lock)
            .map_err(|e| io_err(&lock_path, e))?;
        let mut tree = match super::retention::read_anchor(&dir).map_err(AuditError::Damaged)? {
            Some(a) => {
                a.tree().ok_or_else(|| AuditError::Damaged("anchor.json: peaks do not fit the tree size".into()))?
            }
            None => CompactTree::default(),
        };
        let segs = segments(&dir)?;
        let mut recovered = None;
        let last_index = segs.len().saturating_sub(1);
        let mut spool = Spool::new(&dir);
        if let Err(e) = create_spool_dir(&dir) {
            tracing::error!(error = %e, "audit spool: officer tools cannot leave their access records");
        }
        for (i, path) in segs.iter().enumerate() {
            if let Some(cut) = replay_segment(path, &mut tree, i == last_index, &mut spool)? {
                recovered = Some(cut);
            }
        }
        let segment_index = segs.last().and_then(|p| {
            p.file_name()?.to_str()?.trim_start_matches("segment-").trim_end_matches(".jsonl").parse().ok()
        });
        let segment_index = segment_index.unwrap_or(1);
        let path = dir.join(segment_name(segment_index));
        let segment = open_segment(&path).map_err(|e| io_err(&path, e))?;
        let segment_len = segment.metadata().map_err(|e| io_err(&path, e))?.len();
        Ok((
            Writer {
                dir,
                segment,
                segment_index,
                segment_len,
                allocated: segment_len,
                segment_max: cfg.segment_max_bytes.max(4096),
                checkpoint_at: tree.size() + cfg.checkpoint_every.max(1),
                tree,
                retention: (cfg.retention_s > 0).then(|| Duration::from_secs(cfg.retention_s)),
                segment_opened: Instant::now(),
                segment_max_age: Duration::from_secs(cfg.segment_max_age_s.max(1)),
                _lock: lock,
                spool,
                checkpoint_asked: false,
                prune_due: false,
            },
            recovered,
        ))
    }

    /// Writes and fsyncs a batch; acknowledges each record only once it is durable. On any
    /// failure the segment is cut back to where the batch began and every record is refused.
    /// Every batch is synced: a record the writer has written is durable when `append` returns
    /// (outcome records, which nobody waits on, come in batches with requests' records, or
    /// within [`super::commit::SYNC_DELAY`]).
    pub(super) fn append(&mut self, batch: Vec<Job>) -> Result<(), String> {
        let start_len = self.segment_len;
        let start_size = self.tree.size();
        let mut buf = Vec::with_capacity(batch.len() * 512);
        let mut leaves = Vec::with_capacity(batch.len());
        for (i, job) in batch.iter().enumerate() {
            let start = buf.len();
            buf.extend_from_slice(SEQ_PREFIX);
            crate::json::number(&mut buf, start_size + i as u64);
            buf.extend_from_slice(&job.tail);
            leaves.push(merkle::leaf_hash(&buf[start..]));
            buf.push(b'\n');
        }
        let result = self.grow_to(start_len + buf.len() as u64).and_then(|()| {
            self.segment.write_all_at(&buf, start_len)?;
            self.segment.sync_data()
        });
        if let Err(e) = result {
            // Nothing of the batch stays: the segment is cut back to its records (the
            // zero-filled space is written again by the next batch).
            let _ = self.segment.set_len(start_len);
            self.allocated = start_len;
            let reason = e.to_string();
            for job in batch {
                if let Some(done) = job.done {
                    let _ = done.send(Err(reason.clone()));
                }
            }
            return Err(reason);
        }
        self.segment_len += buf.len() as u64;
        for l in leaves {
            self.tree.push(l);
        }
        for (i, job) in batch.into_iter().enumerate() {
            if let Some(done) = job.done {
                let _ = done.send(Ok(start_size + i as u64));
            }
        }
        if self.segment_len >= self.segment_max {
            self.rotate()?;
        }
        Ok(())
    }

    /// Whether a checkpoint is now due by count (true once per checkpoint).
    pub(super) fn checkpoint_wanted(&mut self) -> bool {
        let wanted = !self.checkpoint_asked && self.tree.size() >= self.checkpoint_at;
        self.checkpoint_asked |= wanted;
        wanted
    }

    /// The next checkpoint by count comes `every` records after one at `size`.
    pub(super) fn checkpointed(&mut self, size: u64, every: u64) {
        self.checkpoint_at = size + every;
        self.checkpoint_asked = false;
    }

    /// Closes the segment and opens the next when it is older than its maximum age.
    pub(super) fn rotate_if_old(&mut self) -> Result<(), String> {
        if self.segment_len > 0 && self.segment_opened.elapsed() >= self.segment_max_age {
            self.rotate()?;
        }
        Ok(())
    }

    /// The retention period and the active segment, once after each rotation (for [`prune`]).
    pub(super) fn take_prune(&mut self) -> Option<(PathBuf, u32, Duration)> {
        let due = std::mem::take(&mut self.prune_due);
        self.retention.filter(|_| due).map(|r| (self.dir.clone(), self.segment_index, r))
    }

    /// Writes zeros ahead of the records, in [`GROW_STEP`]s, until `end` fits, and makes them
    /// durable (blocks and size), so a batch's own sync need not update the inode.
    fn grow_to(&mut self, end: u64) -> std::io::Result<()> {
        if end <= self.allocated {
            return Ok(());
        }
        let step = end.max(self.allocated + GROW_STEP.min(self.segment_max)).next_multiple_of(4096);
        // Short of space for a whole step, only what this batch needs (the disk is full only
        // when that fails too).
        if self.zero_fill(step).is_err() {
            let _ = self.segment.set_len(self.allocated);
            if let Err(e) = self.zero_fill(end) {
                let _ = self.segment.set_len(self.allocated);
                return Err(e);
            }
        }
        self.segment.sync_data()
    }

    fn zero_fill(&mut self, target: u64) -> std::io::Result<()> {
        let zeros = vec![0u8; 64 * 1024];
        let mut at = self.allocated;
        while at < target {
            let n = (target - at).min(zeros.len() as u64) as usize;
            self.segment.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        self.allocated = target;
        Ok(())
    }

    /// Cuts the active segment to its records and makes it durable (rotation and stop).
    pub(super) fn close_segment(&mut self) -> Result<(), String> {
        if self.allocated > self.segment_len {
            self.segment.set_len(self.segment_len).map_err(|e| e.to_string())?;
            self.allocated = self.segment_len;
        }
        self.segment.sync_all().map_err(|e| e.to_string())
    }

    fn rotate(&mut self) -> Result<(), String> {
        self.close_segment()?;
        let next = self.segment_index + 1;
        let path = self.dir.join(segment_name(next));
        let f = open_segment(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.segment = f;
        self.segment_index = next;
        self.segment_len = 0;
        self.allocated = 0;
        self.segment_opened = Instant::now();
        self.prune_due = true;
        Ok(())
    }
}

/// Signs tree heads and appends them to `checkpoints.jsonl`.
pub(super) struct Checkpointer {
    origin: String,
    file: File,
    key: Box<dyn CheckpointSigner>,
    pub(super) key_id: String,
    pub(super) every: u64,
    pub(super) interval: Duration,
    last_size: u64,
    last_time: Instant,
    /// The file's length after its last whole line: a write that fails is cut back to it, so
    /// that the next checkpoint does not land on half a line.
    whole: u64,
    /// A failed write could not be cut back yet.
    dirty: bool,
}

impl Checkpointer {
    /// Opens `checkpoints.jsonl`, cutting a torn last line (a write the disk did not finish
    /// before a crash) back to the last whole one.
    pub(super) fn open(cfg: &AuditConfig, key: Box<dyn CheckpointSigner>, size: u64) -> Result<Self, AuditError> {
        let path = cfg.dir.join("checkpoints.jsonl");
        let file = OpenOptions::new().create(true).append(true).read(true).open(&path).map_err(|e| io_err(&path, e))?;
        shared(&file).map_err(|e| io_err(&path, e))?;
        let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            file.set_len(whole as u64).and_then(|()| file.sync_data()).map_err(|e| io_err(&path, e))?;
            tracing::warn!(bytes = bytes.len() - whole, "audit: cut a torn last line from checkpoints.jsonl");
        }
        Ok(Checkpointer {
            whole: whole as u64,
            dirty: false,
            origin: cfg.origin.clone(),
            file,
            key_id: key_id(&key.public_key()),
            key,
            every: cfg.checkpoint_every.max(1),
            interval: Duration::from_millis(cfg.checkpoint_interval_ms.max(10)),
            last_size: size,
            last_time: Instant::now(),
        })
    }

    /// Whether a log of `size` durable records needs a checkpoint now.
    pub(super) fn due(&self, size: u64, forced: bool) -> bool {
        size > self.last_size
            && (forced || size - self.last_size >= self.every || self.last_time.elapsed() >= self.interval)
    }

    /// Signs and writes the checkpoint of a tree of `size` durable records with `root`.
    pub(super) fn write(&mut self, size: u64, root: &Hash) -> Result<(), CheckpointFailure> {
        // Counted as an attempt even if the signer fails: the next one comes an interval later.
        self.last_time = Instant::now();
        let counter = self.key.count().map_err(CheckpointFailure::Signer)?;
        let cp = self.sign(size, root, counter)?;
        let mut line = serde_json::to_vec(&cp).map_err(|e| CheckpointFailure::Write(e.to_string()))?;
        line.push(b'\n');
        append_whole(&mut self.file, &line, self.whole, &mut self.dirty)
            .map_err(|e| CheckpointFailure::Write(e.to_string()))?;
        self.whole += line.len() as u64;
        self.last_size = size;
        Ok(())
    }
}

impl Checkpointer {
    /// A signed checkpoint of a tree of `size` with `root`, not written anywhere.
    fn sign(&self, size: u64, root: &Hash, counter: Option<u64>) -> Result<Checkpoint, CheckpointFailure> {
        let root = merkle::hex(root);
        let time = record::now_rfc3339_micros();
        let msg = Checkpoint::signed_bytes(&self.origin, size, &root, &time, counter);
        let sig = self.key.sign(&msg).map_err(CheckpointFailure::Signer)?;
        Ok(Checkpoint {
            origin: self.origin.clone(),
            tree_size: size,
            root_hash: root,
            time,
            key_id: self.key_id.clone(),
            signature: B64.encode(&sig),
            tpm_counter: counter,
        })
    }

    /// Signs `message` (an anchor's bytes) with the checkpoint key: base64.
    pub(super) fn sign_message(&self, message: &[u8]) -> Result<String, String> {
        self.key.sign(message).map(|s| B64.encode(&s))
    }

    pub(super) fn origin(&self) -> &str {
        &self.origin
    }

    pub(super) fn public_key(&self) -> Vec<u8> {
        self.key.public_key()
    }
}

/// An append-only file of lines that can be made durable and cut back to a length.
trait Lines: Write {
    fn sync(&mut self) -> std::io::Result<()>;
    fn cut_back(&mut self, len: u64) -> std::io::Result<()>;
}

impl Lines for File {
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }

    fn cut_back(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len).and_then(|()| self.sync_data())
    }
}

/// Appends `line` durably to a file of `whole` bytes of whole lines. If the write or its sync
/// fails (a full disk), the file is cut back to `whole` so that no half line stays; if even
/// that fails, `dirty` says so and the next append cuts first.
fn append_whole<F: Lines>(file: &mut F, line: &[u8], whole: u64, dirty: &mut bool) -> std::io::Result<()> {
    if *dirty {
        file.cut_back(whole)?;
        *dirty = false;
    }
    if let Err(e) = file.write_all(line).and_then(|()| file.sync()) {
        *dirty = file.cut_back(whole).is_err();
        return Err(e);
    }
    Ok(())
}

/// A segment for positional writes (records go at the writer's own offset, not the file's end),
/// readable by the log's group.
fn open_segment(path: &std::path::Path) -> std::io::Result<File> {
    let f = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path)?;
    shared(&f)?;
    Ok(f)
}

pub(super) enum CheckpointFailure {
    Signer(String),
    Write(String),
}

impl std::fmt::Display for CheckpointFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointFailure::Signer(e) => write!(f, "checkpoint not signed: {e}"),
            CheckpointFailure::Write(e) => f.write_str(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk with room for `room` more bytes: a write past it stores what fits, then fails.
    struct SmallDisk {
        bytes: Vec<u8>,
        room: usize,
    }

    impl Write for SmallDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device"));
            }
            let n = buf.len().min(self.room);
            self.bytes.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines for SmallDisk {
        fn sync(&mut self) -> std::io::Result<()> {
            Ok(())
        }

        fn cut_back(&mut self, len: u64) -> std::io::Result<()> {
            self.room += self.bytes.len() - len as usize;
            self.bytes.truncate(len as usize);
            Ok(())
        }
    }

    /// A checkpoint line the disk takes only half of is cut back; once there is room, the next
    /// one starts on a line of its own.
    #[test]
    fn a_failed_append_leaves_whole_lines_only() {
        let mut disk = SmallDisk { bytes: b"{\"a\":1}\n".to_vec(), room: 5 };
        let mut dirty = false;
        assert!(append_whole(&mut disk, b"{\"b\":2}\n", 8, &mut dirty).is_err());
        assert_eq!(disk.bytes, b"{\"a\":1}\n");
        assert!(!dirty);
        disk.room = 100;
        append_whole(&mut disk, b"{\"c\":3}\n", 8, &mut dirty).unwrap();
        assert_eq!(disk.bytes, b"{\"a\":1}\n{\"c\":3}\n");
    }
}
