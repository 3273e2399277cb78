//! The SOAP structure around the operation: the root element (an Envelope, or for
//! `spocgw validate` a bare element the schemas declare), the Envelope's Header and Body, and
//! the Body's one element (the operation the route expects, or a Fault where one may come).

use quick_xml::NsReader;
use quick_xml::events::BytesStart;

use super::reply_fault::FaultFrame;
use super::{Expect, Frame, HeaderOutline, Run, XmlRefusal};
use crate::xml::soap::{SOAP11_NS, SOAP12_NS, SoapVersion};

impl Run<'_> {
    /// The document's root element.
    pub(super) fn root(
        &mut self,
        reader: &NsReader<&[u8]>,
        offset: usize,
        e: &BytesStart<'_>,
        (ns, local): (&str, &str),
        expect: Expect<'_>,
    ) -> Result<Frame, XmlRefusal> {
        if self.root_done {
            return Err(XmlRefusal::Malformed { offset, reason: "content after the root element".into() });
        }
        let version = match (ns, local) {
            (SOAP11_NS, "Envelope") => Some(SoapVersion::V11),
            (SOAP12_NS, "Envelope") => Some(SoapVersion::V12),
            _ => None,
        };
        match (version, expect) {
            (Some(v), _) => {
                self.version = Some(v);
                Ok(Frame::Envelope { has_header: false, has_body: false })
            }
            (None, Expect::Any) => {
                let Some(decl) = self.schema.global(ns, local) else {
                    return Self::invalid(offset, format!("no schema declares the element {{{ns}}}{local}"));
                };
                self.operation = Some((ns.to_owned(), local.to_owned()));
                self.operation_at = Some(self.stack.len());
                self.element_frame(reader, offset, e, decl)
            }
            (None, Expect::Soap { .. }) => Self::invalid(offset, "the root element is not a SOAP Envelope"),
        }
    }

    /// A child of the Envelope: one Header, before one Body.
    pub(super) fn envelope_child(&mut self, offset: usize, (ns, local): (&str, &str)) -> Result<Frame, XmlRefusal> {
        let soap_ns = self.version.map(SoapVersion::namespace).unwrap_or_default();
        if ns != soap_ns {
            return Self::invalid(offset, format!("unexpected element {local} in the Envelope"));
        }
        let Some(Frame::Envelope { has_header, has_body }) = self.stack.last_mut() else {
            return Self::invalid(offset, "internal: not in the Envelope");
        };
        match local {
            "Header" if !*has_header && !*has_body => {
                *has_header = true;
                let at = offset + self.skipped;
                self.header = Some(HeaderOutline { span: at..at, dropped: Vec::new(), kept: 0 });
                Ok(Frame::Header)
            }
            "Body" if !*has_body => {
                *has_body = true;
                Ok(Frame::Body { has_operation: false })
            }
            "Body" => Self::invalid(offset, "more than one Body"),
            _ => Self::invalid(offset, format!("unexpected element {local} in the Envelope")),
        }
    }

    /// The Body's one element: an operation the caller expects, or a SOAP Fault (in its fixed
    /// shape) where one is accepted.
    pub(super) fn body_child(
        &mut self,
        reader: &NsReader<&[u8]>,
        offset: usize,
        e: &BytesStart<'_>,
        (ns, local): (&str, &str),
        expect: Expect<'_>,
    ) -> Result<Frame, XmlRefusal> {
        let Some(Frame::Body { has_operation }) = self.stack.last_mut() else {
            return Self::invalid(offset, "internal: not in the Body");
        };
        if *has_operation {
            return Self::invalid(offset, "the Body holds more than one element");
        }
        *has_operation = true;
        let soap_ns = self.version.map(SoapVersion::namespace).unwrap_or_default();
        self.operation = Some((ns.to_owned(), local.to_owned()));
        if ns == soap_ns && local == "Fault" {
            return match expect {
                Expect::Soap { fault_ok: true, .. } | Expect::Any => {
                    if e.attributes().flatten().any(|a| !a.key.as_ref().starts_with(b"xmlns")) {
                        return Self::invalid(offset, "an attribute that is not allowed in a SOAP Fault");
                    }
                    Ok(Frame::Fault(FaultFrame::new(self.version.unwrap_or(SoapVersion::V11))))
                }
                Expect::Soap { .. } => Self::invalid(offset, "a SOAP Fault where a message was expected"),
            };
        }
        if let Expect::Soap { operations, .. } = expect
            && !operations.iter().any(|(n, l)| *n == ns && *l == local)
        {
            return Err(XmlRefusal::UnknownOperation { offset, ns: ns.to_owned(), local: local.to_owned() });
        }
        let Some(decl) = self.schema.global(ns, local) else {
            return Self::invalid(offset, format!("no schema declares the element {{{ns}}}{local}"));
        };
        self.operation_at = Some(self.stack.len());
        self.element_frame(reader, offset, e, decl)
    }
}

/// The Body's element (namespace, local name) in the part of a message read before a refusal:
/// the operation a refused request named, for its record and metrics. Only for a part the
/// validator already read (well-formed and within limits up to the refusal).
pub fn body_element(read: &[u8]) -> Option<(String, String)> {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let text = match std::str::from_utf8(read) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&read[..e.valid_up_to()]).ok()?,
    };
    let mut reader = NsReader::from_str(text);
    let mut path: Vec<(bool, bool)> = Vec::new(); // (a SOAP Envelope or Body, is the Body)
    loop {
        match reader.read_resolved_event().ok()? {
            (ns, Event::Start(e)) | (ns, Event::Empty(e)) => {
                let ns = match ns {
                    ResolveResult::Bound(n) => std::str::from_utf8(n.as_ref()).ok()?.to_owned(),
                    _ => String::new(),
                };
                let local = std::str::from_utf8(e.local_name().as_ref()).ok()?.to_owned();
                let soap = ns == SOAP11_NS || ns == SOAP12_NS;
                match path.as_slice() {
                    [] if soap && local == "Envelope" => path.push((true, false)),
                    [(true, false)] if soap && local == "Body" => path.push((true, true)),
                    [(true, false), (true, true)] => return Some((ns, local)),
                    _ => path.push((false, false)),
                }
            }
            (_, Event::End(_)) => {
                path.pop();
            }
            (_, Event::Eof) => return None,
            _ => {}
        }
    }
}
