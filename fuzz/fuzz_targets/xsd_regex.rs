//! XSD pattern translation and compilation on arbitrary patterns; compiled ones are run.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (pattern, input) = text.split_once('\n').unwrap_or((text, "abc"));
        if let Ok(re) = spocgw::xml::xsd::regex::compile(pattern) {
            let _ = re.is_match(input);
        }
    }
});
