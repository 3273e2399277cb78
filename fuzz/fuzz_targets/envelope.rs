//! The structural envelope reader (used by the simulators) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spocgw::xml::read_envelope(data);
});
