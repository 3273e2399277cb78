//! The appliance's configuration record: an NV index holding which operator key signs the
//! configuration, the serial of the newest configuration bundle accepted and that bundle's
//! digest. A person with the disk can rewrite the data partition, but not this: the index is
//! written only under the signed PCR policy (so only by the setup of a measured boot of the
//! genuine image), it is defined and first written at provisioning (an index defined anew is
//! unwritten, and refused), and its public area is checked against the policy before it is read.
//!
//! Layout (72 bytes): SHA-256 of the operator key's point, the serial (big-endian u64), the
//! bundle's canonical digest. All zeros: provisioned, no configuration accepted yet.

use tss_esapi::interface_types::resource_handles::NvAuth;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Digest, MaxNvBuffer};

use super::counter::{IndexSpec, Pinned, check_public, close, define_index, nv_handle};
use super::{Authorization, Conn, TpmError, cmd};

/// The NV index of the configuration record (owner range, beside the audit counter).
pub const CONFIG_RECORD: u32 = 0x0150_0111;
const SIZE: u16 = 72;
/// POLICYWRITE, TPM_NT_ORDINARY, AUTHREAD, NO_DA, WRITTEN.
const SPEC: IndexSpec =
    IndexSpec { index: CONFIG_RECORD, attributes: 0x2204_0008, size: SIZE, what: "the configuration record" };

/// What the record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfigRecord {
    /// SHA-256 of the operator key's uncompressed point; zeros before the first bundle.
    pub operator_key: [u8; 32],
    /// The serial of the newest accepted bundle; 0 before the first.
    pub serial: u64,
    /// That bundle's canonical digest.
    pub digest: [u8; 32],
}

impl ConfigRecord {
    /// Whether a configuration was ever accepted.
    pub fn is_empty(&self) -> bool {
        *self == ConfigRecord::default()
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(usize::from(SIZE));
        b.extend_from_slice(&self.operator_key);
        b.extend_from_slice(&self.serial.to_be_bytes());
        b.extend_from_slice(&self.digest);
        b
    }

    fn parse(b: &[u8]) -> Option<ConfigRecord> {
        if b.len() != usize::from(SIZE) {
            return None;
        }
        Some(ConfigRecord {
            operator_key: b[..32].try_into().ok()?,
            serial: u64::from_be_bytes(b[32..40].try_into().ok()?),
            digest: b[40..72].try_into().ok()?,
        })
    }
}

/// Defines the record afresh (removing an old one) with `policy` as its write policy, and
/// writes it empty under the signed PCR policy.
pub(crate) fn define(c: &mut Conn, policy: &Digest, auth: &Authorization) -> Result<(), TpmError> {
    define_index(c, &SPEC, policy)?;
    write(c, auth, &ConfigRecord::default())
}

/// Writes `record` under the signed PCR policy.
pub(crate) fn write(c: &mut Conn, auth: &Authorization, record: &ConfigRecord) -> Result<(), TpmError> {
    let h = nv_handle(c, CONFIG_RECORD)?;
    let data = MaxNvBuffer::try_from(record.bytes()).map_err(|e| cmd("NV_Write", &e))?;
    let r = super::policy::with_authorized(c, auth, "the configuration record", "NV_Write", |ctx| {
        ctx.nv_write(NvAuth::NvIndex(h), h, data.clone(), 0)
    });
    close(c, h);
    r
}

/// The record, once its public area checks out against the write policy `policy` (the keys'
/// policy digest); `None` when the TPM has no such index.
pub(crate) fn read(c: &mut Conn, policy: &[u8]) -> Result<Option<ConfigRecord>, TpmError> {
    if !c.exists(CONFIG_RECORD).map_err(|e| cmd("GetCapability", &e))? {
        return Ok(None);
    }
    let h = nv_handle(c, CONFIG_RECORD)?;
    let pinned = Pinned { policy: Some(policy.to_vec()), name: None };
    let r = check_public(c, h, &SPEC, &pinned).and_then(|_| {
        c.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| ctx.nv_read(NvAuth::NvIndex(h), h, SIZE, 0))
            .map_err(|e| cmd("NV_Read", &e))
    });
    close(c, h);
    let data = r?;
    ConfigRecord::parse(data.value())
        .map(Some)
        .ok_or_else(|| TpmError::Command { op: "NV_Read", reason: format!("not {SIZE} bytes") })
}
