//! The streaming validator: one pass of quick-xml over a message, no tree. The same pass
//! enforces the firewall's limits and refusals, reads the SOAP envelope (1.1 or 1.2: Header
//! entries that must be understood are refused, the Body holds exactly one element), validates
//! the operation element against the compiled schemas, checks base64 fields as they stream and
//! sniffs their leading bytes against the declared format, and collects the message facts.
//!
//! Memory is bounded by the limits: the stack by `max_depth`, text buffers by
//! `max_text_bytes`; base64 fields are never buffered.

use std::collections::HashSet;

mod cvc;
mod elements;
mod envelope;
mod firewall;
mod header;
mod outline;
mod refusal;
mod reply_fault;

pub use envelope::body_element;
use firewall::{check_declaration, malformed, screen};
pub use header::HeaderOutline;
pub use outline::Outlined;
use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
pub use refusal::{XmlRefusal, line_col};
use reply_fault::{Child, FaultFrame};

use super::facts::MessageFacts;
use super::limits::{Breach, Limits};
use super::soap::{SOAP11_NS, SOAP12_NS, SoapVersion};
use super::xsd::Schema;
use super::xsd::simple::Base64Check;

const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
const PREDEFINED: [(&str, &str); 5] = [("lt", "<"), ("gt", ">"), ("amp", "&"), ("apos", "'"), ("quot", "\"")];

/// What the caller expects at the top of the message.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// A SOAP envelope whose Body holds one of these (namespace, local name) elements; a SOAP
    /// Fault (in its fixed shape) is accepted when `fault_ok`. Header entries named in
    /// `headers` are validated against the schemas and kept; any other entry is outlined to be
    /// dropped ([`Validated::header`]), or refused if it must be understood.
    Soap { operations: &'a [(&'a str, &'a str)], fault_ok: bool, headers: &'a [(String, String)] },
    /// Either a SOAP envelope (any operation the schemas declare) or a bare element the
    /// schemas declare globally (`spocgw validate`).
    Any,
}

/// A message that passed.
#[derive(Debug, Clone)]
pub struct Validated {
    /// None for a bare (non-SOAP) document.
    pub version: Option<SoapVersion>,
    pub namespace: String,
    pub operation: String,
    pub facts: MessageFacts,
    /// The elements below the operation element down to the depth asked for
    /// ([`validate_outlined`]), in document order: what data minimisation cuts, without
    /// reading the message again.
    pub outline: Vec<Outlined>,
    /// The SOAP Header, if the message has one: its span and the entries to drop.
    pub header: Option<HeaderOutline>,
}

enum Frame {
    Envelope {
        has_header: bool,
        has_body: bool,
    },
    Header,
    /// A header entry that is not let through: skipped, and outlined to be cut.
    DroppedEntry(usize),
    Body {
        has_operation: bool,
    },
    /// Content the gateway does not validate (header entries, a Fault); limits still apply.
    Skip,
    Element(ElementFrame),
    Fault(FaultFrame),
}

struct ElementFrame {
    decl: usize,
    /// Its entry in the outline, if it has one.
    outlined: Option<usize>,
    state: ContentState,
    text_len: usize,
    /// The `Format` recorded from a child, for sniffing a sibling `Data`.
    format: Option<String>,
}

enum ContentState {
    Dfa(usize),
    All(u64),
    Empty,
    /// Simple content held whole (strings, numbers, dates...) in the run's text buffer (simple
    /// elements have no children, so one buffer serves all).
    Text,
    /// base64Binary checked as it streams.
    Base64(Base64Check),
}

struct Run<'s> {
    /// The message (checked to be UTF-8 once, at the start).
    doc: &'s str,
    schema: &'s Schema,
    limits: &'s Limits,
    stack: Vec<Frame>,
    /// Child elements seen so far, per open element (index 0: the document level).
    child_counts: Vec<usize>,
    elements: usize,
    namespaces: usize,
    comment_bytes: usize,
    version: Option<SoapVersion>,
    operation: Option<(String, String)>,
    facts: MessageFacts,
    ids: HashSet<String>,
    idrefs: Vec<(usize, String)>,
    root_done: bool,
    /// The text of the simple element being read.
    text_buf: String,
    /// The first validity error. Reading goes on with the firewall only, so that a message
    /// that is also hostile or not well-formed further on is refused for that instead.
    failed: Option<XmlRefusal>,
    /// Bytes before `doc` in the message (a byte order mark).
    skipped: usize,
    /// How deep below the operation element the outline goes (0: no outline).
    outline_depth: usize,
    /// Where the operation element is on the stack.
    operation_at: Option<usize>,
    outline: Vec<Outlined>,
    header: Option<HeaderOutline>,
}

/// Validates `body` against `schema` under `limits`.
///
/// # Errors
/// The first [`XmlRefusal`] with its offset: not well-formed, a firewall limit or threat, invalid
/// against the schema, an operation not expected, content that does not match its declared format.
pub fn validate(schema: &Schema, limits: &Limits, body: &[u8], expect: Expect<'_>) -> Result<Validated, XmlRefusal> {
    validate_outlined(schema, limits, body, expect, 0)
}

/// Validates, and outlines the elements down to `depth` below the operation element.
///
/// # Errors
/// As [`validate`].
pub fn validate_outlined(
    schema: &Schema,
    limits: &Limits,
    body: &[u8],
    expect: Expect<'_>,
    depth: usize,
) -> Result<Validated, XmlRefusal> {
    let whole = body.len();
    if body.len() > limits.max_message_bytes {
        return Err(XmlRefusal::Threat { offset: limits.max_message_bytes, breach: Breach::MessageBytes });
    }
    let body = match body {
        [0xEF, 0xBB, 0xBF, rest @ ..] => rest,
        [0xFE, 0xFF, ..] | [0xFF, 0xFE, ..] => {
            return Err(XmlRefusal::Malformed { offset: 0, reason: "UTF-16 is not accepted; UTF-8 only".into() });
        }
        b => b,
    };
    let text = std::str::from_utf8(body)
        .map_err(|e| XmlRefusal::Malformed { offset: e.valid_up_to(), reason: "invalid UTF-8".into() })?;
    let mut run = Run {
        doc: text,
        schema,
        limits,
        stack: Vec::with_capacity(16),
        child_counts: vec![0],
        elements: 0,
        namespaces: 0,
        comment_bytes: 0,
        version: None,
        operation: None,
        facts: MessageFacts::default(),
        ids: HashSet::new(),
        idrefs: Vec::new(),
        root_done: false,
        failed: None,
        text_buf: String::new(),
        skipped: whole - text.len(),
        outline_depth: depth,
        operation_at: None,
        outline: Vec::new(),
        header: None,
    };
    run.go(expect)
}

/// `part` as a `&str`. quick-xml hands out slices of the message, which was checked to be
/// UTF-8 as a whole, split at ASCII bytes: such a slice is taken from `doc` as the `&str` it
/// is there, without checking it again (names and values, ~50 per message, cost ~120
/// instructions each to check). Anything else (an unescaped value) is checked.
fn utf8<'a>(doc: &'a str, part: &'a [u8]) -> &'a str {
    let start = (part.as_ptr() as usize).wrapping_sub(doc.as_ptr() as usize);
    match doc.get(start..start.wrapping_add(part.len())) {
        Some(s) if s.as_ptr() == part.as_ptr() => s,
        _ => std::str::from_utf8(part).unwrap_or(""),
    }
}

/// A namespace name as the `&str` the schemas (or SOAP) spell it: names resolved by quick-xml
/// live in its own buffer, not in the message.
fn known_namespace<'s>(schema: &'s Schema, n: &[u8]) -> Option<&'s str> {
    [SOAP11_NS, SOAP12_NS, XSI_NS]
        .into_iter()
        .chain(schema.globals.keys().map(|(ns, _)| ns.as_str()))
        .find(|k| k.as_bytes() == n)
}

impl<'s> Run<'s> {
    fn go(&mut self, expect: Expect<'_>) -> Result<Validated, XmlRefusal> {
        let text = self.doc;
        let mut reader = NsReader::from_str(text);
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.check_comments = true;
        let mut seen_decl = false;
        loop {
            let offset = reader.buffer_position() as usize;
            let event = match reader.read_event() {
                Ok(x) => x,
                Err(e) => {
                    return Err(XmlRefusal::Malformed {
                        offset: reader.error_position() as usize,
                        reason: malformed(&e).into(),
                    });
                }
            };
            match event {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    screen(e, offset + 1)?;
                    let empty = matches!(event, Event::Empty(_));
                    let (ns, local) = reader.resolve_element(e.name());
                    let (ns, local) = (namespace(self.schema, &ns, offset)?, utf8(text, local.into_inner()));
                    let depth = self.stack.len();
                    let r = self.start(&reader, offset, e, ns, local, expect);
                    if r.is_err() && self.stack.len() == depth {
                        // keep the element's place so its end tag balances
                        self.push(Frame::Skip);
                    }
                    self.settle(r)?;
                    if empty {
                        let r = self.end(&reader, offset, reader.buffer_position() as usize);
                        self.settle(r)?;
                    }
                }
                Event::End(ref e) => {
                    screen(e, offset + 2)?;
                    let r = self.end(&reader, offset, reader.buffer_position() as usize);
                    self.settle(r)?;
                }
                Event::Eof => break,
                other => self.between_tags(offset, other, &mut seen_decl)?,
            }
        }
        self.finish()
    }

    /// What comes between tags: the declaration, comments and the refused DTDs and processing
    /// instructions; text, CDATA and references (the predefined entities and characters only).
    fn between_tags(&mut self, offset: usize, event: Event<'_>, seen_decl: &mut bool) -> Result<(), XmlRefusal> {
        let text = self.doc;
        let raw = match event {
            Event::Decl(d) => {
                if *seen_decl || self.elements > 0 || offset > 0 {
                    return Err(XmlRefusal::Malformed { offset, reason: "XML declaration not at the start".into() });
                }
                *seen_decl = true;
                screen(&d, offset + 2)?;
                return check_declaration(utf8(text, &d), offset);
            }
            Event::DocType(_) => return Err(XmlRefusal::Threat { offset, breach: Breach::Dtd }),
            Event::PI(_) => return Err(XmlRefusal::Threat { offset, breach: Breach::ProcessingInstruction }),
            Event::Comment(c) => {
                screen(&c, offset + 4)?;
                self.comment_bytes += c.len();
                if self.comment_bytes > self.limits.max_comment_bytes {
                    return Err(XmlRefusal::Threat { offset, breach: Breach::CommentBytes });
                }
                return Ok(());
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) if super::chars::is_xml_char(c) => c.to_string(),
                        _ => {
                            return Err(XmlRefusal::Malformed { offset, reason: "invalid character reference".into() });
                        }
                    }
                } else {
                    let name = utf8(text, &r);
                    match PREDEFINED.iter().find(|(n, _)| *n == name) {
                        Some((_, v)) => (*v).to_owned(),
                        None => return Err(XmlRefusal::Threat { offset, breach: Breach::EntityReference }),
                    }
                };
                let r = self.text(offset, resolved.as_bytes());
                return self.settle(r);
            }
            Event::Text(t) => t.into_inner(),
            Event::CData(c) => {
                if self.stack.is_empty() {
                    return Err(XmlRefusal::Malformed { offset, reason: "CDATA outside the root element".into() });
                }
                c.into_inner()
            }
            Event::Start(_) | Event::Empty(_) | Event::End(_) | Event::Eof => return Ok(()),
        };
        let r = self.text(offset, &raw);
        self.settle(r)
    }

    /// The end of the document: every element closed, the first validity error if there was
    /// one, a root element, every IDREF naming an ID.
    fn finish(&mut self) -> Result<Validated, XmlRefusal> {
        let end = self.doc.len();
        if !self.stack.is_empty() {
            return Err(XmlRefusal::Malformed { offset: end, reason: "the document ends inside an element".into() });
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let Some((namespace, operation)) = self.operation.take() else {
            return Err(XmlRefusal::Malformed { offset: end, reason: "no root element".into() });
        };
        for (offset, r) in &self.idrefs {
            if !self.ids.contains(r) {
                return Err(XmlRefusal::Invalid { offset: *offset, reason: "an IDREF names no ID".into() });
            }
        }
        Ok(Validated {
            version: self.version,
            namespace,
            operation,
            facts: std::mem::take(&mut self.facts),
            outline: std::mem::take(&mut self.outline),
            header: self.header.take(),
        })
    }

    fn push(&mut self, frame: Frame) {
        self.stack.push(frame);
        self.child_counts.push(0);
    }

    /// Passes firewall and well-formedness refusals on at once; keeps the first validity error
    /// and goes on reading with the firewall only.
    fn settle(&mut self, r: Result<(), XmlRefusal>) -> Result<(), XmlRefusal> {
        match r {
            Ok(()) => Ok(()),
            Err(e @ (XmlRefusal::Malformed { .. } | XmlRefusal::Threat { .. })) => Err(e),
            Err(e) => {
                if self.failed.is_none() {
                    self.failed = Some(e);
                    // From here on every open element is only counted and skipped.
                    for f in &mut self.stack {
                        *f = Frame::Skip;
                    }
                }
                Ok(())
            }
        }
    }

    fn invalid<T>(offset: usize, reason: impl Into<String>) -> Result<T, XmlRefusal> {
        Err(XmlRefusal::Invalid { offset, reason: reason.into() })
    }

    fn start(
        &mut self,
        reader: &NsReader<&[u8]>,
        offset: usize,
        e: &BytesStart<'_>,
        ns: &str,
        local: &str,
        expect: Expect<'_>,
    ) -> Result<(), XmlRefusal> {
        self.firewall_start(reader, offset, e)?;
        if self.failed.is_some() {
            if self.stack.is_empty() && self.root_done {
                return Err(XmlRefusal::Malformed { offset, reason: "content after the root element".into() });
            }
            self.push(Frame::Skip);
            return Ok(());
        }
        let name = (ns, local);
        let mut frame = match self.stack.last() {
            None => self.root(reader, offset, e, name, expect)?,
            Some(Frame::Envelope { .. }) => self.envelope_child(offset, name)?,
            Some(Frame::Header) => self.header_entry(reader, offset, e, name, expect)?,
            Some(Frame::Body { .. }) => self.body_child(reader, offset, e, name, expect)?,
            Some(Frame::Skip | Frame::DroppedEntry(_)) => Frame::Skip,
            Some(Frame::Fault(_)) => match self.fault_child(reader, offset, e, name)? {
                Child::Frame(f) => f,
                Child::Declared(decl) => self.element_frame(reader, offset, e, decl)?,
            },
            Some(Frame::Element(_)) => {
                let decl = self.child_decl(offset, name)?;
                self.element_frame(reader, offset, e, decl)?
            }
        };
        if let Frame::Element(f) = &mut frame {
            self.outline_element(f, offset, local)?;
        }
        self.push(frame);
        Ok(())
    }
}

fn namespace<'a>(schema: &'a Schema, ns: &'a ResolveResult<'_>, offset: usize) -> Result<&'a str, XmlRefusal> {
    match ns {
        ResolveResult::Bound(Namespace(n)) => {
            Ok(known_namespace(schema, n).unwrap_or_else(|| std::str::from_utf8(n).unwrap_or("")))
        }
        ResolveResult::Unbound => Ok(""),
        ResolveResult::Unknown(_) => {
            Err(XmlRefusal::Malformed { offset, reason: "undeclared namespace prefix".into() })
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_violations_name_the_field_and_the_rule_never_the_value() {
        let hint = |reason: &str| {
            XmlRefusal::Invalid { offset: 0, reason: reason.into() }.hint().map(|(f, r)| (f.to_owned(), r))
        };
        assert_eq!(
            hint("Timestamp: does not match the pattern of ZonedDateTime"),
            Some(("Timestamp".into(), "pattern"))
        );
        assert_eq!(
            hint("Purpose: not one of the values Purpose allows (enumeration)"),
            Some(("Purpose".into(), "enumeration"))
        );
        assert_eq!(hint("Data: length 9 is below the minimum of Image"), Some(("Data".into(), "length")));
        assert_eq!(hint("element Requester is incomplete; expected OfficerID"), Some(("OfficerID".into(), "missing")));
        assert_eq!(hint("element Holder is not allowed here"), Some(("Holder".into(), "unexpected")));
        assert_eq!(hint("element Data appears twice"), Some(("Data".into(), "duplicate")));
        assert_eq!(hint("no schema declares the element {urn:x}Y"), None);
        assert!(XmlRefusal::Malformed { offset: 0, reason: "x".into() }.hint().is_none());
    }

    use super::*;

    /// A slice of the message is taken from it as it is; any other bytes are checked.
    #[test]
    fn slices_of_the_message_are_taken_as_str() {
        let doc = "<a xmlns=\"urn:x\">žluť</a>";
        let part = &doc.as_bytes()[3..8];
        assert_eq!(utf8(doc, part).as_ptr(), part.as_ptr());
        assert_eq!(utf8(doc, part), "xmlns");
        let elsewhere = b"xmlns".to_vec();
        assert_eq!(utf8(doc, &elsewhere), "xmlns");
        assert_eq!(utf8(doc, &[0xC5]), "");
        assert_eq!(utf8(doc, &doc.as_bytes()[..0]), "");
    }
}
