//! Sealing and unsealing under the signed PCR policy, and the conversions between TPM structures and the DER
//! forms TLS and X.509 use.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, KeyedHashScheme, Private, Public, PublicBuilder, PublicKeyedHashParameters, SensitiveData, Signature,
};
use tss_esapi::traits::UnMarshall;
use zeroize::Zeroizing;

use super::{Authorization, Conn, TpmError, cmd};

/// A sealed object as stored in the provisioning directory: useless without this TPM (its
/// storage primary) in the measured state of the policy.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedBlob {
    /// TPMT_PUBLIC, marshalled, base64.
    pub public: String,
    /// TPM2B_PRIVATE contents (encrypted by the TPM), base64.
    pub private: String,
}

impl SealedBlob {
    fn parts(&self) -> Result<(Public, Private), TpmError> {
        let bad = |what: &str| TpmError::Provisioning(format!("sealed blob: {what} is damaged"));
        let public = B64.decode(&self.public).map_err(|_| bad("public"))?;
        let private = B64.decode(&self.private).map_err(|_| bad("private"))?;
        let public = Public::unmarshall(&public).map_err(|_| bad("public"))?;
        let private = Private::try_from(private).map_err(|_| bad("private"))?;
        Ok((public, private))
    }
}

/// Seals `secret` (at most 128 bytes) under `parent` to `policy`.
pub(crate) fn seal(c: &mut Conn, parent: KeyHandle, policy: Digest, secret: &[u8]) -> Result<SealedBlob, TpmError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_no_da(true)
        .with_admin_with_policy(true)
        .with_user_with_auth(false)
        .build()
        .map_err(|e| cmd("Create", &e))?;
    let public = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_auth_policy(policy)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .map_err(|e| cmd("Create", &e))?;
    let data = SensitiveData::try_from(secret.to_vec()).map_err(|e| cmd("Create", &e))?;
    let created = c
        .ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.create(parent, public, None, Some(data), None, None)
        })
        .map_err(|e| cmd("Create", &e))?;
    Ok(SealedBlob {
        public: B64.encode(super::marshal_public(&created.out_public)?),
        private: B64.encode(super::private_bytes(&created.out_private)),
    })
}

/// Loads a sealed blob, satisfies the signed PCR policy and unseals it; flushes everything it
/// loaded.
pub(crate) fn unseal(
    c: &mut Conn,
    name: &str,
    blob: &SealedBlob,
    auth: &Authorization,
) -> Result<Zeroizing<Vec<u8>>, TpmError> {
    let (public, private) = blob.parts()?;
    let primary = c.persistent(super::provision::PRIMARY_HANDLE).map_err(|e| cmd("unseal", &e))?;
    let loaded = c
        .ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| ctx.load(KeyHandle::from(primary), private, public))
        .map_err(|e| cmd("Load", &e))?;
    let result = super::policy::with_authorized(c, auth, name, "Unseal", |ctx| ctx.unseal(ObjectHandle::from(loaded)));
    let _ = c.ctx.flush_context(ObjectHandle::from(loaded));
    result.map(|d| Zeroizing::new(d.value().to_vec()))
}

/// A TPM ECDSA signature as DER `SEQUENCE { INTEGER r, INTEGER s }`.
pub fn ecdsa_der(sig: &Signature) -> Option<Vec<u8>> {
    let Signature::EcDsa(e) = sig else { return None };
    Some(super::der::ecdsa_sig(e.signature_r().value(), e.signature_s().value()))
}

/// The uncompressed point (`04 || x || y`, 32 bytes each) of a P-256 public area.
pub fn point_of(public: &Public) -> Option<Vec<u8>> {
    let Public::Ecc { unique, .. } = public else { return None };
    let (x, y) = (unique.x().value(), unique.y().value());
    if x.len() > 32 || y.len() > 32 {
        return None;
    }
    let mut out = vec![0x04];
    out.extend(std::iter::repeat_n(0, 32 - x.len()));
    out.extend_from_slice(x);
    out.extend(std::iter::repeat_n(0, 32 - y.len()));
    out.extend_from_slice(y);
    Some(out)
}
