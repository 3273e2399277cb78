//! The XSD compiler on arbitrary schema text: refuses or compiles, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = spocgw::xml::xsd::Schema::compile(&[("fuzz.xsd", text)]);
    }
});
