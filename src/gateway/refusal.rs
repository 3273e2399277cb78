//! Refusals: every way the gateway says no, with the contract's code and HTTP status
//! (CONTRACT.md section 4) and a fixed sentence for people. The detail of *why* goes to the
//! log under the incident ID, never to the client.

use http::StatusCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    XmlMalformed,
    XmlThreat,
    SchemaViolation,
    ContentMismatch,
    UnknownOperation,
    UnsupportedMediaType,
    PayloadTooLarge,
    /// The body did not arrive within the listener's `request_timeout_ms`.
    RequestTimeout,
    PolicyDenied,
    RateLimited,
    UpstreamUnavailable,
    UpstreamInvalidResponse,
    UpstreamTimeout,
    AuditUnavailable,
    Overloaded,
}

impl Refusal {
    /// Every refusal (the codes an officer may search for).
    pub const ALL: [Refusal; 15] = [
        Refusal::XmlMalformed,
        Refusal::XmlThreat,
        Refusal::SchemaViolation,
        Refusal::ContentMismatch,
        Refusal::UnknownOperation,
        Refusal::UnsupportedMediaType,
        Refusal::PayloadTooLarge,
        Refusal::RequestTimeout,
        Refusal::PolicyDenied,
        Refusal::RateLimited,
        Refusal::UpstreamUnavailable,
        Refusal::UpstreamInvalidResponse,
        Refusal::UpstreamTimeout,
        Refusal::AuditUnavailable,
        Refusal::Overloaded,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Refusal::XmlMalformed => "XmlMalformed",
            Refusal::XmlThreat => "XmlThreat",
            Refusal::SchemaViolation => "SchemaViolation",
            Refusal::ContentMismatch => "ContentMismatch",
            Refusal::UnknownOperation => "UnknownOperation",
            Refusal::UnsupportedMediaType => "UnsupportedMediaType",
            Refusal::PayloadTooLarge => "PayloadTooLarge",
            Refusal::RequestTimeout => "RequestTimeout",
            Refusal::PolicyDenied => "PolicyDenied",
            Refusal::RateLimited => "RateLimited",
            Refusal::UpstreamUnavailable => "UpstreamUnavailable",
            Refusal::UpstreamInvalidResponse => "UpstreamInvalidResponse",
            Refusal::UpstreamTimeout => "UpstreamTimeout",
            Refusal::AuditUnavailable => "AuditUnavailable",
            Refusal::Overloaded => "Overloaded",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Refusal::XmlMalformed | Refusal::XmlThreat | Refusal::SchemaViolation | Refusal::ContentMismatch => {
                StatusCode::BAD_REQUEST
            }
            Refusal::UnknownOperation => StatusCode::NOT_FOUND,
            Refusal::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::PolicyDenied => StatusCode::FORBIDDEN,
            Refusal::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Refusal::UpstreamUnavailable | Refusal::UpstreamInvalidResponse => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Overloaded | Refusal::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The sentence the client reads.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::XmlMalformed => "the message is not well-formed UTF-8 XML",
            Refusal::XmlThreat => "the message contains a construct or size the gateway does not accept",
            Refusal::SchemaViolation => "the message is not a valid request for this operation",
            Refusal::ContentMismatch => "a binary field's data is not in the format it declares",
            Refusal::UnknownOperation => "no such operation at this address",
            Refusal::UnsupportedMediaType => "the content type must be SOAP 1.1 or 1.2 in UTF-8",
            Refusal::PayloadTooLarge => "the message is larger than this route accepts",
            Refusal::RequestTimeout => "the message was not received in time",
            Refusal::PolicyDenied => "the access policy does not allow this request",
            Refusal::RateLimited => "too many requests from this client; retry later",
            Refusal::UpstreamUnavailable => "the national service could not be reached",
            Refusal::UpstreamInvalidResponse => "the national service answered with an invalid message",
            Refusal::UpstreamTimeout => "the national service did not answer in time",
            Refusal::AuditUnavailable => "the request could not be recorded, so it was not forwarded; retry later",
            Refusal::Overloaded => "the gateway is busy; retry later",
        }
    }

    /// True when the sender's message is at fault (SOAP Client/Sender).
    pub fn is_sender(self) -> bool {
        self.status().is_client_error()
    }

    /// Seconds a client should wait before retrying, where retrying can help.
    pub fn retry_after(self) -> Option<&'static str> {
        match self {
            Refusal::Overloaded | Refusal::AuditUnavailable => Some("1"),
            _ => None,
        }
    }
}
