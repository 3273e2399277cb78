//! The writer thread: appends batches to the current segment with one fsync each, keeps the
//! Merkle tree, writes checkpoints, rotates and prunes segments, and replays the log at start.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::merkle::{self, CompactTree};
use super::{
    Anchor, AuditConfig, AuditError, Checkpoint, CheckpointSigner, Job, Msg, Record, SEQ_PREFIX, SPOOL_DIR, io_err,
    key_id, read_anchor, record, segment_name, segments,
};

pub(super) struct Writer {
    dir: PathBuf,
    origin: String,
    segment: File,
    segment_index: u32,
    /// Where the records of the current segment end (the next record's offset).
    segment_len: u64,
    /// How far the current segment is already written with zeros ahead of the records.
    allocated: u64,
    segment_max: u64,
    checkpoints: File,
    pub(super) tree: CompactTree,
    key: Box<dyn CheckpointSigner>,
    pub(super) key_id: String,
    retention: Option<Duration>,
    segment_opened: Instant,
    segment_max_age: Duration,
    /// Held for the writer's life: one writer per log.
    _lock: File,
    every: u64,
    interval: Duration,
    last_checkpoint_size: u64,
    last_checkpoint: Instant,
    /// When the oldest record not yet made durable was written (outcome records, which nobody
    /// waits on, ride on the next fsync somebody waits for, or on [`SYNC_DELAY`]).
    unsynced_since: Option<Instant>,
    /// When the spool (officer tools' records) was last looked at.
    spool_checked: Instant,
}

/// How often the writer looks for spooled records (a directory scan; not once per batch).
const SPOOL_EVERY: Duration = Duration::from_millis(100);

/// The longest a record nobody waits on stays written but not yet durable.
pub(super) const SYNC_DELAY: Duration = Duration::from_millis(10);

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

impl Writer {
    /// Opens the log: replays every segment into the tree, cuts a torn tail of the last one.
    pub(super) fn open(
        cfg: &AuditConfig,
        key: Box<dyn CheckpointSigner>,
    ) -> Result<(Writer, Option<String>), AuditError> {
        let dir = cfg.dir.clone();
        let lock_path = dir.join("writer.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        lock.try_lock().map_err(|_| AuditError::InUse(dir.clone()))?;
        let mut tree = match read_anchor(&dir).map_err(AuditError::Damaged)? {
            Some(a) => {
                a.tree().ok_or_else(|| AuditError::Damaged("anchor.json: peaks do not fit the tree size".into()))?
            }
            None => CompactTree::default(),
        };
        let segs = segments(&dir)?;
        let mut recovered = None;
        let last_index = segs.len().saturating_sub(1);
        for (i, path) in segs.iter().enumerate() {
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
                }
                complete += n as u64;
            }
            if complete < len {
                if i != last_index {
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
                    recovered = Some(format!(
                        "cut a torn tail of {torn} bytes from {}",
                        path.file_name().and_then(|n| n.to_str()).unwrap_or("")
                    ));
                }
            }
        }
        let segment_index = segs.last().and_then(|p| {
            p.file_name()?.to_str()?.trim_start_matches("segment-").trim_end_matches(".jsonl").parse().ok()
        });
        let segment_index = segment_index.unwrap_or(1);
        let path = dir.join(segment_name(segment_index));
        let segment = open_segment(&path).map_err(|e| io_err(&path, e))?;
        let segment_len = segment.metadata().map_err(|e| io_err(&path, e))?.len();
        let cp_path = dir.join("checkpoints.jsonl");
        let checkpoints =
            OpenOptions::new().create(true).append(true).open(&cp_path).map_err(|e| io_err(&cp_path, e))?;
        let key_id = key_id(&key.public_key());
        let size = tree.size();
        Ok((
            Writer {
                dir,
                origin: cfg.origin.clone(),
                segment,
                segment_index,
                segment_len,
                allocated: segment_len,
                segment_max: cfg.segment_max_bytes.max(4096),
                checkpoints,
                tree,
                key,
                key_id,
                retention: (cfg.retention_s > 0).then(|| Duration::from_secs(cfg.retention_s)),
                segment_opened: Instant::now(),
                segment_max_age: Duration::from_secs(cfg.segment_max_age_s.max(1)),
                _lock: lock,
                every: cfg.checkpoint_every.max(1),
                interval: Duration::from_millis(cfg.checkpoint_interval_ms.max(10)),
                last_checkpoint_size: size,
                last_checkpoint: Instant::now(),
                unsynced_since: None,
                spool_checked: Instant::now().checked_sub(SPOOL_EVERY).unwrap_or_else(Instant::now),
            },
            recovered,
        ))
    }

    pub(super) fn run(mut self, rx: Receiver<Msg>, healthy: Arc<AtomicBool>) {
        loop {
            let mut forced = Vec::new();
            let mut batch: Vec<Job> = Vec::new();
            let wait = match self.unsynced_since {
                Some(t) => self.interval.min(SYNC_DELAY.saturating_sub(t.elapsed())),
                None => self.interval,
            };
            match rx.recv_timeout(wait) {
                Ok(Msg::Append(j)) => batch.push(*j),
                Ok(Msg::Checkpoint(done)) => forced.push(done),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = self.checkpoint();
                    if let Err(e) = self.close_segment() {
                        tracing::error!(error = %e, "audit segment not cut to its records at stop");
                    }
                    return;
                }
            }
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(Msg::Append(j)) => batch.push(*j),
                    Ok(Msg::Checkpoint(done)) => forced.push(done),
                    Err(_) => break,
                }
            }
            let spooled = if self.spool_checked.elapsed() >= SPOOL_EVERY || !forced.is_empty() {
                self.spool_checked = Instant::now();
                self.take_spool(&mut batch)
            } else {
                Vec::new()
            };
            if !batch.is_empty() {
                let mut result = self.append(batch);
                // A spooled record's file goes only once the record is durable.
                if result.is_ok() && !spooled.is_empty() {
                    result = self.sync();
                }
                if result.is_ok() {
                    for p in spooled {
                        let _ = std::fs::remove_file(p);
                    }
                }
                match result {
                    Ok(()) => healthy.store(true, Ordering::Relaxed),
                    Err(e) => {
                        tracing::error!(error = %e, "audit write failed; requests are refused until it succeeds");
                        healthy.store(false, Ordering::Relaxed);
                    }
                }
            }
            if self.unsynced_since.is_some_and(|t| t.elapsed() >= SYNC_DELAY)
                && let Err(e) = self.sync()
            {
                tracing::error!(error = %e, "audit sync failed; requests are refused until a write succeeds");
                healthy.store(false, Ordering::Relaxed);
            }
            if self.segment_len > 0
                && self.segment_opened.elapsed() >= self.segment_max_age
                && let Err(e) = self.rotate()
            {
                tracing::error!(error = %e, "audit segment rotation failed");
            }
            let due = self.tree.size() > self.last_checkpoint_size
                && (!forced.is_empty()
                    || self.tree.size() - self.last_checkpoint_size >= self.every
                    || self.last_checkpoint.elapsed() >= self.interval);
            let result = match if due { self.try_checkpoint() } else { Ok(()) } {
                Ok(()) => Ok(()),
                // The signer (the TPM) is away: the records stay durable and chained, and the
                // next signed checkpoint, one interval later, covers them all.
                Err(CheckpointFailure::Signer(e)) => {
                    tracing::error!(error = %e, tree_size = self.tree.size(), "audit checkpoint deferred: signer failed");
                    self.last_checkpoint = Instant::now();
                    Err(format!("checkpoint not signed: {e}"))
                }
                Err(CheckpointFailure::Write(e)) => {
                    tracing::error!(error = %e, "audit checkpoint failed");
                    healthy.store(false, Ordering::Relaxed);
                    Err(e)
                }
            };
            // A forced checkpoint is the gateway stopping: the segment is cut to its records.
            let result = match result {
                Ok(()) if !forced.is_empty() => self.close_segment(),
                r => r,
            };
            for done in forced {
                let _ = done.send(result.clone());
            }
        }
    }

    /// Adds the spooled records (officer tools' access records) to the batch; returns their files,
    /// to be removed once the batch is durable.
    fn take_spool(&mut self, batch: &mut Vec<Job>) -> Vec<PathBuf> {
        let spool = self.dir.join(SPOOL_DIR);
        let Ok(entries) = std::fs::read_dir(&spool) else { return Vec::new() };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        let mut taken = Vec::new();
        for p in files.into_iter().take(1024) {
            match std::fs::read(&p).ok().and_then(|b| serde_json::from_slice::<Record>(&b).ok()) {
                Some(record) => {
                    batch.push(Job::new(&record, None));
                    taken.push(p);
                }
                None => {
                    tracing::error!(file = %p.display(), "unreadable spooled audit record set aside");
                    let _ = std::fs::rename(&p, p.with_extension("rejected"));
                }
            }
        }
        taken
    }

    /// Writes and fsyncs a batch; acknowledges each record only once it is durable. On any
    /// failure the segment is cut back to where the batch began and every record is refused.
    pub(super) fn append(&mut self, batch: Vec<Job>) -> Result<(), String> {
        let start_len = self.segment_len;
        let start_size = self.tree.size();
        let mut buf = Vec::with_capacity(batch.len() * 512);
        let mut leaves = Vec::with_capacity(batch.len());
        for (i, job) in batch.iter().enumerate() {
            let start = buf.len();
            buf.extend_from_slice(SEQ_PREFIX);
            let _ = write!(buf, "{}", start_size + i as u64); // into a Vec: cannot fail
            buf.extend_from_slice(&job.tail);
            leaves.push(merkle::leaf_hash(&buf[start..]));
            buf.push(b'\n');
        }
        // One fdatasync per batch that somebody waits on (it also makes every earlier record of
        // the segment durable); a batch of outcome records only is synced within SYNC_DELAY.
        let must_sync =
            batch.iter().any(|j| j.done.is_some()) || self.unsynced_since.is_some_and(|t| t.elapsed() >= SYNC_DELAY);
        let result = self.grow_to(start_len + buf.len() as u64).and_then(|()| {
            self.segment.write_all_at(&buf, start_len)?;
            if must_sync { self.segment.sync_data() } else { Ok(()) }
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
        if must_sync {
            self.unsynced_since = None;
        } else {
            self.unsynced_since.get_or_insert_with(Instant::now);
        }
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

    /// Makes every record written so far durable.
    pub(super) fn sync(&mut self) -> Result<(), String> {
        if self.unsynced_since.is_some() {
            self.segment.sync_data().map_err(|e| e.to_string())?;
            self.unsynced_since = None;
        }
        Ok(())
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
        self.segment.sync_data()?;
        self.unsynced_since = None;
        Ok(())
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
    fn close_segment(&mut self) -> Result<(), String> {
        if self.allocated > self.segment_len {
            self.segment.set_len(self.segment_len).map_err(|e| e.to_string())?;
            self.allocated = self.segment_len;
        }
        self.segment.sync_all().map_err(|e| e.to_string())?;
        self.unsynced_since = None;
        Ok(())
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
        if let Err(e) = self.prune() {
            tracing::error!(error = %e, "audit retention: pruning failed; nothing was removed");
        }
        Ok(())
    }

    /// Removes whole closed segments whose newest record is older than the retention period,
    /// oldest first, after writing the anchor (tree state at the new start) durably.
    fn prune(&mut self) -> Result<(), String> {
        let Some(retention) = self.retention else { return Ok(()) };
        let cutoff = time::OffsetDateTime::now_utc() - retention;
        let cutoff = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            cutoff.year(),
            u8::from(cutoff.month()),
            cutoff.day(),
            cutoff.hour(),
            cutoff.minute(),
            cutoff.second()
        );
        let segs = segments(&self.dir).map_err(|e| e.to_string())?;
        let active = self.dir.join(segment_name(self.segment_index));
        let mut tree = match read_anchor(&self.dir)? {
            Some(a) => a.tree().ok_or("anchor.json does not fit")?,
            None => CompactTree::default(),
        };
        let mut prune = Vec::new();
        for path in segs.iter().filter(|p| **p != active) {
            let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let lines: Vec<&[u8]> =
                text[..records_end(&text)].split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
            let newest =
                lines.last().and_then(|l| serde_json::from_slice::<Record>(l).ok()).map(|r| r.time).unwrap_or_default();
            if newest.as_str() >= cutoff.as_str() {
                break; // segments are in time order: the rest are newer
            }
            for l in lines {
                tree.push(merkle::leaf_hash(l));
            }
            prune.push(path.clone());
        }
        let Some(last) = prune.last() else { return Ok(()) };
        let anchor = Anchor {
            tree_size: tree.size(),
            peaks: tree.peaks().iter().map(|(h, x)| (*h, merkle::hex(x))).collect(),
            time: record::now_rfc3339_micros(),
            pruned_through: last.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned(),
        };
        let tmp = self.dir.join("anchor.json.tmp");
        let bytes = serde_json::to_vec(&anchor).map_err(|e| e.to_string())?;
        let mut f = File::create(&tmp).map_err(|e| e.to_string())?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, self.dir.join("anchor.json")).map_err(|e| e.to_string())?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        for p in &prune {
            std::fs::remove_file(p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        tracing::info!(segments = prune.len(), tree_size = anchor.tree_size, "audit retention: pruned old segments");
        Ok(())
    }

    pub(super) fn checkpoint(&mut self) -> Result<(), String> {
        self.try_checkpoint().map_err(|e| match e {
            CheckpointFailure::Signer(e) => format!("checkpoint not signed: {e}"),
            CheckpointFailure::Write(e) => e,
        })
    }

    fn try_checkpoint(&mut self) -> Result<(), CheckpointFailure> {
        // A checkpoint vouches only for durable records.
        self.sync().map_err(CheckpointFailure::Write)?;
        let size = self.tree.size();
        let root = merkle::hex(&self.tree.root());
        let time = record::now_rfc3339_micros();
        let msg = Checkpoint::signed_bytes(&self.origin, size, &root, &time);
        let sig = self.key.sign(&msg).map_err(CheckpointFailure::Signer)?;
        let cp = Checkpoint {
            origin: self.origin.clone(),
            tree_size: size,
            root_hash: root,
            time,
            key_id: self.key_id.clone(),
            signature: B64.encode(&sig),
        };
        let mut line = serde_json::to_vec(&cp).map_err(|e| CheckpointFailure::Write(e.to_string()))?;
        line.push(b'\n');
        self.checkpoints
            .write_all(&line)
            .and_then(|()| self.checkpoints.sync_data())
            .map_err(|e| CheckpointFailure::Write(e.to_string()))?;
        self.last_checkpoint_size = size;
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}

/// A segment for positional writes (records go at the writer's own offset, not the file's end).
fn open_segment(path: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path)
}

enum CheckpointFailure {
    Signer(String),
    Write(String),
}
