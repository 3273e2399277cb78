//! `tpm status`: the provisioning record checked against the TPM, and the signed PCR policy
//! against the current boot state.

use super::provision::{MANIFEST, Manifest, hex, primary_exists};
use super::{Tpm, TpmConfig, TpmError};

/// `tpm status`: the provisioning record checked against the TPM, as text.
///
/// # Errors
/// The provisioning record cannot be read, or the TPM does not answer.
pub fn status(cfg: &TpmConfig, tpm: &Tpm) -> Result<(bool, String), TpmError> {
    let m = Manifest::load(&cfg.dir)?;
    let mut ok = true;
    let mut out = format!(
        "TPM {}\nprovisioning record {}/{MANIFEST} (created {})\nstorage primary {}: {}\n",
        cfg.tcti,
        cfg.dir.display(),
        m.created,
        m.primary_handle,
        if primary_exists(tpm)? { "present" } else { "MISSING" }
    );
    for (name, e) in &m.keys {
        let line = match e.handle_u32() {
            Some(h) => {
                let state = match tpm.public_point(h)? {
                    Some(p) if Some(&p) == e.public_point().as_ref() => "present",
                    Some(_) => {
                        ok = false;
                        "DIFFERENT KEY"
                    }
                    None => {
                        ok = false;
                        "MISSING"
                    }
                };
                format!("{name}: {} at {}, {state}", e.kind, e.handle.as_deref().unwrap_or("?"))
            }
            None => format!("{name}: {}, sealed in {}", e.kind, e.sealed.as_deref().unwrap_or("?")),
        };
        out.push_str(&line);
        if let Some(p) = e.public_point() {
            out.push_str(&format!(", public key sha256 {}", &crate::encoding::sha256_hex(&p)[..16]));
        }
        out.push('\n');
    }
    let key = m.policy_key()?;
    out.push_str(&format!(
        "keys bound to: PolicyAuthorize by policy key sha256 {} (policy digest {})\n",
        &crate::encoding::sha256_hex(&key)[..16],
        m.policy_digest
    ));
    let path = cfg.signed_policy_path();
    let pcrs = match m.authorize(cfg, tpm) {
        Ok(auth) => {
            let current: Vec<[u8; 32]> = tpm
                .pcr_values(auth.policy.pcrs.clone())?
                .into_iter()
                .filter_map(|(_, v)| <[u8; 32]>::try_from(v).ok())
                .collect();
            let approved = auth.matches(&current);
            ok &= approved;
            out.push_str(&format!(
                "signed PCR policy {}: PCRs {:?}{}; this boot state is {}\n",
                path.display(),
                auth.policy.pcrs,
                if auth.policy.comment.is_empty() { String::new() } else { format!(" ({})", auth.policy.comment) },
                if approved { "approved" } else { "NOT approved: the keys cannot be used" }
            ));
            auth.policy.pcrs.clone()
        }
        Err(e) => {
            ok = false;
            out.push_str(&format!("signed PCR policy: UNUSABLE: {e}\n"));
            m.pcrs.clone()
        }
    };
    for (pcr, v) in tpm.pcr_values(pcrs)? {
        out.push_str(&format!("  PCR {pcr:>2} = {}\n", hex(&v)));
    }
    out.push_str(&firmware_state());
    Ok((ok, out))
}

/// The firmware's event log on this machine: whether Secure Boot is on and which dbx is in
/// force (what a security update changes), as the log says it (`attest verify --eventlog`
/// checks the log against a quote).
fn firmware_state() -> String {
    const LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
    let Ok(bytes) = std::fs::read(LOG) else { return String::new() };
    match super::eventlog::replay(&bytes) {
        Ok(r) => format!(
            "firmware event log: Secure Boot {}, dbx sha256 {}\n",
            match r.secure_boot {
                Some(true) => "on",
                Some(false) => "OFF",
                None => "not measured",
            },
            r.databases.get("dbx").map(|d| hex(&d[..8])).unwrap_or_else(|| "not measured".into())
        ),
        Err(e) => format!("firmware event log: unreadable ({e})\n"),
    }
}
