//! Audit records: one JSON object per line, fields in a fixed order, absent fields omitted, so
//! the bytes hashed into the tree are the bytes on disk. What the law asks to be logged
//! (justification, date and time, who consulted, the recipient, the type of data) is here;
//! biometric data, names, dates of birth, addresses and plain document numbers never are.

use serde::{Deserialize, Serialize};

/// The client certificate, as logged.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientCert {
    pub fingerprint: String,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the log (0-based); assigned by the writer.
    pub seq: u64,
    /// UTC, microseconds, RFC 3339.
    pub time: String,
    /// `start`, `recovery`, `key_event`, `request`, `outcome`, `handshake_refusal`,
    /// `policy_reload`, `audit_access`.
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub incident_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub listener: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub operation: Option<String>,
    /// Where the request goes (upstream name).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recipient: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client: Option<ClientCert>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub officer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub authority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub border_crossing_point: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub purpose: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub case_reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub caller_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub issuing_state: Option<String>,
    /// HMAC-SHA256 of the document number under the pseudonymisation key (hex).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub document: Option<String>,
    /// Categories of data, e.g. `fingerprint/WSQ x2`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub data: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub policies: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bundle: Option<String>,
    /// Reply fields removed by data minimisation.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub removed: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub upstream_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub latency_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub response_sha256: Option<String>,
    /// Free text for `start`/`recovery` events and refusal reasons (never message content).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

impl Record {
    pub fn now(event: &str) -> Self {
        Self { time: now_rfc3339_micros(), event: event.to_owned(), ..Self::default() }
    }

    /// The canonical bytes: compact JSON in field order (what is hashed and written).
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

pub fn now_rfc3339_micros() -> String {
    let now = time::OffsetDateTime::now_utc();
    let micros = now.nanosecond() / 1000;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}
