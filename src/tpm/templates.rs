//! The public areas provisioning creates the appliance's objects with: the storage primary
//! key, the ECDSA P-256 signing keys (the attestation key restricted, the others bound to the
//! signed PCR policy). Their names are part of what the keys' policies and the verifiers
//! rely on: these templates must not change for a provisioned appliance.

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::structures::{
    Digest, EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme, Public, PublicBuilder,
    PublicEccParametersBuilder, SymmetricDefinitionObject,
};

use super::{TpmError, cmd};

/// The storage primary key (restricted decryption, ECC P-256, AES-128-CFB).
pub(crate) fn storage_primary_template() -> Result<Public, TpmError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_decrypt(true)
        .with_no_da(true)
        .build()
        .map_err(|e| cmd("CreatePrimary", &e))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()
            .map_err(|e| cmd("CreatePrimary", &e))?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(|e| cmd("CreatePrimary", &e))
}

/// The parameters of an ECDSA P-256 / SHA-256 signing key.
pub(crate) fn ecdsa_params(restricted: bool) -> tss_esapi::Result<tss_esapi::structures::PublicEccParameters> {
    PublicEccParametersBuilder::new()
        .with_symmetric(SymmetricDefinitionObject::Null)
        .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
        .with_curve(EccCurve::NistP256)
        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
        .with_is_signing_key(true)
        .with_is_decryption_key(false)
        .with_restricted(restricted)
        .build()
}

/// An ECDSA P-256 / SHA-256 signing key: the attestation key (restricted, usable with the
/// empty password) without `policy`, a key usable only under `policy` with it.
pub(crate) fn signing_template(policy: Option<&Digest>) -> Result<Public, TpmError> {
    let restricted = policy.is_none();
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(restricted)
        .with_admin_with_policy(!restricted)
        .with_no_da(true)
        .with_sign_encrypt(true)
        .with_decrypt(false)
        .with_restricted(restricted)
        .build()
        .map_err(|e| cmd("Create", &e))?;
    let params = ecdsa_params(restricted).map_err(|e| cmd("Create", &e))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_auth_policy(policy.cloned().unwrap_or_default())
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(|e| cmd("Create", &e))
}
