//! The characters XML 1.0 allows (section 2.2, production `Char`): tab, line feed, carriage
//! return, and U+0020 to U+10FFFF less the surrogates and U+FFFE, U+FFFF. A message holding any
//! other character, written raw or as a character reference, in text, an attribute, a comment
//! or a name, is not well-formed; xmllint refuses it and so do we.

/// Whether `c` is a `Char` of XML 1.0. (A Rust `char` is never a surrogate.)
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

/// The byte offset of the first character of `doc` (a piece of a message: a tag, a text, a
/// comment) that XML 1.0 does not allow, if any.
///
/// `doc` is UTF-8 already checked, so only two things can be wrong: a C0 control other than
/// tab, line feed and carriage return, or U+FFFE / U+FFFF (`EF BF BE` / `EF BF BF`). Blocks of
/// 32 bytes are screened without an early exit inside a block (so the compiler vectorises the
/// screen), and only a block that holds a control or an `EF` lead byte is looked at closely.
pub fn first_illegal(doc: &[u8]) -> Option<usize> {
    const BLOCK: usize = 32;
    let suspect = |b: u8| (b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r') | (b == 0xEF);
    let mut at = 0;
    while at < doc.len() {
        let end = (at + BLOCK).min(doc.len());
        let block = &doc[at..end];
        if block.iter().fold(false, |any, &b| any | suspect(b)) {
            for (i, &b) in block.iter().enumerate() {
                let pos = at + i;
                let bad = match b {
                    0xEF => matches!(doc.get(pos + 1..pos + 3), Some([0xBF, 0xBE | 0xBF])),
                    b => b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'),
                };
                if bad {
                    return Some(pos);
                }
            }
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_char_production() {
        for c in ['\t', '\n', '\r', ' ', 'a', 'Č', '\u{D7FF}', '\u{E000}', '\u{FFFD}', '\u{10000}', '\u{10FFFF}'] {
            assert!(is_xml_char(c), "{c:?}");
        }
        for c in ['\0', '\u{1}', '\u{8}', '\u{B}', '\u{C}', '\u{1E}', '\u{1F}', '\u{FFFE}', '\u{FFFF}'] {
            assert!(!is_xml_char(c), "{c:?}");
        }
    }

    /// Every character, at every position of a block and across block edges, is judged as
    /// `is_xml_char` judges it.
    #[test]
    fn the_screen_agrees_with_the_production_everywhere() {
        let samples: Vec<char> = (0u32..0x80)
            .chain([0xD7FF, 0xE000, 0xFF1F, 0xFFEF, 0xFFFD, 0xFFFE, 0xFFFF, 0x10000, 0x10FFFF, 0xF000, 0xEFFF])
            .filter_map(char::from_u32)
            .collect();
        for c in samples {
            for pos in [0usize, 1, 30, 31, 32, 33, 63, 64, 70] {
                let mut s: String = "x".repeat(pos);
                s.push(c);
                s.push_str(&"y".repeat(40));
                let expect = if is_xml_char(c) { None } else { Some(pos) };
                assert_eq!(first_illegal(s.as_bytes()), expect, "{c:?} at {pos}");
            }
        }
        assert_eq!(first_illegal(b""), None);
        assert_eq!(first_illegal("\u{EFBF}".as_bytes()), None);
    }
}
