//! The audit log's checkpoint counter: a TPM NV counter index (monotonic, it never goes
//! back), advanced once per audit checkpoint and signed into it. Reading needs no secret;
//! advancing needs the signed PCR policy, like the keys. `audit verify --tpm` compares the
//! newest checkpoint's counter with the TPM's: checkpoints removed from the disk show as a
//! counter the log does not reach.
//!
//! The index is `orderly`: increments stay in TPM RAM and reach NV at intervals and at an
//! orderly shutdown, so a checkpoint a second does not wear the NV. After power loss the TPM
//! moves the counter forward past any value it may have handed out, never back; the gateway's
//! start writes a checkpoint with the new value.
//!
//! Nothing reads the value without first checking the index's public area (NV_ReadPublic):
//! a counter (whose value the TPM never lets go back: one defined anew starts at the highest
//! any counter reached), with exactly the attributes provisioning gave it, written, 8 bytes,
//! and, where the provisioning record is at hand, the write policy it recorded and the Name
//! it pinned. An ordinary index defined in its place, holding any value, is refused.

use tss_esapi::attributes::NvIndexAttributes;
use tss_esapi::constants::NvIndexType;
use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Digest, NvPublicBuilder};
use tss_esapi::tss2_esys::TPMA_NV;

use super::{Authorization, Conn, TpmError, cmd};

/// The NV index of the audit checkpoint counter (owner range).
pub const AUDIT_COUNTER: u32 = 0x0150_0110;
const TPM_ALG_SHA256: u16 = 0x000B;
/// TPMA_NV_WRITTEN: set by the TPM at an index's first write.
const WRITTEN: u32 = 0x2000_0000;

/// An NV index as provisioning defines it: what its public area must be once written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexSpec {
    pub index: u32,
    /// TPMA_NV once written (Part 2, 13.4).
    pub attributes: u32,
    pub size: u16,
    /// What it is, for errors.
    pub what: &'static str,
}

/// The audit counter: POLICYWRITE, TPM_NT_COUNTER, AUTHREAD, NO_DA, ORDERLY, WRITTEN.
pub(crate) const COUNTER: IndexSpec =
    IndexSpec { index: AUDIT_COUNTER, attributes: 0x2604_0018, size: 8, what: "the audit counter" };

/// What the counter at [`AUDIT_COUNTER`] must be before its value is trusted: the write policy
/// provisioning gave it (`policy_digest` of keys.json) and the Name it pinned, when known.
#[derive(Debug, Clone, Default)]
pub struct Pinned {
    pub policy: Option<Vec<u8>>,
    pub name: Option<Vec<u8>>,
}

/// The Name of the index `spec` once written, with write policy `policy`: nameAlg ||
/// SHA-256(TPMS_NV_PUBLIC) (Part 1, 16; Part 2, 13.5).
pub(crate) fn expected_name(spec: &IndexSpec, policy: &[u8]) -> Vec<u8> {
    let mut public = Vec::with_capacity(14 + policy.len());
    public.extend_from_slice(&spec.index.to_be_bytes());
    public.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    public.extend_from_slice(&spec.attributes.to_be_bytes());
    public.extend_from_slice(&u16::try_from(policy.len()).unwrap_or(u16::MAX).to_be_bytes());
    public.extend_from_slice(policy);
    public.extend_from_slice(&spec.size.to_be_bytes());
    let mut name = TPM_ALG_SHA256.to_be_bytes().to_vec();
    name.extend_from_slice(&crate::encoding::sha256(&public));
    name
}

fn not_ours(spec: &IndexSpec, why: String) -> TpmError {
    TpmError::Provisioning(format!(
        "the TPM's NV index {:#010x} is not {} provisioning defined: {why}; \
         its value proves nothing (the index was replaced, or the TPM is not this appliance's)",
        spec.index, spec.what
    ))
}

pub(crate) fn nv_handle(c: &mut Conn, index: u32) -> Result<NvIndexHandle, TpmError> {
    let tpm_handle = NvIndexTpmHandle::new(index).map_err(|e| cmd("NV_ReadPublic", &e))?;
    let obj = c.ctx.tr_from_tpm_public(TpmHandle::NvIndex(tpm_handle)).map_err(|e| cmd("NV_ReadPublic", &e))?;
    Ok(NvIndexHandle::from(obj))
}

pub(crate) fn close(c: &mut Conn, h: NvIndexHandle) {
    let mut obj = h.into();
    let _ = c.ctx.tr_close(&mut obj);
}

/// Defines the index `spec` afresh (removing an old one) with `policy` as its write policy:
/// its attributes are the spec's, less WRITTEN (which the TPM sets at the first write), so the
/// index is defined exactly as it is later checked.
pub(crate) fn define_index(c: &mut Conn, spec: &IndexSpec, policy: &Digest) -> Result<(), TpmError> {
    if c.exists(spec.index).map_err(|e| cmd("GetCapability", &e))? {
        let h = nv_handle(c, spec.index)?;
        c.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| ctx.nv_undefine_space(Provision::Owner, h))
            .map_err(|e| cmd("NV_UndefineSpace", &e))?;
    }
    let attrs = NvIndexAttributes::try_from(spec.attributes & !WRITTEN).map_err(|e| cmd("NV_DefineSpace", &e))?;
    let public = NvPublicBuilder::new()
        .with_nv_index(NvIndexTpmHandle::new(spec.index).map_err(|e| cmd("NV_DefineSpace", &e))?)
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(attrs)
        .with_index_auth_policy(policy.clone())
        .with_data_area_size(usize::from(spec.size))
        .build()
        .map_err(|e| cmd("NV_DefineSpace", &e))?;
    let h = c
        .ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| ctx.nv_define_space(Provision::Owner, None, public))
        .map_err(|e| cmd("NV_DefineSpace", &e))?;
    close(c, h);
    Ok(())
}

/// Defines the counter afresh with `policy` as its write policy, and advances it once so that
/// it can be read.
pub(crate) fn define(c: &mut Conn, policy: &Digest, auth: &Authorization) -> Result<u64, TpmError> {
    define_index(c, &COUNTER, policy)?;
    increment(c, auth)
}

/// Advances the counter under the signed PCR policy; its new value.
pub(crate) fn increment(c: &mut Conn, auth: &Authorization) -> Result<u64, TpmError> {
    let h = nv_handle(c, AUDIT_COUNTER)?;
    let result = super::policy::with_authorized(c, auth, "the audit counter", "NV_Increment", |ctx| {
        ctx.nv_increment(NvAuth::NvIndex(h), h)
    })
    .and_then(|()| read_open(c, h));
    close(c, h);
    result
}

/// The counter's value, once its public area checks out against `pinned`; no secret needed.
pub(crate) fn read(c: &mut Conn, pinned: &Pinned) -> Result<u64, TpmError> {
    if !c.exists(AUDIT_COUNTER).map_err(|e| cmd("GetCapability", &e))? {
        return Err(TpmError::Provisioning(format!(
            "the TPM has no audit counter at {AUDIT_COUNTER:#010x} (provisioned before the counter existed, or cleared)"
        )));
    }
    let h = nv_handle(c, AUDIT_COUNTER)?;
    let r = check_public(c, h, &COUNTER, pinned).and_then(|_| read_open(c, h));
    close(c, h);
    r
}

/// The counter's Name, once its public area checks out (provisioning records it).
pub(crate) fn name(c: &mut Conn, pinned: &Pinned) -> Result<Vec<u8>, TpmError> {
    let h = nv_handle(c, AUDIT_COUNTER)?;
    let r = check_public(c, h, &COUNTER, pinned);
    close(c, h);
    r
}

/// NV_ReadPublic of the open index, checked against `spec`: type, attributes (written), size,
/// name algorithm, then the write policy and the Name against `pinned`. The Name the TPM
/// reports is the one ESAPI computed from the public area it returned (and checked against
/// the TPM's).
pub(crate) fn check_public(
    c: &mut Conn,
    h: NvIndexHandle,
    spec: &IndexSpec,
    pinned: &Pinned,
) -> Result<Vec<u8>, TpmError> {
    let (public, name) = c.ctx.nv_read_public(h).map_err(|e| cmd("NV_ReadPublic", &e))?;
    let attrs = public.attributes();
    let want_type = if spec.attributes & 0xF0 == 0x10 { NvIndexType::Counter } else { NvIndexType::Ordinary };
    match attrs.index_type() {
        Ok(t) if t == want_type => {}
        Ok(other) => {
            return Err(not_ours(spec, format!("it is an index of type {other:?}, not {}", type_name(want_type))));
        }
        Err(e) => return Err(not_ours(spec, format!("its type is not one the TPM defines ({e})"))),
    }
    let bits = TPMA_NV::try_from(attrs).map_err(|e| not_ours(spec, format!("its attributes do not parse ({e})")))?;
    if bits != spec.attributes {
        let unwritten = bits | WRITTEN == spec.attributes;
        return Err(not_ours(
            spec,
            if unwritten {
                "it was never written (defined anew since provisioning)".into()
            } else {
                format!("its attributes are {bits:#010x}, provisioning's are {:#010x}", spec.attributes)
            },
        ));
    }
    if public.data_size() != usize::from(spec.size) || public.name_algorithm() != HashingAlgorithm::Sha256 {
        return Err(not_ours(spec, "its size or name algorithm differ".into()));
    }
    if let Some(policy) = &pinned.policy {
        if public.authorization_policy().value() != policy.as_slice() {
            return Err(not_ours(spec, "its write policy is not the signed PCR policy the keys use".into()));
        }
        if name.value() != expected_name(spec, policy).as_slice() {
            return Err(not_ours(spec, "its Name differs from the one its public area gives".into()));
        }
    }
    if let Some(want) = &pinned.name
        && name.value() != want.as_slice()
    {
        return Err(not_ours(spec, "its Name is not the one recorded at provisioning".into()));
    }
    Ok(name.value().to_vec())
}

fn type_name(t: NvIndexType) -> &'static str {
    match t {
        NvIndexType::Counter => "a counter",
        _ => "an ordinary index",
    }
}

fn read_open(c: &mut Conn, h: NvIndexHandle) -> Result<u64, TpmError> {
    let data = c
        .ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| ctx.nv_read(NvAuth::NvIndex(h), h, 8, 0))
        .map_err(|e| cmd("NV_Read", &e))?;
    let bytes: [u8; 8] =
        data.value().try_into().map_err(|_| TpmError::Command { op: "NV_Read", reason: "not 8 bytes".into() })?;
    Ok(u64::from_be_bytes(bytes))
}
