//! The encodings every stage uses, in one place and at the bottom of the module graph (this
//! module imports nothing of the crate): lower-case hex for digests, keys and fingerprints, and
//! SHA-256.

use std::fmt;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The bytes of a hex string (either case); None for an odd length or a non-hex character
/// (`from_str_radix` alone would take a `+` sign).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Exactly `N` bytes of hex.
pub fn unhex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    unhex(s).and_then(|v| <[u8; N]>::try_from(v).ok())
}

/// A SHA-256 digest; displays as lower-case hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self::of_parts(&[data])
    }

    /// The digest of `parts`, one after the other.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for p in parts {
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Self(out)
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::of(data).0
}

/// SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::of(data).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        let b = [0x00, 0x7f, 0x80, 0xff, 0x12];
        assert_eq!(hex(&b), "007f80ff12");
        assert_eq!(unhex("007F80ff12").as_deref(), Some(&b[..]));
        assert!(unhex("abc").is_none() && unhex("zz").is_none() && unhex("+1").is_none());
        assert_eq!(unhex_array::<2>("abcd"), Some([0xab, 0xcd]));
        assert!(unhex_array::<2>("abcdef").is_none());
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(Sha256::of_parts(&[b"a", b"bc"]), Sha256::of(b"abc"));
    }
}
