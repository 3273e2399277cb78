//! `spocgw attest verify`: a verifier's check of a quote the appliance made (`spocgw tpm
//! quote`, or the provisioning medium's `attest/`) against the PCR values the image build
//! predicted. Runs anywhere; needs no TPM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::tpm::attest::{Evidence, Expected};

#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Check a quote: signed by the attestation key, answering the nonce, over exactly the
    /// expected PCRs with exactly the expected values (PCR 7 among them when the build enrolled
    /// Secure Boot), and, with --eventlog, the firmware's log against the quoted PCR 7 and the
    /// enrolled Secure Boot state. Exit 0 when it proves the state, 1 when it does not (with
    /// the check that failed), 2 on bad input.
    Verify {
        /// The values the build predicted: firmware-image/out/expected-pcrs.json
        #[arg(long)]
        expected: PathBuf,
        /// The attestation key's public key (PEM), as recorded when the appliance was provisioned
        #[arg(long)]
        ak: PathBuf,
        /// The nonce the verifier sent, hex
        #[arg(long)]
        nonce: String,
        /// The firmware's event log from the same boot (the medium's attest/eventlog): replayed,
        /// it must give the quoted PCR 7 and show the enrolled Secure Boot state
        #[arg(long)]
        eventlog: Option<PathBuf>,
        /// The directory holding quote.msg and quote.sig (and quote.pcrs, the values read beside
        /// the quote, which name the PCR that differs)
        quote: PathBuf,
    },
}

pub fn run(cmd: AttestCommand) -> ExitCode {
    let AttestCommand::Verify { expected, ak, nonce, eventlog, quote } = cmd;
    let inputs = read_inputs(&expected, &ak, &nonce, &quote, eventlog.as_deref());
    let Inputs { expected, ak, nonce, msg, sig, values, log } = match inputs {
        Ok(x) => x,
        Err(e) => {
            eprintln!("spocgw attest verify: {e}");
            return ExitCode::from(2);
        }
    };
    let release = expected.release;
    let ev = Evidence { msg: &msg, sig: &sig, values: values.as_deref(), eventlog: log.as_deref() };
    match crate::tpm::attest::verify_quote(&ev, &ak, &nonce, &expected) {
        Ok(a) => {
            for (pcr, v) in &a.pcrs {
                println!("PCR {pcr} sha256 {}: as expected", crate::encoding::hex(v));
            }
            if let Some(log) = &a.log {
                let on = match log.secure_boot {
                    Some(true) => "on",
                    Some(false) => "off",
                    None => "not measured",
                };
                let dbx = log.databases.get("dbx").map(|d| crate::encoding::hex(&d[..8])).unwrap_or_default();
                println!(
                    "event log: replays to the quoted PCR 7; Secure Boot {on}, dbx {dbx}, {} image authorities",
                    log.authorities.len()
                );
            }
            if let Some(n) = release {
                println!("release {n} (its UKI's command line, measured into PCR 11)");
            }
            println!("quote verified: the appliance booted the image the build predicted");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("quote FAILED: {e}");
            ExitCode::from(1)
        }
    }
}

struct Inputs {
    expected: Expected,
    ak: Vec<u8>,
    nonce: Vec<u8>,
    msg: Vec<u8>,
    sig: Vec<u8>,
    values: Option<Vec<u8>>,
    log: Option<Vec<u8>>,
}

fn read_inputs(expected: &Path, ak: &Path, nonce: &str, quote: &Path, log: Option<&Path>) -> Result<Inputs, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let text = String::from_utf8(read(expected)?).map_err(|_| format!("{}: not UTF-8", expected.display()))?;
    let expected = crate::tpm::attest::expected_pcrs(&text).map_err(|e| format!("{}: {e}", expected.display()))?;
    let ak = crate::tpm::policy::read_public_key(ak).map_err(|e| e.to_string())?;
    let nonce = crate::encoding::unhex(nonce.trim())
        .filter(|n| !n.is_empty() && n.len() <= 64)
        .ok_or("--nonce: 1 to 64 bytes of hex")?;
    let values = std::fs::read(quote.join("quote.pcrs")).ok();
    let log = log.map(read).transpose()?;
    let (msg, sig) = (read(&quote.join("quote.msg"))?, read(&quote.join("quote.sig"))?);
    Ok(Inputs { expected, ak, nonce, msg, sig, values, log })
}
