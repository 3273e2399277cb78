//! SOAP versions, their envelope namespaces, and the envelope around one Body element.

pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoapVersion {
    V11,
    V12,
}

impl SoapVersion {
    /// The media type a message of this version travels as, in UTF-8 (what the gateway sends).
    pub fn content_type(self) -> &'static str {
        match self {
            SoapVersion::V11 => "text/xml; charset=utf-8",
            SoapVersion::V12 => "application/soap+xml; charset=utf-8",
        }
    }

    pub fn namespace(self) -> &'static str {
        match self {
            SoapVersion::V11 => SOAP11_NS,
            SoapVersion::V12 => SOAP12_NS,
        }
    }
}

/// A SOAP envelope of `version` whose Body holds `operation_xml` (the gateway's own answers, the
/// simulators and tools).
pub fn envelope(version: SoapVersion, operation_xml: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soap:Envelope xmlns:soap=\"{}\"><soap:Body>{operation_xml}</soap:Body></soap:Envelope>\n",
        version.namespace()
    )
}
