//! The spool: records other processes (the officer tools) leave for the log's writer in
//! `DIR/spool/`, one file each, named by the SHA-256 of the record's bytes. The writer appends
//! each once: it knows the hash of every spooled record the log holds (collected when it replays
//! the log at start, and as it appends), so a file it could not remove is never appended again,
//! also after a restart; and a file it cannot read stays where it is, with an error in the log,
//! until it can. The directory belongs to the writer's user (mode 3770: its group, the officers,
//! may add files, and only their owner or the writer may remove them); a tool never creates it in
//! a log another user owns, where the writer could not empty it.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::merkle::Hash;
use super::{Job, Record};

/// Records other processes (the officer tools) leave for the writer: `DIR/spool/*.json`.
pub const SPOOL_DIR: &str = "spool";

/// The spool directory's mode: set-group-ID (files take the log's group), sticky (an officer
/// cannot remove another's file), writable by the writer and its group.
const SPOOL_MODE: u32 = 0o3770;

/// What identifies a spooled record whatever sequence number the log gives it.
pub fn spool_hash(record: &Record) -> Hash {
    let unnumbered = Record { seq: 0, ..record.clone() };
    crate::encoding::sha256(&unnumbered.canonical())
}

/// Creates `DIR/spool` with its mode, if it is not there (the writer does at start).
///
/// # Errors
/// It cannot be created or given its mode.
pub fn create_spool_dir(dir: &Path) -> Result<(), String> {
    let spool = dir.join(SPOOL_DIR);
    match std::fs::create_dir(&spool) {
        Ok(()) => std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(SPOOL_MODE))
            .map_err(|e| format!("{}: {e}", spool.display())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("{}: {e}", spool.display())),
    }
}

/// The effective user of this process (the owner of its `/proc/self`).
fn effective_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Leaves a record for the log's writer to append (at once if a gateway is running, else at its
/// next start): written under a temporary name, readable by the writer, synced and renamed, so
/// the writer never sees half a file.
///
/// # Errors
/// There is no spool and this process does not own the log (its writer would not be able to
/// empty a spool made here), or the record cannot be written and renamed into it.
pub fn spool(dir: &Path, record: &Record) -> Result<PathBuf, String> {
    let spool = dir.join(SPOOL_DIR);
    if !spool.is_dir() {
        let owner = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?.uid();
        if effective_uid() != Some(owner) {
            return Err(format!(
                "{} does not exist, and the log belongs to uid {owner}: the gateway that writes the log creates it \
                 at start (a spool made by another user is one it could not empty)",
                spool.display()
            ));
        }
        create_spool_dir(dir)?;
    }
    let bytes = record.canonical();
    let name = format!("{}.json", crate::encoding::hex(&spool_hash(record)));
    let tmp = spool.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4()));
    let path = spool.join(&name);
    let io = |e: std::io::Error| format!("{}: {e}", tmp.display());
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(io)?;
    // Whatever the caller's umask: the writer (the file's group) reads it.
    f.set_permissions(std::fs::Permissions::from_mode(0o640)).map_err(io)?;
    f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The writer's side of the spool.
#[derive(Default)]
pub(super) struct Spool {
    dir: PathBuf,
    /// The hash of every spooled record the log holds.
    appended: HashSet<Hash>,
    /// The last trouble reported (each is logged once, not at every look).
    trouble: Option<String>,
}

/// A spooled record in the batch: its file and hash.
pub(super) struct Taken {
    path: PathBuf,
    hash: Hash,
}

impl Spool {
    pub(super) fn new(log_dir: &Path) -> Spool {
        Spool { dir: log_dir.join(SPOOL_DIR), ..Spool::default() }
    }

    /// A record the log holds (replayed at start): if spooled, it is never appended again.
    pub(super) fn holds(&mut self, record: &Record) {
        if record.event == "audit_access" {
            self.appended.insert(spool_hash(record));
        }
    }

    fn report(&mut self, trouble: String) {
        if self.trouble.as_ref() != Some(&trouble) {
            tracing::error!(error = %trouble, "audit spool: a record left by an officer tool is stuck");
            self.trouble = Some(trouble);
        }
    }

    /// Adds the spooled records the log does not hold yet to the batch (at most 1,024); removes
    /// the files of those it holds.
    pub(super) fn take(&mut self, batch: &mut Vec<Job>) -> Vec<Taken> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                self.report(format!("{}: {e}", self.dir.display()));
                return Vec::new();
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        let mut taken = Vec::new();
        for path in files.into_iter().take(1024) {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    self.report(format!("{}: {e} (left in place)", path.display()));
                    continue;
                }
            };
            let Ok(record) = serde_json::from_slice::<Record>(&bytes) else {
                tracing::error!(file = %path.display(), "unreadable spooled audit record set aside");
                if let Err(e) = std::fs::rename(&path, path.with_extension("rejected")) {
                    self.report(format!("{}: {e}", path.display()));
                }
                continue;
            };
            let hash = spool_hash(&record);
            if self.appended.contains(&hash) {
                self.remove(&path);
            } else if !taken.iter().any(|t: &Taken| t.hash == hash) {
                batch.push(Job::new(&record, None));
                taken.push(Taken { path, hash });
            }
        }
        taken
    }

    /// The batch holding `taken` is durable: their records are in the log; their files go.
    pub(super) fn durable(&mut self, taken: Vec<Taken>) {
        for t in taken {
            self.appended.insert(t.hash);
            self.remove(&t.path);
        }
    }

    fn remove(&mut self, path: &Path) {
        if let Err(e) = std::fs::remove_file(path) {
            self.report(format!("{}: {e} (its record is in the log; it is not appended again)", path.display()));
        }
    }
}

/// A file the writer creates beside the log, readable by the log's group (the officers).
pub(super) fn shared(f: &File) -> std::io::Result<()> {
    f.set_permissions(std::fs::Permissions::from_mode(0o640))
}
