//! The few DER encodings key custody needs: an ECDSA signature from its (r, s) integers.

fn integer(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut b = bytes;
    while b.len() > 1 && b[0] == 0 {
        b = &b[1..];
    }
    let pad = b.first().is_some_and(|x| x & 0x80 != 0);
    out.push(0x02);
    out.push((b.len() + usize::from(pad)) as u8);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(b);
}

/// `SEQUENCE { INTEGER r, INTEGER s }` for P-256 (r and s at most 32 bytes each).
pub fn ecdsa_sig(r: &[u8], s: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(72);
    integer(&mut body, if r.is_empty() { &[0] } else { r });
    integer(&mut body, if s.is_empty() { &[0] } else { s });
    let mut out = vec![0x30, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(ecdsa_sig(&[0, 0, 1], &[0x80]), vec![0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0x80]);
        let full = [0xffu8; 32];
        let der = ecdsa_sig(&full, &full);
        assert_eq!(der.len(), 2 + 2 * (2 + 33));
    }
}
