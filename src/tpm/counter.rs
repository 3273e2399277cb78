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

use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::constants::NvIndexType;
use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Digest, NvPublicBuilder};

use super::{Authorization, Conn, TpmError, cmd};

/// The NV index of the audit checkpoint counter (owner range).
pub const AUDIT_COUNTER: u32 = 0x0150_0110;

fn nv_handle(c: &mut Conn, index: u32) -> Result<NvIndexHandle, TpmError> {
    let tpm_handle = NvIndexTpmHandle::new(index).map_err(|e| cmd("NV_ReadPublic", &e))?;
    let obj = c.ctx.tr_from_tpm_public(TpmHandle::NvIndex(tpm_handle)).map_err(|e| cmd("NV_ReadPublic", &e))?;
    Ok(NvIndexHandle::from(obj))
}

fn close(c: &mut Conn, h: NvIndexHandle) {
    let mut obj = h.into();
    let _ = c.ctx.tr_close(&mut obj);
}

/// Defines the counter afresh (removing an old one) with `policy` as its write policy, and
/// advances it once so that it can be read.
pub(crate) fn define(c: &mut Conn, policy: &Digest, auth: &Authorization) -> Result<u64, TpmError> {
    if c.exists(AUDIT_COUNTER).map_err(|e| cmd("GetCapability", &e))? {
        let h = nv_handle(c, AUDIT_COUNTER)?;
        c.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| ctx.nv_undefine_space(Provision::Owner, h))
            .map_err(|e| cmd("NV_UndefineSpace", &e))?;
    }
    let attrs = NvIndexAttributesBuilder::new()
        .with_nv_index_type(NvIndexType::Counter)
        .with_policy_write(true)
        .with_auth_read(true)
        .with_no_da(true)
        .with_orderly(true)
        .build()
        .map_err(|e| cmd("NV_DefineSpace", &e))?;
    let public = NvPublicBuilder::new()
        .with_nv_index(NvIndexTpmHandle::new(AUDIT_COUNTER).map_err(|e| cmd("NV_DefineSpace", &e))?)
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(attrs)
        .with_index_auth_policy(policy.clone())
        .with_data_area_size(8)
        .build()
        .map_err(|e| cmd("NV_DefineSpace", &e))?;
    let h = c
        .ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| ctx.nv_define_space(Provision::Owner, None, public))
        .map_err(|e| cmd("NV_DefineSpace", &e))?;
    close(c, h);
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

/// The counter's value; no secret needed.
pub(crate) fn read(c: &mut Conn) -> Result<u64, TpmError> {
    if !c.exists(AUDIT_COUNTER).map_err(|e| cmd("GetCapability", &e))? {
        return Err(TpmError::Provisioning(format!(
            "the TPM has no audit counter at {AUDIT_COUNTER:#010x} (provisioned before the counter existed, or cleared)"
        )));
    }
    let h = nv_handle(c, AUDIT_COUNTER)?;
    let r = read_open(c, h);
    close(c, h);
    r
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
