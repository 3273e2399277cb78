//! The encodings every stage uses, in one place and at the bottom of the module graph (this
//! module imports nothing of the crate): lower-case hex for digests, keys and fingerprints,
//! SHA-256, a P-256 public key as SubjectPublicKeyInfo, and the time stamps of records.

use std::fmt;
use std::fmt::Write as _;

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

/// SubjectPublicKeyInfo DER of an uncompressed P-256 point.
pub fn spki_der(point: &[u8]) -> Vec<u8> {
    const PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
        0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(point);
    der
}

/// PEM SubjectPublicKeyInfo of an uncompressed P-256 point.
pub fn spki_pem(point: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki_der(point));
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or("")).collect();
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
}

pub fn now_rfc3339_micros() -> String {
    rfc3339_micros(std::time::SystemTime::now())
}

/// `t` as `2026-11-24T01:02:03.456789Z`. Every request stamps two records and a log line: the
/// date and time of day are formatted once per second per thread, the microseconds each time.
pub fn rfc3339_micros(t: std::time::SystemTime) -> String {
    use std::cell::RefCell;
    thread_local! {
        /// The second last formatted, and its `YYYY-MM-DDTHH:MM:SS.` prefix.
        static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let t = time::OffsetDateTime::from(t);
    let unix = t.unix_timestamp();
    let micros = t.nanosecond() / 1000;
    SECOND.with_borrow_mut(|(second, prefix)| {
        if *second != unix {
            prefix.clear();
            let _ = write!(
                prefix,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            *second = unix;
        }
        let mut out = String::with_capacity(prefix.len() + 7);
        out.push_str(prefix);
        let digits = [100_000, 10_000, 1_000, 100, 10, 1].map(|d| b'0' + (micros / d % 10) as u8);
        out.extend(digits.iter().map(|&b| char::from(b)));
        out.push('Z');
        out
    })
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
