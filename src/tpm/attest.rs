//! Checking a quote off the appliance: a verifier holding the attestation key's public half,
//! the PCR values the image build predicted and the nonce it sent checks that the TPM signed
//! this quote (`quote.msg`, a TPMS_ATTEST, and `quote.sig`, its TPMT_SIGNATURE), that it
//! answers this nonce, and that the PCRs it covers are exactly the expected ones with exactly
//! the expected values (the quote's PCR digest is recomputed from them). Needs no TPM.

use std::collections::BTreeMap;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{Attest, AttestInfo, Signature};
use tss_esapi::traits::UnMarshall;

use super::TpmError;

/// What a quote proved: the PCRs and values it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    pub pcrs: BTreeMap<u8, [u8; 32]>,
}

fn refused(why: impl Into<String>) -> TpmError {
    TpmError::QuoteRefused(why.into())
}

/// Checks quote `msg` and its signature `sig` under the attestation key `ak` (an uncompressed
/// P-256 point) against `nonce` and the `expected` SHA-256 PCR values.
///
/// # Errors
/// Why the quote does not prove the expected state: it does not parse, is not a quote, the
/// signature is not the attestation key's, the nonce differs (a replay), it covers other PCRs
/// than expected, or the values it covers are not the expected ones.
pub fn verify_quote(
    msg: &[u8],
    sig: &[u8],
    ak: &[u8],
    nonce: &[u8],
    expected: &BTreeMap<u8, [u8; 32]>,
) -> Result<Attested, TpmError> {
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
    let want: Vec<u8> = expected.keys().copied().collect();
    if covered != want {
        return Err(refused(format!("it covers PCRs {covered:?}, the expected values are for {want:?}")));
    }
    let mut concat = Vec::with_capacity(32 * expected.len());
    for v in expected.values() {
        concat.extend_from_slice(v);
    }
    if info.pcr_digest().value() != crate::encoding::sha256(&concat).as_slice() {
        return Err(refused("the PCR values it covers are not the expected ones (another or a tampered boot)"));
    }
    Ok(Attested { pcrs: expected.clone() })
}

/// The expected values of an `expected-pcrs.json` (`make image` writes it): `{"pcrs": {"11":
/// "<64 hex>"}, ...}`, or a bare `{"11": "<64 hex>"}` object.
///
/// # Errors
/// Text that is not such an object, or a value that is not 32 bytes of hex.
pub fn expected_pcrs(text: &str) -> Result<BTreeMap<u8, [u8; 32]>, TpmError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| refused(format!("expected PCRs: {e}")))?;
    let map = v.get("pcrs").unwrap_or(&v).as_object().ok_or_else(|| refused("expected PCRs: not an object"))?;
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let pcr: u8 = k.parse().ok().filter(|p| *p <= 23).ok_or_else(|| refused(format!("expected PCRs: {k:?}")))?;
        let value = v
            .as_str()
            .and_then(crate::encoding::unhex_array::<32>)
            .ok_or_else(|| refused(format!("expected PCRs: PCR {pcr}: 32 bytes of hex expected")))?;
        out.insert(pcr, value);
    }
    if out.is_empty() {
        return Err(refused("expected PCRs: none"));
    }
    Ok(out)
}
