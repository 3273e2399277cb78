//! JSON written by hand where it is on every request's path (the log line, the audit records'
//! canonical bytes), escaped exactly as serde_json escapes strings (each user has a test
//! comparing its output with serde_json's). serde_json looks up every byte of a string in a
//! table; here a string with nothing to escape, nearly all of them, is checked in one pass
//! the compiler vectorises, then copied whole.

/// Where JSON text goes.
pub trait Out {
    fn put(&mut self, s: &str);
    /// `s` between double quotes.
    fn quoted(&mut self, s: &str);
}

impl Out for String {
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }

    fn quoted(&mut self, s: &str) {
        self.reserve(s.len() + 2);
        self.push('"');
        self.push_str(s);
        self.push('"');
    }
}

impl Out for Vec<u8> {
    fn put(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }

    fn quoted(&mut self, s: &str) {
        self.reserve(s.len() + 2);
        self.push(b'"');
        self.extend_from_slice(s.as_bytes());
        self.push(b'"');
    }
}

/// `s` as a JSON string: quoted and escaped.
pub fn string<O: Out>(out: &mut O, s: &str) {
    if needs_escape(s.as_bytes()) {
        out.put("\"");
        escape_all(out, s);
        out.put("\"");
    } else {
        out.quoted(s);
    }
}

/// `s` escaped for the inside of a JSON string: `"`, `\` and control characters, as serde_json
/// writes them (`\n`, `\u001f`); everything else, non-ASCII included, as it is.
pub fn escape_into<O: Out>(out: &mut O, s: &str) {
    if needs_escape(s.as_bytes()) {
        escape_all(out, s);
    } else {
        out.put(s);
    }
}

/// [`escape_into`] once `s` is known to hold something to escape.
fn escape_all<O: Out>(out: &mut O, s: &str) {
    let special = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        if !special(b) {
            continue;
        }
        out.put(&s[from..i]);
        match b {
            b'"' => out.put("\\\""),
            b'\\' => out.put("\\\\"),
            b'\n' => out.put("\\n"),
            b'\r' => out.put("\\r"),
            b'\t' => out.put("\\t"),
            0x08 => out.put("\\b"),
            0x0c => out.put("\\f"),
            _ => {
                let esc = [b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]];
                out.put(std::str::from_utf8(&esc).unwrap_or_default());
            }
        }
        from = i + 1;
    }
    out.put(&s[from..]);
}

/// Whether any byte is `"`, `\` or a control character: eight bytes at a time (a byte-wise
/// loop cost ~4 instructions a byte).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` below `n` (n <= 0x80) sets its high bit here; exact as a whole.
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let special =
        |x: u64| below(x, 0x20) | zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\'))) != 0;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        if special(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])) {
            return true;
        }
    }
    // The last 1 to 7 bytes, padded with a byte that needs no escape.
    let rest = chunks.remainder();
    let mut last = [b' '; 8];
    last[..rest.len()].copy_from_slice(rest);
    !rest.is_empty() && special(u64::from_le_bytes(last))
}

/// An unsigned integer in decimal.
pub fn number<O: Out>(out: &mut O, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_numbers_as_serde_json_writes_them() {
        let mut all = String::new();
        for b in 0u8..0x80 {
            all.push(char::from(b));
        }
        for s in ["", "plain", "a\"b\\c", "\u{7f}é€😀", all.as_str(), "\u{1f}x\n"] {
            let mut out = String::new();
            string(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
            let mut bytes = Vec::new();
            string(&mut bytes, s);
            assert_eq!(bytes, out.as_bytes());
        }
        // Each special byte at each position of a chunk and of the remainder.
        for len in [1, 7, 8, 9, 16, 23] {
            for at in 0..len {
                for special in [0u8, 0x1f, b'"', b'\\'] {
                    let mut b = vec![b'a'; len];
                    b[at] = special;
                    assert!(needs_escape(&b), "{b:?}");
                }
                let mut b = vec![b'a'; len];
                for other in [0x20u8, b'!', b'#', b'[', b']', 0x7f, 0xff] {
                    b[at] = other;
                    assert!(!needs_escape(&b), "{b:?}");
                }
            }
        }
        for n in [0, 7, 10, 99, 12_345, u64::from(u32::MAX) + 1, u64::MAX] {
            let mut out = String::new();
            number(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }
}
