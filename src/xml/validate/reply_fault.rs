//! A SOAP Fault in a reply, held to its fixed shape: SOAP 1.1 `faultcode`, `faultstring`,
//! optional `faultactor` and `detail` (unqualified, in that order); SOAP 1.2 `Code` (`Value`,
//! optional `Subcode`s), `Reason` (one or more `Text` with `xml:lang`), optional `Node`, `Role`
//! and `Detail`. Codes are QNames in the envelope's namespace with the values the SOAP
//! specifications define. A detail is empty or holds elements of the fault namespace that the
//! schemas declare (the `GatewayFault` of CONTRACT.md section 4), validated like any message
//! element. Anything else in a Fault is a validity error: nothing the gateway did not check
//! rides back inside a fault.

use quick_xml::NsReader;
use quick_xml::events::BytesStart;
use quick_xml::name::{Namespace, QName, ResolveResult};

use super::{Frame, Run, XmlRefusal};
use crate::xml::FAULT_NS;
use crate::xml::soap::SoapVersion;
use crate::xml::xsd::simple::is_ncname;

/// Where reading stands inside a Fault.
pub(super) enum FaultFrame {
    /// The Fault element (or a 1.2 `Code`/`Subcode`): the index of the next part it may hold.
    Parts { parts: &'static [Part], next: usize },
    /// SOAP 1.2 `Reason`: the `Text` elements seen.
    Reason { texts: usize },
    /// A part that holds text only, checked when it ends.
    Text(TextRule),
    /// `detail` / `Detail`.
    Detail,
}

/// How a text-only part is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TextRule {
    /// SOAP 1.1 `faultcode`: `Client`, `Server`, `VersionMismatch` or `MustUnderstand` in the
    /// envelope namespace, optionally refined by dotted names (`Client.Authentication`).
    Code11,
    /// SOAP 1.2 `Code/Value`: one of the five fault codes in the envelope namespace.
    Code12,
    /// SOAP 1.2 `Subcode/Value`: any QName whose prefix is bound.
    Subcode,
    /// `faultstring`, `Reason/Text`.
    Words,
    /// `faultactor`, `Node`, `Role`: a URI, no white space inside.
    Uri,
}

/// A part a Fault (or a 1.2 Code) may hold: its name, whether it must be there, what it is.
pub(super) struct Part {
    local: &'static str,
    required: bool,
    kind: PartKind,
}

#[derive(Clone, Copy)]
enum PartKind {
    Text(TextRule),
    Code,
    Subcode,
    Reason,
    Detail,
}

const fn part(local: &'static str, required: bool, kind: PartKind) -> Part {
    Part { local, required, kind }
}

const FAULT11: &[Part] = &[
    part("faultcode", true, PartKind::Text(TextRule::Code11)),
    part("faultstring", true, PartKind::Text(TextRule::Words)),
    part("faultactor", false, PartKind::Text(TextRule::Uri)),
    part("detail", false, PartKind::Detail),
];
const FAULT12: &[Part] = &[
    part("Code", true, PartKind::Code),
    part("Reason", true, PartKind::Reason),
    part("Node", false, PartKind::Text(TextRule::Uri)),
    part("Role", false, PartKind::Text(TextRule::Uri)),
    part("Detail", false, PartKind::Detail),
];
const CODE12: &[Part] =
    &[part("Value", true, PartKind::Text(TextRule::Code12)), part("Subcode", false, PartKind::Subcode)];
const SUBCODE12: &[Part] =
    &[part("Value", true, PartKind::Text(TextRule::Subcode)), part("Subcode", false, PartKind::Subcode)];

const CODES11: [&str; 4] = ["Client", "Server", "VersionMismatch", "MustUnderstand"];
const CODES12: [&str; 5] = ["VersionMismatch", "MustUnderstand", "DataEncodingUnknown", "Sender", "Receiver"];

/// What a start tag inside a Fault opens.
pub(super) enum Child {
    Frame(Frame),
    /// An element of a detail, declared by the schemas: validated as a message element.
    Declared(usize),
}

impl FaultFrame {
    /// The Fault element itself.
    pub(super) fn new(version: SoapVersion) -> Self {
        FaultFrame::Parts { parts: if version == SoapVersion::V11 { FAULT11 } else { FAULT12 }, next: 0 }
    }
}

impl Run<'_> {
    /// A child element of a Fault part: which frame it opens, or the refusal.
    pub(super) fn fault_child(
        &mut self,
        reader: &NsReader<&[u8]>,
        offset: usize,
        e: &BytesStart<'_>,
        (ns, local): (&str, &str),
    ) -> Result<Child, XmlRefusal> {
        let version = self.version.unwrap_or(SoapVersion::V11);
        // SOAP 1.1 names the parts unqualified, SOAP 1.2 in the envelope namespace.
        let part_ns = if version == SoapVersion::V11 { "" } else { version.namespace() };
        let Some(Frame::Fault(frame)) = self.stack.last_mut() else {
            return Self::invalid(offset, "internal: not inside a Fault");
        };
        let kind = match frame {
            FaultFrame::Parts { parts, next } => {
                let found = parts[*next..].iter().position(|p| p.local == local && ns == part_ns);
                let Some(i) = found.map(|i| i + *next) else {
                    return Self::invalid(offset, format!("element {local} is not allowed here in a SOAP Fault"));
                };
                if let Some(missing) = parts[*next..i].iter().find(|p| p.required) {
                    return Self::invalid(offset, format!("the SOAP Fault is missing {}", missing.local));
                }
                *next = i + 1;
                parts[i].kind
            }
            FaultFrame::Reason { texts } => {
                if ns != part_ns || local != "Text" {
                    return Self::invalid(offset, format!("element {local} is not allowed here in a SOAP Fault"));
                }
                *texts += 1;
                PartKind::Text(TextRule::Words)
            }
            FaultFrame::Text(_) => {
                return Self::invalid(offset, format!("element {local} is not allowed here in a SOAP Fault"));
            }
            FaultFrame::Detail => {
                return match self.schema.global(ns, local) {
                    Some(decl) if ns == FAULT_NS => Ok(Child::Declared(decl)),
                    _ => Self::invalid(offset, format!("element {local} is not allowed in a SOAP Fault detail")),
                };
            }
        };
        let is_text = matches!(kind, PartKind::Text(TextRule::Words)) && local == "Text";
        check_attributes(reader, e, offset, is_text)?;
        let frame = match kind {
            PartKind::Text(rule) => {
                self.text_buf.clear();
                FaultFrame::Text(rule)
            }
            PartKind::Code => FaultFrame::Parts { parts: CODE12, next: 0 },
            PartKind::Subcode => FaultFrame::Parts { parts: SUBCODE12, next: 0 },
            PartKind::Reason => FaultFrame::Reason { texts: 0 },
            PartKind::Detail => FaultFrame::Detail,
        };
        Ok(Child::Frame(Frame::Fault(frame)))
    }

    /// Text inside a Fault: kept for a text-only part, white space only elsewhere.
    pub(super) fn fault_text(&mut self, offset: usize, s: &str, blank: bool) -> Result<(), XmlRefusal> {
        match self.stack.last() {
            Some(Frame::Fault(FaultFrame::Text(_))) => {
                if self.text_buf.len() + s.len() > self.limits.max_text_bytes {
                    return Err(XmlRefusal::Threat { offset, breach: crate::xml::limits::Breach::TextBytes });
                }
                self.text_buf.push_str(s);
                Ok(())
            }
            _ if blank => Ok(()),
            _ => Self::invalid(offset, "text is not allowed here in a SOAP Fault"),
        }
    }

    /// A Fault part ends: required parts present, text parts well-formed.
    pub(super) fn fault_end(
        &mut self,
        reader: &NsReader<&[u8]>,
        offset: usize,
        frame: FaultFrame,
    ) -> Result<(), XmlRefusal> {
        match frame {
            FaultFrame::Parts { parts, next } => {
                if let Some(missing) = parts[next..].iter().find(|p| p.required) {
                    return Self::invalid(offset, format!("the SOAP Fault is missing {}", missing.local));
                }
            }
            FaultFrame::Reason { texts: 0 } => return Self::invalid(offset, "the SOAP Fault's Reason has no Text"),
            FaultFrame::Reason { .. } | FaultFrame::Detail => {}
            FaultFrame::Text(rule) => {
                let version = self.version.unwrap_or(SoapVersion::V11);
                if let Err(why) = check_text(reader, version, rule, &self.text_buf) {
                    return Self::invalid(offset, format!("SOAP Fault: {why}"));
                }
            }
        }
        Ok(())
    }
}

/// Fault parts carry no attributes but namespace declarations; a 1.2 `Text` carries exactly
/// its `xml:lang`.
fn check_attributes(
    reader: &NsReader<&[u8]>,
    e: &BytesStart<'_>,
    offset: usize,
    is_text: bool,
) -> Result<(), XmlRefusal> {
    let mut lang = false;
    for a in e.attributes().flatten() {
        let key = a.key.as_ref();
        if key == b"xmlns" || key.starts_with(b"xmlns:") {
            continue;
        }
        let (ns, local) = reader.resolve_attribute(a.key);
        let xml_lang = matches!(ns, ResolveResult::Bound(Namespace(n)) if n == b"http://www.w3.org/XML/1998/namespace")
            && local.as_ref() == b"lang";
        if is_text && xml_lang {
            lang = true;
            continue;
        }
        return Err(XmlRefusal::Invalid { offset, reason: "an attribute that is not allowed in a SOAP Fault".into() });
    }
    if is_text && !lang {
        return Err(XmlRefusal::Invalid { offset, reason: "a SOAP Fault's Reason Text needs xml:lang".into() });
    }
    Ok(())
}

/// Checks a text-only part's value; the reason names the rule, never the value.
fn check_text(reader: &NsReader<&[u8]>, version: SoapVersion, rule: TextRule, raw: &str) -> Result<(), &'static str> {
    let v = raw.trim_matches([' ', '\t', '\r', '\n']);
    match rule {
        TextRule::Words => Ok(()),
        TextRule::Uri => {
            if v.contains([' ', '\t', '\r', '\n']) {
                Err("a fault actor, node or role is not a URI")
            } else {
                Ok(())
            }
        }
        TextRule::Code11 | TextRule::Code12 | TextRule::Subcode => {
            let (prefix, local) = v.split_once(':').map_or(("", v), |(p, l)| (p, l));
            let lexical = (prefix.is_empty() || is_ncname(prefix)) && is_ncname(local) && !local.is_empty();
            if !lexical {
                return Err("a fault code is not a QName");
            }
            let (ns, _) = reader.resolve_element(QName(v.as_bytes()));
            let ns = match ns {
                ResolveResult::Bound(Namespace(n)) => n,
                ResolveResult::Unbound => b"".as_slice(),
                ResolveResult::Unknown(_) => return Err("a fault code's prefix is not declared"),
            };
            let envelope = version.namespace().as_bytes();
            let head = local.split('.').next().unwrap_or("");
            let refined = local.split('.').skip(1).all(is_ncname);
            match rule {
                TextRule::Code11 if ns != envelope || !CODES11.contains(&head) || !refined => {
                    Err("a fault code is not one SOAP 1.1 defines")
                }
                TextRule::Code12 if ns != envelope || !CODES12.contains(&local) => {
                    Err("a fault code is not one SOAP 1.2 defines")
                }
                _ => Ok(()),
            }
        }
    }
}
