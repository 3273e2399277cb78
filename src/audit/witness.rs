//! A witness for another audit log (c2sp.org/tlog-witness `add-checkpoint`): it checks the log's
//! signature with the key it trusts for the checkpoint's origin and a consistency proof from the
//! latest checkpoint it cosigned, persists the new checkpoint (written whole, synced, renamed)
//! before it answers, and refuses anything that is not an extension of what it cosigned. What it
//! keeps per origin is the cosigned note itself: `audit verify --witnessed` checks a log against
//! it without trusting the log's disk.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::merkle::{self, Hash};
use super::note::{NoteBody, SigLine, WitnessKey};

/// A log this witness cosigns: its origin, its checkpoint key (P-256 point), and the copy of
/// its records this appliance holds (a checkpoint is cosigned only once the copy holds it).
pub struct TrustedLog {
    pub origin: String,
    pub point: Vec<u8>,
    pub copy: std::sync::Arc<super::copy::Replica>,
}

/// Why `add-checkpoint` refused; [`WitnessError::status`] is the HTTP status tlog-witness gives it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WitnessError {
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("no log with this origin is witnessed here")]
    UnknownOrigin,
    #[error("no signature of the log's key verifies")]
    Forbidden,
    #[error("the old size is not {latest}, the size of the latest checkpoint cosigned")]
    Conflict { latest: u64 },
    #[error("a checkpoint of {size} records after one of {latest} was cosigned: the log went back")]
    Rollback { size: u64, latest: u64 },
    #[error("a checkpoint of the size cosigned last with another root hash: the log forked")]
    Fork,
    #[error("the consistency proof does not verify: not an extension of the checkpoint cosigned last")]
    Inconsistent,
    #[error("not cosigned: {0}")]
    NotHeld(String),
    #[error("the witness state cannot be persisted: {0}")]
    Io(String),
}

impl WitnessError {
    pub fn status(&self) -> u16 {
        match self {
            WitnessError::BadRequest(_) => 400,
            WitnessError::UnknownOrigin => 404,
            WitnessError::Forbidden => 403,
            WitnessError::Conflict { .. } | WitnessError::Rollback { .. } | WitnessError::Fork => 409,
            WitnessError::Inconsistent | WitnessError::NotHeld(_) => 422,
            WitnessError::Io(_) => 500,
        }
    }

    /// The response body tlog-witness prescribes (the latest size on a size conflict).
    pub fn body(&self) -> String {
        match self {
            WitnessError::Conflict { latest } | WitnessError::Rollback { latest, .. } => format!("{latest}\n"),
            e => format!("{e}\n"),
        }
    }
}

/// The request body of `add-checkpoint`: the old size, the proof, a blank line, the note.
pub fn request_body(old: u64, proof: &[Hash], note: &str) -> String {
    let mut b = format!("old {old}\n");
    for h in proof {
        b.push_str(&B64.encode(h));
        b.push('\n');
    }
    b.push('\n');
    b.push_str(note);
    b
}

struct Request {
    old: u64,
    proof: Vec<Hash>,
    note: String,
    body: NoteBody,
    sigs: Vec<SigLine>,
}

fn parse_request(text: &str) -> Result<Request, WitnessError> {
    let bad = |m: &str| WitnessError::BadRequest(m.to_owned());
    let (head, note) = text.split_once("\n\n").ok_or_else(|| bad("no blank line before the checkpoint"))?;
    let mut lines = head.split('\n');
    let old = lines
        .next()
        .and_then(|l| l.strip_prefix("old "))
        .filter(|n| !n.is_empty() && (*n == "0" || !n.starts_with('0')))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad("no `old SIZE` line"))?;
    let proof = lines
        .map(|l| {
            B64.decode(l)
                .ok()
                .and_then(|h| Hash::try_from(h).ok())
                .ok_or_else(|| bad("a proof line that is not a hash"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if proof.len() > 63 {
        return Err(bad("more than 63 proof lines"));
    }
    let (body, sigs) = NoteBody::parse(note).map_err(|e| WitnessError::BadRequest(e.to_string()))?;
    Ok(Request { old, proof, note: note.to_owned(), body, sigs })
}

/// The latest checkpoint a witness cosigned for one origin: the note with the log's signature and
/// the witness's cosignature.
#[derive(Debug, Clone)]
pub struct Witnessed {
    pub note: String,
    pub body: NoteBody,
    pub sigs: Vec<SigLine>,
}

impl Witnessed {
    /// # Errors
    /// The file cannot be read or is not a note.
    pub fn read(path: &Path) -> Result<Witnessed, String> {
        let note = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (body, sigs) = NoteBody::parse(&note).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Witnessed { note, body, sigs })
    }
}

/// The witness: its key, the logs it trusts, and its state directory (one note per origin).
pub struct Witness {
    dir: PathBuf,
    key: WitnessKey,
    logs: Vec<TrustedLog>,
    /// Held from the size check to the persisted state: two submissions cannot roll it back.
    state: Mutex<()>,
}

impl Witness {
    /// # Errors
    /// The state directory cannot be created.
    pub fn open(dir: &Path, key: WitnessKey, logs: Vec<TrustedLog>) -> Result<Witness, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Witness { dir: dir.to_path_buf(), key, logs, state: Mutex::new(()) })
    }

    pub fn key(&self) -> &WitnessKey {
        &self.key
    }

    /// Where the latest cosigned checkpoint of `origin` is kept.
    pub fn state_file(dir: &Path, origin: &str) -> PathBuf {
        dir.join(format!("{}.note", crate::encoding::hex(origin.as_bytes())))
    }

    /// The latest checkpoint cosigned for `origin`; None when none was.
    ///
    /// # Errors
    /// The state file exists but cannot be read or is not a cosigned note: the witness does not
    /// know what it cosigned, so it must not answer as if it had cosigned nothing.
    pub fn latest(&self, origin: &str) -> Result<Option<Witnessed>, WitnessError> {
        let path = Self::state_file(&self.dir, origin);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(WitnessError::Io(format!("{}: {e}", path.display()))),
            Ok(_) => {}
        }
        let w =
            Witnessed::read(&path).map_err(|e| WitnessError::Io(format!("the witness state is unreadable: {e}")))?;
        if w.body.origin != origin || self.key.vkey().verify(&w.body, &w.sigs).is_none() {
            return Err(WitnessError::Io(format!("{}: not a note this witness cosigned for {origin}", path.display())));
        }
        Ok(Some(w))
    }

    /// Handles one `add-checkpoint` request body: the cosignature line on success.
    ///
    /// # Errors
    /// A [`WitnessError`], whose status and body are the response tlog-witness prescribes.
    pub fn add_checkpoint(&self, request: &str) -> Result<String, WitnessError> {
        let r = parse_request(request)?;
        let log = self.logs.iter().find(|l| l.origin == r.body.origin).ok_or(WitnessError::UnknownOrigin)?;
        let signed = r
            .sigs
            .iter()
            .filter_map(|s| r.body.checkpoint(s, &log.point))
            .any(|cp| super::verify::check_signature(&cp, &log.point));
        if !signed {
            return Err(WitnessError::Forbidden);
        }
        if r.old > r.body.size {
            return Err(WitnessError::BadRequest("the old size is larger than the checkpoint's".into()));
        }
        let _held = self.state.lock().map_err(|_| WitnessError::Io("the witness state lock is poisoned".into()))?;
        let latest = self.latest(&r.body.origin)?;
        let (latest_size, latest_root) =
            latest.as_ref().map_or((0, merkle::empty_root()), |w| (w.body.size, w.body.root));
        if r.body.size < latest_size {
            return Err(WitnessError::Rollback { size: r.body.size, latest: latest_size });
        }
        if r.old != latest_size {
            return Err(WitnessError::Conflict { latest: latest_size });
        }
        if r.old == r.body.size {
            if latest.is_some() && latest_root != r.body.root {
                return Err(WitnessError::Fork);
            }
        } else if r.old == 0 {
            if !r.proof.is_empty() {
                return Err(WitnessError::BadRequest("a proof from size 0".into()));
            }
        } else if !merkle::verify_consistency(r.old, r.body.size, &latest_root, &r.body.root, &r.proof) {
            return Err(WitnessError::Inconsistent);
        }
        // Cosigned only what the copy holds: the records that give this root, so that the copy
        // restores what the cosignature vouches for.
        match log.copy.held_root(r.body.size) {
            Some(root) if root == r.body.root => {}
            Some(_) => return Err(WitnessError::NotHeld("the copy's records give another root at this size".into())),
            None => {
                return Err(WitnessError::NotHeld(match log.copy.damaged() {
                    Some(d) => format!("the copy of this log is damaged ({d})"),
                    None => format!("the copy does not hold a checkpoint of {} records yet", r.body.size),
                }));
            }
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let line = self.key.cosign(&r.body, now).text();
        self.persist(&r.body.origin, &format!("{}{line}", r.note))?;
        Ok(line)
    }

    fn persist(&self, origin: &str, note: &str) -> Result<(), WitnessError> {
        let path = Self::state_file(&self.dir, origin);
        let io = |e: std::io::Error| WitnessError::Io(format!("{}: {e}", path.display()));
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io)?;
        tmp.write_all(note.as_bytes()).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::copy::Replica;
    use crate::audit::note::checkpoint_note;
    use crate::audit::{Checkpoint, Record};
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
    use std::sync::Arc;
    use zeroize::Zeroizing;

    /// A log of real records, and the copy the witness's appliance holds of it.
    struct Log {
        key: EcdsaKeyPair,
        records: Vec<Vec<u8>>,
    }

    impl Log {
        fn new() -> Log {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new()).unwrap();
            Log {
                key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap(),
                records: vec![],
            }
        }
        fn point(&self) -> Vec<u8> {
            self.key.public_key().as_ref().to_vec()
        }
        fn grow(&mut self, n: usize, tag: &str) {
            for i in 0..n {
                let mut r = Record::now("request");
                r.seq = self.records.len() as u64;
                r.incident_id = Some(format!("{tag}-{i}"));
                self.records.push(r.canonical());
            }
        }
        fn leaves(&self) -> Vec<Hash> {
            self.records.iter().map(|r| merkle::leaf_hash(r)).collect()
        }
        fn checkpoint(&self) -> Checkpoint {
            let mut t = merkle::CompactTree::default();
            self.leaves().into_iter().for_each(|l| t.push(l));
            let root = merkle::hex(&t.root());
            let msg = Checkpoint::signed_bytes("log-a", t.size(), &root, "2026-12-03T00:00:00Z", None);
            let sig = self.key.sign(&SystemRandom::new(), &msg).unwrap();
            Checkpoint {
                origin: "log-a".into(),
                tree_size: t.size(),
                root_hash: root,
                time: "2026-12-03T00:00:00Z".into(),
                key_id: String::new(),
                signature: B64.encode(sig.as_ref()),
                tpm_counter: None,
            }
        }
        fn note(&self) -> String {
            checkpoint_note(&self.checkpoint(), &self.point()).unwrap()
        }
        fn request(&self, old: usize) -> String {
            let proof = if old == 0 { vec![] } else { merkle::consistency_proof(&self.leaves(), old) };
            request_body(old as u64, &proof, &self.note())
        }
        /// Ships what the copy lacks: the records, then the checkpoint.
        fn ship(&self, copy: &Replica) {
            let seg = "segment-000001.jsonl";
            let have = copy.sizes().get(seg).copied().unwrap_or(0);
            let all: Vec<u8> = self.records.iter().flat_map(|r| [r.as_slice(), b"\n"].concat()).collect();
            copy.append(seg, have, &all[have as usize..]).unwrap();
            let cps = copy.sizes().get(crate::audit::CHECKPOINTS_FILE).copied().unwrap_or(0);
            let line = serde_json::to_string(&self.checkpoint()).unwrap() + "\n";
            copy.append(crate::audit::CHECKPOINTS_FILE, cps, line.as_bytes()).unwrap();
        }
    }

    fn witness(dir: &Path, log: &Log) -> (Witness, Arc<Replica>, crate::audit::note::Vkey) {
        let key = WitnessKey::from_seed("b/witness", &Zeroizing::new(vec![7; 32])).unwrap();
        let vkey = key.vkey();
        let copy = Arc::new(Replica::open(&dir.join("log"), log.point()).unwrap());
        let logs = vec![TrustedLog { origin: "log-a".into(), point: log.point(), copy: copy.clone() }];
        (Witness::open(&dir.join("witness"), key, logs).unwrap(), copy, vkey)
    }

    #[test]
    fn cosigns_extensions_and_refuses_rollback_forks_bad_proofs_and_strangers() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::new();
        let (w, copy, vkey) = witness(dir.path(), &log);
        log.grow(5, "a");
        log.ship(&copy);
        let line = w.add_checkpoint(&log.request(0)).unwrap();
        let (body, _) = NoteBody::parse(&log.note()).unwrap();
        assert!(vkey.verify(&body, &[SigLine::parse(line.trim_end()).unwrap()]).is_some());
        assert_eq!(w.latest("log-a").unwrap().unwrap().body.size, 5, "persisted before answering");
        let old = log.request(5);
        log.grow(4, "b");
        log.ship(&copy);
        w.add_checkpoint(&log.request(5)).unwrap();
        // A replay of the older checkpoint is a rollback: 409 with the latest size.
        let e = w.add_checkpoint(&old).unwrap_err();
        assert_eq!((e.status(), e.body()), (409, "9\n".into()));
        assert_eq!(e, WitnessError::Rollback { size: 5, latest: 9 });
        // A log that did not know the latest size (a restart) learns it: a plain conflict.
        let e = w.add_checkpoint(&log.request(0)).unwrap_err();
        assert_eq!(e, WitnessError::Conflict { latest: 9 });
        // A forked log: the same size, other records.
        let mut fork = Log { key: log.key, records: log.records[..5].to_vec() };
        fork.grow(4, "fork");
        assert_eq!(w.add_checkpoint(&fork.request(9)).unwrap_err(), WitnessError::Fork);
        // An extension of the fork is not consistent with what was cosigned.
        fork.grow(1, "more");
        let e = w.add_checkpoint(&fork.request(9)).unwrap_err();
        assert_eq!(e, WitnessError::Inconsistent);
        // Another key, another origin.
        let stranger = Log::new();
        assert_eq!(
            w.add_checkpoint(&stranger.request(0).replace("old 0", "old 9")).unwrap_err(),
            WitnessError::Forbidden
        );
        assert_eq!(
            w.add_checkpoint(&stranger.request(0).replace("log-a", "log-z")).unwrap_err(),
            WitnessError::UnknownOrigin
        );
        assert_eq!(w.latest("log-a").unwrap().unwrap().body.size, 9, "nothing refused changed the state");
    }

    /// A checkpoint whose records the copy does not hold is not cosigned (422), though it is a
    /// valid extension; once they are shipped, it is.
    #[test]
    fn only_what_the_copy_holds_is_cosigned() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::new();
        let (w, copy, _) = witness(dir.path(), &log);
        log.grow(3, "a");
        let e = w.add_checkpoint(&log.request(0)).unwrap_err();
        assert!(matches!(e, WitnessError::NotHeld(_)) && e.status() == 422, "{e}");
        assert!(w.latest("log-a").unwrap().is_none());
        log.ship(&copy);
        w.add_checkpoint(&log.request(0)).unwrap();
    }

    /// A witness whose state cannot be read refuses (500) rather than cosign as if it had never
    /// cosigned: a fork from size 0 after the state was truncated is not cosigned.
    #[test]
    fn a_damaged_state_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::new();
        let (w, copy, _) = witness(dir.path(), &log);
        log.grow(4, "a");
        log.ship(&copy);
        w.add_checkpoint(&log.request(0)).unwrap();
        let state = Witness::state_file(&dir.path().join("witness"), "log-a");
        for damage in [&b""[..], b"log-a\n4\n", b"\xff\xfe"] {
            std::fs::write(&state, damage).unwrap();
            let e = w.add_checkpoint(&log.request(0)).unwrap_err();
            assert!(matches!(e, WitnessError::Io(_)) && e.status() == 500, "{e}");
        }
        // A state that is a note, but one this witness did not cosign.
        std::fs::write(&state, log.note()).unwrap();
        assert_eq!(w.add_checkpoint(&log.request(0)).unwrap_err().status(), 500);
    }
}
