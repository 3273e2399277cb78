//! Checking a quote off the appliance: a verifier holding the attestation key's public half,
//! the PCR values the image build predicted and the nonce it sent checks that the TPM signed
//! this quote (`quote.msg`, a TPMS_ATTEST, and `quote.sig`, its TPMT_SIGNATURE), that it
//! answers this nonce, and that the PCRs it covers are exactly the expected ones with exactly
//! the expected values (the quote's PCR digest is recomputed from them). Needs no TPM.
//!
//! When the expected values come from the image build (`secure_boot` in expected-pcrs.json),
//! the quote must cover PCR 7, the Secure Boot state. With the firmware's event log, the log
//! is replayed and must give the quoted PCR 7; it then says what the firmware measured
//! (Secure Boot on, the databases, the db entry that verified the boot), and each of those
//! must be what the build enrolled. With the PCR values the appliance read beside its quote
//! (`quote.pcrs`), a refusal names the PCR that differs, once their digest is the signed one.

use std::collections::BTreeMap;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{Attest, AttestInfo, Signature};
use tss_esapi::traits::UnMarshall;

use super::TpmError;
use super::eventlog::{self, Replay};

/// What a verifier expects: `expected-pcrs.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub pcrs: BTreeMap<u8, [u8; 32]>,
    /// The Secure Boot state the build enrolled, when it did.
    pub secure_boot: Option<SecureBoot>,
    /// The release the build made (`release` in expected-pcrs.json): its UKI's command line,
    /// and so PCR 11, names it.
    pub release: Option<u64>,
}

/// What the build enrolled (`secure_boot` in expected-pcrs.json): digests of the databases'
/// data, by name (PK, KEK, db, dbx), and of the db certificate that signs the UKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureBoot {
    pub databases: BTreeMap<String, [u8; 32]>,
    pub authority: Option<[u8; 32]>,
}

/// The evidence a boot left: the quote, its signature and, optionally, the PCR values read
/// beside it and the firmware's event log.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    pub msg: &'a [u8],
    pub sig: &'a [u8],
    pub values: Option<&'a [u8]>,
    pub eventlog: Option<&'a [u8]>,
}

/// What a quote proved: the PCRs and values it covers, and the replayed event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    pub pcrs: BTreeMap<u8, [u8; 32]>,
    pub log: Option<Replay>,
}

fn refused(why: impl Into<String>) -> TpmError {
    TpmError::QuoteRefused(why.into())
}

/// Checks the quote in `ev` under the attestation key `ak` (an uncompressed P-256 point)
/// against `nonce` and `expected`.
///
/// # Errors
/// Why the quote does not prove the expected state: it does not parse, is not a quote, the
/// signature is not the attestation key's, the nonce differs (a replay), it covers other PCRs
/// than expected, the values it covers are not the expected ones (naming the PCR where the
/// appliance's values allow), or the event log does not match the quote or shows another
/// Secure Boot state than the build enrolled.
pub fn verify_quote(ev: &Evidence<'_>, ak: &[u8], nonce: &[u8], expected: &Expected) -> Result<Attested, TpmError> {
    let (msg, sig) = (ev.msg, ev.sig);
    let attest = Attest::unmarshall(msg).map_err(|e| refused(format!("quote.msg is not a TPM attestation: {e}")))?;
    let signature = Signature::unmarshall(sig).map_err(|e| refused(format!("quote.sig does not parse: {e}")))?;
    let Signature::EcDsa(ecc) = signature else { return Err(refused("not an ECDSA signature")) };
    if ecc.hashing_algorithm() != HashingAlgorithm::Sha256 {
        return Err(refused("not signed over SHA-256"));
    }
    let (r, s) = (ecc.signature_r().value(), ecc.signature_s().value());
    if r.len() > 32 || s.len() > 32 {
        return Err(refused("not a P-256 signature"));
    }
    let mut fixed = [0u8; 64];
    fixed[32 - r.len()..32].copy_from_slice(r);
    fixed[64 - s.len()..].copy_from_slice(s);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, ak)
        .verify(msg, &fixed)
        .map_err(|_| refused("the signature is not the attestation key's"))?;
    if attest.extra_data().value() != nonce {
        return Err(refused("it answers another nonce (a replayed or foreign quote)"));
    }
    let AttestInfo::Quote { info } = attest.attested() else { return Err(refused("not a quote")) };
    let mut covered = Vec::new();
    for selection in info.pcr_selection().get_selections() {
        if selection.hashing_algorithm() != HashingAlgorithm::Sha256 {
            return Err(refused("it covers a bank other than SHA-256"));
        }
        covered.extend(selection.selected().into_iter().map(|slot| u32::from(slot).trailing_zeros() as u8));
    }
    covered.sort_unstable();
    let want: Vec<u8> = expected.pcrs.keys().copied().collect();
    if covered != want {
        return Err(refused(format!("it covers PCRs {covered:?}, the expected values are for {want:?}")));
    }
    let signed = info.pcr_digest().value();
    // The values the appliance read beside the quote, trusted once their digest is the signed one.
    let actual: Option<BTreeMap<u8, [u8; 32]>> = ev.values.and_then(|v| {
        let values: Vec<[u8; 32]> = v.chunks_exact(32).filter_map(|c| c.try_into().ok()).collect();
        (v.len() == 32 * want.len() && crate::encoding::sha256(v).as_slice() == signed)
            .then(|| want.iter().copied().zip(values).collect())
    });
    let concat: Vec<u8> = expected.pcrs.values().flatten().copied().collect();
    if crate::encoding::sha256(&concat).as_slice() != signed {
        let which = match &actual {
            Some(a) => {
                let differ: Vec<String> =
                    a.iter().filter(|(p, v)| expected.pcrs.get(p) != Some(v)).map(|(p, _)| p.to_string()).collect();
                format!(" (PCR {} {})", differ.join(", "), if differ.len() > 1 { "differ" } else { "differs" })
            }
            None => String::new(),
        };
        return Err(refused(format!(
            "the PCR values it covers are not the expected ones{which} (another or a tampered boot{})",
            if which.contains(" 7") { ": the Secure Boot state is not the enrolled one" } else { "" }
        )));
    }
    let log = match ev.eventlog {
        Some(bytes) => Some(check_log(bytes, &expected.pcrs, expected.secure_boot.as_ref())?),
        None => None,
    };
    Ok(Attested { pcrs: expected.pcrs.clone(), log })
}

/// The event log replayed against the quoted PCR 7, then its Secure Boot state against the
/// enrolled one.
fn check_log(bytes: &[u8], quoted: &BTreeMap<u8, [u8; 32]>, sb: Option<&SecureBoot>) -> Result<Replay, TpmError> {
    let log = eventlog::replay(bytes).map_err(|e| refused(e.to_string()))?;
    if let Some(q) = quoted.get(&7) {
        match log.pcrs.get(&7) {
            Some(v) if v == q => {}
            Some(_) => {
                return Err(refused("the event log does not replay to the quoted PCR 7 (a forged or foreign log)"));
            }
            None => return Err(refused("the event log has no PCR 7 events")),
        }
    }
    let Some(sb) = sb else { return Ok(log) };
    if log.secure_boot != Some(true) {
        return Err(refused("the event log shows Secure Boot off"));
    }
    for (name, want) in &sb.databases {
        if log.databases.get(name) != Some(want) {
            return Err(refused(format!("the event log shows another {name} than the build enrolled")));
        }
    }
    if let Some(a) = &sb.authority
        && !log.authorities.contains(a)
    {
        return Err(refused("the boot was not verified by the project's db certificate"));
    }
    Ok(log)
}

/// The expected values of an `expected-pcrs.json` (`make image` writes it): `{"pcrs": {"7":
/// "<64 hex>", "11": "<64 hex>"}, "secure_boot": {"pk_sha256": ..., "dbx_sha256": ...,
/// "db_authority_sha256": ...}, ...}`, or a bare `{"11": "<64 hex>"}` object.
///
/// # Errors
/// Text that is not such an object, a value that is not 32 bytes of hex, or a Secure Boot
/// state without PCR 7 among the expected PCRs (it would go unchecked).
pub fn expected_pcrs(text: &str) -> Result<Expected, TpmError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| refused(format!("expected PCRs: {e}")))?;
    let map = v.get("pcrs").unwrap_or(&v).as_object().ok_or_else(|| refused("expected PCRs: not an object"))?;
    let digest = |what: &str, v: &serde_json::Value| {
        v.as_str()
            .and_then(crate::encoding::unhex_array::<32>)
            .ok_or_else(|| refused(format!("expected PCRs: {what}: 32 bytes of hex expected")))
    };
    let mut pcrs = BTreeMap::new();
    for (k, v) in map {
        if v.is_object() {
            continue;
        }
        let pcr: u8 = k.parse().ok().filter(|p| *p <= 23).ok_or_else(|| refused(format!("expected PCRs: {k:?}")))?;
        pcrs.insert(pcr, digest(&format!("PCR {pcr}"), v)?);
    }
    if pcrs.is_empty() {
        return Err(refused("expected PCRs: none"));
    }
    let secure_boot = match v.get("secure_boot").filter(|_| v.get("pcrs").is_some()) {
        None => None,
        Some(sb) => {
            if !pcrs.contains_key(&7) {
                return Err(refused("expected PCRs: a Secure Boot state is expected, but PCR 7 is not among the PCRs"));
            }
            let mut databases = BTreeMap::new();
            for name in ["PK", "KEK", "db", "dbx"] {
                let key = format!("{}_sha256", name.to_ascii_lowercase());
                if let Some(d) = sb.get(&key) {
                    databases.insert(name.to_owned(), digest(&key, d)?);
                }
            }
            let authority = sb.get("db_authority_sha256").map(|d| digest("db_authority_sha256", d)).transpose()?;
            Some(SecureBoot { databases, authority })
        }
    };
    let release = v.get("release").and_then(serde_json::Value::as_u64);
    Ok(Expected { pcrs, secure_boot, release })
}
