//! The routes of CONTRACT.md section 3: which listener accepts which path, which operations
//! (Body elements, by namespace and local name) each path carries, and where it forwards.

use super::config::{RouteLimits, XmlConfig, clark_name};
use crate::config::RouteName;
use crate::xml::SoapVersion;
use crate::xml::limits::Limits;

pub const BIO_NS: &str = "urn:spocgw:bio:1";
pub const CSN_NS: &str = "http://namespaces.unmz.cz/csn369791";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    Police,
    Callback,
}

impl ListenerKind {
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Police => "police",
            ListenerKind::Callback => "callback",
        }
    }
}

/// An operation the gateway carries (CONTRACT.md section 3), by the element its request's Body
/// holds; and the service description (a WSDL or schema) asked for with GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    VerifyFingerprint,
    CheckIdentity,
    RequestCertificate,
    GetCACertificates,
    GeneralMessage,
    SendCertificates,
    ServiceDescription,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 7] = [
        Operation::VerifyFingerprint,
        Operation::CheckIdentity,
        Operation::RequestCertificate,
        Operation::GetCACertificates,
        Operation::GeneralMessage,
        Operation::SendCertificates,
        Operation::ServiceDescription,
    ];

    /// The request's Body element (its local name), as policies, records and metrics name the
    /// operation.
    pub const fn element(self) -> &'static str {
        match self {
            Operation::VerifyFingerprint => "VerifyFingerprintRequest",
            Operation::CheckIdentity => "CheckIdentityRequest",
            Operation::RequestCertificate => "RequestCertificateRequest",
            Operation::GetCACertificates => "GetCACertificatesRequest",
            Operation::GeneralMessage => "GeneralMessage",
            Operation::SendCertificates => "SendCertificatesRequest",
            Operation::ServiceDescription => "ServiceDescription",
        }
    }

    /// The name on record and in metrics: the element, or `unknown` before the Body was read.
    pub fn label(op: Option<Operation>) -> &'static str {
        op.map_or("unknown", Operation::element)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    Ministry,
    PoliceCallback,
}

impl UpstreamKind {
    /// The upstream's name in metrics and records.
    pub const fn name(self) -> &'static str {
        match self {
            UpstreamKind::Ministry => "ministry",
            UpstreamKind::PoliceCallback => "police_callback",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Short name for metrics and logs.
    pub name: &'static str,
    pub listener: ListenerKind,
    pub path: &'static str,
    pub namespace: &'static str,
    pub operations: &'static [Operation],
    pub upstream: UpstreamKind,
    pub max_body: usize,
    /// The XML firewall's limits for this route (requests and replies).
    pub limits: Limits,
    /// (namespace, operation) pairs, for the validator.
    pub requests: Vec<(&'static str, &'static str)>,
    /// (namespace, reply element) pairs.
    pub replies: Vec<(&'static str, String)>,
    /// SOAP Header entries let through in requests and in replies, as (namespace, local name).
    pub request_headers: Vec<(String, String)>,
    pub reply_headers: Vec<(String, String)>,
}

/// The reply element of an operation: `XRequest` -> `XResponse`, `X` -> `XResponse`.
pub fn reply_element(operation: &str) -> String {
    format!("{}Response", operation.strip_suffix("Request").unwrap_or(operation))
}

impl Route {
    /// The reply element this route's upstream may answer `operation` with.
    pub fn reply_pairs(&self, operation: Operation) -> Option<(&'static str, &str)> {
        let expected = reply_element(operation.element());
        self.replies.iter().find(|(_, r)| *r == expected).map(|(n, r)| (*n, r.as_str()))
    }

    /// The operation whose request element this is, if this route carries it.
    pub fn operation(&self, namespace: &str, local: &str) -> Option<Operation> {
        if namespace != self.namespace {
            return None;
        }
        self.operations.iter().copied().find(|op| op.element() == local)
    }
}

/// All routes, fixed by the contract; only their limits come from configuration.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(limits: &RouteLimits, xml: &XmlConfig) -> Self {
        let mut table = Self {
            routes: vec![
                Route {
                    name: RouteName::BioV1.as_str(),
                    listener: ListenerKind::Police,
                    path: "/bio/v1",
                    namespace: BIO_NS,
                    operations: &[Operation::VerifyFingerprint, Operation::CheckIdentity],
                    upstream: UpstreamKind::Ministry,
                    max_body: limits.bio_max_body_bytes,
                    limits: Limits::default(),
                    requests: Vec::new(),
                    replies: Vec::new(),
                    request_headers: Vec::new(),
                    reply_headers: Vec::new(),
                },
                Route {
                    name: RouteName::Csn369791.as_str(),
                    listener: ListenerKind::Police,
                    path: "/spoc/csn369791",
                    namespace: CSN_NS,
                    operations: &[
                        Operation::RequestCertificate,
                        Operation::GetCACertificates,
                        Operation::GeneralMessage,
                    ],
                    upstream: UpstreamKind::Ministry,
                    max_body: limits.csn_max_body_bytes,
                    limits: Limits::default(),
                    requests: Vec::new(),
                    replies: Vec::new(),
                    request_headers: Vec::new(),
                    reply_headers: Vec::new(),
                },
                Route {
                    name: RouteName::Csn369791Callback.as_str(),
                    listener: ListenerKind::Callback,
                    path: "/spoc/csn369791",
                    namespace: CSN_NS,
                    operations: &[Operation::SendCertificates],
                    upstream: UpstreamKind::PoliceCallback,
                    max_body: limits.callback_max_body_bytes,
                    limits: Limits::default(),
                    requests: Vec::new(),
                    replies: Vec::new(),
                    request_headers: Vec::new(),
                    reply_headers: Vec::new(),
                },
            ],
        };
        let base = xml.limits.apply(&Limits::default());
        for r in &mut table.routes {
            r.limits = match xml.routes.get(r.name) {
                Some(o) => o.apply(&base),
                None => base.clone(),
            };
            r.requests = r.operations.iter().map(|op| (r.namespace, op.element())).collect();
            r.replies = r.operations.iter().map(|op| (r.namespace, reply_element(op.element()))).collect();
            if let Some(allow) = xml.headers.get(r.name) {
                r.request_headers = allow.request.iter().filter_map(|n| clark_name(n)).collect();
                r.reply_headers = allow.reply.iter().filter_map(|n| clark_name(n)).collect();
            }
        }
        table
    }

    /// The first header entry a route lets through that `schema` does not declare (so could
    /// not validate), as (route, `{namespace}local`).
    pub fn undeclared_header(&self, schema: &crate::xml::xsd::Schema) -> Option<(&'static str, String)> {
        self.routes.iter().find_map(|r| {
            r.request_headers
                .iter()
                .chain(&r.reply_headers)
                .find(|(ns, local)| schema.global(ns, local).is_none())
                .map(|(ns, local)| (r.name, format!("{{{ns}}}{local}")))
        })
    }

    pub fn lookup(&self, listener: ListenerKind, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.listener == listener && r.path == path)
    }
}

/// The SOAP version and action a `Content-Type` declares, if it is one we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapMediaType {
    pub version: SoapVersion,
    /// The SOAP 1.2 `action` parameter.
    pub action: Option<String>,
}

/// Why a Content-Type is not one the gateway accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MediaTypeError {
    #[error("content type is not SOAP 1.1 (text/xml) or SOAP 1.2 (application/soap+xml)")]
    NotSoap,
    #[error("charset is not UTF-8")]
    Charset,
    #[error("a content type parameter appears twice")]
    Repeated,
    #[error("malformed content type parameters")]
    Malformed,
}

/// Parses a Content-Type: `text/xml` (SOAP 1.1) or `application/soap+xml` (SOAP 1.2), with no
/// charset or `charset=utf-8`. Parameters are read as RFC 9110 says (`name=token` or a quoted
/// string with backslash escapes, names in any case); one that appears twice is refused, so
/// that two readers of the same header cannot see two actions. Other parameters are ignored:
/// the gateway forwards a Content-Type it writes itself ([`SoapMediaType::forwarded`]).
///
/// # Errors
/// A media type other than SOAP 1.1's or 1.2's, a charset other than UTF-8, or a parameter given
/// twice.
pub fn parse_content_type(value: &str) -> Result<SoapMediaType, MediaTypeError> {
    let (mime, mut rest) = value.split_once(';').unwrap_or((value, ""));
    let mime = mime.trim_matches([' ', '\t']);
    let version = if mime.eq_ignore_ascii_case("text/xml") {
        SoapVersion::V11
    } else if mime.eq_ignore_ascii_case("application/soap+xml") {
        SoapVersion::V12
    } else {
        return Err(MediaTypeError::NotSoap);
    };
    let mut seen: Vec<String> = Vec::new();
    let mut action = None;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            break;
        }
        let (name, after) = rest.split_once('=').ok_or(MediaTypeError::Malformed)?;
        let name = name.trim_end_matches([' ', '\t']).to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(MediaTypeError::Malformed);
        }
        let (v, after) = parameter_value(after)?;
        rest = after;
        if seen.contains(&name) {
            return Err(MediaTypeError::Repeated);
        }
        match name.as_str() {
            "charset" if !v.eq_ignore_ascii_case("utf-8") => return Err(MediaTypeError::Charset),
            "action" if version == SoapVersion::V12 => action = Some(v),
            _ => {}
        }
        seen.push(name);
    }
    Ok(SoapMediaType { version, action })
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A parameter's value at the start of `s` (a token or a quoted string), and what follows it
/// up to the next `;`.
fn parameter_value(s: &str) -> Result<(String, &str), MediaTypeError> {
    let s = s.trim_start_matches([' ', '\t']);
    let (value, after) = if let Some(quoted) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(MediaTypeError::Malformed),
                Some((i, '"')) => break i + 1,
                Some((_, '\\')) => value.push(chars.next().ok_or(MediaTypeError::Malformed)?.1),
                Some((_, c)) => value.push(c),
            }
        };
        (value, &quoted[end..])
    } else {
        // Unquoted: a token, leniently (clients send `action=urn:x/Op` unquoted, though `:`
        // and `/` are not token characters): visible ASCII but quotes and backslashes.
        let end = s.find([';', ' ', '\t']).unwrap_or(s.len());
        if end == 0 || !s[..end].bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            return Err(MediaTypeError::Malformed);
        }
        (s[..end].to_owned(), &s[end..])
    };
    let after = after.trim_start_matches([' ', '\t']);
    if !after.is_empty() && !after.starts_with(';') {
        return Err(MediaTypeError::Malformed);
    }
    Ok((value, after))
}

impl SoapMediaType {
    /// The Content-Type the gateway forwards: written from what it checked, never copied.
    /// `action` is the SOAP 1.2 action the caller gave (checked to name the operation).
    pub fn forwarded(version: SoapVersion, action: Option<&str>) -> std::borrow::Cow<'static, str> {
        match (version, action) {
            (SoapVersion::V12, Some(a)) => format!("{}; action=\"{a}\"", version.content_type()).into(),
            _ => version.content_type().into(),
        }
    }
}

/// True when a SOAPAction (or SOAP 1.2 `action`) names the operation: the Body element's local
/// name or the WSDL operation's (the element's without `Request`, as deployed CSN 36 9791 WSDLs
/// write `soapAction="RequestCertificate"`), alone or after the namespace and `/` or `#`. Quotes
/// are ignored. An empty action names nothing: the caller lets the Body decide.
pub fn action_agrees(action: &str, namespace: &str, operation: &str) -> bool {
    let a = action.trim().trim_matches('"');
    let named = |op: &str| op == operation || operation.strip_suffix("Request") == Some(op);
    if named(a) {
        return true;
    }
    a.strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix('/').or_else(|| rest.strip_prefix('#')))
        .is_some_and(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(parse_content_type("text/xml; charset=utf-8").map(|m| m.version), Ok(SoapVersion::V11));
        assert_eq!(parse_content_type("text/xml").map(|m| m.version), Ok(SoapVersion::V11));
        assert_eq!(parse_content_type("text/xml; charset=iso-8859-1"), Err(MediaTypeError::Charset));
        assert_eq!(parse_content_type("application/json"), Err(MediaTypeError::NotSoap));
        let m = parse_content_type("application/soap+xml; charset=UTF-8; action=\"urn:x/Op\"").unwrap();
        assert_eq!(m.version, SoapVersion::V12);
        assert_eq!(m.action.as_deref(), Some("urn:x/Op"));
        // A semicolon inside a quoted value does not start a parameter.
        let m = parse_content_type("application/soap+xml;action=\"urn:x/Op;charset=latin1\";charset=utf-8").unwrap();
        assert_eq!(m.action.as_deref(), Some("urn:x/Op;charset=latin1"));
        let m = parse_content_type("application/soap+xml; action=urn:x/Op").unwrap();
        assert_eq!(m.action.as_deref(), Some("urn:x/Op"));
    }

    /// Two readers of a header with a repeated parameter could take different ones.
    #[test]
    fn repeated_or_malformed_parameters_are_refused() {
        for ct in [
            "application/soap+xml; charset=utf-8; action=\"urn:a/VerifyFingerprintRequest\"; action=\"CheckIdentityRequest\"",
            "application/soap+xml; ACTION=\"a\"; action=\"b\"",
            "text/xml; charset=utf-8; charset=utf-8",
        ] {
            assert_eq!(parse_content_type(ct), Err(MediaTypeError::Repeated), "{ct}");
        }
        for ct in [
            "text/xml; charset",
            "application/soap+xml; action=\"unterminated",
            "application/soap+xml; action=\"a\"x",
            "text/xml; =utf-8",
            "text/xml; char set=utf-8",
        ] {
            assert_eq!(parse_content_type(ct), Err(MediaTypeError::Malformed), "{ct}");
        }
        assert_eq!(
            SoapMediaType::forwarded(SoapVersion::V12, Some("urn:x/Op")),
            "application/soap+xml; charset=utf-8; action=\"urn:x/Op\""
        );
    }

    #[test]
    fn actions() {
        assert!(action_agrees("\"RequestCertificateRequest\"", CSN_NS, "RequestCertificateRequest"));
        assert!(action_agrees("RequestCertificate", CSN_NS, "RequestCertificateRequest"));
        assert!(action_agrees("\"GeneralMessage\"", CSN_NS, "GeneralMessage"));
        assert!(!action_agrees("GetCACertificates", CSN_NS, "RequestCertificateRequest"));
        assert!(!action_agrees("Request", CSN_NS, "RequestCertificateRequest"));
        assert!(action_agrees("urn:spocgw:bio:1/CheckIdentityRequest", BIO_NS, "CheckIdentityRequest"));
        assert!(action_agrees("urn:spocgw:bio:1#CheckIdentityRequest", BIO_NS, "CheckIdentityRequest"));
        assert!(!action_agrees("VerifyFingerprintRequest", BIO_NS, "CheckIdentityRequest"));
        assert!(!action_agrees("", BIO_NS, "CheckIdentityRequest"));
    }
}
