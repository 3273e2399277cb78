//! `spocgw tpm provision | status | quote`: the appliance's keys in the TPM, and attestation.
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
    /// Create the appliance keys in the TPM, seal the server and pseudonymisation keys to the
    /// PCR policy, write CSRs. Does nothing if already provisioned; --force replaces the keys.
    Provision {
        #[command(flatten)]
        target: TpmTarget,
        #[arg(long)]
        force: bool,
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
            None => TpmConfig { tcti: String::new(), dir: PathBuf::new(), pcrs: vec![0, 2, 4, 7], timeout_ms: 5_000 },
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
    let (target, name) = match &cmd {
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
        TpmCommand::Provision { force, .. } => run_provision(&cfg, &tpm, force),
        TpmCommand::Status { .. } => match provision::status(&cfg, &tpm) {
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
pub fn run_provision(cfg: &TpmConfig, tpm: &Arc<Tpm>, force: bool) -> Result<bool, String> {
    match provision::provision(cfg, tpm, force).map_err(|e| e.to_string())? {
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
                let place = e.handle.clone().map(|h| format!("in the TPM at {h}")).unwrap_or_else(|| {
                    format!("sealed to PCRs {:?} in {}", m.pcrs, e.sealed.as_deref().unwrap_or("?"))
                });
                let csr = e.csr.as_deref().map(|c| format!("; CSR {c}")).unwrap_or_default();
                println!("  {name}: {place}{csr}");
            }
            println!("next: have the CSRs certified (police CA: police-server; Ministry CA: ministry-client and");
            println!("      callback-server), then name the keys tpm:NAME in gateway.toml (README: Key custody)");
        }
    }
    Ok(true)
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
        ("attestation.pub.pem", crate::audit::spki_pem(&point).into_bytes()),
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
