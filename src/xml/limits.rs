//! The XML firewall's limits: what a message may contain before any later stage sees it.
//! Every limit is a count or a size checked as the message is read, so memory and time stay
//! bounded by these numbers, not by what a sender chooses to send.
//!
//! Defaults are sized for the largest legitimate message (a VerifyFingerprintRequest with six
//! fingerprints of up to 64 KiB) with headroom, and far below what a parser attack needs:
//! billion-laughs and external entities need a DTD (always refused), quadratic blowup needs
//! huge attribute or text nodes, stack exhaustion needs depth.

use serde::Deserialize;

/// Limits for one route (or for `spocgw validate`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Whole message; also bounded by the route's body limit.
    pub max_message_bytes: usize,
    /// Element nesting; SOAP envelopes here are at most ~6 deep.
    pub max_depth: usize,
    /// Elements in the whole message.
    pub max_elements: usize,
    /// Child elements of one element.
    pub max_children: usize,
    /// Attributes (namespace declarations included) on one element.
    pub max_attributes: usize,
    /// One attribute value.
    pub max_attribute_bytes: usize,
    /// One text node of a non-binary field.
    pub max_text_bytes: usize,
    /// One base64Binary field (fingerprint images are 10-50 KB decoded).
    pub max_base64_bytes: usize,
    /// One element or attribute name (prefix included).
    pub max_name_bytes: usize,
    /// Namespace declarations in the whole message.
    pub max_namespaces: usize,
    /// Comment bytes in the whole message.
    pub max_comment_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            max_depth: 32,
            max_elements: 5_000,
            max_children: 500,
            max_attributes: 16,
            max_attribute_bytes: 1024,
            max_text_bytes: 128 * 1024,
            max_base64_bytes: 128 * 1024,
            max_name_bytes: 128,
            max_namespaces: 32,
            max_comment_bytes: 4096,
        }
    }
}

/// Per-route changes to [`Limits`]; unset keys keep the base value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsOverride {
    pub max_message_bytes: Option<usize>,
    pub max_depth: Option<usize>,
    pub max_elements: Option<usize>,
    pub max_children: Option<usize>,
    pub max_attributes: Option<usize>,
    pub max_attribute_bytes: Option<usize>,
    pub max_text_bytes: Option<usize>,
    pub max_base64_bytes: Option<usize>,
    pub max_name_bytes: Option<usize>,
    pub max_namespaces: Option<usize>,
    pub max_comment_bytes: Option<usize>,
}

impl LimitsOverride {
    pub fn apply(&self, base: &Limits) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes.unwrap_or(base.max_message_bytes),
            max_depth: self.max_depth.unwrap_or(base.max_depth),
            max_elements: self.max_elements.unwrap_or(base.max_elements),
            max_children: self.max_children.unwrap_or(base.max_children),
            max_attributes: self.max_attributes.unwrap_or(base.max_attributes),
            max_attribute_bytes: self.max_attribute_bytes.unwrap_or(base.max_attribute_bytes),
            max_text_bytes: self.max_text_bytes.unwrap_or(base.max_text_bytes),
            max_base64_bytes: self.max_base64_bytes.unwrap_or(base.max_base64_bytes),
            max_name_bytes: self.max_name_bytes.unwrap_or(base.max_name_bytes),
            max_namespaces: self.max_namespaces.unwrap_or(base.max_namespaces),
            max_comment_bytes: self.max_comment_bytes.unwrap_or(base.max_comment_bytes),
        }
    }
}

/// What the firewall refused. The name goes to the log; the client sees only `XmlThreat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breach {
    Dtd,
    ProcessingInstruction,
    EntityReference,
    SchemaLocationHint,
    TypeOverride,
    MessageBytes,
    Depth,
    Elements,
    Children,
    Attributes,
    AttributeBytes,
    TextBytes,
    Base64Bytes,
    NameBytes,
    Namespaces,
    CommentBytes,
}

impl Breach {
    pub fn name(self) -> &'static str {
        match self {
            Breach::Dtd => "DOCTYPE/DTD",
            Breach::ProcessingInstruction => "processing instruction",
            Breach::EntityReference => "entity reference",
            Breach::SchemaLocationHint => "xsi:schemaLocation",
            Breach::TypeOverride => "xsi:type",
            Breach::MessageBytes => "max_message_bytes",
            Breach::Depth => "max_depth",
            Breach::Elements => "max_elements",
            Breach::Children => "max_children",
            Breach::Attributes => "max_attributes",
            Breach::AttributeBytes => "max_attribute_bytes",
            Breach::TextBytes => "max_text_bytes",
            Breach::Base64Bytes => "max_base64_bytes",
            Breach::NameBytes => "max_name_bytes",
            Breach::Namespaces => "max_namespaces",
            Breach::CommentBytes => "max_comment_bytes",
        }
    }
}
