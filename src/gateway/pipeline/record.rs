//! Record: the request's audit record, durable before anything is forwarded, and the
//! outcome's.

use super::*;

impl Pipeline {
    /// Audit: the request's record must be durable before anything is forwarded; the refusal
    /// when it cannot be.
    pub(super) async fn audit_request(&self, x: &mut Exchange<'_>, route: &Route, body: &[u8]) -> Result<(), Outcome> {
        x.request_sha256 = Some(crate::encoding::sha256_hex(body));
        x.recipient = Some(route.upstream.name());
        let record = self.record(x, "request");
        if let Err(e) = self.audit.append_durable(&record).await {
            x.request_record = RequestRecord::Unwritten(Box::new(record));
            return Err(Outcome::Refused(Refusal::AuditUnavailable, format!("audit: {e}")));
        }
        x.request_record = RequestRecord::Durable;
        Ok(())
    }

    /// An audit record of what is known about the request before it is forwarded.
    pub(super) fn record(&self, x: &Exchange<'_>, event: &str) -> Record {
        let f = &x.facts;
        let mut data = Vec::new();
        let prints = f.chip_fingerprints + f.live_fingerprints;
        if prints > 0 {
            let formats = if f.formats.is_empty() { "unknown".to_owned() } else { f.formats.join("+") };
            data.push(format!("fingerprint/{formats} x{prints}"));
        }
        if f.document_number.is_some() {
            data.push("document/identity".to_owned());
        }
        let mut r = Record::now(event);
        r.incident_id = Some(x.incident.clone());
        r.listener = Some(x.listener.name().to_owned());
        r.route = Some(x.route_name().to_owned());
        r.operation = Some(Operation::label(x.operation).to_owned());
        r.recipient = x.recipient.map(str::to_owned);
        r.client = Some(ClientCert {
            fingerprint: x.peer.fingerprint.clone(),
            subject: x.peer.subject.clone(),
            issuer: x.peer.issuer.clone(),
            serial: x.peer.serial.clone(),
        });
        r.officer_id = f.officer_id.clone();
        r.authority = f.authority.clone();
        r.border_crossing_point = f.border_crossing_point.clone();
        r.purpose = f.purpose.clone();
        r.case_reference = f.case_reference.clone();
        r.message_id = f.message_id.clone();
        r.caller_id = f.caller_id.clone();
        r.issuing_state = f.issuing_state.clone();
        r.document = f.document_number.as_ref().map(|d| self.audit.document_pseudonym(f.issuing_state.as_deref(), d));
        r.data = data;
        if let Some(d) = &x.decision {
            r.decision = Some(d.word().to_owned());
            r.policies = Some(d.policies.clone());
            r.bundle = Some(d.bundle.clone());
        }
        r.request_sha256 = x.request_sha256.clone();
        r
    }

    /// The outcome's audit record: how the request ended. After a durable request record it
    /// names the incident and what is new (`audit query` joins the two); a request refused
    /// before its record was durable gets everything known about it here.
    pub(super) fn outcome_record(&self, x: &mut Exchange<'_>, code: &str, status: u16) -> Record {
        let mut r = match std::mem::replace(&mut x.request_record, RequestRecord::Missing) {
            RequestRecord::Durable => {
                let mut r = Record::now("outcome");
                r.incident_id = Some(x.incident.clone());
                r.listener = Some(x.listener.name().to_owned());
                r.route = Some(x.route_name().to_owned());
                r.operation = Some(Operation::label(x.operation).to_owned());
                r
            }
            RequestRecord::Unwritten(mut r) => {
                r.time = crate::audit::record::now_rfc3339_micros();
                "outcome".clone_into(&mut r.event);
                *r
            }
            RequestRecord::Missing => self.record(x, "outcome"),
        };
        r.removed = x.removed.clone();
        r.code = Some(code.to_owned());
        r.status = Some(status);
        r.upstream_status = x.upstream_status;
        r.response_sha256 = x.response_sha256.clone();
        r.latency_us = Some(x.started.elapsed().as_micros() as u64);
        r
    }
}
