//! Reads a SOAP message once, without building a tree: checks that it is well-formed UTF-8
//! XML, refuses what no SOAP message here may carry (DTDs, processing instructions, entity
//! references other than the predefined ones), checks the envelope's shape (optional Header,
//! one Body holding exactly one element) and pulls out the operation and its message ID.
//!
//! This is the spine's XML stage. The full XML firewall (configurable limits per route) and the
//! XSD validator build on the same single pass.

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};

pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";

/// Deeper nesting than this is refused as a threat before any later stage sees it.
pub const MAX_DEPTH: usize = 64;
/// Message IDs longer than this are not taken (they would only serve to flood logs).
const MAX_MESSAGE_ID: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoapVersion {
    V11,
    V12,
}

impl SoapVersion {
    pub fn namespace(self) -> &'static str {
        match self {
            SoapVersion::V11 => SOAP11_NS,
            SoapVersion::V12 => SOAP12_NS,
        }
    }
}

/// What the gateway needs from a request or reply before forwarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub version: SoapVersion,
    /// Namespace URI of the Body's element.
    pub namespace: String,
    /// Local name of the Body's element: the operation.
    pub operation: String,
    /// `MessageID` / `messageID` directly inside the operation element, when present and short.
    pub message_id: Option<String>,
}

/// Why a message was refused. The client is told only the category; the detail goes to logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not well-formed: {0}")]
    Malformed(String),
    #[error("hostile construct: {0}")]
    Threat(&'static str),
    #[error("not a valid SOAP envelope: {0}")]
    NotSoap(&'static str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Prolog,
    /// Inside Envelope, before Header/Body.
    Envelope,
    /// Header seen, Body not yet.
    AfterHeader,
    /// Inside Body, operation element not yet seen.
    Body,
    /// Inside Body, operation element seen.
    BodyHasOperation,
    /// Body closed.
    AfterBody,
    /// Envelope closed.
    Epilog,
}

const PREDEFINED: [&str; 5] = ["lt", "gt", "amp", "apos", "quot"];

/// Reads `body` in one pass.
pub fn read_envelope(body: &[u8]) -> Result<Envelope, EnvelopeError> {
    let body = match body {
        [0xEF, 0xBB, 0xBF, rest @ ..] => rest,
        [0xFE, 0xFF, ..] | [0xFF, 0xFE, ..] => return Err(EnvelopeError::Malformed("UTF-16 is not accepted".into())),
        b => b,
    };
    let text = std::str::from_utf8(body)
        .map_err(|e| EnvelopeError::Malformed(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    let mut reader = NsReader::from_str(text);
    let cfg = reader.config_mut();
    cfg.check_end_names = true;
    cfg.check_comments = true;
    cfg.allow_unmatched_ends = false;

    let mut stage = Stage::Prolog;
    let mut depth = 0usize;
    let mut version = None;
    let mut operation: Option<(String, String)> = None;
    let mut message_id = None;
    // Set while inside a MessageID element directly under the operation element.
    let mut in_message_id = false;
    let mut seen_decl = false;
    let mut seen_anything = false;

    loop {
        let (ns, event) = reader.read_resolved_event().map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        match event {
            Event::Decl(decl) => {
                if seen_decl || seen_anything {
                    return Err(EnvelopeError::Malformed("XML declaration not at the start".into()));
                }
                seen_decl = true;
                if let Some(enc) = decl.encoding() {
                    let enc = enc.map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
                    if !enc.eq_ignore_ascii_case(b"utf-8") {
                        return Err(EnvelopeError::Malformed("declared encoding is not UTF-8".into()));
                    }
                }
            }
            Event::DocType(_) => return Err(EnvelopeError::Threat("DOCTYPE")),
            Event::PI(_) => return Err(EnvelopeError::Threat("processing instruction")),
            Event::GeneralRef(r) => {
                if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(_)) => {}
                        _ => return Err(EnvelopeError::Malformed("invalid character reference".into())),
                    }
                } else {
                    let name = r.decode().map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
                    if !PREDEFINED.contains(&name.as_ref()) {
                        return Err(EnvelopeError::Threat("entity reference"));
                    }
                }
                if depth == 0 {
                    return Err(EnvelopeError::Malformed("reference outside the root element".into()));
                }
                if in_message_id {
                    // A message ID is a token; references in it are not worth decoding.
                    message_id = None;
                    in_message_id = false;
                }
            }
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_empty = matches!(event, Event::Empty(_));
                seen_anything = true;
                check_attributes(e)?;
                let ns = namespace_of(&ns)?;
                let local = std::str::from_utf8(e.local_name().into_inner())
                    .map_err(|_| EnvelopeError::Malformed("name is not UTF-8".into()))?;
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(EnvelopeError::Threat("element nesting too deep"));
                }
                match (stage, depth) {
                    (Stage::Prolog, 1) => {
                        version = Some(match (ns, local) {
                            (Some(SOAP11_NS), "Envelope") => SoapVersion::V11,
                            (Some(SOAP12_NS), "Envelope") => SoapVersion::V12,
                            _ => return Err(EnvelopeError::NotSoap("the root element is not a SOAP Envelope")),
                        });
                        stage = Stage::Envelope;
                        if is_empty {
                            return Err(EnvelopeError::NotSoap("the Envelope has no Body"));
                        }
                    }
                    (Stage::Epilog, _) => {
                        return Err(EnvelopeError::Malformed("content after the root element".into()));
                    }
                    (Stage::Envelope | Stage::AfterHeader | Stage::AfterBody, 2) => {
                        let soap_ns = version.map(SoapVersion::namespace);
                        if ns != soap_ns {
                            return Err(EnvelopeError::NotSoap("unexpected element in the Envelope"));
                        }
                        match (stage, local) {
                            (Stage::Envelope, "Header") => stage = Stage::AfterHeader,
                            (Stage::Envelope | Stage::AfterHeader, "Body") => {
                                if is_empty {
                                    return Err(EnvelopeError::NotSoap("the Body is empty"));
                                }
                                stage = Stage::Body;
                            }
                            (Stage::AfterBody, "Body") => return Err(EnvelopeError::NotSoap("more than one Body")),
                            _ => return Err(EnvelopeError::NotSoap("unexpected element in the Envelope")),
                        }
                    }
                    (Stage::Body, 3) => {
                        let Some(ns) = ns else {
                            return Err(EnvelopeError::NotSoap("the operation element has no namespace"));
                        };
                        operation = Some((ns.to_owned(), local.to_owned()));
                        stage = Stage::BodyHasOperation;
                    }
                    (Stage::BodyHasOperation, 3) => {
                        return Err(EnvelopeError::NotSoap("the Body holds more than one element"));
                    }
                    (Stage::BodyHasOperation, 4) => {
                        let op_ns = operation.as_ref().map(|(n, _)| n.as_str());
                        in_message_id = !is_empty
                            && message_id.is_none()
                            && ns == op_ns
                            && (local == "MessageID" || local == "messageID");
                    }
                    _ => {}
                }
                if is_empty {
                    depth -= 1;
                }
            }
            Event::End(_) => {
                in_message_id = false;
                match (stage, depth) {
                    (Stage::AfterHeader | Stage::Envelope, 2) => {}
                    (Stage::Body, 2) => return Err(EnvelopeError::NotSoap("the Body is empty")),
                    (Stage::BodyHasOperation, 2) => stage = Stage::AfterBody,
                    (Stage::AfterBody, 1) => stage = Stage::Epilog,
                    (Stage::Envelope | Stage::AfterHeader, 1) => {
                        return Err(EnvelopeError::NotSoap("the Envelope has no Body"));
                    }
                    _ => {}
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) => {
                let raw = t.into_inner();
                let blank = raw.iter().all(|b| b.is_ascii_whitespace());
                if !blank {
                    if depth == 0 {
                        return Err(EnvelopeError::Malformed("text outside the root element".into()));
                    }
                    if matches!(stage, Stage::Envelope | Stage::AfterHeader | Stage::Body | Stage::AfterBody)
                        && depth <= 2
                    {
                        return Err(EnvelopeError::NotSoap("text directly in the Envelope or Body"));
                    }
                }
                if in_message_id {
                    let s =
                        std::str::from_utf8(&raw).map_err(|_| EnvelopeError::Malformed("text is not UTF-8".into()))?;
                    let s = s.trim();
                    if !s.is_empty() && s.len() <= MAX_MESSAGE_ID {
                        message_id = Some(s.to_owned());
                    }
                }
            }
            Event::CData(_) => {
                if depth == 0 {
                    return Err(EnvelopeError::Malformed("CDATA outside the root element".into()));
                }
                in_message_id = false;
            }
            Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    match (stage, version, operation) {
        (Stage::Epilog, Some(version), Some((namespace, operation))) => {
            Ok(Envelope { version, namespace, operation, message_id })
        }
        (Stage::Prolog, _, _) => Err(EnvelopeError::Malformed("no root element".into())),
        _ => Err(EnvelopeError::Malformed("the document ends inside an element".into())),
    }
}

fn namespace_of<'a>(ns: &'a ResolveResult<'_>) -> Result<Option<&'a str>, EnvelopeError> {
    match ns {
        ResolveResult::Bound(Namespace(n)) => {
            std::str::from_utf8(n).map(Some).map_err(|_| EnvelopeError::Malformed("namespace is not UTF-8".into()))
        }
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(_) => Err(EnvelopeError::Malformed("undeclared namespace prefix".into())),
    }
}

fn check_attributes(e: &BytesStart<'_>) -> Result<(), EnvelopeError> {
    for attr in e.attributes().with_checks(true) {
        let attr = attr.map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        // Attribute values may hold references too: the same rule applies.
        let mut rest: &[u8] = &attr.value;
        while let Some(pos) = rest.iter().position(|&b| b == b'&') {
            let after = &rest[pos + 1..];
            let end = after
                .iter()
                .position(|&b| b == b';')
                .ok_or_else(|| EnvelopeError::Malformed("unterminated reference in an attribute".into()))?;
            let name = &after[..end];
            let ok_char = name.first() == Some(&b'#');
            let ok_named = PREDEFINED.iter().any(|p| p.as_bytes() == name);
            if !ok_char && !ok_named {
                return Err(EnvelopeError::Threat("entity reference"));
            }
            rest = &after[end + 1..];
        }
        if attr.value.contains(&b'<') {
            return Err(EnvelopeError::Malformed("'<' in an attribute value".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header/><s:Body>
<VerifyFingerprintRequest xmlns="urn:spocgw:bio:1"><MessageID>abc-1</MessageID><X a="&amp;">1 &lt; 2</X></VerifyFingerprintRequest>
</s:Body></s:Envelope>"#;

    #[test]
    fn reads_operation_and_message_id() {
        let e = read_envelope(OK.as_bytes()).unwrap();
        assert_eq!(e.version, SoapVersion::V11);
        assert_eq!(e.operation, "VerifyFingerprintRequest");
        assert_eq!(e.namespace, "urn:spocgw:bio:1");
        assert_eq!(e.message_id.as_deref(), Some("abc-1"));
    }

    fn err(s: &str) -> EnvelopeError {
        read_envelope(s.as_bytes()).unwrap_err()
    }

    #[test]
    fn refuses_hostile_and_broken() {
        let env = |inner: &str| format!("<s:Envelope xmlns:s=\"{SOAP12_NS}\"><s:Body>{inner}</s:Body></s:Envelope>");
        assert!(matches!(
            err(&format!("<!DOCTYPE x [<!ENTITY a \"b\">]>{}", env("<a xmlns=\"u\"/>"))),
            EnvelopeError::Threat(_)
        ));
        assert!(matches!(err(&env("<a xmlns=\"u\">&xxe;</a>")), EnvelopeError::Threat(_)));
        assert!(matches!(err(&env("<?pi x?><a xmlns=\"u\"/>")), EnvelopeError::Threat(_)));
        assert!(matches!(err(&env("<a xmlns=\"u\"><b></a>")), EnvelopeError::Malformed(_)));
        assert!(matches!(err(&env("<a xmlns=\"u\"/><b xmlns=\"u\"/>")), EnvelopeError::NotSoap(_)));
        assert!(matches!(err(&env("")), EnvelopeError::NotSoap(_)));
        assert!(matches!(err("<a/>"), EnvelopeError::NotSoap(_)));
        assert!(matches!(err(&format!("{}<x/>", env("<a xmlns=\"u\"/>"))), EnvelopeError::Malformed(_)));
        assert!(matches!(err(&env("<p:a/>")), EnvelopeError::Malformed(_)));
        assert!(matches!(read_envelope(b"<a>\xff</a>").unwrap_err(), EnvelopeError::Malformed(_)));
        assert!(matches!(err(&env("<a xmlns=\"u\">")), EnvelopeError::Malformed(_)));
        let deep = format!("{}{}", "<a xmlns=\"u\">".repeat(100), "</a>".repeat(100));
        assert!(matches!(err(&env(&deep)), EnvelopeError::Threat(_)));
        let two_bodies = format!(
            "<s:Envelope xmlns:s=\"{SOAP12_NS}\"><s:Body><a xmlns=\"u\"/></s:Body><s:Body><a xmlns=\"u\"/></s:Body></s:Envelope>"
        );
        assert!(matches!(err(&two_bodies), EnvelopeError::NotSoap(_)));
        assert!(matches!(
            err(&format!("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>{}", env("<a xmlns=\"u\"/>"))),
            EnvelopeError::Malformed(_)
        ));
    }
}
