//! Card-verifiable certificates (CSN 36 9791, BSI TR-03110): a certificate is the BER-TLV
//! object `7F21` (CV Certificate), a request `7F21` or, when authenticated by the requester's
//! current key, `67`. The schema's types `CVCertificate` and `CVCRequest` name the fields that
//! hold one in base64: the data must start with the tag and its length must account for every
//! byte, so that a field cannot carry anything else under a CVC's name.

/// Checks the decoded data of a field of simple type `type_name`, of which `prefix` holds the
/// first bytes and `len` is the decoded length. Types other than the CVC ones pass.
pub(super) fn check(type_name: &str, prefix: &[u8], len: u64) -> Result<(), String> {
    let tags: &[&[u8]] = match type_name {
        "CVCertificate" => &[&[0x7F, 0x21]],
        "CVCRequest" => &[&[0x7F, 0x21], &[0x67]],
        _ => return Ok(()),
    };
    let what = if type_name == "CVCRequest" {
        "a CV certificate request (tag 7F21 or 67)"
    } else {
        "a CV certificate (tag 7F21)"
    };
    let not = || format!("not {what} with a BER length that matches its data");
    let tag = tags.iter().find(|t| prefix.starts_with(t)).ok_or_else(not)?;
    let rest = &prefix[tag.len()..];
    let (content, length_bytes) = match rest.first() {
        Some(&b) if b < 0x80 => (u64::from(b), 1),
        Some(0x81) => (u64::from(*rest.get(1).ok_or_else(not)?), 2),
        Some(0x82) => {
            (u64::from(u16::from_be_bytes([*rest.get(1).ok_or_else(not)?, *rest.get(2).ok_or_else(not)?])), 3)
        }
        _ => return Err(not()),
    };
    if tag.len() as u64 + length_bytes + content != len {
        return Err(not());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    fn tlv(tag: &[u8], content: usize) -> (Vec<u8>, u64) {
        let mut v = tag.to_vec();
        match content {
            0..=0x7F => v.push(content as u8),
            0x80..=0xFF => v.extend([0x81, content as u8]),
            _ => v.extend([0x82, (content >> 8) as u8, content as u8]),
        }
        let len = (v.len() + content) as u64;
        v.truncate(12);
        (v, len)
    }

    #[test]
    fn certificates_and_requests_are_told_by_tag_and_length() {
        for n in [0x40usize, 0x7F, 0x80, 0xE0, 0x100, 0x1F0] {
            let (p, len) = tlv(&[0x7F, 0x21], n);
            assert!(check("CVCertificate", &p, len).is_ok(), "{n}");
            assert!(check("CVCRequest", &p, len).is_ok(), "{n}");
            assert!(check("CVCertificate", &p, len + 1).is_err(), "{n}: a byte more");
            assert!(check("CVCertificate", &p, len - 1).is_err(), "{n}: a byte less");
            let (a, alen) = tlv(&[0x67], n);
            assert!(check("CVCRequest", &a, alen).is_ok(), "{n}");
            assert!(check("CVCertificate", &a, alen).is_err(), "an authenticated request is no certificate");
        }
        assert!(check("CVCertificate", b"\x30\x82\x01\x00", 260).is_err(), "an X.509 certificate is no CVC");
        assert!(check("CVCertificate", b"\x7F\x21\x84\x00", 8).is_err(), "long lengths beyond 0x82");
        assert!(check("Other", b"anything", 3).is_ok());
    }
}
