//! Audit records: one JSON object per line, fields in a fixed order, absent fields omitted, so
//! the bytes hashed into the tree are the bytes on disk. What the law asks to be logged
//! (justification, date and time, who consulted, the recipient, the type of data) is here;
//! biometric data, names, dates of birth, addresses and plain document numbers never are.

use serde::{Deserialize, Serialize};

use crate::json;

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
    /// The document's pseudonym: `v2:` and the HMAC-SHA256 (hex) of its issuing state and
    /// normalised number under the pseudonymisation key ([`super::document_pseudonym`]).
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

// The canonical record's pieces, written into `$out`: `,"name":` (names need no escaping),
// then the value; absent values and empty lists are left out.
macro_rules! key {
    ($out:expr, $name:literal) => {
        $out.extend_from_slice(concat!(",\"", $name, "\":").as_bytes())
    };
}
macro_rules! text {
    ($out:expr, $name:literal, $value:expr) => {{
        key!($out, $name);
        json::string($out, $value);
    }};
}
macro_rules! opt {
    ($out:expr, $name:literal, $value:expr) => {
        if let Some(v) = &$value {
            text!($out, $name, v);
        }
    };
}
macro_rules! list {
    ($out:expr, $name:literal, $values:expr) => {
        if !$values.is_empty() {
            key!($out, $name);
            for (i, v) in $values.iter().enumerate() {
                $out.push(if i == 0 { b'[' } else { b',' });
                json::string($out, v);
            }
            $out.push(b']');
        }
    };
}
macro_rules! num {
    ($out:expr, $name:literal, $value:expr) => {
        if let Some(n) = $value {
            key!($out, $name);
            json::number($out, u64::from(n));
        }
    };
}

impl Record {
    pub fn now(event: &str) -> Self {
        Self { time: now_rfc3339_micros(), event: event.to_owned(), ..Self::default() }
    }

    /// The canonical bytes: compact JSON in field order, absent fields left out (what is hashed
    /// and written); the bytes serde_json writes for the struct (a test checks).
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(b"{\"seq\":");
        json::number(&mut out, self.seq);
        self.canonical_tail(&mut out);
        out
    }

    /// The canonical bytes after `{"seq":N`, from the comma on. Written by hand: two records
    /// per request, ~35 fields, cost ~19,000 instructions through serde_json (which looks up
    /// every byte of every string in its escape table), ~7,500 here.
    pub fn canonical_tail(&self, out: &mut Vec<u8>) {
        text!(out, "time", &self.time);
        text!(out, "event", &self.event);
        opt!(out, "incident_id", self.incident_id);
        opt!(out, "listener", self.listener);
        opt!(out, "route", self.route);
        opt!(out, "operation", self.operation);
        opt!(out, "recipient", self.recipient);
        if let Some(c) = &self.client {
            out.extend_from_slice(b",\"client\":{\"fingerprint\":");
            json::string(out, &c.fingerprint);
            text!(out, "subject", &c.subject);
            text!(out, "issuer", &c.issuer);
            text!(out, "serial", &c.serial);
            out.push(b'}');
        }
        opt!(out, "officer_id", self.officer_id);
        opt!(out, "authority", self.authority);
        opt!(out, "border_crossing_point", self.border_crossing_point);
        opt!(out, "purpose", self.purpose);
        opt!(out, "case_reference", self.case_reference);
        opt!(out, "message_id", self.message_id);
        opt!(out, "caller_id", self.caller_id);
        opt!(out, "issuing_state", self.issuing_state);
        opt!(out, "document", self.document);
        list!(out, "data", self.data);
        opt!(out, "decision", self.decision);
        opt!(out, "policies", self.policies);
        opt!(out, "bundle", self.bundle);
        list!(out, "removed", self.removed);
        opt!(out, "code", self.code);
        num!(out, "status", self.status);
        num!(out, "upstream_status", self.upstream_status);
        num!(out, "latency_us", self.latency_us);
        opt!(out, "request_sha256", self.request_sha256);
        opt!(out, "response_sha256", self.response_sha256);
        opt!(out, "detail", self.detail);
        out.push(b'}');
    }

    /// An outcome record as read together with its request's record: the fields the outcome
    /// does not repeat (who asked, for what, the decision) taken from the request. What a
    /// search matches and a table shows; the stored bytes stay as they are.
    pub fn with_request(&self, request: &Record) -> Record {
        fn fill<T: Clone>(mine: &Option<T>, theirs: &Option<T>) -> Option<T> {
            mine.clone().or_else(|| theirs.clone())
        }
        let q = request;
        Record {
            seq: self.seq,
            time: self.time.clone(),
            event: self.event.clone(),
            incident_id: fill(&self.incident_id, &q.incident_id),
            listener: fill(&self.listener, &q.listener),
            route: fill(&self.route, &q.route),
            operation: fill(&self.operation, &q.operation),
            recipient: fill(&self.recipient, &q.recipient),
            client: fill(&self.client, &q.client),
            officer_id: fill(&self.officer_id, &q.officer_id),
            authority: fill(&self.authority, &q.authority),
            border_crossing_point: fill(&self.border_crossing_point, &q.border_crossing_point),
            purpose: fill(&self.purpose, &q.purpose),
            case_reference: fill(&self.case_reference, &q.case_reference),
            message_id: fill(&self.message_id, &q.message_id),
            caller_id: fill(&self.caller_id, &q.caller_id),
            issuing_state: fill(&self.issuing_state, &q.issuing_state),
            document: fill(&self.document, &q.document),
            data: if self.data.is_empty() { q.data.clone() } else { self.data.clone() },
            decision: fill(&self.decision, &q.decision),
            policies: fill(&self.policies, &q.policies),
            bundle: fill(&self.bundle, &q.bundle),
            removed: self.removed.clone(),
            code: self.code.clone(),
            status: self.status,
            upstream_status: self.upstream_status,
            latency_us: self.latency_us,
            request_sha256: fill(&self.request_sha256, &q.request_sha256),
            response_sha256: self.response_sha256.clone(),
            detail: self.detail.clone(),
        }
    }
}

pub use crate::encoding::{now_rfc3339_micros, rfc3339_micros};

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::{ClientCert, Record, rfc3339_micros};

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-zA-Z0-9 /:.-]{1,40}", any::<String>(), "[\\x00-\\x7f\"\\\\]{0,12}"]
    }

    fn maybe() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(text())
    }

    fn record() -> impl Strategy<Value = Record> {
        let client = proptest::option::of((text(), text(), text(), text())).prop_map(|c| {
            c.map(|(fingerprint, subject, issuer, serial)| ClientCert { fingerprint, subject, issuer, serial })
        });
        let lists = (proptest::collection::vec(text(), 0..3), proptest::collection::vec(text(), 0..3));
        let numbers = (any::<Option<u16>>(), any::<Option<u16>>(), any::<Option<u64>>());
        let optional = proptest::collection::vec(maybe(), 21);
        (any::<u64>(), text(), text(), client, lists, numbers, optional).prop_map(
            |(seq, time, event, client, (data, removed), (status, upstream_status, latency_us), optional)| {
                let mut r = Record {
                    seq,
                    time,
                    event,
                    client,
                    data,
                    removed,
                    status,
                    upstream_status,
                    latency_us,
                    ..Record::default()
                };
                let fields = [
                    &mut r.incident_id,
                    &mut r.listener,
                    &mut r.route,
                    &mut r.operation,
                    &mut r.recipient,
                    &mut r.officer_id,
                    &mut r.authority,
                    &mut r.border_crossing_point,
                    &mut r.purpose,
                    &mut r.case_reference,
                    &mut r.message_id,
                    &mut r.caller_id,
                    &mut r.issuing_state,
                    &mut r.document,
                    &mut r.decision,
                    &mut r.policies,
                    &mut r.bundle,
                    &mut r.code,
                    &mut r.request_sha256,
                    &mut r.response_sha256,
                    &mut r.detail,
                ];
                for (field, value) in fields.into_iter().zip(optional) {
                    *field = value;
                }
                r
            },
        )
    }

    proptest! {
        /// The hand-written canonical bytes are serde_json's, and read back as the record.
        #[test]
        fn canonical_bytes_are_serde_jsons(r in record()) {
            let bytes = r.canonical();
            prop_assert_eq!(&bytes, &serde_json::to_vec(&r).unwrap());
            prop_assert_eq!(serde_json::from_slice::<Record>(&bytes).unwrap(), r);
        }
    }

    /// The cached date and time of day follow the second; the microseconds are zero-padded.
    #[test]
    fn timestamps_in_and_across_seconds() {
        let at = |s: u64, us: u64| rfc3339_micros(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_micros(us));
        assert_eq!(at(1_795_419_000, 7), "2026-11-23T07:30:00.000007Z");
        assert_eq!(at(1_795_419_000, 999_999), "2026-11-23T07:30:00.999999Z");
        assert_eq!(at(1_795_419_001, 120_000), "2026-11-23T07:30:01.120000Z");
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(1_795_419_001, 5), "2026-11-23T07:30:01.000005Z");
    }
}
