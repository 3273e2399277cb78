//! The recovery copy and the witness client. Each tick the shipper sends the peer (and the backup
//! directory) the audit bytes it does not have yet: whole records of every segment, then whole
//! lines of `checkpoints.jsonl`. Only then does it submit the newest checkpoint to the peer's
//! witness with a consistency proof from the size the witness cosigned last; the cosigned note
//! goes to `cosignatures.jsonl` beside the log. A copy is append-only: bytes once shipped are
//! never rewritten, so neither appliance can change what the other holds of its history, and a
//! copy takes only whole records and checkpoints that continue it ([`Replica`]).

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::{PairConfig, PairLink};
use crate::audit::copy::Replica;
use crate::audit::merkle::{self, Hash};
use crate::audit::note::{NoteBody, SigLine, Vkey, checkpoint_note};
use crate::audit::witness::request_body;
use crate::audit::{Checkpoint, records_end};

const CHECKPOINTS: &str = crate::audit::CHECKPOINTS_FILE;
/// At most this much of a file goes in one call.
const CHUNK: usize = 8 << 20;

/// The whole records of a file from `offset`: up to the last newline before the zero-filled
/// space (segments), or the file's end.
fn whole_lines(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(CHUNK as u64).read_to_end(&mut buf)?;
    buf.truncate(records_end(&buf));
    let end = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    buf.truncate(end);
    Ok(buf)
}

/// The log's files in shipping order: segments, then checkpoints.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = crate::audit::segments(dir).unwrap_or_default();
    v.push(dir.join(CHECKPOINTS));
    v
}

/// Leaf hashes of this log, read on from where they were left (consistency proofs need them).
#[derive(Default)]
struct Leaves {
    hashes: Vec<Hash>,
    segment: usize,
    offset: u64,
}

impl Leaves {
    fn update(&mut self, dir: &Path) -> Result<(), String> {
        let segments = crate::audit::segments(dir).map_err(|e| e.to_string())?;
        if self.hashes.is_empty() && segments.first().is_some_and(|s| !s.ends_with("segment-000001.jsonl")) {
            return Err("the log's first segments were pruned: no consistency proof from its start".into());
        }
        while let Some(path) = segments.get(self.segment) {
            let bytes = whole_lines(path, self.offset).map_err(|e| format!("{}: {e}", path.display()))?;
            for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                self.hashes.push(merkle::leaf_hash(line));
            }
            self.offset += bytes.len() as u64;
            if self.segment + 1 < segments.len() && bytes.len() < CHUNK {
                self.segment += 1;
                self.offset = 0;
            } else if bytes.len() < CHUNK {
                break;
            }
        }
        Ok(())
    }
}

pub(super) struct Shipper {
    dir: PathBuf,
    point: Vec<u8>,
    link: Arc<PairLink>,
    backup: Option<Replica>,
    peer: Option<BTreeMap<String, u64>>,
    vkey: Vkey,
    leaves: Leaves,
    /// The size the peer's witness cosigned last, as far as known (0: ask).
    cosigned: u64,
}

impl Shipper {
    pub(super) fn new(dir: &Path, point: Vec<u8>, cfg: &PairConfig, link: Arc<PairLink>) -> Result<Self, String> {
        let backup = cfg.backup_dir.as_deref().map(|d| Replica::open(d, point.clone())).transpose()?;
        Ok(Shipper {
            dir: dir.to_path_buf(),
            point,
            link,
            backup,
            peer: None,
            vkey: cfg.peer_vkey()?,
            leaves: Leaves::default(),
            cosigned: 0,
        })
    }

    pub(super) async fn run(mut self, every: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            self.link.catch_up().await;
            self.link.flush().await;
            let status = self.tick().await;
            if let Ok(mut s) = self.link.status.lock() {
                *s = status;
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// The last line of `checkpoints.jsonl`, read from its end (the file grows for as long
    /// as the log does).
    fn newest_checkpoint(&self) -> Option<Checkpoint> {
        let mut f = std::fs::File::open(self.dir.join(CHECKPOINTS)).ok()?;
        let len = f.metadata().ok()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024))).ok()?;
        let mut tail = String::new();
        f.read_to_string(&mut tail).ok()?;
        serde_json::from_str(tail.lines().last()?).ok()
    }

    async fn tick(&mut self) -> String {
        let newest = self.newest_checkpoint();
        // The backup copy syncs its files: off the async workers' turn.
        tokio::task::block_in_place(|| self.back_up());
        if let Err(e) = self.ship().await {
            self.peer = None;
            return format!("peer unreachable or refusing the log copy ({e}); cosigned through {}", self.cosigned);
        }
        let Some(cp) = newest else { return "peer up; no checkpoint to witness yet".into() };
        match self.witness(&cp).await {
            Ok(()) => format!("peer up, log copied, cosigned through {}", self.cosigned),
            Err(e) => format!("peer up, witness: {e}"),
        }
    }

    /// The deltas of every log file against `have`: (file, offset, bytes).
    fn deltas(&self, have: &BTreeMap<String, u64>) -> Vec<(String, u64, Vec<u8>)> {
        let mut out = Vec::new();
        for path in log_files(&self.dir) {
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
            let offset = have.get(&name).copied().unwrap_or(0);
            // A closed segment the copy holds whole is not read again.
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == offset) {
                continue;
            }
            match whole_lines(&path, offset) {
                Ok(bytes) if !bytes.is_empty() => out.push((name, offset, bytes)),
                _ => {}
            }
        }
        out
    }

    fn back_up(&mut self) {
        let Some(b) = &self.backup else { return };
        for (file, offset, bytes) in self.deltas(&b.sizes()) {
            if let Err(e) = b.append(&file, offset, &bytes) {
                tracing::error!(error = %e, "the audit backup copy refused an append");
                return;
            }
        }
    }

    async fn ship(&mut self) -> Result<(), String> {
        if self.peer.is_none() {
            let r = self.link.call("ship", "/pair/v1/log/sizes", Vec::new()).await.map_err(|e| e.to_string())?;
            self.peer = Some(serde_json::from_slice(&r.body).map_err(|e| format!("sizes: {e}"))?);
        }
        let have = self.peer.clone().unwrap_or_default();
        for (file, offset, bytes) in self.deltas(&have) {
            let path = format!("/pair/v1/log/append?file={file}&offset={offset}");
            let r = self.link.call("ship", &path, bytes).await.map_err(|e| e.to_string())?;
            if !r.status.is_success() {
                return Err(String::from_utf8_lossy(&r.body).trim().to_owned());
            }
            let len: u64 = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
            self.peer.get_or_insert_with(BTreeMap::new).insert(file, len);
        }
        Ok(())
    }

    /// Submits `cp` to the peer's witness (asking its latest size first when unknown).
    async fn witness(&mut self, cp: &Checkpoint) -> Result<(), String> {
        if cp.tree_size <= self.cosigned && self.cosigned > 0 {
            return Ok(());
        }
        self.leaves.update(&self.dir)?;
        let note = checkpoint_note(cp, &self.point).map_err(|e| e.to_string())?;
        let size = cp.tree_size as usize;
        if self.leaves.hashes.len() < size {
            return Err(format!("the log holds {} records, the checkpoint {size}", self.leaves.hashes.len()));
        }
        for _ in 0..2 {
            let old = self.cosigned as usize;
            let proof = if old == 0 || old > size {
                Vec::new()
            } else {
                merkle::consistency_proof(&self.leaves.hashes[..size], old)
            };
            let r = self
                .link
                .call(
                    "witness",
                    "/pair/v1/witness/add-checkpoint",
                    request_body(old as u64, &proof, &note).into_bytes(),
                )
                .await
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&r.body).to_string();
            match r.status.as_u16() {
                200 => return tokio::task::block_in_place(|| self.cosigned(cp, &note, &text)),
                409 => match text.trim().parse::<u64>() {
                    Ok(latest) if latest > cp.tree_size => {
                        return Err(format!(
                            "the peer cosigned {latest} records of this log, which holds {}: records were cut (restore from the peer: docs/pair.md)",
                            cp.tree_size
                        ));
                    }
                    Ok(latest) if latest != self.cosigned => self.cosigned = latest,
                    _ => return Err(format!("refused: {}", text.trim())),
                },
                s => return Err(format!("refused ({s}): {}", text.trim())),
            }
        }
        Err("the witness's size kept changing".into())
    }

    fn cosigned(&mut self, cp: &Checkpoint, note: &str, lines: &str) -> Result<(), String> {
        let (body, _) = NoteBody::parse(note).map_err(|e| e.to_string())?;
        let sigs: Vec<SigLine> = lines.lines().filter_map(|l| SigLine::parse(l).ok()).collect();
        self.vkey.verify(&body, &sigs).ok_or("the cosignature does not verify under the peer's witness key")?;
        let mut cosigned = note.to_owned();
        sigs.iter().for_each(|s| cosigned.push_str(&s.text()));
        let path = self.dir.join(crate::audit::COSIGNATURES);
        let line = serde_json::json!({ "note": cosigned }).to_string() + "\n";
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        f.write_all(line.as_bytes()).and_then(|()| f.sync_data()).map_err(io)?;
        self.cosigned = cp.tree_size;
        self.link.cosigned.store(cp.tree_size, Ordering::Relaxed);
        self.link.metrics.cosigned.set(cp.tree_size as i64);
        Ok(())
    }
}
