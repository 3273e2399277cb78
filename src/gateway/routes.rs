//! The routes of CONTRACT.md section 3: which listener accepts which path, which operations
//! (Body elements, by namespace and local name) each path carries, and where it forwards.

use crate::config::{RouteLimits, XmlConfig};
use crate::xml::SoapVersion;
use crate::xml::firewall::Limits;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    Ministry,
    PoliceCallback,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Short name for metrics and logs.
    pub name: &'static str,
    pub listener: ListenerKind,
    pub path: &'static str,
    pub namespace: &'static str,
    pub operations: &'static [&'static str],
    pub upstream: UpstreamKind,
    pub max_body: usize,
    /// The XML firewall's limits for this route (requests and replies).
    pub limits: Limits,
    /// (namespace, operation) pairs, for the validator.
    pub requests: Vec<(&'static str, &'static str)>,
    /// (namespace, reply element) pairs.
    pub replies: Vec<(&'static str, String)>,
}

/// The reply element of an operation: `XRequest` -> `XResponse`, `X` -> `XResponse`.
pub fn reply_element(operation: &str) -> String {
    format!("{}Response", operation.strip_suffix("Request").unwrap_or(operation))
}

impl Route {
    /// The reply element this route's upstream may answer `operation` with.
    pub fn reply_pairs(&self, operation: &str) -> Option<(&'static str, &str)> {
        let expected = reply_element(operation);
        self.replies.iter().find(|(_, r)| *r == expected).map(|(n, r)| (*n, r.as_str()))
    }

    /// The operation's static name, if this route carries it.
    pub fn operation(&self, namespace: &str, local: &str) -> Option<&'static str> {
        if namespace != self.namespace {
            return None;
        }
        self.operations.iter().copied().find(|op| *op == local)
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
                    name: "bio_v1",
                    listener: ListenerKind::Police,
                    path: "/bio/v1",
                    namespace: BIO_NS,
                    operations: &["VerifyFingerprintRequest", "CheckIdentityRequest"],
                    upstream: UpstreamKind::Ministry,
                    max_body: limits.bio_max_body_bytes,
                    limits: Limits::default(),
                    requests: Vec::new(),
                    replies: Vec::new(),
                },
                Route {
                    name: "csn369791",
                    listener: ListenerKind::Police,
                    path: "/spoc/csn369791",
                    namespace: CSN_NS,
                    operations: &["RequestCertificate", "GetCACertificates", "GeneralMessage"],
                    upstream: UpstreamKind::Ministry,
                    max_body: limits.csn_max_body_bytes,
                    limits: Limits::default(),
                    requests: Vec::new(),
                    replies: Vec::new(),
                },
                Route {
                    name: "csn369791_callback",
                    listener: ListenerKind::Callback,
                    path: "/spoc/csn369791",
                    namespace: CSN_NS,
                    operations: &["SendCertificates"],
                    upstream: UpstreamKind::PoliceCallback,
                    max_body: limits.callback_max_body_bytes,
                    limits: Limits::default(),
                    requests: Vec::new(),
                    replies: Vec::new(),
                },
            ],
        };
        let base = xml.limits.apply(&Limits::default());
        for r in &mut table.routes {
            r.limits = match xml.routes.get(r.name) {
                Some(o) => o.apply(&base),
                None => base.clone(),
            };
            r.requests = r.operations.iter().map(|op| (r.namespace, *op)).collect();
            r.replies = r.operations.iter().map(|op| (r.namespace, reply_element(op))).collect();
        }
        table
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

/// Parses a Content-Type: `text/xml` (SOAP 1.1) or `application/soap+xml` (SOAP 1.2), with no
/// charset or `charset=utf-8`.
pub fn parse_content_type(value: &str) -> Option<SoapMediaType> {
    let mut parts = value.split(';');
    let mime = parts.next()?.trim();
    let version = if mime.eq_ignore_ascii_case("text/xml") {
        SoapVersion::V11
    } else if mime.eq_ignore_ascii_case("application/soap+xml") {
        SoapVersion::V12
    } else {
        return None;
    };
    let mut action = None;
    for p in parts {
        let (k, v) = p.split_once('=')?;
        let v = v.trim().trim_matches('"');
        match k.trim().to_ascii_lowercase().as_str() {
            "charset" if !v.eq_ignore_ascii_case("utf-8") => return None,
            "action" if version == SoapVersion::V12 => action = Some(v.to_owned()),
            _ => {}
        }
    }
    Some(SoapMediaType { version, action })
}

/// True when a SOAPAction (or SOAP 1.2 `action`) names the operation: the operation's local
/// name, or its namespace followed by `/` or `#` and the local name. Quotes are ignored.
pub fn action_agrees(action: &str, namespace: &str, operation: &str) -> bool {
    let a = action.trim().trim_matches('"');
    if a == operation {
        return true;
    }
    a.strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix('/').or_else(|| rest.strip_prefix('#')))
        .is_some_and(|op| op == operation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(parse_content_type("text/xml; charset=utf-8").map(|m| m.version), Some(SoapVersion::V11));
        assert_eq!(parse_content_type("text/xml").map(|m| m.version), Some(SoapVersion::V11));
        assert!(parse_content_type("text/xml; charset=iso-8859-1").is_none());
        assert!(parse_content_type("application/json").is_none());
        let m = parse_content_type("application/soap+xml; charset=UTF-8; action=\"urn:x/Op\"").unwrap();
        assert_eq!(m.version, SoapVersion::V12);
        assert_eq!(m.action.as_deref(), Some("urn:x/Op"));
    }

    #[test]
    fn actions() {
        assert!(action_agrees("\"RequestCertificate\"", CSN_NS, "RequestCertificate"));
        assert!(action_agrees("urn:spocgw:bio:1/CheckIdentityRequest", BIO_NS, "CheckIdentityRequest"));
        assert!(action_agrees("urn:spocgw:bio:1#CheckIdentityRequest", BIO_NS, "CheckIdentityRequest"));
        assert!(!action_agrees("VerifyFingerprintRequest", BIO_NS, "CheckIdentityRequest"));
        assert!(!action_agrees("", BIO_NS, "CheckIdentityRequest"));
    }
}
