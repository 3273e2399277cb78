//! `spocgw config sign | accept | check`: the appliance's configuration as a signed bundle.
//!
//! The operator signs the provisioning medium's `config/` on a workstation (`config sign`).
//! At every boot the appliance's setup runs `config accept` on the medium's bundle: it must
//! verify under the operator key the TPM's configuration record names (the first bundle
//! pins its own `operator.pub.pem`: trust on first use), carry a serial above the record's,
//! and hold a `gateway.toml` that loads; then it is written beside the stored configuration,
//! the record is advanced, and the new configuration takes the old one's place. `config
//! check` then proves that the stored configuration is the one the record names, whatever
//! was done to the disk in between. Anything else is refused with the reason and changes
//! nothing. A bundle that rotates the operator key carries the new `operator.pub.pem` and is
//! signed with the old key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;

use crate::signed::{self, SIGNATURE_FILE};
use crate::tpm::{ConfigRecord, Tpm};

/// The signing domain of appliance configuration bundles.
pub const DOMAIN: &str = "spocgw-appliance-config-v1";
/// The operator key, inside every bundle.
pub const OPERATOR_KEY: &str = "operator.pub.pem";

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Sign a configuration directory (the provisioning medium's config/) with the operator key:
    /// writes DIR/bundle.sig. DIR must hold operator.pub.pem, the public half of the key that
    /// will sign the next bundle.
    Sign {
        /// The operator key (PKCS#8 P-256 PEM)
        #[arg(long)]
        key: PathBuf,
        /// The serial (default: one more than the signature it replaces, or 1)
        #[arg(long)]
        serial: Option<u64>,
        /// The configuration directory
        dir: PathBuf,
    },
    /// Accept a signed configuration bundle into the store (the appliance's setup runs this):
    /// exit 0 when applied or already in force, 1 when refused (the store unchanged), 2 on bad
    /// input.
    Accept {
        /// The bundle (the medium's config/)
        #[arg(long)]
        from: PathBuf,
        /// The stored configuration it replaces (/var/lib/spocgw/config)
        #[arg(long)]
        to: PathBuf,
        #[command(flatten)]
        tpm: RecordTarget,
    },
    /// Check that the stored configuration is the one the TPM's record names: exit 0 when it
    /// is, 1 when it is not (altered on the disk), 3 when no configuration was accepted yet.
    Check {
        /// The stored configuration (/var/lib/spocgw/config)
        #[arg(long)]
        store: PathBuf,
        #[command(flatten)]
        tpm: RecordTarget,
    },
}

#[derive(Debug, clap::Args)]
pub struct RecordTarget {
    /// A file with the [tpm] table (the appliance's /usr/share/spocgw/tpm.toml)
    #[arg(long = "tpm-config")]
    tpm_config: PathBuf,
    /// The image-signing key (PEM) the keys and the record are bound to
    #[arg(long)]
    policy_key: PathBuf,
}

/// Why a bundle is not taken.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{0}")]
    Signature(#[from] signed::SignedError),
    #[error("{0}")]
    Tpm(#[from] crate::tpm::TpmError),
    #[error("{0}")]
    Bad(String),
}

pub fn run(cmd: ConfigCommand) -> ExitCode {
    match cmd {
        ConfigCommand::Sign { key, serial, dir } => match sign(&dir, &key, serial) {
            Ok((serial, digest)) => {
                println!("signed {} (serial {serial}, digest {digest})", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("spocgw config sign: {e}");
                ExitCode::from(2)
            }
        },
        ConfigCommand::Accept { from, to, tpm } => {
            let Some((tpm, key)) = open(&tpm, "accept") else { return ExitCode::from(2) };
            match accept(&from, &to, &tpm, &key) {
                Ok(msg) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("configuration REFUSED: {e}; the configuration in force is unchanged");
                    ExitCode::from(1)
                }
            }
        }
        ConfigCommand::Check { store, tpm } => {
            let Some((tpm, key)) = open(&tpm, "check") else { return ExitCode::from(2) };
            match check(&store, &tpm, &key) {
                Ok(Some(msg)) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    println!("no configuration accepted yet");
                    ExitCode::from(3)
                }
                Err(e) => {
                    println!("configuration NOT IN FORCE: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn open(t: &RecordTarget, verb: &str) -> Option<(Arc<Tpm>, Vec<u8>)> {
    let r = (|| -> Result<_, String> {
        let cfg = super::tpm::read_tpm_table(&t.tpm_config)?;
        let key = crate::tpm::policy::read_public_key(&t.policy_key).map_err(|e| e.to_string())?;
        let tpm = Tpm::start(&cfg).map_err(|e| e.to_string())?;
        let m = crate::tpm::provision::Manifest::load(&cfg.dir).map_err(|e| e.to_string())?;
        m.authorize(&cfg, &tpm).map_err(|e| e.to_string())?;
        Ok((tpm, key))
    })();
    r.map_err(|e| eprintln!("spocgw config {verb}: {e}")).ok()
}

fn sign(dir: &Path, key: &Path, serial: Option<u64>) -> Result<(u64, String), String> {
    let files = signed::read_tree(dir).map_err(|e| e.to_string())?;
    if !files.iter().any(|(n, _)| n == OPERATOR_KEY) {
        return Err(format!("{}: no {OPERATOR_KEY} (the key that signs the next bundle)", dir.display()));
    }
    let previous = files
        .iter()
        .find(|(n, _)| n == SIGNATURE_FILE)
        .and_then(|(_, b)| signed::serial_of(&String::from_utf8_lossy(b)));
    let serial = serial.unwrap_or_else(|| previous.map_or(1, |n| n.saturating_add(1)));
    let text = signed::sign(&files, key, DOMAIN, serial).map_err(|e| e.to_string())?;
    let sig = dir.join(SIGNATURE_FILE);
    std::fs::write(&sig, text).map_err(|e| format!("{}: {e}", sig.display()))?;
    Ok((serial, signed::canonical_digest(&files)))
}

fn operator_point(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, Refused> {
    let pem = files.iter().find(|(n, _)| n == OPERATOR_KEY).map(|(_, b)| b).ok_or_else(|| {
        Refused::Bad(format!("the bundle has no {OPERATOR_KEY} (every bundle names the key that signs the next)"))
    })?;
    Ok(signed::signer_point_pem(pem, OPERATOR_KEY)?)
}

/// The record, or why the TPM has none a configuration can be checked against.
fn record(tpm: &Tpm, policy_key: &[u8]) -> Result<ConfigRecord, Refused> {
    tpm.config_record(policy_key.to_vec())?.ok_or_else(|| {
        Refused::Bad(format!(
            "the TPM has no configuration record at {:#010x} (provisioned before signed configuration, \
             or the index was removed): provision the appliance anew",
            crate::tpm::CONFIG_RECORD
        ))
    })
}

fn accept(from: &Path, to: &Path, tpm: &Tpm, policy_key: &[u8]) -> Result<String, Refused> {
    let files = signed::read_tree(from)?;
    let rec = record(tpm, policy_key)?;
    // Who may sign: the key the record pins (its PEM is in the stored bundle, which must be the
    // recorded one), or, before the first bundle, the bundle's own key.
    let signer = if rec.is_empty() {
        operator_point(&files)?
    } else {
        settle(to, &rec)?;
        let point = operator_point(&signed::read_tree(to)?)?;
        if crate::encoding::sha256(&point) != rec.operator_key {
            return Err(Refused::Bad("the stored operator key is not the one the TPM recorded".into()));
        }
        point
    };
    let v = signed::verify(&files, &[signer], DOMAIN).map_err(|e| match e {
        signed::SignedError::UntrustedSigner(_) if !rec.is_empty() => {
            Refused::Bad("the bundle is not signed by the operator key this appliance trusts".into())
        }
        e => e.into(),
    })?;
    if v.serial == rec.serial && v.digest == crate::encoding::hex(&rec.digest) {
        return Ok(format!("configuration serial {} already in force", v.serial));
    }
    if v.serial <= rec.serial {
        return Err(Refused::Bad(format!(
            "its serial {} is not above the last accepted ({}): an older or replayed bundle",
            v.serial, rec.serial
        )));
    }
    let next = sibling(to, "next");
    stage(&files, &next)?;
    if next.join("gateway.toml").exists() {
        crate::gateway::config::GatewayConfig::load(&next.join("gateway.toml"))
            .map_err(|e| Refused::Bad(format!("gateway.toml does not load: {e}")))?;
    }
    let digest = crate::encoding::unhex_array::<32>(&v.digest).ok_or_else(|| Refused::Bad("digest".into()))?;
    let new =
        ConfigRecord { operator_key: crate::encoding::sha256(&operator_point(&files)?), serial: v.serial, digest };
    tpm.write_config_record(new)?;
    swap_in(&next, to)?;
    Ok(format!("configuration serial {} accepted (digest {})", v.serial, &v.digest[..16]))
}

/// Whether the store holds what the record names.
fn check(store: &Path, tpm: &Tpm, policy_key: &[u8]) -> Result<Option<String>, Refused> {
    let rec = record(tpm, policy_key)?;
    if rec.is_empty() {
        return Ok(None);
    }
    settle(store, &rec)?;
    let want = crate::encoding::hex(&rec.digest);
    Ok(Some(format!("configuration serial {} in force (digest {})", rec.serial, &want[..16])))
}

/// The store holds what `rec` names, once a swap a power cut interrupted (the record written,
/// the new configuration staged beside the old) is finished; or why not.
fn settle(store: &Path, rec: &ConfigRecord) -> Result<(), Refused> {
    let want = crate::encoding::hex(&rec.digest);
    let digest_of = |d: &Path| signed::read_tree(d).map(|f| signed::canonical_digest(&f));
    let next = sibling(store, "next");
    if store.is_dir() && digest_of(store)? == want {
        let _ = std::fs::remove_dir_all(&next);
        return Ok(());
    }
    if next.is_dir() && digest_of(&next)? == want {
        return swap_in(&next, store);
    }
    Err(Refused::Bad(format!(
        "the stored configuration is not serial {} as the TPM recorded it (altered or replaced on the disk)",
        rec.serial
    )))
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.with_file_name(format!(".{name}.{suffix}"))
}

/// Writes `files` into a fresh `dir` (directories 0750, files 0640: the service reads them,
/// only root writes them), synced.
fn stage(files: &[(String, Vec<u8>)], dir: &Path) -> Result<(), Refused> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let io = |p: &Path, e: std::io::Error| Refused::Bad(format!("{}: {e}", p.display()));
    let _ = std::fs::remove_dir_all(dir);
    std::fs::DirBuilder::new().mode(0o750).create(dir).map_err(|e| io(dir, e))?;
    for (name, bytes) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o750).create(parent).map_err(|e| io(parent, e))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| io(&path, e))?;
    }
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

/// `next` takes `dir`'s place (the old one removed), the parent directory synced.
fn swap_in(next: &Path, dir: &Path) -> Result<(), Refused> {
    let io = |p: &Path, e: std::io::Error| Refused::Bad(format!("{}: {e}", p.display()));
    let old = sibling(dir, "old");
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| io(dir, e))?;
    }
    std::fs::rename(next, dir).map_err(|e| io(next, e))?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(|e| io(parent, e))?;
    }
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}
