//! Declared elements: attributes checked against their type, content followed through the
//! content model, simple values checked when the element closes (base64 as it streams), and the
//! binary fields sniffed against the `Format` their container declared.

use quick_xml::NsReader;
use quick_xml::events::BytesStart;
use quick_xml::name::ResolveResult;

use super::{ContentState, ElementFrame, Frame, Run, XmlRefusal, utf8};
use crate::xml::content::format_matches;
use crate::xml::limits::Breach;
use crate::xml::xsd::simple::{Base64Check, Builtin};
use crate::xml::xsd::{Content, Schema, TypeRef};

impl Run<'_> {
    /// The declaration of a child element where its parent's content model is now, the model
    /// stepped past it.
    pub(super) fn child_decl(&mut self, offset: usize, (ns, local): (&str, &str)) -> Result<usize, XmlRefusal> {
        let schema = self.schema;
        let Some(Frame::Element(parent)) = self.stack.last_mut() else {
            return Self::invalid(offset, "internal: not in an element");
        };
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
        Ok(decl)
    }

    /// A frame for a declared element, after checking its attributes.
    pub(super) fn element_frame(
        &mut self,
        reader: &NsReader<&[u8]>,
        offset: usize,
        e: &BytesStart<'_>,
        decl: usize,
    ) -> Result<Frame, XmlRefusal> {
        let schema = self.schema;
        let d = &schema.decls[decl];
        // Facts come from the Body's operation element only, never from a Header or a Fault.
        if self.operation_at.is_some() {
            self.facts.open(&d.local);
        }
        // A header entry may carry the envelope's own attributes (mustUnderstand, actor or
        // role, relay), which the Header's reading has checked.
        let soap_ns = match self.stack.last() {
            Some(Frame::Header) => self.version.map(|v| v.namespace().as_bytes()),
            _ => None,
        };
        let (uses, state): (&[crate::xml::xsd::AttributeUse], ContentState) = match d.ty {
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
            if let (Some(soap), ResolveResult::Bound(n)) = (soap_ns, &ans)
                && n.as_ref() == soap
                && matches!(alocal.as_ref(), b"mustUnderstand" | b"actor" | b"role" | b"relay")
            {
                continue;
            }
            let name = utf8(self.doc, alocal.into_inner());
            let qualified = !matches!(ans, ResolveResult::Unbound);
            let found = if qualified { None } else { uses.iter().position(|u| u.name == name) };
            let Some(i) = found else {
                return Self::invalid(
                    offset,
                    format!("attribute {} is not allowed on {}", utf8(self.doc, key), d.local),
                );
            };
            present |= 1 << i.min(63);
            let value = a.unescape_value().map_err(|err| XmlRefusal::Malformed { offset, reason: err.to_string() })?;
            let st = &schema.simple[uses[i].ty];
            let normalized = st
                .check(&value)
                .map_err(|reason| XmlRefusal::Invalid { offset, reason: format!("attribute {name}: {reason}") })?;
            if let Some(fixed) = &uses[i].fixed
                && normalized != fixed.as_str()
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
        Ok(Frame::Element(ElementFrame { decl, outlined: None, state, text_len: 0, format: None }))
    }

    pub(super) fn text(&mut self, offset: usize, s: &[u8]) -> Result<(), XmlRefusal> {
        // base64 text (the bulk of a message) is neither blank-checked nor screened here: its
        // own check does both.
        let streamed =
            matches!(self.stack.last(), Some(Frame::Element(ElementFrame { state: ContentState::Base64(_), .. })));
        let blank = !streamed && is_blank(s);
        if !streamed && !blank {
            super::firewall::screen(s, offset)?;
        }
        match self.stack.last_mut() {
            None => {
                if !blank {
                    return Err(XmlRefusal::Malformed { offset, reason: "text outside the root element".into() });
                }
            }
            Some(Frame::Envelope { .. } | Frame::Header | Frame::Body { .. }) => {
                if !blank {
                    return Self::invalid(offset, "text directly inside the SOAP Envelope, Header or Body");
                }
            }
            Some(Frame::Fault(_)) => {
                return self.fault_text(offset, utf8(self.doc, s), blank);
            }
            Some(Frame::Skip | Frame::DroppedEntry(_)) => {
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
                        if check.is_bad() {
                            super::firewall::screen(s, offset)?;
                        }
                    }
                    ContentState::Text => {
                        if f.text_len > self.limits.max_text_bytes {
                            return Err(XmlRefusal::Threat { offset, breach: Breach::TextBytes });
                        }
                        self.text_buf.push_str(utf8(self.doc, s));
                    }
                    ContentState::Dfa(_) | ContentState::All(_) | ContentState::Empty => {
                        if f.text_len > self.limits.max_text_bytes {
                            return Err(XmlRefusal::Threat { offset, breach: Breach::TextBytes });
                        }
                        if !blank {
                            let name = &self.schema.decls[f.decl].local;
                            return Self::invalid(offset, format!("element {name} may not contain text"));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// An element ends: its end tag is at `offset`, and ends at `after`.
    pub(super) fn end(&mut self, reader: &NsReader<&[u8]>, offset: usize, after: usize) -> Result<(), XmlRefusal> {
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
            Frame::Header | Frame::DroppedEntry(_) => self.header_end(&frame, after),
            Frame::Skip => {}
            Frame::Fault(f) => self.fault_end(reader, offset, f)?,
            Frame::Element(f) => {
                if let Some(i) = f.outlined {
                    self.outline[i].span.end = after + self.skipped;
                }
                self.end_element(offset, f)?
            }
        }
        Ok(())
    }

    pub(super) fn end_element(&mut self, offset: usize, f: ElementFrame) -> Result<(), XmlRefusal> {
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
                    let normalized = st
                        .check(&value)
                        .map_err(|reason| XmlRefusal::Invalid { offset, reason: format!("{}: {reason}", d.local) })?;
                    match st.builtin {
                        Builtin::Id if !self.ids.insert(normalized.to_string()) => {
                            return Self::invalid(offset, format!("{}: an ID that is not unique", d.local));
                        }
                        Builtin::IdRef => self.idrefs.push((offset, normalized.to_string())),
                        Builtin::Base64Binary => {
                            let mut check = Base64Check::default();
                            check.feed(normalized.as_bytes());
                            self.sniff(offset, &d.local, &check, Some(st))?;
                        }
                        _ => {}
                    }
                    if self.operation_at.is_some() && !self.facts.record(&d.local, &normalized) {
                        return Self::invalid(offset, format!("{}: longer than the audit record takes", d.local));
                    }
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
                self.sniff(offset, &d.local, &check, st)?;
            }
        }
        Ok(())
    }

    /// Checks a binary field against the `Format` its container declared, and against what its
    /// type says it holds (a card-verifiable certificate).
    pub(super) fn sniff(
        &self,
        offset: usize,
        local: &str,
        check: &Base64Check,
        st: Option<&crate::xml::xsd::simple::SimpleType>,
    ) -> Result<(), XmlRefusal> {
        if let Some(Frame::Element(parent)) = self.stack.last()
            && let Some(format) = &parent.format
            && !format_matches(format, &check.prefix)
        {
            return Err(XmlRefusal::ContentMismatch {
                offset,
                reason: format!("{local} is declared {format} but its data is not {format}"),
            });
        }
        if let (Some(st), Some(len)) = (st, check.finish()) {
            super::cvc::check(&st.name, &check.prefix, len)
                .map_err(|reason| XmlRefusal::ContentMismatch { offset, reason: format!("{local}: {reason}") })?;
        }
        Ok(())
    }
}

pub(super) fn content_of(schema: &Schema, decl: usize) -> &Content {
    static EMPTY: Content = Content::Empty;
    match schema.decls[decl].ty {
        TypeRef::Complex(c) => &schema.complex[c].content,
        TypeRef::Simple(_) => &EMPTY,
    }
}

pub(super) fn simple_state(b: Builtin, streams: bool) -> ContentState {
    if b == Builtin::Base64Binary && streams {
        ContentState::Base64(Base64Check::default())
    } else {
        ContentState::Text
    }
}

/// Whether `s` is XML white space only. Indentation between elements can be long (a padded
/// message is mostly that): 32 bytes are compared at a time, without an early exit inside a
/// chunk, so the comparison is vectorised.
fn is_blank(s: &[u8]) -> bool {
    let white = |b: &u8| (*b == b' ') | (*b == b'\t') | (*b == b'\n') | (*b == b'\r');
    let chunks = s.chunks_exact(32);
    let rest = chunks.remainder();
    for c in chunks {
        if !c.iter().fold(true, |all, b| all & white(b)) {
            return false;
        }
    }
    rest.iter().all(white)
}

#[cfg(test)]
mod tests {
    use super::is_blank;

    #[test]
    fn white_space_is_told_from_text_at_every_position() {
        assert!(is_blank(b""));
        for len in [1usize, 31, 32, 33, 64, 100, 2048] {
            let ws: Vec<u8> = (0..len).map(|i| b" \t\n\r"[i % 4]).collect();
            assert!(is_blank(&ws), "{len}");
            for at in [0, len / 2, len - 1] {
                let mut t = ws.clone();
                t[at] = b'x';
                assert!(!is_blank(&t), "{len} {at}");
                t[at] = 0x0b; // vertical tab: not XML white space
                assert!(!is_blank(&t), "{len} {at}");
            }
        }
    }
}
