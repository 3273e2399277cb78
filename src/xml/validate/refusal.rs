//! Why a message was refused: the refusal kinds, where in the message, and what an
//! integrator can act on (the element and the rule, never a value).

use super::super::limits::Breach;

/// Why a message was refused, with the byte offset where it was noticed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlRefusal {
    #[error("not well-formed: {reason}")]
    Malformed { offset: usize, reason: String },
    #[error("refused by the XML firewall: {}", breach.name())]
    Threat { offset: usize, breach: Breach },
    #[error("invalid: {reason}")]
    Invalid { offset: usize, reason: String },
    #[error("unknown operation {{{ns}}}{local}")]
    UnknownOperation { offset: usize, ns: String, local: String },
    #[error("content mismatch: {reason}")]
    ContentMismatch { offset: usize, reason: String },
}

impl XmlRefusal {
    /// What an integrator can act on, for a schema violation: the element at fault (its local
    /// name) and the kind of rule it broke (`pattern`, `enumeration`, `length`, `range`,
    /// `base64`, `missing`, `unexpected`, `duplicate`...). Never a value from the message.
    pub fn hint(&self) -> Option<(&str, &'static str)> {
        let XmlRefusal::Invalid { reason, .. } = self else { return None };
        if let Some(rest) = reason.strip_prefix("element ") {
            let (element, what) = rest.split_once(' ')?;
            if let Some(expected) = what.strip_prefix("is incomplete; expected ") {
                return Some((expected.split(' ').next()?, "missing"));
            }
            if let Some(missing) = what.strip_prefix("is missing ") {
                return Some((missing, "missing"));
            }
            let rule = match what {
                w if w.starts_with("is not allowed") => "unexpected",
                w if w.starts_with("appears twice") => "duplicate",
                _ => "content",
            };
            return Some((element, rule));
        }
        let (field, what) = reason.split_once(": ")?;
        if !crate::xml::xsd::simple::is_ncname(field) {
            return None;
        }
        let rule = [
            ("pattern", "pattern"),
            ("enumeration", "enumeration"),
            ("length", "length"),
            ("audit record", "length"),
            ("range", "range"),
            ("base64", "base64"),
            ("whitespace", "whitespace"),
            ("unique", "unique"),
        ]
        .iter()
        .find(|(word, _)| what.contains(word))
        .map_or("type", |(_, rule)| rule);
        Some((field, rule))
    }

    pub fn offset(&self) -> usize {
        match self {
            XmlRefusal::Malformed { offset, .. }
            | XmlRefusal::Threat { offset, .. }
            | XmlRefusal::Invalid { offset, .. }
            | XmlRefusal::UnknownOperation { offset, .. }
            | XmlRefusal::ContentMismatch { offset, .. } => *offset,
        }
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(body: &[u8], offset: usize) -> (usize, usize) {
    let upto = &body[..offset.min(body.len())];
    let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
    let col_start = upto.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let col = String::from_utf8_lossy(&upto[col_start..]).chars().count() + 1;
    (line, col)
}
