//! Binary payloads: a fingerprint's declared `Format` checked against its data's leading bytes
//! (CONTRACT.md section 3). Only the first decoded bytes are looked at, taken while the base64
//! text streams past; the image is never held decoded.

/// WSQ starts with the SOI marker.
const WSQ: &[u8] = &[0xFF, 0xA0];
/// JPEG 2000: the JP2 signature box, or a raw codestream (SOC then SIZ marker).
const JP2_BOX: &[u8] = &[0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A];
const J2K_CODESTREAM: &[u8] = &[0xFF, 0x4F, 0xFF, 0x51];
/// ISO/IEC 19794-4 finger image records.
const ISO19794_4: &[u8] = b"FIR\0";

/// True when data starting with `prefix` is in `format`. Unknown formats never match.
pub fn format_matches(format: &str, prefix: &[u8]) -> bool {
    match format {
        "WSQ" => prefix.starts_with(WSQ),
        "JPEG2000" => prefix.starts_with(JP2_BOX) || prefix.starts_with(J2K_CODESTREAM),
        "ISO19794-4" => prefix.starts_with(ISO19794_4),
        _ => false,
    }
}

/// The canonical name of a known format (for facts and audit).
pub fn known_format(format: &str) -> Option<&'static str> {
    ["WSQ", "JPEG2000", "ISO19794-4"].into_iter().find(|f| *f == format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert!(format_matches("WSQ", &[0xFF, 0xA0, 0xFF, 0xA8]));
        assert!(!format_matches("JPEG2000", &[0xFF, 0xA0, 0xFF, 0xA8]));
        assert!(format_matches("JPEG2000", &[0xFF, 0x4F, 0xFF, 0x51, 0]));
        assert!(format_matches("JPEG2000", JP2_BOX));
        assert!(format_matches("ISO19794-4", b"FIR\0\x30\x32"));
        assert!(!format_matches("PNG", b"\x89PNG"));
    }
}
