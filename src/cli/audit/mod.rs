//! `spocgw audit verify|query|export|prove|verify-proof`: the officers' view of the audit log.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

mod read;

use crate::audit::verify::{self, Proof};
use crate::keys::load_pseudonym_key;
pub use read::QueryArgs;

// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify every record, the Merkle tree and every checkpoint signature.
    Verify {
        /// The audit log directory
        dir: PathBuf,
        /// Checkpoint public key (PEM). Default: the copy the gateway keeps beside the log; for an
        /// independent check pass a copy kept away from the appliance.
        #[arg(long)]
        key: Option<PathBuf>,
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
        /// A checkpoint kept away from the appliance (one line of checkpoints.jsonl): prove with
        /// an RFC 9162 consistency proof that this log extends it
        #[arg(long)]
        expect: Option<PathBuf>,
        /// The peer appliance's witness vkey (NAME+KEYID+BASE64): check its cosignatures on this
        /// log's checkpoints (cosignatures.jsonl) and report the newest both signed
        #[arg(long)]
        witness: Option<PathBuf>,
        /// The peer's record of the newest checkpoint of this log it witnessed (its
        /// pair.dir/witness/*.note, with --witness): the log must hold it (a cut log fails)
        #[arg(long, requires = "witness")]
        witnessed: Option<PathBuf>,
    },
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
        /// Checkpoint public key (PEM) the log is verified with; default: the copy beside the log
        #[arg(long)]
        key: Option<PathBuf>,
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
        AuditCommand::Verify { dir, key, tpm, config, tcti, expect, witness, witnessed } => {
            verify(&dir, key, tpm, config, tcti, expect, Witnessing { witness, witnessed })
        }
        AuditCommand::Restore { from, to, key } => restore(&from, &to, &key),
        AuditCommand::Query(q) => read::query(q),
        AuditCommand::Report { dir, since, until, out, key } => {
            read::report(&dir, since.as_deref(), until.as_deref(), &out, key.as_deref())
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
                    verify::prove(&dir, &incident).map_err(|e| {
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
            match verify::verify_proof(&p, &key) {
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

/// `spocgw audit verify`: the key beside the log unless one is given, the TPM's counter with
/// `--tpm`.
fn verify(
    dir: &Path,
    key: Option<PathBuf>,
    tpm: bool,
    config: Option<PathBuf>,
    tcti: Option<String>,
    expect: Option<PathBuf>,
    pair: Witnessing,
) -> ExitCode {
    let key = key.unwrap_or_else(|| {
        eprintln!(
            "note: using the checkpoint key stored beside the log ({}); pass --key for an independent check",
            crate::audit::PUBLIC_KEY_FILE
        );
        dir.join(crate::audit::PUBLIC_KEY_FILE)
    });
    let anchor = match (tpm, config, tcti) {
        (false, _, _) => None,
        (true, _, Some(t)) => Some(crate::tpm::TpmConfig::new(t, PathBuf::new(), Vec::new())),
        (true, Some(c), None) => match super::tpm::read_tpm_table(&c) {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                eprintln!("spocgw audit verify: {e}");
                return ExitCode::from(2);
            }
        },
        (true, None, None) => {
            eprintln!("spocgw audit verify: --tpm needs --config gateway.toml or --tcti");
            return ExitCode::from(2);
        }
    };
    verify_cmd(dir, &key, anchor.as_ref(), expect.as_deref(), &pair)
}

/// `--witness` and `--witnessed`: what the peer appliance signed of this log.
struct Witnessing {
    witness: Option<PathBuf>,
    witnessed: Option<PathBuf>,
}

impl Witnessing {
    /// One line per check, or the first failure.
    fn check(&self, dir: &Path, key: &Path, records: u64) -> Result<Vec<String>, String> {
        let Some(vkey_file) = &self.witness else { return Ok(Vec::new()) };
        let text = std::fs::read_to_string(vkey_file).map_err(|e| format!("{}: {e}", vkey_file.display()))?;
        let vkey = crate::audit::note::Vkey::parse(&text).map_err(|e| format!("{}: {e}", vkey_file.display()))?;
        let point = verify::public_point(key)?;
        let log = verify::read_log(dir)?;
        let mut lines = vec![match crate::audit::recovery::check_cosignatures(dir, &log, &point, &vkey)? {
            Some(c) => format!(
                "cosigned by {}: {} notes verified; newest checkpoint both signed: size {} root {}",
                vkey.name, c.notes, c.newest_size, c.newest_root
            ),
            None => format!("cosigned by {}: no cosignature beside the log yet", vkey.name),
        }];
        if let Some(note) = &self.witnessed {
            let w = crate::audit::witness::Witnessed::read(note)?;
            let size = crate::audit::recovery::check_witnessed(&log, records, &point, &vkey, &w)?;
            lines.push(format!("witnessed by {} through size {size}: the log holds that checkpoint", vkey.name));
        }
        Ok(lines)
    }
}

fn restore(from: &Path, to: &Path, key: &Path) -> ExitCode {
    match crate::audit::recovery::restore(from, to) {
        Ok(n) => println!("restored {n} files from {} into {}", from.display(), to.display()),
        Err(e) => {
            eprintln!("spocgw audit restore: {e}");
            return ExitCode::from(2);
        }
    }
    verify_cmd(to, key, None, None, &Witnessing { witness: None, witnessed: None })
}

fn verify_cmd(
    dir: &Path,
    key: &Path,
    tpm: Option<&crate::tpm::TpmConfig>,
    expect: Option<&Path>,
    pair: &Witnessing,
) -> ExitCode {
    use std::io::Write;
    // Written with writeln so a closed pipe (`| head`) is not a panic.
    let mut out = std::io::stdout();
    let verified = verify::verify(dir, key)
        .and_then(|s| match tpm {
            Some(cfg) => against_tpm(dir, key, cfg, s),
            None => Ok(s),
        })
        .and_then(|s| match expect {
            Some(file) => against_kept(dir, key, file).map(|line| {
                let _ = writeln!(out, "{line}");
                s
            }),
            None => Ok(s),
        })
        .and_then(|s| {
            for line in pair.check(dir, key, s.records)? {
                let _ = writeln!(out, "{line}");
            }
            Ok(s)
        });
    match verified {
        Ok(s) => {
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

/// `--tpm`: the newest checkpoint must carry the counter value the TPM holds. A gateway that
/// is running may be between counting and writing a checkpoint: asked again, a few times.
fn against_tpm(
    dir: &Path,
    key: &Path,
    cfg: &crate::tpm::TpmConfig,
    mut s: verify::Summary,
) -> Result<verify::Summary, String> {
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
        let logged = s.last_checkpoint.as_ref().and_then(|c| c.tpm_counter);
        match logged {
            None => return Err("--tpm: the newest checkpoint carries no TPM counter (not written by a gateway with a TPM checkpoint key)".into()),
            Some(n) if n == counted => {
                println!("TPM audit counter {counted}: the newest checkpoint is the last one the TPM counted");
                return Ok(s);
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
                s = verify::verify(dir, key)?;
            }
        }
    }
    Err("unreachable".into())
}

/// `--expect`: the log extends the kept checkpoint.
fn against_kept(dir: &Path, key: &Path, file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let line = text.lines().rfind(|l| !l.trim().is_empty()).ok_or_else(|| format!("{}: empty", file.display()))?;
    let kept: crate::audit::Checkpoint =
        serde_json::from_str(line).map_err(|e| format!("{}: not a checkpoint: {e}", file.display()))?;
    let c = verify::consistent_with(dir, key, &kept)?;
    Ok(format!(
        "consistent with the kept checkpoint: the log's {} records extend its {} (RFC 9162 proof of {} hashes)",
        c.to, c.from, c.proof_len
    ))
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
