//! Record: the request's audit record, durable before anything is forwarded, and the outcome's
//! record every request ends with (refused ones included; those refused for load within the
//! window's bound, else summarised).

use std::sync::Arc;

use super::super::refusal::Refusal;
use super::super::refusal_log::RequestRefusals;
use super::super::routes::{Operation, Route};
use super::exchange::{Exchange, Outcome, RequestRecord};
use crate::audit::{Audit, ClientCert, Record};

/// The audit log, and the summary of refusals for load.
pub(super) struct Recorder {
    audit: Arc<Audit>,
    load_refusals: Arc<RequestRefusals>,
    /// False only in the benchmark floor without audit (`bare_proxy` without
    /// `bare_proxy_audit`).
    enabled: bool,
}

impl Recorder {
    pub(super) fn new(audit: Arc<Audit>, load_refusals: Arc<RequestRefusals>, enabled: bool) -> Recorder {
        Recorder { audit, load_refusals, enabled }
    }

    /// The request's record must be durable before anything is forwarded; the refusal when it
    /// cannot be.
    pub(super) async fn audit_request(&self, x: &mut Exchange<'_>, route: &Route, body: &[u8]) -> Result<(), Outcome> {
        x.bound_for(route.upstream.name(), crate::encoding::sha256_hex(body));
        let record = self.record(x, "request");
        if let Err(e) = self.audit.append_durable(&record).await {
            x.request_recorded(RequestRecord::Unwritten(Box::new(record)));
            return Err(Outcome::Refused(Refusal::AuditUnavailable, format!("audit: {e}")));
        }
        x.request_recorded(RequestRecord::Durable);
        Ok(())
    }

    /// An audit record of what is known about the request before it is forwarded.
    fn record(&self, x: &Exchange<'_>, event: &str) -> Record {
        let f = x.facts();
        let mut data = Vec::new();
        let prints = f.chip_fingerprints + f.live_fingerprints;
        if prints > 0 {
            let formats = if f.formats.is_empty() { "unknown".to_owned() } else { f.formats.join("+") };
            data.push(format!("fingerprint/{formats} x{prints}"));
        }
        if f.document_number.is_some() {
            data.push("document/identity".to_owned());
        }
        let peer = x.peer();
        let mut r = Record::now(event);
        r.incident_id = Some(x.incident().to_owned());
        r.listener = Some(x.listener().name().to_owned());
        r.route = Some(x.route_name().to_owned());
        r.operation = Some(Operation::label(x.operation()).to_owned());
        r.recipient = x.recipient().map(str::to_owned);
        r.client = Some(ClientCert {
            fingerprint: peer.fingerprint.clone(),
            subject: peer.subject.clone(),
            issuer: peer.issuer.clone(),
            serial: peer.serial.clone(),
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
        if let Some(d) = x.decision() {
            r.decision = Some(d.word().to_owned());
            r.policies = Some(d.policies.clone());
            r.bundle = Some(d.bundle.clone());
        }
        r.request_sha256 = x.request_sha256().map(str::to_owned);
        r.detail = x.note().map(str::to_owned);
        r
    }

    /// The outcome's audit record: how the request ended. After a durable request record it
    /// names the incident and what is new (`audit query` joins the two); a request refused
    /// before its record was durable gets everything known about it here.
    fn outcome_record(&self, x: &mut Exchange<'_>, code: &str, status: u16) -> Record {
        let mut r = match x.take_request_record() {
            RequestRecord::Durable => {
                let mut r = Record::now("outcome");
                r.incident_id = Some(x.incident().to_owned());
                r.listener = Some(x.listener().name().to_owned());
                r.route = Some(x.route_name().to_owned());
                r.operation = Some(Operation::label(x.operation()).to_owned());
                r
            }
            RequestRecord::Unwritten(mut r) => {
                r.time = crate::audit::record::now_rfc3339_micros();
                "outcome".clone_into(&mut r.event);
                *r
            }
            RequestRecord::Missing => self.record(x, "outcome"),
        };
        r.removed = x.removed().to_vec();
        r.detail = x.note().map(str::to_owned).or(r.detail);
        r.code = Some(code.to_owned());
        r.status = Some(status);
        r.upstream_status = x.upstream_status();
        r.response_sha256 = x.response_sha256().map(str::to_owned);
        r.latency_us = Some(x.started().elapsed().as_micros() as u64);
        r
    }

    /// How the request ended, on record. Refused for load before any record of its own: recorded
    /// within the window's bound, else summarised, so that a client kept over a cap cannot fill
    /// the disk (the record is built only when the window writes it).
    pub(super) fn outcome(&self, x: &mut Exchange<'_>, code: &'static str, status: u16) {
        if !self.enabled {
            return;
        }
        if x.unrecorded() && [Refusal::Overloaded.code(), Refusal::RateLimited.code()].contains(&code) {
            let (listener, peer) = (x.listener().name(), x.peer());
            self.load_refusals.refused(listener, code, peer, || self.outcome_record(x, code, status));
        } else {
            let record = self.outcome_record(x, code, status);
            self.audit.append(&record);
        }
    }

    #[cfg(test)]
    pub(super) fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }
}
