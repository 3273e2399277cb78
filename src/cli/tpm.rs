//! `spocgw tpm provision | authorize | status | quote`: the appliance's keys in the TPM, the
//! signed PCR policy they are bound to, and attestation.
//! The TPM and the provisioning directory come from the `[tpm]` table of gateway.toml (only
//! that table is read, so provisioning works before the certificates exist), or from flags.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};

use crate::tpm::provision::{self, ATTESTATION, Manifest, Outcome, RESIDENT};
use crate::tpm::{Tpm, TpmConfig};

#[derive(Debug, Args)]
pub struct TpmTarget {
    /// gateway.toml: its [tpm] table names the TPM and the provisioning directory
    #[arg(long)]
    config: Option<PathBuf>,
    /// TCTI, e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321 (overrides the config)
    #[arg(long)]
    tcti: Option<String>,
    /// Provisioning directory (overrides the config)
    #[arg(long)]
    dir: Option<PathBuf>,
    /// PCRs the sealed keys are bound to, e.g. 0,2,4,7 (overrides the config)
    #[arg(long, value_delimiter = ',')]
    pcrs: Option<Vec<u8>>,
}

#[derive(Debug, Subcommand)]
pub enum TpmCommand {
    /// Create the appliance keys in the TPM, seal the server and pseudonymisation keys, bind
    /// them all to PCR policies signed by the policy key, write CSRs. The signed policy
    /// (`tpm authorize`) must approve the current boot state. Does nothing if already
    /// provisioned; --force replaces the keys.
    Provision {
        #[command(flatten)]
        target: TpmTarget,
        /// The policy key's public key (PEM): the release key whose signed PCR policies open
        /// the keys; its private part stays off the appliance
        #[arg(long)]
        policy_key: PathBuf,
        /// Replace the keys of an appliance already provisioned (new keys, new CSRs: every
        /// certificate must be issued again)
        #[arg(long)]
        force: bool,
    },
    /// Sign a PCR policy with the policy key (done where the release is built): the PCR values
    /// an image measures to (--values) or this TPM's current ones (--current, with a TPM).
    Authorize {
        #[command(flatten)]
        target: TpmTarget,
        /// The policy key (PKCS#8 P-256 PEM)
        #[arg(long)]
        signing_key: PathBuf,
        /// Sign the PCR values the TPM holds now (the configured --pcrs)
        #[arg(long, conflicts_with = "values")]
        current: bool,
        /// A JSON object of expected values, {"0": "<64 hex>", "7": "..."}
        #[arg(long, required_unless_present = "current")]
        values: Option<PathBuf>,
        /// Where to write the signed policy (default: the configured signed_policy)
        #[arg(long)]
        out: Option<PathBuf>,
        /// Which release this policy is for (kept in the file)
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Show the keys, their handles and the PCR policy, checked against the TPM.
    Status {
        #[command(flatten)]
        target: TpmTarget,
    },
    /// Quote the PCRs with the attestation key, for `tpm2_checkquote`.
    Quote {
        #[command(flatten)]
        target: TpmTarget,
        /// Fresh nonce from the verifier, hex (up to 64 bytes)
        #[arg(long)]
        nonce: String,
        /// Directory for quote.msg, quote.sig, quote.pcrs and attestation.pub.pem
        #[arg(long, default_value = "quote")]
        out: PathBuf,
    },
}

impl TpmTarget {
    fn resolve(&self) -> Result<TpmConfig, String> {
        let mut cfg = match &self.config {
            Some(file) => read_tpm_table(file)?,
            None => TpmConfig::new(String::new(), PathBuf::new(), vec![0, 2, 4, 7]),
        };
        if let Some(t) = &self.tcti {
            cfg.tcti = t.clone();
        }
        if let Some(d) = &self.dir {
            cfg.dir = d.clone();
        }
        if let Some(p) = &self.pcrs {
            cfg.pcrs = p.clone();
        }
        if cfg.tcti.is_empty() || cfg.dir.as_os_str().is_empty() {
            return Err("name the TPM: --config gateway.toml (with a [tpm] table), or --tcti and --dir".into());
        }
        cfg.check()?;
        Ok(cfg)
    }
}

/// The `[tpm]` table of a gateway.toml, alone; relative paths against the file's directory.
///
/// # Errors
/// The file cannot be read or parsed, or has no `[tpm]` table.
pub fn read_tpm_table(file: &Path) -> Result<TpmConfig, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let table: toml::Table = text.parse().map_err(|e| format!("{}: {e}", file.display()))?;
    let tpm = table.get("tpm").cloned().ok_or_else(|| format!("{}: no [tpm] table", file.display()))?;
    let mut cfg: TpmConfig = tpm.try_into().map_err(|e| format!("{}: [tpm]: {e}", file.display()))?;
    if cfg.dir.is_relative() {
        cfg.dir = file.parent().unwrap_or(Path::new(".")).join(&cfg.dir);
    }
    Ok(cfg)
}

pub fn run(cmd: TpmCommand) -> ExitCode {
    if let TpmCommand::Authorize { target, signing_key, current, values, out, comment } = &cmd {
        return match run_authorize(target, signing_key, *current, values.as_deref(), out.as_deref(), comment) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("spocgw tpm authorize: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (target, name) = match &cmd {
        TpmCommand::Authorize { target, .. } => (target, "authorize"),
        TpmCommand::Provision { target, .. } => (target, "provision"),
        TpmCommand::Status { target } => (target, "status"),
        TpmCommand::Quote { target, .. } => (target, "quote"),
    };
    let cfg = match target.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spocgw tpm {name}: {e}");
            return ExitCode::from(2);
        }
    };
    let tpm = match Tpm::start(&cfg) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("spocgw tpm {name}: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd {
        TpmCommand::Provision { force, policy_key, .. } => crate::tpm::policy::read_public_key(&policy_key)
            .map_err(|e| e.to_string())
            .and_then(|key| run_provision(&cfg, &tpm, force, &key)),
        TpmCommand::Authorize { .. } => Ok(false),
        TpmCommand::Status { .. } => match crate::tpm::status::status(&cfg, &tpm) {
            Ok((ok, text)) => {
                print!("{text}");
                Ok(ok)
            }
            Err(e) => Err(e.to_string()),
        },
        TpmCommand::Quote { nonce, out, .. } => run_quote(&cfg, &tpm, &nonce, &out),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("spocgw tpm {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Provisions and prints what was made (used by `tpm provision` and the demo).
///
/// # Errors
/// Provisioning failed (the TPM refused, or a record could not be written); the text says which
/// step.
pub fn run_provision(cfg: &TpmConfig, tpm: &Arc<Tpm>, force: bool, policy_key: &[u8]) -> Result<bool, String> {
    match provision::provision(cfg, tpm, force, policy_key).map_err(|e| e.to_string())? {
        Outcome::AlreadyProvisioned(m) => {
            println!(
                "already provisioned ({}/{} of {}); the TPM holds its keys; nothing changed \
                 (--force replaces every key)",
                cfg.dir.display(),
                provision::MANIFEST,
                m.created
            );
        }
        Outcome::Created(m) => {
            println!("provisioned the TPM at {}; record in {}/{}", cfg.tcti, cfg.dir.display(), provision::MANIFEST);
            for (name, e) in &m.keys {
                let place = e
                    .handle
                    .clone()
                    .map(|h| format!("in the TPM at {h}"))
                    .unwrap_or_else(|| format!("sealed in {}", e.sealed.as_deref().unwrap_or("?")));
                let csr = e.csr.as_deref().map(|c| format!("; CSR {c}")).unwrap_or_default();
                println!("  {name}: {place}{csr}");
            }
            println!("next: have the CSRs certified (police CA: police-server; Ministry CA: ministry-client and");
            println!("      callback-server), then name the keys tpm:NAME in gateway.toml (docs/tpm.md)");
        }
    }
    Ok(true)
}

/// `tpm authorize`: signs the PCR values and writes the policy.
fn run_authorize(
    target: &TpmTarget,
    signing_key: &Path,
    current: bool,
    values: Option<&Path>,
    out: Option<&Path>,
    comment: &str,
) -> Result<(), String> {
    let (pcrs, digests, out) = if current {
        let cfg = target.resolve()?;
        let tpm = Tpm::start(&cfg).map_err(|e| e.to_string())?;
        let read = tpm.pcr_values(cfg.pcrs.clone()).map_err(|e| e.to_string())?;
        let (pcrs, digests) = read
            .into_iter()
            .map(|(p, v)| <[u8; 32]>::try_from(v).map(|v| (p, v)).map_err(|_| "a PCR value is not SHA-256".to_owned()))
            .collect::<Result<(Vec<u8>, Vec<[u8; 32]>), _>>()?;
        (pcrs, digests, out.map(Path::to_path_buf).unwrap_or_else(|| cfg.signed_policy_path()))
    } else {
        let file = values.ok_or("--values or --current")?;
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let map: std::collections::BTreeMap<u8, String> =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut digests = Vec::new();
        for (pcr, v) in &map {
            let d = provision::unhex(v)
                .and_then(|d| <[u8; 32]>::try_from(d).ok())
                .filter(|_| *pcr <= 23)
                .ok_or_else(|| format!("{}: PCR {pcr}: 32 bytes of hex expected", file.display()))?;
            digests.push(d);
        }
        let out = match out {
            Some(o) => o.to_path_buf(),
            None => target.resolve()?.signed_policy_path(),
        };
        (map.keys().copied().collect(), digests, out)
    };
    let signed = crate::tpm::SignedPolicy::sign(signing_key, &pcrs, &digests, comment).map_err(|e| e.to_string())?;
    signed.save(&out).map_err(|e| e.to_string())?;
    println!("signed PCR policy for PCRs {pcrs:?} written to {}", out.display());
    Ok(())
}

fn run_quote(cfg: &TpmConfig, tpm: &Arc<Tpm>, nonce: &str, out: &Path) -> Result<bool, String> {
    let nonce = provision::unhex(nonce.trim())
        .filter(|n| !n.is_empty() && n.len() <= 64)
        .ok_or_else(|| "--nonce must be 1 to 64 bytes of hex, fresh from the verifier".to_owned())?;
    let m = Manifest::load(&cfg.dir).map_err(|e| e.to_string())?;
    let ak = m.entry(ATTESTATION).map_err(|e| e.to_string())?;
    let handle = ak.handle_u32().unwrap_or(RESIDENT[2].1);
    let point = ak.public_point().ok_or("the attestation key has no recorded public key")?;
    let q = tpm.quote(handle, nonce.clone(), m.pcrs.clone()).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    // tpm2-tools' "values" PCR file: the digests, in PCR order, nothing else.
    let pcrs: Vec<u8> = q.pcr_values.concat();
    let files = [
        ("quote.msg", q.attest.clone()),
        ("quote.sig", q.signature.clone()),
        ("quote.pcrs", pcrs),
        ("attestation.pub.pem", crate::keys::spki_pem(&point).into_bytes()),
    ];
    for (name, bytes) in files {
        let p = out.join(name);
        std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let list: Vec<String> = m.pcrs.iter().map(|p| p.to_string()).collect();
    println!("quote of PCRs sha256:{} written to {}", list.join(","), out.display());
    println!(
        "verify: tpm2_checkquote -u {o}/attestation.pub.pem -m {o}/quote.msg -s {o}/quote.sig \
         -f {o}/quote.pcrs -l sha256:{l} -g sha256 -q {n}",
        o = out.display(),
        l = list.join(","),
        n = provision::hex(&nonce)
    );
    Ok(true)
}
