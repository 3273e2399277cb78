//! base64Binary checked as it streams: alphabet, padding, the unused bits of the last group,
//! and the decoded length, eight characters at a time; the first decoded bytes are kept for
//! content sniffing. The value is never held whole.

/// Decoded length of a base64Binary value, or None when it is not valid base64 (XSD 1.0:
/// whitespace allowed between characters, `=` padding only at the end).
pub fn base64_octets(v: &str) -> Option<u64> {
    let mut check = Base64Check::default();
    check.feed(v.as_bytes());
    check.finish()
}

/// A base64 checker that takes its input in pieces, so a large value is never held whole; it
/// keeps the first decoded bytes for content sniffing.
#[derive(Debug, Default, Clone)]
pub struct Base64Check {
    chars: u64,
    pad: u8,
    bad: bool,
    /// The value of the last data character before padding.
    last: u8,
    quad: [u8; 4],
    qlen: usize,
    pub prefix: Vec<u8>,
}

/// How many decoded bytes [`Base64Check`] keeps.
pub const SNIFF_BYTES: usize = 12;

/// Class of each byte: 0..=63 the base64 value, [`B64_WS`] whitespace, [`B64_PAD`] `=`,
/// [`B64_BAD`] anything else.
const B64_WS: u8 = 64;
const B64_PAD: u8 = 65;
const B64_BAD: u8 = 255;
const B64: [u8; 256] = {
    let mut t = [B64_BAD; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t[b' ' as usize] = B64_WS;
    t[b'\t' as usize] = B64_WS;
    t[b'\n' as usize] = B64_WS;
    t[b'\r' as usize] = B64_WS;
    t[b'=' as usize] = B64_PAD;
    t
};

/// Bytes the bulk of a value is checked in at once.
const BLOCK: usize = 64;

/// True when every byte of `block` is a base64 alphabet character: range comparisons with no
/// table lookup, which the compiler turns into vector instructions (16 bytes each with the
/// baseline x86-64 instruction set): about twice the speed of eight bytes at a time.
#[inline]
fn all_base64_block(block: &[u8]) -> bool {
    block.iter().fold(true, |ok, &b| {
        ok & ((b.wrapping_sub(b'A') < 26)
            | (b.wrapping_sub(b'a') < 26)
            | (b.wrapping_sub(b'0') < 10)
            | (b == b'+')
            | (b == b'/'))
    })
}

/// True when all eight bytes of `x` are base64 alphabet characters (SWAR: each byte's high
/// bit collects "in one of the ranges A-Z, a-z, 0-9, +, /").
#[inline]
fn all_base64(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if x & HIGH != 0 {
        return false;
    }
    // For bytes below 0x80: high bit of (b + 0x80 - lo) is set iff b >= lo; of (b + 0x7F - hi)
    // iff b > hi. Neither sum can carry into the next byte.
    let within = |lo: u8, hi: u8| (x + ONES * u64::from(0x80 - lo)) & !(x + ONES * u64::from(0x7F - hi));
    let ok = within(b'A', b'Z') | within(b'a', b'z') | within(b'0', b'9') | within(b'+', b'+') | within(b'/', b'/');
    ok & HIGH == HIGH
}

impl Base64Check {
    /// Takes the next piece of the value.
    pub fn feed(&mut self, data: &[u8]) {
        if self.bad {
            return;
        }
        let mut i = 0;
        // The first characters decode into the sniffing prefix, one by one.
        while self.prefix.len() < SNIFF_BYTES && i < data.len() {
            self.step(data[i]);
            i += 1;
            if self.bad {
                return;
            }
        }
        let rest = &data[i..];
        let mut j = 0;
        if self.pad == 0 {
            // The bulk: eight data characters at a time while no whitespace, padding or
            // stray byte interrupts; one at a time otherwise.
            let (mut chars, mut last) = (0u64, self.last);
            while j < rest.len() {
                if let Some(block) = rest.get(j..j + BLOCK)
                    && all_base64_block(block)
                {
                    chars += BLOCK as u64;
                    last = B64[usize::from(block[BLOCK - 1])];
                    j += BLOCK;
                    continue;
                }
                if j + 8 <= rest.len() {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(&rest[j..j + 8]);
                    if all_base64(u64::from_le_bytes(word)) {
                        chars += 8;
                        last = B64[rest[j + 7] as usize];
                        j += 8;
                        continue;
                    }
                }
                let v = B64[rest[j] as usize];
                if v < 64 {
                    chars += 1;
                    last = v;
                } else if v != B64_WS {
                    break;
                }
                j += 1;
            }
            self.chars += chars;
            self.last = last;
        }
        for &c in &rest[j..] {
            self.step(c);
            if self.bad {
                return;
            }
        }
    }

    fn step(&mut self, c: u8) {
        match B64[c as usize] {
            B64_WS => {}
            B64_PAD => {
                self.pad += 1;
                self.chars += 1;
                if self.pad > 2 {
                    self.bad = true;
                }
            }
            B64_BAD => self.bad = true,
            val => {
                if self.pad > 0 {
                    self.bad = true;
                    return;
                }
                self.chars += 1;
                self.last = val;
                if self.prefix.len() < SNIFF_BYTES {
                    self.quad[self.qlen] = val;
                    self.qlen += 1;
                    if self.qlen == 4 {
                        let q = self.quad;
                        self.prefix.extend_from_slice(&[
                            (q[0] << 2) | (q[1] >> 4),
                            (q[1] << 4) | (q[2] >> 2),
                            (q[2] << 6) | q[3],
                        ]);
                        self.qlen = 0;
                    }
                }
            }
        }
    }

    /// True once a character that is not base64 (or misplaced padding) was fed.
    pub fn is_bad(&self) -> bool {
        self.bad
    }

    /// The decoded length, or None when the whole value was not valid base64.
    pub fn finish(&self) -> Option<u64> {
        if self.bad || !self.chars.is_multiple_of(4) {
            return None;
        }
        // The bits a padded group does not use must be zero.
        match self.pad {
            1 if self.last & 0x3 != 0 => return None,
            2 if self.last & 0xF != 0 => return None,
            _ => {}
        }
        Some(self.chars / 4 * 3 - u64::from(self.pad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn check(pieces: &[&[u8]]) -> (Option<u64>, Vec<u8>) {
        let mut c = Base64Check::default();
        for p in pieces {
            c.feed(p);
        }
        (c.finish(), c.prefix.clone())
    }

    /// Long values go through the 64-byte blocks: any piece sizes, any byte changed at any
    /// position of a block, give what a decoder says.
    #[test]
    fn blocks_agree_with_a_decoder() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let text = base64::engine::general_purpose::STANDARD.encode(&data).into_bytes();
        for size in [1, 7, 8, 63, 64, 65, 100, 1000, text.len()] {
            let pieces: Vec<&[u8]> = text.chunks(size).collect();
            assert_eq!(check(&pieces), (Some(3000), data[..SNIFF_BYTES].to_vec()), "pieces of {size}");
        }
        let decoder = base64::engine::general_purpose::STANDARD;
        for at in (100..260).chain(text.len() - 70..text.len()) {
            for b in [b'*', b'-', b'=', b' ', b'\n', 0, 0x7f, 0x80, 0xff, b'@', b'[', b'`', b'{', b':'] {
                let mut t = text.clone();
                t[at] = b;
                let stripped: Vec<u8> = t.iter().copied().filter(|c| !b" \t\r\n".contains(c)).collect();
                let expected = match decoder.decode(&stripped) {
                    Ok(d) if !b" \t\r\n".contains(&b) => Some(d.len() as u64),
                    _ => None,
                };
                assert_eq!(check(&[&t]).0, expected, "byte {b:#x} at {at}");
            }
            // Whitespace between characters is allowed anywhere.
            let mut t = text.clone();
            t.insert(at, b' ');
            assert_eq!(check(&[&t]).0, Some(3000), "space at {at}");
        }
    }
}
