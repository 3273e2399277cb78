//! The firewall's checks in the validator's one pass: limits and refusals per start tag, the
//! XML declaration, references in attribute values.

use quick_xml::NsReader;
use quick_xml::events::BytesStart;
use quick_xml::name::{Namespace, ResolveResult};

use super::{PREDEFINED, Run, XSI_NS, XmlRefusal};
use crate::xml::limits::Breach;

impl Run<'_> {
    /// Firewall checks common to every start tag.
    pub(super) fn firewall_start(
        &mut self,
        reader: &NsReader<&[u8]>,
        offset: usize,
        e: &BytesStart<'_>,
    ) -> Result<(), XmlRefusal> {
        let threat = |breach| Err(XmlRefusal::Threat { offset, breach });
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            return threat(Breach::Elements);
        }
        if self.stack.len() + 1 > self.limits.max_depth {
            return threat(Breach::Depth);
        }
        if e.name().as_ref().len() > self.limits.max_name_bytes {
            return threat(Breach::NameBytes);
        }
        let children = match self.child_counts.last_mut() {
            Some(c) => {
                *c += 1;
                *c
            }
            None => 0,
        };
        if children > self.limits.max_children {
            return threat(Breach::Children);
        }
        let mut count = 0;
        for a in e.attributes().with_checks(true) {
            let a = a.map_err(|err| XmlRefusal::Malformed { offset, reason: err.to_string() })?;
            count += 1;
            if count > self.limits.max_attributes {
                return threat(Breach::Attributes);
            }
            if a.key.as_ref().len() > self.limits.max_name_bytes {
                return threat(Breach::NameBytes);
            }
            if a.value.len() > self.limits.max_attribute_bytes {
                return threat(Breach::AttributeBytes);
            }
            check_attribute_refs(&a.value, offset)?;
            let key = a.key.as_ref();
            if key == b"xmlns" || key.starts_with(b"xmlns:") {
                self.namespaces += 1;
                if self.namespaces > self.limits.max_namespaces {
                    return threat(Breach::Namespaces);
                }
                continue;
            }
            let (ans, alocal) = reader.resolve_attribute(a.key);
            if let ResolveResult::Bound(Namespace(n)) = ans
                && n == XSI_NS.as_bytes()
            {
                match alocal.as_ref() {
                    b"schemaLocation" | b"noNamespaceSchemaLocation" => return threat(Breach::SchemaLocationHint),
                    b"type" => return threat(Breach::TypeOverride),
                    _ => {}
                }
            }
            if let ResolveResult::Unknown(_) = ans {
                return Err(XmlRefusal::Malformed { offset, reason: "undeclared attribute prefix".into() });
            }
        }
        Ok(())
    }
}

/// The XML declaration, strictly: `xml version="1.0"`, optionally `encoding="UTF-8"` and
/// `standalone`, in that order, nothing else.
/// What nearly every client sends: accepted without running the grammar (a regex) per message.
const COMMON_DECLARATIONS: [&str; 4] = [
    r#"xml version="1.0" encoding="UTF-8""#,
    r#"xml version="1.0" encoding="utf-8""#,
    r#"xml version="1.0""#,
    r#"xml version='1.0' encoding='UTF-8'"#,
];

pub(super) fn check_declaration(content: &str, offset: usize) -> Result<(), XmlRefusal> {
    if COMMON_DECLARATIONS.contains(&content.trim_end_matches([' ', '\t', '\r', '\n'])) {
        return Ok(());
    }
    declaration_grammar(content, offset)
}

fn declaration_grammar(content: &str, offset: usize) -> Result<(), XmlRefusal> {
    static DECL: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let re = DECL.get_or_init(|| {
        regex::Regex::new(
            r#"^xml[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*("1\.0"|'1\.0')([ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*("[A-Za-z][A-Za-z0-9._-]*"|'[A-Za-z][A-Za-z0-9._-]*'))?([ \t\r\n]+standalone[ \t\r\n]*=[ \t\r\n]*("yes"|"no"|'yes'|'no'))?[ \t\r\n]*$"#,
        )
        .ok()
    });
    let Some(re) = re else {
        return Err(XmlRefusal::Malformed { offset, reason: "internal: declaration grammar".into() });
    };
    let Some(caps) = re.captures(content) else {
        return Err(XmlRefusal::Malformed { offset, reason: "malformed XML declaration".into() });
    };
    if let Some(enc) = caps.get(3) {
        let enc = enc.as_str().trim_matches(['"', '\'']);
        if !enc.eq_ignore_ascii_case("utf-8") {
            return Err(XmlRefusal::Malformed { offset, reason: "declared encoding is not UTF-8".into() });
        }
    }
    Ok(())
}

/// References in attribute values follow the same rule as in text.
fn check_attribute_refs(value: &[u8], offset: usize) -> Result<(), XmlRefusal> {
    let mut rest = value;
    while let Some(pos) = rest.iter().position(|&b| b == b'&') {
        let after = &rest[pos + 1..];
        let Some(end) = after.iter().position(|&b| b == b';') else {
            return Err(XmlRefusal::Malformed { offset, reason: "unterminated reference in an attribute".into() });
        };
        let name = &after[..end];
        if let Some(number) = name.strip_prefix(b"#") {
            if !char_ref(number).is_some_and(crate::xml::chars::is_xml_char) {
                return Err(XmlRefusal::Malformed { offset, reason: "invalid character reference".into() });
            }
        } else if !PREDEFINED.iter().any(|(p, _)| p.as_bytes() == name) {
            return Err(XmlRefusal::Threat { offset, breach: Breach::EntityReference });
        }
        rest = &after[end + 1..];
    }
    if value.contains(&b'<') {
        return Err(XmlRefusal::Malformed { offset, reason: "'<' in an attribute value".into() });
    }
    Ok(())
}

/// The character a reference's number (after `&#`) names: `x` and hex digits, or decimal digits.
fn char_ref(number: &[u8]) -> Option<char> {
    let (digits, radix) = match number.strip_prefix(b"x") {
        Some(hex) => (hex, 16),
        None => (number, 10),
    };
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let text = std::str::from_utf8(digits).ok()?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    char::from_u32(u32::from_str_radix(text, radix).ok()?)
}

/// Refuses a piece of the message holding a character XML 1.0 does not allow. Every byte of a
/// message is in some event: tags, comments and the declaration are screened here, text where
/// it is read (base64 text by the base64 check, whose alphabet leaves such characters out, and
/// screened only when that check fails, to tell the two refusals apart).
pub(super) fn screen(part: &[u8], offset: usize) -> Result<(), XmlRefusal> {
    match crate::xml::chars::first_illegal(part) {
        None => Ok(()),
        Some(at) => {
            Err(XmlRefusal::Malformed { offset: offset + at, reason: "a character XML 1.0 does not allow".into() })
        }
    }
}

/// What a quick-xml error says, in words that hold nothing of the message (its messages can
/// quote names and references from it).
pub(super) fn malformed(e: &quick_xml::Error) -> &'static str {
    use quick_xml::errors::{Error, IllFormedError};
    match e {
        Error::Syntax(_) => "syntax error",
        Error::IllFormed(IllFormedError::MismatchedEndTag { .. } | IllFormedError::UnmatchedEndTag(_)) => {
            "an end tag does not match its start tag"
        }
        Error::IllFormed(IllFormedError::MissingEndTag(_)) => "an element is not closed",
        Error::IllFormed(IllFormedError::DoubleHyphenInComment) => "'--' inside a comment",
        Error::IllFormed(_) => "not well-formed",
        Error::InvalidAttr(_) => "malformed attribute",
        Error::Escape(_) => "invalid reference",
        Error::Namespace(_) => "namespace error",
        Error::Encoding(_) | Error::Io(_) => "invalid encoding",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcut accepts only what the grammar accepts, and the grammar still refuses.
    #[test]
    fn common_declarations_are_ones_the_grammar_accepts() {
        for d in COMMON_DECLARATIONS {
            assert!(declaration_grammar(d, 0).is_ok(), "{d}");
            assert!(check_declaration(&format!("{d} \n"), 0).is_ok(), "{d}");
        }
        for bad in [r#"xml version="1.1""#, r#"xml version="1.0" encoding="ISO-8859-1""#, r#"xml  version="1.0"x"#] {
            assert!(check_declaration(bad, 0).is_err(), "{bad}");
        }
    }
}
