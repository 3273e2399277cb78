//! The tamper matrix: one log written by a gateway whose checkpoint key and counter live in a
//! TPM (swtpm), each attack of an insider with root applied to a copy of it, and every mode an
//! officer has run on each: `audit verify`, `--witness/--witnessed` (the peer's record of what it
//! cosigned), `--tpm` (the TPM's checkpoint counter) and `audit report`. docs/audit.md's table of
//! what each mode detects is this test's output (`SPOCGW_WRITE_DOCS=1` rewrites it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use spocgw::audit::merkle::{self, CompactTree};
use spocgw::audit::note::{NoteBody, WitnessKey, checkpoint_note};
use spocgw::audit::verify::{LogContents, read_log};
use spocgw::audit::{Anchor, Checkpoint, CheckpointSigner, Record};
use spocgw::sim::messages::{self, BioRequest};
use spocgw::xml::SoapVersion;

const SOAP11: &str = "text/xml; charset=utf-8";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What an attack does to a copy of the log, and what each mode must say of it.
struct Attack {
    name: &'static str,
    /// Options every mode of this row is run with (what the verifier was told).
    told: &'static [&'static str],
    /// Per mode (verify, --witnessed, --tpm, report): None where the mode passes, else a phrase
    /// its failure must contain.
    expect: [Option<&'static str>; 4],
    /// Why a mode passes, where one does.
    passes: &'static str,
}

const UNSEEN: &str = "passes: cannot see it";

const MODES: [&str; 4] = ["`verify`", "`--witness --witnessed`", "`--tpm`", "`report`"];

/// The log, its key and TPM, and the witness the peer would be.
struct Ctx {
    log: LogContents,
    original: PathBuf,
    signer: Box<dyn CheckpointSigner>,
}

fn lines_of(records: &[(Record, Vec<u8>, spocgw::audit::verify::Location)]) -> Vec<Vec<u8>> {
    records.iter().map(|(_, b, _)| b.clone()).collect()
}

fn write_segment(dir: &Path, lines: &[Vec<u8>]) {
    let mut text = Vec::new();
    for l in lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    std::fs::write(dir.join("segment-000001.jsonl"), text).unwrap();
}

fn write_checkpoints(dir: &Path, cps: &[Checkpoint]) {
    let text: String = cps.iter().map(|c| serde_json::to_string(c).unwrap() + "\n").collect();
    std::fs::write(dir.join("checkpoints.jsonl"), text).unwrap();
}

/// A copy of the untouched log (segments and checkpoints, nothing else).
fn copy_of(ctx: &Ctx, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    write_segment(dir, &lines_of(&ctx.log.records));
    write_checkpoints(dir, &ctx.log.checkpoints);
    std::fs::copy(ctx.original.join("checkpoint.pub.pem"), dir.join("checkpoint.pub.pem")).unwrap();
}

fn tree_of(lines: &[Vec<u8>]) -> CompactTree {
    let mut t = CompactTree::default();
    lines.iter().for_each(|l| t.push(merkle::leaf_hash(l)));
    t
}

fn anchor_for(tree: &CompactTree, newest_pruned: &str, cp_like: &Checkpoint) -> Anchor {
    Anchor {
        origin: cp_like.origin.clone(),
        tree_size: tree.size(),
        peaks: tree.peaks().iter().map(|(h, x)| (*h, merkle::hex(x))).collect(),
        time: cp_like.time.clone(),
        newest_pruned: newest_pruned.to_owned(),
        pruned_through: "segment-000000.jsonl".into(),
        key_id: cp_like.key_id.clone(),
        signature: String::new(),
    }
}

fn write_anchor(dir: &Path, a: &Anchor) {
    std::fs::write(dir.join("anchor.json"), serde_json::to_vec(a).unwrap()).unwrap();
}

/// A checkpoint of `lines` signed by `signer` (as the insider with the key would), no counter.
fn signed_checkpoint(
    signer: &dyn CheckpointSigner,
    like: &Checkpoint,
    lines: &[Vec<u8>],
    base: CompactTree,
) -> Checkpoint {
    let mut t = base;
    lines.iter().for_each(|l| t.push(merkle::leaf_hash(l)));
    let root = merkle::hex(&t.root());
    let msg = Checkpoint::signed_bytes(&like.origin, t.size(), &root, &like.time, None);
    Checkpoint {
        tree_size: t.size(),
        root_hash: root,
        signature: B64.encode(signer.sign(&msg).unwrap()),
        tpm_counter: None,
        ..like.clone()
    }
}

fn record_line(seq: u64, incident: &str) -> Vec<u8> {
    let mut r = Record::now("request");
    r.seq = seq;
    r.incident_id = Some(incident.into());
    r.operation = Some("CheckIdentityRequest".into());
    r.canonical()
}

/// Applies attack `i` of [`attacks`] to a fresh directory.
fn apply(ctx: &Ctx, i: usize, dir: &Path) {
    copy_of(ctx, dir);
    let lines = lines_of(&ctx.log.records);
    let total = lines.len();
    let cps = &ctx.log.checkpoints;
    // A checkpoint in the middle of the log: what the prefix attacks cut up to.
    let mid = cps.iter().find(|c| c.tree_size >= 4 && (c.tree_size as usize) < total - 2).expect("a middle checkpoint");
    let k = mid.tree_size as usize;
    let newest_pruned = ctx.log.records[k - 1].0.time.clone();
    match i {
        // Records 0..k deleted; the anchor reuses the middle checkpoint's signature.
        0 => {
            write_segment(dir, &lines[k..]);
            let mut a = anchor_for(&tree_of(&lines[..k]), &newest_pruned, mid);
            a.signature = mid.signature.clone();
            write_anchor(dir, &a);
        }
        // The same, the anchor signed with the checkpoint key (root can use the TPM key).
        1 => {
            write_segment(dir, &lines[k..]);
            let tree = tree_of(&lines[..k]);
            let mut a = anchor_for(&tree, &newest_pruned, mid);
            a.signature = B64.encode(ctx.signer.sign(&a.signed_bytes(&merkle::hex(&tree.root()))).unwrap());
            write_anchor(dir, &a);
        }
        // The whole history replaced: an anchor above everything the peer witnessed, invented
        // records after it and a checkpoint over them, all signed with the key.
        2 => {
            let fake: Vec<Vec<u8>> = (0..total + 22).map(|n| format!("invented {n}").into_bytes()).collect();
            let tree = tree_of(&fake);
            let mut a = anchor_for(&tree, "2020-01-01T00:00:00.000000Z", mid);
            a.signature = B64.encode(ctx.signer.sign(&a.signed_bytes(&merkle::hex(&tree.root()))).unwrap());
            write_anchor(dir, &a);
            let invented: Vec<Vec<u8>> =
                (0..33).map(|n| record_line(tree.size() + n, &format!("invented-{n}"))).collect();
            write_segment(dir, &invented);
            write_checkpoints(dir, &[signed_checkpoint(ctx.signer.as_ref(), mid, &invented, tree)]);
        }
        // The last records cut, with every checkpoint that covers them.
        3 => {
            write_segment(dir, &lines[..k]);
            let kept: Vec<Checkpoint> = cps.iter().filter(|c| c.tree_size as usize <= k).cloned().collect();
            write_checkpoints(dir, &kept);
        }
        // A record of another log spliced in; those after it renumbered.
        4 => {
            let mut l = lines[..2].to_vec();
            l.push(record_line(2, "spliced-in"));
            for (n, line) in lines[2..].iter().enumerate() {
                let mut r: Record = serde_json::from_slice(line).unwrap();
                r.seq = 3 + n as u64;
                l.push(r.canonical());
            }
            write_segment(dir, &l);
        }
        // Two records swapped.
        5 => {
            let mut l = lines.clone();
            l.swap(2, 3);
            write_segment(dir, &l);
        }
        // A record written twice.
        6 => {
            let mut l = lines.clone();
            l.insert(3, lines[2].clone());
            write_segment(dir, &l);
        }
        // A forged record after the newest checkpoint, in sequence and canonical.
        7 => {
            let mut l = lines.clone();
            l.push(record_line(total as u64, "appended"));
            write_segment(dir, &l);
        }
        // A record altered, every checkpoint re-signed with a new key, whose public key replaces
        // the one beside the log.
        8 => {
            let mut l = lines.clone();
            let mut r: Record = serde_json::from_slice(&l[2]).unwrap();
            r.detail = Some("rewritten".into());
            l[2] = r.canonical();
            write_segment(dir, &l);
            let pem = rcgen::KeyPair::generate().unwrap();
            let key_file = dir.join("../new-key.pem");
            std::fs::write(&key_file, pem.serialize_pem()).unwrap();
            let new = spocgw::audit::FileSigner::load(&key_file).unwrap();
            let resigned: Vec<Checkpoint> = cps
                .iter()
                .map(|c| {
                    let root = merkle::hex(&tree_of(&l[..c.tree_size as usize]).root());
                    let msg = Checkpoint::signed_bytes(&c.origin, c.tree_size, &root, &c.time, c.tpm_counter);
                    Checkpoint { root_hash: root, signature: B64.encode(new.sign(&msg).unwrap()), ..c.clone() }
                })
                .collect();
            write_checkpoints(dir, &resigned);
            std::fs::write(dir.join("checkpoint.pub.pem"), pem.public_key_pem()).unwrap();
        }
        // The log untouched; the witness's state (the note the verifier is given) damaged.
        9 => {}
        _ => unreachable!(),
    }
}

fn attacks() -> Vec<Attack> {
    let all = |why| [Some(why); 4];
    vec![
        Attack {
            name: "records deleted from the start, a retention anchor reusing a checkpoint's signature (no key)",
            told: &[],
            expect: all("forged retention anchor"),
            passes: UNSEEN,
        },
        Attack {
            name: "records deleted from the start, a retention anchor signed with the checkpoint key",
            told: &[],
            expect: all("were pruned"),
            passes: UNSEEN,
        },
        Attack {
            name: "the whole history replaced behind an anchor signed with the key, the verifier expecting pruning (`--allow-pruned-before`)",
            told: &["--allow-pruned-before", "2021-01-01"],
            expect: [None, Some("below the retention anchor"), Some("carries no TPM counter"), None],
            passes: UNSEEN,
        },
        Attack {
            name: "the last records cut, with the checkpoints that cover them",
            told: &[],
            expect: [None, Some("truncated"), Some("truncated"), None],
            passes: UNSEEN,
        },
        Attack { name: "a record of another log spliced in", told: &[], expect: all("was altered"), passes: UNSEEN },
        Attack { name: "two records swapped", told: &[], expect: all("sequence number"), passes: UNSEEN },
        Attack { name: "a record duplicated", told: &[], expect: all("sequence number"), passes: UNSEEN },
        Attack {
            name: "a record appended after the newest checkpoint",
            told: &[],
            expect: all("no gateway is writing this log"),
            passes: UNSEEN,
        },
        Attack {
            name: "a record altered and every checkpoint re-signed with a new key put beside the log",
            told: &[],
            expect: all("signature does not verify"),
            passes: UNSEEN,
        },
        Attack {
            name: "the witness state the verifier is given damaged",
            told: &[],
            expect: [None, Some("not a checkpoint note"), None, None],
            passes: "passes: the log is intact",
        },
    ]
}

struct Run {
    cfg: PathBuf,
    key: PathBuf,
    vkey: PathBuf,
    witnessed: PathBuf,
    damaged_note: PathBuf,
}

/// Runs mode `m` on `dir`: (exit code, output).
fn run_mode(r: &Run, m: usize, dir: &Path, row: usize, told: &[&str]) -> (i32, String) {
    let mut c = Command::new(BIN);
    let d = dir.to_str().unwrap();
    let key = r.key.to_str().unwrap();
    match m {
        0 => c.args(["audit", "verify", d, "--key", key]),
        1 => {
            let note = if row == 9 { &r.damaged_note } else { &r.witnessed };
            c.args(["audit", "verify", d, "--key", key, "--witness"]).arg(&r.vkey).arg("--witnessed").arg(note)
        }
        2 => c.args(["audit", "verify", d, "--key", key, "--tpm", "--config"]).arg(&r.cfg),
        _ => c.args(["audit", "report", d, "--key", key, "--out"]).arg(dir.join("../report.html")),
    };
    let out = c.args(told).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_is_named_by_the_modes_that_can_see_it() {
    let Some(tpm) = Swtpm::start() else { return };
    let mut w = World::with_tpm(&tpm, "16");
    // Several checkpoints: one every 6 records.
    let cfg = w.path("gateway.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "dir = \"audit\"\n",
        "dir = \"audit\"\ncheckpoint_every = 6\n",
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    w.start_ministry();
    w.start_receiver();
    let g = w.start_gateway();
    w.wait_ready();
    let officer = w.client("officer", false);
    for _ in 0..12 {
        let bio = BioRequest::matching(&uuid::Uuid::new_v4().to_string(), 512).verify_fingerprint();
        let body = messages::envelope(SoapVersion::V11, &bio);
        let r = post(&officer, "/bio/v1", SOAP11, Some("VerifyFingerprintRequest"), body).await.unwrap();
        assert_eq!(r.status, 200, "{}", common::text(&r));
    }
    w.procs[g].signal("TERM");
    assert!(w.procs[g].wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()));

    let original = w.path("audit");
    let key = w.path("tpm/audit-checkpoint.pub.pem");
    let point = spocgw::audit::verify::public_point(&key).unwrap();
    let log = read_log(&original).unwrap();
    let newest = log.checkpoints.iter().max_by_key(|c| c.tree_size).unwrap().clone();
    assert_eq!(newest.tree_size as usize, log.records.len(), "the gateway's last checkpoint covers its log");
    assert!(newest.tpm_counter.is_some(), "checkpoints counted by the TPM");

    // The peer's witness cosigned the newest checkpoint.
    let witness = WitnessKey::from_seed("peer/witness", &zeroize::Zeroizing::new(vec![9; 32])).unwrap();
    let note = checkpoint_note(&newest, &point).unwrap();
    let (body, _) = NoteBody::parse(&note).unwrap();
    let run = Run {
        cfg: cfg.clone(),
        key: key.clone(),
        vkey: w.path("peer.vkey"),
        witnessed: w.path("peer-witnessed.note"),
        damaged_note: w.path("peer-witnessed-damaged.note"),
    };
    std::fs::write(&run.vkey, witness.vkey().text()).unwrap();
    let cosigned = format!("{note}{}", witness.cosign(&body, 1_800_000_000).text());
    std::fs::write(&run.witnessed, &cosigned).unwrap();
    std::fs::write(&run.damaged_note, &cosigned[..cosigned.len() / 2]).unwrap();

    // The insider's attacks, signed with the TPM's checkpoint key where they need it; the key
    // store is closed before the modes run (the TPM answers one client at a time).
    let tpm_cfg = spocgw::cli::tpm::read_tpm_table(&cfg).unwrap();
    let store = spocgw::keys::KeyStore::open(Some(&tpm_cfg)).unwrap();
    let signer = store.checkpoint_signer(&spocgw::keys::KeyRef::Tpm("audit-checkpoint".into())).unwrap();
    let ctx = Ctx { log, original, signer };
    let base = std::env::var_os("SPOCGW_TAMPER_KEEP").map_or_else(|| w.path("attacks"), PathBuf::from);
    let rows = attacks();
    for i in 0..rows.len() {
        apply(&ctx, i, &base.join(format!("{i}/audit")));
    }
    drop(ctx);
    drop(store);

    let mut table = format!("| attack | {} |\n|---|---|---|---|---|\n", MODES.join(" | "));
    let mut wrong = Vec::new();
    for (i, a) in rows.iter().enumerate() {
        let dir = base.join(format!("{i}/audit"));
        let mut cells = Vec::new();
        for (m, want) in a.expect.iter().enumerate() {
            let (code, out) = run_mode(&run, m, &dir, i, a.told);
            let ok = match want {
                None => code == 0,
                Some(why) => code != 0 && out.contains(why),
            };
            if !ok {
                wrong.push(format!("{} / {}: expected {want:?}, exit {code}:\n{out}", a.name, MODES[m]));
            }
            cells.push(match want {
                None => a.passes.to_owned(),
                Some(why) => format!("**fails**: \"{why}\""),
            });
        }
        table.push_str(&format!("| {} | {} |\n", a.name, cells.join(" | ")));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    docs_table(&table);
}

/// docs/audit.md holds this test's table between its markers.
fn docs_table(table: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/audit.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (begin, end) = ("<!-- tamper-matrix: begin (tests/tamper.rs writes it) -->\n", "<!-- tamper-matrix: end -->");
    let (Some(a), Some(b)) = (doc.find(begin), doc.find(end)) else {
        panic!("docs/audit.md has no tamper matrix markers");
    };
    let current = &doc[a + begin.len()..b];
    if current != table {
        if std::env::var_os("SPOCGW_WRITE_DOCS").is_some() {
            std::fs::write(&path, format!("{}{table}{}", &doc[..a + begin.len()], &doc[b..])).unwrap();
        } else {
            panic!("docs/audit.md's tamper matrix differs from the test's (SPOCGW_WRITE_DOCS=1 rewrites it):\n{table}");
        }
    }
}
