//! The signed PCR policy every appliance key is bound to (TPM2_PolicyAuthorize).
//!
//! At provisioning, each key and sealed secret gets the authorisation policy "whatever PCR
//! policy the policy key has signed": `PolicyAuthorize(name of the policy key, no policyRef)`.
//! The policy key is the vendor's, kept off the appliance; provisioning records its public
//! part. A release of the image ships `pcr-policy.json`: the PCR values the new image measures
//! to, the PolicyPCR digest of those values, and the policy key's signature over that digest.
//! To use a key, the gateway opens a policy session, lets the TPM compute PolicyPCR over the
//! *current* PCR values, and asks PolicyAuthorize to accept that digest with the signature's
//! ticket. In another boot state the digest differs, and the TPM refuses; a planned update
//! ships a new signed policy instead of re-provisioning.
//!
//! Nothing here trusts the file: the signature is checked in software when it is loaded (for
//! a clear error) and again by the TPM (TPM2_VerifySignature) before it issues the ticket.

use std::path::Path;

use aws_lc_rs::signature::{self as sig, EcdsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::{KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest, EccParameter, EccPoint, EccSignature, Name, Nonce, Public, PublicBuilder, Signature, SymmetricDefinition,
    VerifiedTicket,
};
use tss_esapi::tss2_esys::TPMT_TK_VERIFIED;

use super::provision::{hex, unhex};
use super::{Conn, TpmError, cmd, pcr_selection};

/// Where `tpm authorize` writes and the gateway reads the signed policy, in the provisioning
/// directory unless `[tpm] signed_policy` says otherwise.
pub const POLICY_FILE: &str = "pcr-policy.json";

const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;
const TPM_CC_POLICY_AUTHORIZE: u32 = 0x0000_016A;
const TPM_ALG_SHA256: u16 = 0x000B;

/// `pcr-policy.json`: PCR values an image measures to, and the policy key's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedPolicy {
    pub version: u32,
    pub pcr_bank: String,
    /// Selected PCRs, ascending.
    pub pcrs: Vec<u8>,
    /// Their expected values (SHA-256 bank), hex, in the order of `pcrs`.
    pub pcr_values: Vec<String>,
    /// PolicyPCR digest of those values, hex: what the policy key signed.
    pub approved_policy: String,
    /// ECDSA P-256 / SHA-256 signature over `approved_policy`, `r || s`, hex.
    pub signature: String,
    /// Free text: which image release this policy is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

/// A signed policy checked against the recorded policy key: ready for policy sessions.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub policy: SignedPolicy,
    /// Uncompressed P-256 point of the policy key.
    pub policy_key: Vec<u8>,
    approved: [u8; 32],
    signature: ([u8; 32], [u8; 32]),
}

fn perr(msg: impl Into<String>) -> TpmError {
    TpmError::Provisioning(msg.into())
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    crate::encoding::Sha256::of_parts(parts).0
}

/// The PCRs sorted and without repeats, as the TPM orders a selection.
pub fn normalise(pcrs: &[u8]) -> Vec<u8> {
    let mut p = pcrs.to_vec();
    p.sort_unstable();
    p.dedup();
    p
}

/// TPM2_PolicyPCR's digest from a fresh session over `values` of `pcrs` (SHA-256 bank), as
/// the TPM computes it (TPM 2.0 Part 3, 23.7): computable off the appliance, from an image's
/// expected measurements.
pub fn pcr_policy_digest(pcrs: &[u8], values: &[[u8; 32]]) -> [u8; 32] {
    let mut select = [0u8; 3];
    for p in pcrs {
        select[usize::from(*p / 8)] |= 1 << (p % 8);
    }
    // TPML_PCR_SELECTION: count, then one TPMS_PCR_SELECTION (hash, sizeofSelect, bitmap).
    let mut selection = Vec::with_capacity(10);
    selection.extend_from_slice(&1u32.to_be_bytes());
    selection.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    selection.push(3);
    selection.extend_from_slice(&select);
    let concat: Vec<u8> = values.iter().flatten().copied().collect();
    let pcr_digest = sha256(&[&concat]);
    sha256(&[&[0u8; 32], &TPM_CC_POLICY_PCR.to_be_bytes(), &selection, &pcr_digest])
}

/// The authorisation policy of every bound key: PolicyAuthorize by the key named `key_name`,
/// with an empty policyRef (Part 3, 23.16: the update, then the policyRef hashed in).
pub fn authorize_digest(key_name: &[u8]) -> [u8; 32] {
    let first = sha256(&[&[0u8; 32], &TPM_CC_POLICY_AUTHORIZE.to_be_bytes(), key_name]);
    sha256(&[&first])
}

/// The public area the policy key is loaded with (LoadExternal, public part only). Its name
/// is part of every key's policy: this template must never change.
///
/// # Errors
/// The point is not an uncompressed P-256 point.
pub fn policy_key_public(point: &[u8]) -> Result<Public, TpmError> {
    let bad = |e: tss_esapi::Error| cmd("LoadExternal", &e);
    if point.len() != 65 || point[0] != 0x04 {
        return Err(perr("the policy key is not an uncompressed P-256 point"));
    }
    let attrs = ObjectAttributesBuilder::new()
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .with_decrypt(false)
        .build()
        .map_err(bad)?;
    let params = super::templates::ecdsa_params(false).map_err(bad)?;
    let x = EccParameter::try_from(point[1..33].to_vec()).map_err(bad)?;
    let y = EccParameter::try_from(point[33..65].to_vec()).map_err(bad)?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::new(x, y))
        .build()
        .map_err(bad)
}

/// The uncompressed point of a P-256 public key in a PEM file (SubjectPublicKeyInfo).
///
/// # Errors
/// The file cannot be read or is not a P-256 public key.
pub fn read_public_key(path: &Path) -> Result<Vec<u8>, TpmError> {
    let spki = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_file(path)
        .map_err(|e| perr(format!("{}: not a PEM public key: {e}", path.display())))?;
    let der: &[u8] = spki.as_ref();
    // SEQUENCE { SEQUENCE { ecPublicKey, prime256v1 }, BIT STRING 00 04 x y }: the point is the tail.
    let prefix = crate::encoding::spki_der(&[]);
    match der.strip_prefix(prefix.as_slice()) {
        Some(point) if point.len() == 65 && point[0] == 0x04 => Ok(point.to_vec()),
        _ => Err(perr(format!("{}: not an ECDSA P-256 public key", path.display()))),
    }
}

impl SignedPolicy {
    /// # Errors
    /// The file cannot be read or does not parse.
    pub fn load(path: &Path) -> Result<SignedPolicy, TpmError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            perr(format!("{}: {e} (the signed PCR policy: `spocgw tpm authorize` writes one)", path.display()))
        })?;
        serde_json::from_str(&text).map_err(|e| perr(format!("{}: {e}", path.display())))
    }

    /// # Errors
    /// The file cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), TpmError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| perr(e.to_string()))?;
        super::provision::write_file(path, &json)
    }

    /// Signs `values` of `pcrs` with the policy key in `key_pem` (PKCS#8 P-256).
    ///
    /// # Errors
    /// The key cannot be read or is not PKCS#8 P-256, or a value is not 32 bytes.
    pub fn sign(key_pem: &Path, pcrs: &[u8], values: &[[u8; 32]], comment: &str) -> Result<SignedPolicy, TpmError> {
        let pcrs = normalise(pcrs);
        if pcrs.len() != values.len() {
            return Err(perr(format!("{} PCRs but {} values", pcrs.len(), values.len())));
        }
        let der = match PrivateKeyDer::from_pem_file(key_pem) {
            Ok(PrivateKeyDer::Pkcs8(k)) => k,
            Ok(_) => return Err(perr(format!("{}: the policy key must be PKCS#8", key_pem.display()))),
            Err(e) => return Err(perr(format!("{}: {e}", key_pem.display()))),
        };
        let pair = EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_pkcs8_der())
            .map_err(|_| perr(format!("{}: not an ECDSA P-256 key", key_pem.display())))?;
        let approved = pcr_policy_digest(&pcrs, values);
        let signature = pair
            .sign(&aws_lc_rs::rand::SystemRandom::new(), &approved)
            .map_err(|_| perr("signing the policy failed"))?;
        Ok(SignedPolicy {
            version: 1,
            pcr_bank: "sha256".into(),
            pcr_values: values.iter().map(|v| hex(v)).collect(),
            pcrs,
            approved_policy: hex(&approved),
            signature: hex(signature.as_ref()),
            comment: comment.to_owned(),
        })
    }

    /// The expected values, decoded.
    ///
    /// # Errors
    /// A value that is not 64 hex digits.
    pub fn values(&self) -> Result<Vec<[u8; 32]>, TpmError> {
        self.pcr_values
            .iter()
            .map(|v| unhex(v).and_then(|b| <[u8; 32]>::try_from(b).ok()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| perr("pcr-policy.json: a PCR value is not 32 bytes of hex"))
    }

    /// Checks the file against itself and the policy key: the digest is the one of the values
    /// it names, and the policy key signed it.
    ///
    /// # Errors
    /// The digest is not the one of the values it names, or the signature is not the policy key's.
    pub fn check(self, policy_key: &[u8]) -> Result<Authorization, TpmError> {
        if self.version != 1 || self.pcr_bank != "sha256" {
            return Err(perr("pcr-policy.json: version 1, sha256 bank expected"));
        }
        if self.pcrs != normalise(&self.pcrs) || self.pcrs.iter().any(|p| *p > 23) || self.pcrs.is_empty() {
            return Err(perr("pcr-policy.json: pcrs must be distinct PCRs 0-23, ascending"));
        }
        let values = self.values()?;
        if values.len() != self.pcrs.len() {
            return Err(perr("pcr-policy.json: one value per PCR expected"));
        }
        let approved = pcr_policy_digest(&self.pcrs, &values);
        if unhex(&self.approved_policy).as_deref() != Some(approved.as_slice()) {
            return Err(perr("pcr-policy.json: approved_policy is not the PolicyPCR digest of its values"));
        }
        let raw =
            unhex(&self.signature).filter(|s| s.len() == 64).ok_or_else(|| perr("pcr-policy.json: bad signature"))?;
        sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, policy_key).verify(&approved, &raw).map_err(
            |_| perr("pcr-policy.json is not signed by the policy key recorded at provisioning (keys.json policy_key)"),
        )?;
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&raw[..32]);
        s.copy_from_slice(&raw[32..]);
        Ok(Authorization { policy: self, policy_key: policy_key.to_vec(), approved, signature: (r, s) })
    }
}

impl Authorization {
    pub fn approved(&self) -> &[u8; 32] {
        &self.approved
    }

    /// Whether `current` PCR values (in the policy's PCR order) satisfy this policy.
    pub fn matches(&self, current: &[[u8; 32]]) -> bool {
        pcr_policy_digest(&self.policy.pcrs, current) == self.approved
    }
}

/// What a connection keeps of the policy key: its name and the ticket for one approved policy
/// (a ticket stays valid while the owner hierarchy's proof does; the key itself is flushed at
/// once, so that no transient object slot stays taken: a TPM without a resource manager has
/// three).
pub(crate) struct Loaded {
    name: Name,
    approved: [u8; 32],
    ticket: TPMT_TK_VERIFIED,
}

/// Loads the policy key's public part (owner hierarchy: a null-hierarchy key's tickets are
/// refused by PolicyAuthorize) and returns its handle and name; the caller flushes it.
/// The authorisation policy of every key bound to the policy key `point`, as the TPM names it.
pub(crate) fn keys_policy(c: &mut Conn, point: &[u8]) -> Result<[u8; 32], TpmError> {
    let (key, name) = load_policy_key(c, point)?;
    let _ = c.ctx.flush_context(key.into());
    Ok(authorize_digest(name.value()))
}

pub(crate) fn load_policy_key(c: &mut Conn, point: &[u8]) -> Result<(KeyHandle, Name), TpmError> {
    let public = policy_key_public(point)?;
    let key = c
        .ctx
        .execute_without_session(|ctx| ctx.load_external_public(public, Hierarchy::Owner))
        .map_err(|e| cmd("LoadExternal", &e))?;
    match c.ctx.tr_get_name(ObjectHandle::from(key)) {
        Ok(name) => Ok((key, name)),
        Err(e) => {
            let _ = c.ctx.flush_context(ObjectHandle::from(key));
            Err(cmd("LoadExternal", &e))
        }
    }
}

fn ticket(c: &mut Conn, auth: &Authorization) -> Result<(Name, VerifiedTicket), TpmError> {
    if let Some(l) = c.policy.as_ref().filter(|l| l.approved == auth.approved) {
        let t = VerifiedTicket::try_from(l.ticket).map_err(|e| cmd("PolicyAuthorize", &e))?;
        return Ok((l.name.clone(), t));
    }
    let (key, name) = load_policy_key(c, &auth.policy_key)?;
    let verified = (|| {
        let bad = |e: tss_esapi::Error| cmd("VerifySignature", &e);
        let signature = Signature::EcDsa(
            EccSignature::create(
                HashingAlgorithm::Sha256,
                EccParameter::try_from(auth.signature.0.to_vec()).map_err(bad)?,
                EccParameter::try_from(auth.signature.1.to_vec()).map_err(bad)?,
            )
            .map_err(bad)?,
        );
        // The TPM hashes nothing: it verifies the signature over aHash = SHA-256(approvedPolicy).
        let a_hash = Digest::try_from(sha256(&[&auth.approved]).to_vec()).map_err(bad)?;
        let t = c.ctx.execute_without_session(|ctx| ctx.verify_signature(key, a_hash, signature)).map_err(bad)?;
        TPMT_TK_VERIFIED::try_from(t).map_err(bad)
    })();
    let _ = c.ctx.flush_context(ObjectHandle::from(key));
    let raw = verified?;
    c.policy = Some(Loaded { name: name.clone(), approved: auth.approved, ticket: raw });
    Ok((name, VerifiedTicket::try_from(raw).map_err(|e| cmd("VerifySignature", &e))?))
}

/// Runs `f` (one TPM command) in a session satisfying the signed PCR policy. The session stays
/// for the next use (the ESAPI starts sessions with `continueSession`); after a failure, whose
/// effect on the session is not known, it is flushed.
pub(crate) fn with_authorized<R>(
    c: &mut Conn,
    auth: &Authorization,
    name: &str,
    op: &'static str,
    f: impl FnOnce(&mut tss_esapi::Context) -> tss_esapi::Result<R>,
) -> Result<R, TpmError> {
    let session = authorized_session(c, auth, name)?;
    let r = c.ctx.execute_with_session(Some(session), f);
    if r.is_ok() {
        c.session = Some(session);
    } else {
        let _ = c.ctx.flush_context(SessionHandle::from(session).into());
    }
    r.map_err(|e| match &e {
        // The state moved between the policy session and the command.
        tss_esapi::Error::Tss2Error(rc)
            if matches!(
                rc.kind(),
                Some(Tss2ResponseCodeKind::PolicyFail | Tss2ResponseCodeKind::Pcr | Tss2ResponseCodeKind::PcrChanged)
            ) =>
        {
            TpmError::PcrMismatch { name: name.to_owned(), pcrs: auth.policy.pcrs.clone() }
        }
        _ => cmd(op, &e),
    })
}

/// A policy session that satisfies the signed PCR policy in the current boot state, for the
/// object `name` (the name is only for the error).
fn authorized_session(c: &mut Conn, auth: &Authorization, name: &str) -> Result<AuthSession, TpmError> {
    let (key_name, ticket) = ticket(c, auth)?;
    // A policy session used for an authorisation with continueSession set is reset by the TPM
    // (its policy digest back to zero), so one session per connection serves every use.
    let session = match c.session.take() {
        Some(s) => s,
        None => c
            .ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(|e| cmd("StartAuthSession", &e))?
            .ok_or_else(|| perr("no policy session"))?,
    };
    let result = (|| {
        let ps = PolicySession::try_from(session).map_err(|e| cmd("PolicyPCR", &e))?;
        let sel = pcr_selection(&auth.policy.pcrs).map_err(|e| cmd("PolicyPCR", &e))?;
        c.ctx.policy_pcr(ps, Digest::default(), sel).map_err(|e| cmd("PolicyPCR", &e))?;
        let approved = Digest::try_from(auth.approved.to_vec()).map_err(|e| cmd("PolicyAuthorize", &e))?;
        c.ctx.policy_authorize(ps, approved, Nonce::default(), &key_name, ticket).map_err(|e| {
            if let tss_esapi::Error::Tss2Error(rc) = &e
                && matches!(rc.kind(), Some(Tss2ResponseCodeKind::Value | Tss2ResponseCodeKind::PolicyFail))
            {
                return TpmError::PcrMismatch { name: name.to_owned(), pcrs: auth.policy.pcrs.clone() };
            }
            cmd("PolicyAuthorize", &e)
        })
    })();
    match result {
        Ok(()) => Ok(session),
        Err(e) => {
            let _ = c.ctx.flush_context(SessionHandle::from(session).into());
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dir: &Path, name: &str) -> (std::path::PathBuf, Vec<u8>) {
        let kp = rcgen::KeyPair::generate().unwrap();
        let path = dir.join(name);
        std::fs::write(&path, kp.serialize_pem()).unwrap();
        (path, kp.public_key_raw().to_vec())
    }

    #[test]
    fn a_signed_policy_is_accepted_only_as_signed_and_only_by_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, p1) = key(dir.path(), "k1.pem");
        let (_, p2) = key(dir.path(), "k2.pem");
        let values = [[0u8; 32], [7u8; 32]];
        let signed = SignedPolicy::sign(&k1, &[16, 0], &values, "r1").unwrap();
        assert_eq!(signed.pcrs, vec![0, 16]);
        let auth = signed.clone().check(&p1).unwrap();
        assert!(auth.matches(&values));
        assert!(!auth.matches(&[[0u8; 32], [8u8; 32]]));
        // Another key's policy, a changed value, a digest re-computed for changed values, a
        // changed selection: all refused.
        assert!(signed.clone().check(&p2).is_err());
        let mut changed = signed.clone();
        changed.pcr_values[1] = hex(&[8u8; 32]);
        assert!(changed.clone().check(&p1).is_err());
        changed.approved_policy = hex(&pcr_policy_digest(&[0, 16], &[[0u8; 32], [8u8; 32]]));
        assert!(changed.check(&p1).is_err());
        let mut moved = signed;
        moved.pcrs = vec![0, 17];
        assert!(moved.check(&p1).is_err());
    }

    #[test]
    fn the_policy_digests_depend_on_every_input() {
        let d = pcr_policy_digest(&[16], &[[0u8; 32]]);
        assert_ne!(d, pcr_policy_digest(&[16], &[[1u8; 32]]));
        assert_ne!(d, pcr_policy_digest(&[17], &[[0u8; 32]]));
        assert_ne!(authorize_digest(b"a"), authorize_digest(b"b"));
    }
}
