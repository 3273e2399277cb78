//! `spocgw attest verify`: a verifier's check of a quote the appliance made (`spocgw tpm
//! quote`, or the provisioning medium's `attest/`) against the PCR values the image build
//! predicted. Runs anywhere; needs no TPM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Check a quote: signed by the attestation key, answering the nonce, over exactly the
    /// expected PCRs with exactly the expected values. Exit 0 when it proves the state, 1 when
    /// it does not, 2 on bad input.
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
        /// The directory holding quote.msg and quote.sig
        quote: PathBuf,
    },
}

pub fn run(cmd: AttestCommand) -> ExitCode {
    let AttestCommand::Verify { expected, ak, nonce, quote } = cmd;
    let inputs = read_inputs(&expected, &ak, &nonce, &quote);
    let (expected, ak, nonce, msg, sig) = match inputs {
        Ok(x) => x,
        Err(e) => {
            eprintln!("spocgw attest verify: {e}");
            return ExitCode::from(2);
        }
    };
    match crate::tpm::attest::verify_quote(&msg, &sig, &ak, &nonce, &expected) {
        Ok(a) => {
            for (pcr, v) in &a.pcrs {
                println!("PCR {pcr} sha256 {}: as expected", crate::encoding::hex(v));
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

type Inputs = (std::collections::BTreeMap<u8, [u8; 32]>, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

fn read_inputs(expected: &Path, ak: &Path, nonce: &str, quote: &Path) -> Result<Inputs, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let text = String::from_utf8(read(expected)?).map_err(|_| format!("{}: not UTF-8", expected.display()))?;
    let expected = crate::tpm::attest::expected_pcrs(&text).map_err(|e| format!("{}: {e}", expected.display()))?;
    let ak = crate::tpm::policy::read_public_key(ak).map_err(|e| e.to_string())?;
    let nonce = crate::encoding::unhex(nonce.trim())
        .filter(|n| !n.is_empty() && n.len() <= 64)
        .ok_or("--nonce: 1 to 64 bytes of hex")?;
    Ok((expected, ak, nonce, read(&quote.join("quote.msg"))?, read(&quote.join("quote.sig"))?))
}
