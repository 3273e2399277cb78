//! `spocgw audit verify|query|export|prove|verify-proof`: the officers' view of the audit log.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

mod filters;
mod read;

use crate::audit::proof::{self, Proof};
use crate::audit::verify;
use crate::keys::load_pseudonym_key;
pub use read::QueryArgs;

// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify every record, the Merkle tree and every checkpoint signature.
    Verify(VerifyArgs),
    /// Rebuild a lost audit log from the copy the peer appliance (or a backup) holds, then verify it.
    Restore {
        /// The copy: the peer's pair.dir/log, or this appliance's pair.backup_dir
        #[arg(long)]
        from: PathBuf,
        /// The audit directory to rebuild (absent or empty)
        #[arg(long)]
        to: PathBuf,
        /// This log's checkpoint public key (PEM)
        #[arg(long)]
        key: PathBuf,
    },
    /// Search the log.
    Query(QueryArgs),
    /// Export every record as JSON lines or RFC 5424 syslog lines (for a SIEM).
    Export {
        /// The audit log directory
        dir: PathBuf,
        /// json or syslog (RFC 5424)
        #[arg(long, default_value = "json")]
        format: String,
        /// From this time: RFC 3339 with any offset, or a date (UTC)
        #[arg(long)]
        since: Option<String>,
        /// Up to this time, inclusive: RFC 3339 with any offset, or a date (to its end, UTC)
        #[arg(long)]
        until: Option<String>,
    },
    /// Write the officer's report: one self-contained HTML page (consultations per day, purpose,
    /// crossing point and officer; refusals; minimised fields; callbacks; every consultation,
    /// filterable; the log's verification). The access is recorded like a query.
    Report {
        /// The audit log directory
        dir: PathBuf,
        /// From this time: RFC 3339 with any offset, or a date (UTC)
        #[arg(long)]
        since: Option<String>,
        /// Up to this time, inclusive: RFC 3339 with any offset, or a date (to its end, UTC)
        #[arg(long)]
        until: Option<String>,
        /// The HTML file to write (mode 0600)
        #[arg(long)]
        out: PathBuf,
        /// The checkpoint public key (PEM) the log is verified with: the trust root, a copy kept
        /// away from the appliance (its key ID is printed on the page)
        #[arg(long)]
        key: PathBuf,
        /// Retention pruning is expected: accept a signed anchor whose pruned records are all
        /// older than DATE
        #[arg(long, value_name = "DATE")]
        allow_pruned_before: Option<String>,
    },
    /// Inclusion proof of an incident's record against the latest checkpoint (JSON).
    Prove {
        /// The audit log directory
        dir: PathBuf,
        /// The incident ID whose record is proven
        #[arg(long)]
        incident: String,
    },
    /// Check an inclusion proof with only the checkpoint public key.
    VerifyProof {
        /// The log's checkpoint public key (PEM)
        #[arg(long)]
        key: PathBuf,
        /// The proof (JSON, from `audit prove`)
        proof: PathBuf,
    },
}

pub fn run(cmd: AuditCommand) -> ExitCode {
    match cmd {
        AuditCommand::Verify(args) => verify_args(args),
        AuditCommand::Restore { from, to, key } => restore(&from, &to, &key),
        AuditCommand::Query(q) => read::query(q),
        AuditCommand::Report { dir, since, until, out, key, allow_pruned_before } => {
            match allow_pruned_before.as_deref().map(|d| read::time_bound("allow-pruned-before", d, false)).transpose()
            {
                Ok(allow_pruned_before) => {
                    let opts = verify::Options { allow_pruned_before, ..Default::default() };
                    read::report(&dir, (since.as_deref(), until.as_deref()), &out, &key, &opts)
                }
                Err(e) => {
                    eprintln!("spocgw audit report: {e}");
                    ExitCode::from(2)
                }
            }
        }
        AuditCommand::Export { dir, format, since, until } => {
            read::export(&dir, &format, since.as_deref(), until.as_deref())
        }
        AuditCommand::Prove { dir, incident } => {
            match read::check_log_dir(&dir)
                .map_err(|e| {
                    eprintln!("spocgw audit prove: {e}");
                    ExitCode::from(2)
                })
                .and_then(|()| read::record_access(&dir, format!("audit prove --incident {incident}")))
                .and_then(|()| {
                    proof::prove(&dir, &incident).map_err(|e| {
                        eprintln!("spocgw audit prove: {e}");
                        ExitCode::from(1)
                    })
                }) {
                Ok(p) => {
                    println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        AuditCommand::VerifyProof { key, proof } => {
            let p: Proof = match std::fs::read_to_string(&proof)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("spocgw audit verify-proof: {}: {e}", proof.display());
                    return ExitCode::from(2);
                }
            };
            match proof::verify_proof(&p, &key) {
                Ok(()) => {
                    println!(
                        "proof verified: record {} is in the log of size {} with root {}",
                        p.leaf_index, p.checkpoint.tree_size, p.checkpoint.root_hash
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("proof FAILED: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The audit log directory
    dir: PathBuf,
    /// The checkpoint public key (PEM) the log must verify under: the trust root, a copy kept
    /// away from the appliance (never the one beside the log)
    #[arg(long)]
    key: PathBuf,
    /// Retention pruning is expected: accept a signed retention anchor whose pruned records are
    /// all older than DATE (RFC 3339, or a date: its start, UTC)
    #[arg(long, value_name = "DATE")]
    allow_pruned_before: Option<String>,
    /// A copy that still holds the records retention pruned (the peer's pair.dir/log, a backup):
    /// they are checked against the anchor and the log verifies whole
    #[arg(long, value_name = "DIR")]
    peer_copy: Option<PathBuf>,
    /// Also compare the newest checkpoint with the TPM's audit counter (the TPM of
    /// --config's [tpm] table, or --tcti): detects checkpoints removed from the disk
    #[arg(long)]
    tpm: bool,
    /// gateway.toml whose [tpm] table names the TPM (with --tpm)
    #[arg(long)]
    config: Option<PathBuf>,
    /// The TPM (with --tpm), e.g. device:/dev/tpmrm0
    #[arg(long)]
    tcti: Option<String>,
    /// A checkpoint kept away from the appliance (one line of checkpoints.jsonl): the log's
    /// records must give its root at its size (nothing before it rewritten or cut)
    #[arg(long)]
    expect: Option<PathBuf>,
    /// The peer appliance's witness vkey (NAME+KEYID+BASE64): check its cosignatures on this
    /// log's checkpoints (cosignatures.jsonl) and report the newest both signed
    #[arg(long)]
    witness: Option<PathBuf>,
    /// The peer's record of the newest checkpoint of this log it witnessed (its
    /// pair.dir/witness/*.note, with --witness): the log's records must give its root (a cut or
    /// rewritten log fails)
    #[arg(long, requires = "witness")]
    witnessed: Option<PathBuf>,
}

/// What `audit verify` checks besides the log itself, read before it (exit 2 when unreadable).
struct Checks {
    key: PathBuf,
    tpm: Option<crate::tpm::TpmConfig>,
    kept: Option<crate::audit::Checkpoint>,
    witness: Option<crate::audit::note::Vkey>,
    witnessed: Option<crate::audit::witness::Witnessed>,
    opts: verify::Options,
}

fn verify_args(a: VerifyArgs) -> ExitCode {
    match checks(a) {
        Ok((dir, c)) => verify_cmd(&dir, &c),
        Err(e) => {
            eprintln!("spocgw audit verify: {e}");
            ExitCode::from(2)
        }
    }
}

fn checks(a: VerifyArgs) -> Result<(PathBuf, Checks), String> {
    let tpm = match (a.tpm, a.config, a.tcti) {
        (false, _, _) => None,
        (true, _, Some(t)) => Some(crate::tpm::TpmConfig::new(t, PathBuf::new(), Vec::new())),
        (true, Some(c), None) => Some(super::tpm::read_tpm_table(&c)?),
        (true, None, None) => return Err("--tpm needs --config gateway.toml or --tcti".into()),
    };
    let kept = a.expect.as_deref().map(read_kept).transpose()?;
    let witness = a
        .witness
        .as_deref()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            crate::audit::note::Vkey::parse(&text).map_err(|e| format!("{}: {e}", f.display()))
        })
        .transpose()?;
    let witnessed = a.witnessed.as_deref().map(crate::audit::witness::Witnessed::read).transpose()?;
    let allow_pruned_before =
        a.allow_pruned_before.as_deref().map(|d| read::time_bound("allow-pruned-before", d, false)).transpose()?;
    let roots_at = kept.iter().map(|k| k.tree_size).chain(witnessed.iter().map(|w| w.body.size)).collect();
    let opts = verify::Options { allow_pruned_before, peer_copy: a.peer_copy, roots_at, unsealed_reported: false };
    Ok((a.dir, Checks { key: a.key, tpm, kept, witness, witnessed, opts }))
}

/// `--expect`: the last line of the file, a checkpoint.
fn read_kept(file: &Path) -> Result<crate::audit::Checkpoint, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let line = text.lines().rfind(|l| !l.trim().is_empty()).ok_or_else(|| format!("{}: empty", file.display()))?;
    serde_json::from_str(line).map_err(|e| format!("{}: not a checkpoint: {e}", file.display()))
}

fn restore(from: &Path, to: &Path, key: &Path) -> ExitCode {
    match crate::audit::recovery::restore(from, to) {
        Ok(n) => println!("restored {n} files from {} into {}", from.display(), to.display()),
        Err(e) => {
            eprintln!("spocgw audit restore: {e}");
            return ExitCode::from(2);
        }
    }
    let opts = verify::Options { unsealed_reported: true, ..Default::default() };
    let checks = Checks { key: key.to_path_buf(), tpm: None, kept: None, witness: None, witnessed: None, opts };
    verify_cmd(to, &checks)
}

/// Every check `c` asks for, each line printed as it passes; the first failure ends it.
fn verified_lines(dir: &Path, c: &Checks) -> Result<(verify::Summary, Vec<String>), String> {
    let mut s = verify::verify(dir, &c.key, &c.opts)?;
    let mut lines = Vec::new();
    let point = verify::public_point(&c.key)?;
    if let Some(cfg) = &c.tpm {
        let (t, line) = against_tpm(dir, c, cfg, s)?;
        s = t;
        lines.push(line);
    }
    if let Some(kept) = &c.kept {
        if !verify::check_signature(kept, &point) {
            return Err(format!("the kept checkpoint's signature does not verify under {}", c.key.display()));
        }
        verify::holds(&s, kept.tree_size, &kept.root_hash, "the kept checkpoint covers")?;
        lines.push(format!(
            "consistent with the kept checkpoint: the log's {} records give its root at size {}",
            s.records, kept.tree_size
        ));
    }
    if let Some(vkey) = &c.witness {
        let log = verify::read_log(dir)?;
        lines.push(match crate::audit::recovery::check_cosignatures(dir, &log, &point, vkey)? {
            Some(n) => format!(
                "cosigned by {}: {} notes verified; newest checkpoint both signed: size {} root {}",
                vkey.name, n.notes, n.newest_size, n.newest_root
            ),
            None => format!("cosigned by {}: no cosignature beside the log yet", vkey.name),
        });
        if let Some(w) = &c.witnessed {
            let size = crate::audit::recovery::check_witnessed(&s, &point, vkey, w)?;
            lines.push(format!("witnessed by {} through size {size}: the log's records give that root", vkey.name));
        }
    }
    Ok((s, lines))
}

fn verify_cmd(dir: &Path, c: &Checks) -> ExitCode {
    use std::io::Write;
    // Written with writeln so a closed pipe (`| head`) is not a panic.
    let mut out = std::io::stdout();
    match verified_lines(dir, c) {
        Ok((s, lines)) => {
            for line in s.describe().into_iter().chain(lines) {
                let _ = writeln!(out, "{line}");
            }
            let _ = writeln!(
                out,
                "audit log {} verified: {} records, {} checkpoints, head {}",
                dir.display(),
                s.records,
                s.checkpoints,
                s.root
            );
            if let Some(c) = s.last_checkpoint {
                let _ = writeln!(out, "last checkpoint: size {} root {} at {}", c.tree_size, c.root_hash, c.time);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(out, "audit log {} FAILED verification: {e}", dir.display());
            ExitCode::from(1)
        }
    }
}

/// `--tpm`: the newest checkpoint must carry the counter value the TPM holds, and lie above any
/// pruned prefix. A gateway that is running may be between counting and writing a checkpoint:
/// asked again, a few times.
fn against_tpm(
    dir: &Path,
    c: &Checks,
    cfg: &crate::tpm::TpmConfig,
    mut s: verify::Summary,
) -> Result<(verify::Summary, String), String> {
    let tpm = crate::tpm::Tpm::start(cfg).map_err(|e| e.to_string())?;
    // With the provisioning record (--config), the counter's write policy and pinned Name; with
    // --tcti alone, its type and attributes (a counter never goes back, even defined anew).
    let pinned = if cfg.dir.as_os_str().is_empty() {
        crate::tpm::Pinned::default()
    } else {
        crate::tpm::provision::Manifest::load(&cfg.dir).and_then(|m| m.pinned_counter()).map_err(|e| e.to_string())?
    };
    for attempt in 0.. {
        let counted = tpm.checkpoint_counter(pinned.clone()).map_err(|e| format!("--tpm: {e}"))?;
        let newest = s.last_checkpoint.as_ref();
        if let Some(cp) = newest.filter(|cp| cp.tree_size < s.first_held) {
            return Err(format!(
                "--tpm: the newest checkpoint (size {}) lies below the retention anchor (records from {}): what the TPM counted cannot be checked",
                cp.tree_size, s.first_held
            ));
        }
        match newest.and_then(|c| c.tpm_counter) {
            None => return Err("--tpm: the newest checkpoint carries no TPM counter (not written by a gateway with a TPM checkpoint key)".into()),
            Some(n) if n == counted => {
                return Ok((s, format!("TPM audit counter {counted}: the newest checkpoint is the last one the TPM counted")));
            }
            Some(n) if n > counted => {
                return Err(format!(
                    "--tpm: the newest checkpoint claims counter {n} but the TPM's is {counted}: not this TPM's log, or the TPM was cleared"
                ));
            }
            Some(n) if attempt >= 3 => {
                return Err(format!(
                    "--tpm: the TPM counted checkpoints up to {counted} but the log's newest is {n}: {} checkpoint(s), \
                     and the records after tree size {}, are missing from the disk (truncated)",
                    counted - n,
                    s.last_checkpoint.as_ref().map_or(0, |c| c.tree_size)
                ));
            }
            Some(_) => {
                std::thread::sleep(std::time::Duration::from_millis(1500));
                s = verify::verify(dir, &c.key, &c.opts)?;
            }
        }
    }
    Err("unreachable".into())
}

/// The pseudonymisation key from a file, or unsealed by the TPM of `config`'s `[tpm]` table.
pub(super) fn pseudonym_key_from(
    key: &str,
    config: Option<&std::path::Path>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let r = crate::keys::KeyRef::try_from(key.to_owned())?;
    let tpm = match (&r, config) {
        (crate::keys::KeyRef::Tpm(_), Some(c)) => Some(super::tpm::read_tpm_table(c)?),
        (crate::keys::KeyRef::Tpm(_), None) => {
            return Err(format!("{key} needs --config gateway.toml (its [tpm] table)"));
        }
        (crate::keys::KeyRef::File(p), _) => return load_pseudonym_key(p),
    };
    let store = crate::keys::KeyStore::open(tpm.as_ref()).map_err(|e| e.to_string())?;
    store.secret(&r).map_err(|e| e.to_string())
}
