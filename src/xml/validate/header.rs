//! SOAP Header entries. The gateway is a SOAP intermediary: it lets through only the entries a
//! route names (validated against the schemas like the Body), refuses an entry it does not let
//! through that must be understood (`mustUnderstand` read as XML defines it: references
//! resolved, white space collapsed, `1`/`true`), and outlines every other entry so that it is
//! cut from what is forwarded. Nothing in a Header reaches the other side unvalidated.

use std::ops::Range;

use quick_xml::NsReader;
use quick_xml::events::BytesStart;
use quick_xml::name::{Namespace, ResolveResult};

use super::{Expect, Frame, Run, XmlRefusal};
use crate::xml::soap::SoapVersion;

/// The Header of a validated message. Offsets are into the message as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOutline {
    /// From the Header's start tag to the end of its end tag.
    pub span: Range<usize>,
    /// The entries that are not let through, in document order.
    pub dropped: Vec<Range<usize>>,
    /// How many entries are let through.
    pub kept: usize,
}

impl HeaderOutline {
    /// What to cut so that only the entries let through remain: the whole Header when none
    /// is, else each dropped entry.
    pub fn cuts(&self) -> Vec<Range<usize>> {
        if self.kept == 0 { vec![self.span.clone()] } else { self.dropped.clone() }
    }
}

/// The value of a `mustUnderstand` attribute: Some(true) when the entry must be understood,
/// None when the value is no boolean (which the gateway treats as must-understand).
fn must_understand(value: &str) -> Option<bool> {
    match value.trim_matches([' ', '\t', '\r', '\n']) {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

impl Run<'_> {
    /// A child of the Header: the frame it opens (a declared element for an entry let
    /// through, else a dropped entry), or the refusal.
    pub(super) fn header_entry(
        &mut self,
        reader: &NsReader<&[u8]>,
        offset: usize,
        e: &BytesStart<'_>,
        (ns, local): (&str, &str),
        expect: Expect<'_>,
    ) -> Result<Frame, XmlRefusal> {
        let version = self.version.unwrap_or(SoapVersion::V11);
        let soap_ns = version.namespace();
        if ns == soap_ns {
            // a Body hidden in the Header
            return Self::invalid(offset, format!("SOAP element {local} inside the Header"));
        }
        let mut must = false;
        for a in e.attributes().flatten() {
            let (ans, alocal) = reader.resolve_attribute(a.key);
            if matches!(ans, ResolveResult::Bound(Namespace(n)) if n == soap_ns.as_bytes())
                && alocal.as_ref() == b"mustUnderstand"
            {
                let value = a
                    .unescape_value()
                    .map_err(|_| XmlRefusal::Malformed { offset, reason: "invalid reference".into() })?;
                match must_understand(&value) {
                    Some(m) => must |= m,
                    None => return Self::invalid(offset, format!("header {local}: mustUnderstand is not a boolean")),
                }
            }
        }
        let allowed = match expect {
            Expect::Soap { headers, .. } => headers.iter().any(|(n, l)| *n == ns && *l == local),
            Expect::Any => false,
        };
        let Some(header) = self.header.as_mut() else {
            return Self::invalid(offset, "internal: header entry outside a Header");
        };
        if allowed && let Some(decl) = self.schema.global(ns, local) {
            header.kept += 1;
            return self.element_frame(reader, offset, e, decl);
        }
        if must {
            return Self::invalid(offset, format!("header {local} must be understood, and the gateway does not"));
        }
        let at = offset + self.skipped;
        header.dropped.push(at..at);
        Ok(Frame::DroppedEntry(header.dropped.len() - 1))
    }

    /// A header entry or the Header ends at `after` (the end of its end tag).
    pub(super) fn header_end(&mut self, frame: &Frame, after: usize) {
        let end = after + self.skipped;
        if let Some(h) = self.header.as_mut() {
            match frame {
                Frame::Header => h.span.end = end,
                Frame::DroppedEntry(i) => {
                    if let Some(r) = h.dropped.get_mut(*i) {
                        r.end = end;
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn must_understand_is_read_as_a_boolean() {
        for v in ["1", "true", " true", "1\n", "\ttrue "] {
            assert_eq!(must_understand(v), Some(true), "{v:?}");
        }
        for v in ["0", "false", " 0 "] {
            assert_eq!(must_understand(v), Some(false), "{v:?}");
        }
        for v in ["", "yes", "TRUE", "01", "t rue"] {
            assert_eq!(must_understand(v), None, "{v:?}");
        }
    }
}
