//! The request-path validator on arbitrary bytes, as SOAP and as a bare document.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spocgw::xml::limits::Limits;
use spocgw::xml::validate::{Expect, validate};
use spocgw::xml::xsd::Schema;

fuzz_target!(|data: &[u8]| {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    let schema = SCHEMA.get_or_init(|| Schema::embedded().expect("embedded schemas"));
    let limits = Limits::default();
    let ops = [("urn:spocgw:bio:1", "VerifyFingerprintRequest"), ("urn:spocgw:bio:1", "CheckIdentityRequest")];
    let _ = validate(schema, &limits, data, Expect::Soap { operations: &ops, fault_ok: true, headers: &[] });
    let _ = validate(schema, &limits, data, Expect::Any);
});
