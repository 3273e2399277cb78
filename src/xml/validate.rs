//! The streaming validator: one pass of quick-xml over a message, no tree. The same pass
//! enforces the firewall's limits and refusals, reads the SOAP envelope (1.1 or 1.2: Header
//! entries that must be understood are refused, the Body holds exactly one element), validates
//! the operation element against the compiled schemas, checks base64 fields as they stream and
//! sniffs their leading bytes against the declared format, and collects the message facts.
//!
//! Memory is bounded by the limits: the stack by `max_depth`, text buffers by
//! `max_text_bytes`; base64 fields are never buffered.

use std::collections::HashSet;

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};

use super::content::format_matches;
use super::envelope::{SOAP11_NS, SOAP12_NS, SoapVersion};
use super::facts::MessageFacts;
use super::firewall::{Breach, Limits};
use super::xsd::simple::{Base64Check, Builtin};
use super::xsd::{Content, Schema, TypeRef};

const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
const PREDEFINED: [(&str, &str); 5] = [("lt", "<"), ("gt", ">"), ("amp", "&"), ("apos", "'"), ("quot", "\"")];

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

/// What the caller expects at the top of the message.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// A SOAP envelope whose Body holds one of these (namespace, local name) elements; a SOAP
    /// Fault is accepted when `fault_ok`.
    Soap { operations: &'a [(&'a str, &'a str)], fault_ok: bool },
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
}

enum Frame {
    Envelope {
        has_header: bool,
        has_body: bool,
    },
    Header,
    Body {
        has_operation: bool,
    },
    /// Content the gateway does not validate (header entries, a Fault); limits still apply.
    Skip,
    Element(ElementFrame),
}

struct ElementFrame {
    decl: usize,
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
}

/// Validates `body` against `schema` under `limits`.
pub fn validate(schema: &Schema, limits: &Limits, body: &[u8], expect: Expect<'_>) -> Result<Validated, XmlRefusal> {
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
    };
    run.go(text, expect)
}

fn utf8(b: &[u8]) -> &str {
    // The whole message was checked to be UTF-8 and quick-xml splits only at ASCII bytes.
    std::str::from_utf8(b).unwrap_or("")
}

impl<'s> Run<'s> {
    fn go(&mut self, text: &str, expect: Expect<'_>) -> Result<Validated, XmlRefusal> {
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
                        reason: e.to_string(),
                    });
                }
            };
            match event {
                Event::Decl(d) => {
                    if seen_decl || self.elements > 0 || offset > 0 {
                        return Err(XmlRefusal::Malformed {
                            offset,
                            reason: "XML declaration not at the start".into(),
                        });
                    }
                    seen_decl = true;
                    check_declaration(utf8(&d), offset)?;
                }
                Event::DocType(_) => return Err(XmlRefusal::Threat { offset, breach: Breach::Dtd }),
                Event::PI(_) => return Err(XmlRefusal::Threat { offset, breach: Breach::ProcessingInstruction }),
                Event::Comment(c) => {
                    self.comment_bytes += c.len();
                    if self.comment_bytes > self.limits.max_comment_bytes {
                        return Err(XmlRefusal::Threat { offset, breach: Breach::CommentBytes });
                    }
                }
                Event::GeneralRef(r) => {
                    let resolved: String = if r.is_char_ref() {
                        match r.resolve_char_ref() {
                            Ok(Some(c)) => c.to_string(),
                            _ => {
                                return Err(XmlRefusal::Malformed {
                                    offset,
                                    reason: "invalid character reference".into(),
                                });
                            }
                        }
                    } else {
                        let name = utf8(&r);
                        match PREDEFINED.iter().find(|(n, _)| *n == name) {
                            Some((_, v)) => (*v).to_owned(),
                            None => return Err(XmlRefusal::Threat { offset, breach: Breach::EntityReference }),
                        }
                    };
                    let r = self.text(offset, resolved.as_bytes());
                    self.settle(r)?;
                }
                Event::Text(t) => {
                    let raw = t.into_inner();
                    let r = self.text(offset, &raw);
                    self.settle(r)?;
                }
                Event::CData(c) => {
                    let raw = c.into_inner();
                    if self.stack.is_empty() {
                        return Err(XmlRefusal::Malformed { offset, reason: "CDATA outside the root element".into() });
                    }
                    let r = self.text(offset, &raw);
                    self.settle(r)?;
                }
                Event::Start(ref e) | Event::Empty(ref e) => {
                    let empty = matches!(event, Event::Empty(_));
                    let (ns, local) = reader.resolve_element(e.name());
                    let (ns, local) = (namespace(&ns, offset)?, utf8(local.into_inner()));
                    let depth = self.stack.len();
                    let r = self.start(&reader, offset, e, ns, local, expect);
                    if r.is_err() && self.stack.len() == depth {
                        // keep the element's place so its end tag balances
                        self.push(Frame::Skip);
                    }
                    self.settle(r)?;
                    if empty {
                        let r = self.end(offset);
                        self.settle(r)?;
                    }
                }
                Event::End(_) => {
                    let r = self.end(offset);
                    self.settle(r)?;
                }
                Event::Eof => break,
            }
        }
        if !self.stack.is_empty() {
            return Err(XmlRefusal::Malformed {
                offset: text.len(),
                reason: "the document ends inside an element".into(),
            });
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let Some((namespace, operation)) = self.operation.take() else {
            return Err(XmlRefusal::Malformed { offset: text.len(), reason: "no root element".into() });
        };
        for (offset, r) in &self.idrefs {
            if !self.ids.contains(r) {
                return Err(XmlRefusal::Invalid { offset: *offset, reason: format!("IDREF {r:?} names no ID") });
            }
        }
        Ok(Validated { version: self.version, namespace, operation, facts: std::mem::take(&mut self.facts) })
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

    /// Firewall checks common to every start tag.
    fn firewall_start(
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
        let schema = self.schema;
        let frame = match self.stack.last_mut() {
            None => {
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
                        Frame::Envelope { has_header: false, has_body: false }
                    }
                    (None, Expect::Any) => {
                        let Some(decl) = self.schema.global(ns, local) else {
                            return Self::invalid(offset, format!("no schema declares the element {{{ns}}}{local}"));
                        };
                        self.operation = Some((ns.to_owned(), local.to_owned()));
                        self.element_frame(reader, offset, e, decl)?
                    }
                    (None, Expect::Soap { .. }) => {
                        return Self::invalid(offset, "the root element is not a SOAP Envelope");
                    }
                }
            }
            Some(Frame::Envelope { has_header, has_body }) => {
                let soap_ns = self.version.map(SoapVersion::namespace).unwrap_or_default();
                if ns != soap_ns {
                    return Self::invalid(offset, format!("unexpected element {local} in the Envelope"));
                }
                match local {
                    "Header" if !*has_header && !*has_body => {
                        *has_header = true;
                        Frame::Header
                    }
                    "Body" if !*has_body => {
                        *has_body = true;
                        Frame::Body { has_operation: false }
                    }
                    "Body" => return Self::invalid(offset, "more than one Body"),
                    _ => return Self::invalid(offset, format!("unexpected element {local} in the Envelope")),
                }
            }
            Some(Frame::Header) => {
                // A header entry: refused if it must be understood (we understand none), or if
                // it is a SOAP element (a Body hidden in the Header).
                let soap_ns = self.version.map(SoapVersion::namespace).unwrap_or_default();
                if ns == soap_ns {
                    return Self::invalid(offset, format!("SOAP element {local} inside the Header"));
                }
                for a in e.attributes().flatten() {
                    let (ans, alocal) = reader.resolve_attribute(a.key);
                    if matches!(ans, ResolveResult::Bound(Namespace(n)) if n == soap_ns.as_bytes())
                        && alocal.as_ref() == b"mustUnderstand"
                        && matches!(a.value.as_ref(), b"1" | b"true")
                    {
                        return Self::invalid(
                            offset,
                            format!("header {local} must be understood, and the gateway does not"),
                        );
                    }
                }
                Frame::Skip
            }
            Some(Frame::Body { has_operation }) => {
                if *has_operation {
                    return Self::invalid(offset, "the Body holds more than one element");
                }
                *has_operation = true;
                let soap_ns = self.version.map(SoapVersion::namespace).unwrap_or_default();
                self.operation = Some((ns.to_owned(), local.to_owned()));
                if ns == soap_ns && local == "Fault" {
                    match expect {
                        Expect::Soap { fault_ok: true, .. } | Expect::Any => Frame::Skip,
                        Expect::Soap { .. } => {
                            return Self::invalid(offset, "a SOAP Fault where a message was expected");
                        }
                    }
                } else {
                    if let Expect::Soap { operations, .. } = expect
                        && !operations.iter().any(|(n, l)| *n == ns && *l == local)
                    {
                        return Err(XmlRefusal::UnknownOperation {
                            offset,
                            ns: ns.to_owned(),
                            local: local.to_owned(),
                        });
                    }
                    let Some(decl) = self.schema.global(ns, local) else {
                        return Self::invalid(offset, format!("no schema declares the element {{{ns}}}{local}"));
                    };
                    self.element_frame(reader, offset, e, decl)?
                }
            }
            Some(Frame::Skip) => Frame::Skip,
            Some(Frame::Element(parent)) => {
                let decl = match &mut parent.state {
                    ContentState::Dfa(state) => {
                        let Content::Elements(dfa) = &content_of(schema, parent.decl) else {
                            return Self::invalid(offset, "internal: content model mismatch");
                        };
                        match dfa.step(*state, ns, local) {
                            Some((decl, next)) => {
                                *state = next;
                                decl
                            }
                            None => {
                                let expected = dfa.expected(*state);
                                let parent_name = &schema.decls[parent.decl].local;
                                return Self::invalid(
                                    offset,
                                    if expected.is_empty() {
                                        format!(
                                            "element {local} is not allowed here in {parent_name}; no more elements expected"
                                        )
                                    } else {
                                        format!(
                                            "element {local} is not allowed here in {parent_name}; expected {}",
                                            expected.join(" or ")
                                        )
                                    },
                                );
                            }
                        }
                    }
                    ContentState::All(seen) => {
                        let Content::All { members, .. } = &content_of(schema, parent.decl) else {
                            return Self::invalid(offset, "internal: content model mismatch");
                        };
                        let Some(i) = members.iter().position(|m| m.local == local && m.ns == ns) else {
                            return Self::invalid(offset, format!("element {local} is not allowed here"));
                        };
                        if *seen & (1 << i) != 0 {
                            return Self::invalid(offset, format!("element {local} appears twice"));
                        }
                        *seen |= 1 << i;
                        members[i].decl
                    }
                    ContentState::Empty | ContentState::Text | ContentState::Base64(_) => {
                        let parent_name = &schema.decls[parent.decl].local;
                        return Self::invalid(offset, format!("element {parent_name} may not contain elements"));
                    }
                };
                self.element_frame(reader, offset, e, decl)?
            }
        };
        self.push(frame);
        Ok(())
    }

    /// A frame for a declared element, after checking its attributes.
    fn element_frame(
        &mut self,
        reader: &NsReader<&[u8]>,
        offset: usize,
        e: &BytesStart<'_>,
        decl: usize,
    ) -> Result<Frame, XmlRefusal> {
        let schema = self.schema;
        let d = &schema.decls[decl];
        self.facts.open(&d.local);
        let (uses, state): (&[super::xsd::AttributeUse], ContentState) = match d.ty {
            TypeRef::Simple(st) => (&[], simple_state(schema.simple[st].builtin, schema.simple[st].streams())),
            TypeRef::Complex(c) => {
                let ct = &schema.complex[c];
                let state = match &ct.content {
                    Content::Empty => ContentState::Empty,
                    Content::Simple(st) => simple_state(schema.simple[*st].builtin, schema.simple[*st].streams()),
                    Content::Elements(_) => ContentState::Dfa(0),
                    Content::All { .. } => ContentState::All(0),
                };
                (&ct.attributes, state)
            }
        };
        let mut present: u64 = 0;
        for a in e.attributes().flatten() {
            let key = a.key.as_ref();
            if key == b"xmlns" || key.starts_with(b"xmlns:") {
                continue;
            }
            let (ans, alocal) = reader.resolve_attribute(a.key);
            let name = utf8(alocal.into_inner());
            let qualified = !matches!(ans, ResolveResult::Unbound);
            let found = if qualified { None } else { uses.iter().position(|u| u.name == name) };
            let Some(i) = found else {
                return Self::invalid(offset, format!("attribute {} is not allowed on {}", utf8(key), d.local));
            };
            present |= 1 << i.min(63);
            let value = a.unescape_value().map_err(|err| XmlRefusal::Malformed { offset, reason: err.to_string() })?;
            let st = &schema.simple[uses[i].ty];
            st.check(&value)
                .map_err(|reason| XmlRefusal::Invalid { offset, reason: format!("attribute {name}: {reason}") })?;
            if let Some(fixed) = &uses[i].fixed
                && super::xsd::simple::normalize(&value, st.whitespace) != fixed.as_str()
            {
                return Self::invalid(offset, format!("attribute {name} must be {fixed:?}"));
            }
        }
        for (i, u) in uses.iter().enumerate() {
            if u.required && present & (1 << i.min(63)) == 0 {
                return Self::invalid(offset, format!("attribute {} is required on {}", u.name, d.local));
            }
        }
        if matches!(state, ContentState::Text) {
            self.text_buf.clear();
        }
        Ok(Frame::Element(ElementFrame { decl, state, text_len: 0, format: None }))
    }

    fn text(&mut self, offset: usize, s: &[u8]) -> Result<(), XmlRefusal> {
        let blank = || s.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        match self.stack.last_mut() {
            None => {
                if !blank() {
                    return Err(XmlRefusal::Malformed { offset, reason: "text outside the root element".into() });
                }
            }
            Some(Frame::Envelope { .. } | Frame::Header | Frame::Body { .. }) => {
                if !blank() {
                    return Self::invalid(offset, "text directly inside the SOAP Envelope, Header or Body");
                }
            }
            Some(Frame::Skip) => {
                if s.len() > self.limits.max_text_bytes {
                    return Err(XmlRefusal::Threat { offset, breach: Breach::TextBytes });
                }
            }
            Some(Frame::Element(f)) => {
                f.text_len += s.len();
                match &mut f.state {
                    ContentState::Base64(check) => {
                        if f.text_len > self.limits.max_base64_bytes {
                            return Err(XmlRefusal::Threat { offset, breach: Breach::Base64Bytes });
                        }
                        check.feed(s);
                    }
                    ContentState::Text => {
                        if f.text_len > self.limits.max_text_bytes {
                            return Err(XmlRefusal::Threat { offset, breach: Breach::TextBytes });
                        }
                        self.text_buf.push_str(utf8(s));
                    }
                    ContentState::Dfa(_) | ContentState::All(_) | ContentState::Empty => {
                        if f.text_len > self.limits.max_text_bytes {
                            return Err(XmlRefusal::Threat { offset, breach: Breach::TextBytes });
                        }
                        if !blank() {
                            let name = &self.schema.decls[f.decl].local;
                            return Self::invalid(offset, format!("element {name} may not contain text"));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn end(&mut self, offset: usize) -> Result<(), XmlRefusal> {
        self.child_counts.pop();
        let Some(frame) = self.stack.pop() else {
            return Err(XmlRefusal::Malformed { offset, reason: "unbalanced end tag".into() });
        };
        if self.stack.is_empty() {
            self.root_done = true;
        }
        match frame {
            Frame::Envelope { has_body, .. } => {
                if !has_body {
                    return Self::invalid(offset, "the Envelope has no Body");
                }
            }
            Frame::Body { has_operation } => {
                if !has_operation {
                    return Self::invalid(offset, "the Body is empty");
                }
            }
            Frame::Header | Frame::Skip => {}
            Frame::Element(f) => self.end_element(offset, f)?,
        }
        Ok(())
    }

    fn end_element(&mut self, offset: usize, f: ElementFrame) -> Result<(), XmlRefusal> {
        let schema = self.schema;
        let d = &schema.decls[f.decl];
        let simple_type = match d.ty {
            TypeRef::Simple(st) => Some(st),
            TypeRef::Complex(c) => match &schema.complex[c].content {
                Content::Simple(st) => Some(*st),
                _ => None,
            },
        };
        match f.state {
            ContentState::Dfa(state) => {
                if let Content::Elements(dfa) = content_of(schema, f.decl)
                    && !dfa.accepts(state)
                {
                    let expected = dfa.expected(state);
                    return Self::invalid(
                        offset,
                        format!("element {} is incomplete; expected {}", d.local, expected.join(" or ")),
                    );
                }
            }
            ContentState::All(seen) => {
                if let Content::All { members, optional } = content_of(schema, f.decl) {
                    let skip_all = *optional && seen == 0;
                    if !skip_all
                        && let Some(m) = members.iter().enumerate().find(|(i, m)| m.required && seen & (1 << i) == 0)
                    {
                        return Self::invalid(offset, format!("element {} is missing {}", d.local, m.1.local));
                    }
                }
            }
            ContentState::Empty => {}
            ContentState::Text => {
                let value = std::mem::take(&mut self.text_buf);
                let st = simple_type.map(|i| &schema.simple[i]);
                if let Some(st) = st {
                    st.check(&value)
                        .map_err(|reason| XmlRefusal::Invalid { offset, reason: format!("{}: {reason}", d.local) })?;
                    let normalized = super::xsd::simple::normalize(&value, st.whitespace);
                    match st.builtin {
                        Builtin::Id if !self.ids.insert(normalized.to_string()) => {
                            return Self::invalid(offset, format!("ID {normalized:?} is not unique"));
                        }
                        Builtin::IdRef => self.idrefs.push((offset, normalized.to_string())),
                        Builtin::Base64Binary => {
                            let mut check = Base64Check::default();
                            check.feed(normalized.as_bytes());
                            self.sniff(offset, &d.local, &check)?;
                        }
                        _ => {}
                    }
                    self.facts.record(&d.local, &normalized);
                    if d.local == "Format"
                        && let Some(Frame::Element(parent)) = self.stack.last_mut()
                    {
                        parent.format = Some(normalized.into_owned());
                    }
                }
                // Hand the buffer back, keeping its capacity for the next simple element.
                self.text_buf = value;
            }
            ContentState::Base64(check) => {
                let st = simple_type.map(|i| &schema.simple[i]);
                let Some(len) = check.finish() else {
                    return Self::invalid(offset, format!("{}: not valid base64", d.local));
                };
                if let Some(st) = st {
                    st.check_length(len)
                        .map_err(|reason| XmlRefusal::Invalid { offset, reason: format!("{}: {reason}", d.local) })?;
                }
                self.sniff(offset, &d.local, &check)?;
            }
        }
        Ok(())
    }

    /// Checks a binary field against the `Format` its container declared.
    fn sniff(&self, offset: usize, local: &str, check: &Base64Check) -> Result<(), XmlRefusal> {
        if let Some(Frame::Element(parent)) = self.stack.last()
            && let Some(format) = &parent.format
            && !format_matches(format, &check.prefix)
        {
            return Err(XmlRefusal::ContentMismatch {
                offset,
                reason: format!("{local} is declared {format} but its data is not {format}"),
            });
        }
        Ok(())
    }
}

fn content_of(schema: &Schema, decl: usize) -> &Content {
    static EMPTY: Content = Content::Empty;
    match schema.decls[decl].ty {
        TypeRef::Complex(c) => &schema.complex[c].content,
        TypeRef::Simple(_) => &EMPTY,
    }
}

fn simple_state(b: Builtin, streams: bool) -> ContentState {
    if b == Builtin::Base64Binary && streams {
        ContentState::Base64(Base64Check::default())
    } else {
        ContentState::Text
    }
}

fn namespace<'a>(ns: &'a ResolveResult<'_>, offset: usize) -> Result<&'a str, XmlRefusal> {
    match ns {
        ResolveResult::Bound(Namespace(n)) => Ok(utf8(n)),
        ResolveResult::Unbound => Ok(""),
        ResolveResult::Unknown(_) => {
            Err(XmlRefusal::Malformed { offset, reason: "undeclared namespace prefix".into() })
        }
    }
}

/// The XML declaration, strictly: `xml version="1.0"`, optionally `encoding="UTF-8"` and
/// `standalone`, in that order, nothing else.
fn check_declaration(content: &str, offset: usize) -> Result<(), XmlRefusal> {
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
        if name.first() != Some(&b'#') && !PREDEFINED.iter().any(|(p, _)| p.as_bytes() == name) {
            return Err(XmlRefusal::Threat { offset, breach: Breach::EntityReference });
        }
        rest = &after[end + 1..];
    }
    if value.contains(&b'<') {
        return Err(XmlRefusal::Malformed { offset, reason: "'<' in an attribute value".into() });
    }
    Ok(())
}
