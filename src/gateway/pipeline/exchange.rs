//! What is known about one request as it travels, filled in stage by stage, and how it ended.
//! Each field is written by the stage that learns it, through a method named for what happened
//! (`routed`, `checked`, `decided`, ...), and read by the others through accessors: no stage
//! reaches into another's findings.

use std::time::Instant;

use super::super::correlation::Pending;

use super::super::refusal::Refusal;
use super::super::routes::{ListenerKind, Operation, Route};
use super::super::upstream::Reply;
use crate::audit::Record;
use crate::policy::Caller;
use crate::tls::PeerIdentity;
use crate::xml::SoapVersion;
use crate::xml::facts::MessageFacts;

/// Where a request ended: the reply to pass back, or a refusal with its detail for the log.
pub(super) enum Outcome {
    Forwarded(Box<Reply>),
    /// The gateway answers itself (a callback it cannot correlate): the reply, and why.
    Answered(Box<Reply>, Uncorrelated),
    /// A service description (WSDL or schema) the gateway serves.
    Document(bytes::Bytes),
    Refused(Refusal, String),
    /// Nobody is left to answer: the client's body broke off.
    Abandoned(String),
}

/// Why a callback could not be correlated, as its record says it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Uncorrelated {
    /// Never forwarded, or answered already.
    Unknown,
    /// Forwarded longer ago than the TTL.
    Expired,
}

impl Uncorrelated {
    pub(super) fn code(self) -> &'static str {
        match self {
            Uncorrelated::Unknown => "messageID_unknown",
            Uncorrelated::Expired => "messageID_expired",
        }
    }

    pub(super) fn detail(self) -> &'static str {
        match self {
            Uncorrelated::Unknown => "callback for a messageID the gateway did not forward",
            Uncorrelated::Expired => "callback after the TTL of the request it answers",
        }
    }
}

/// What the policy decided, as the record and the log line say it.
pub(super) struct Decided {
    pub(super) allowed: bool,
    /// The deciding policies' IDs, comma-separated.
    pub(super) policies: String,
    /// The bundle's digest, short.
    pub(super) bundle: String,
}

impl Decided {
    pub(super) fn word(&self) -> &'static str {
        if self.allowed { "allow" } else { "deny" }
    }
}

/// The request's audit record, as the outcome's record needs to know it.
pub(super) enum RequestRecord {
    /// None yet (the request was refused before it had one).
    Missing,
    /// Durable: the outcome's record carries only what is new (the request's record says the
    /// rest under the same incident ID).
    Durable,
    /// Built but not made durable: the outcome's record carries it all.
    Unwritten(Box<Record>),
}

/// One request's findings.
pub(super) struct Exchange<'a> {
    incident: String,
    listener: ListenerKind,
    peer: &'a PeerIdentity,
    started: Instant,
    /// The route, once the path named one.
    route: Option<&'a Route>,
    /// The operation, once the Body (or a GET for a service description) named one.
    operation: Option<Operation>,
    version: Option<SoapVersion>,
    message_id: Option<String>,
    /// What validation learned of the request, for policy and audit.
    facts: MessageFacts,
    /// For a schema violation: the element at fault and the kind of rule (the fault says so).
    hint: Option<(String, &'static str)>,
    /// Seconds to wait, for a RateLimited refusal.
    retry_after: Option<u64>,
    /// The caller as policy sees it (built once, used for the decision and minimisation).
    caller: Option<Caller>,
    decision: Option<Decided>,
    /// A callback's messageID, claimed (taken out of the forwarded set) until it is delivered;
    /// put back if it is not.
    claimed: Option<(String, Pending)>,
    request_sha256: Option<String>,
    recipient: Option<&'static str>,
    request_record: RequestRecord,
    /// What the records say besides the fields (never message content).
    note: Option<&'static str>,
    upstream_status: Option<u16>,
    /// Reply fields removed by data minimisation.
    removed: Vec<String>,
    response_sha256: Option<String>,
}

impl<'a> Exchange<'a> {
    pub(super) fn new(incident: String, listener: ListenerKind, peer: &'a PeerIdentity) -> Self {
        Exchange {
            incident,
            listener,
            peer,
            started: Instant::now(),
            route: None,
            operation: None,
            version: None,
            message_id: None,
            facts: MessageFacts::default(),
            hint: None,
            retry_after: None,
            caller: None,
            decision: None,
            claimed: None,
            request_sha256: None,
            recipient: None,
            request_record: RequestRecord::Missing,
            note: None,
            upstream_status: None,
            removed: Vec::new(),
            response_sha256: None,
        }
    }

    // Who asked, and when: fixed at the start.
    pub(super) fn incident(&self) -> &str {
        &self.incident
    }
    pub(super) fn listener(&self) -> ListenerKind {
        self.listener
    }
    pub(super) fn peer(&self) -> &'a PeerIdentity {
        self.peer
    }
    pub(super) fn started(&self) -> Instant {
        self.started
    }

    // The router's findings.
    pub(super) fn routed(&mut self, route: &'a Route) {
        self.route = Some(route);
    }
    /// The route's name on record and in metrics: `none` when the path named no route.
    pub(super) fn route_name(&self) -> &'static str {
        self.route.map_or("none", |r| r.name)
    }
    pub(super) fn versioned(&mut self, version: Option<SoapVersion>) {
        self.version = version;
    }
    pub(super) fn version(&self) -> Option<SoapVersion> {
        self.version
    }
    pub(super) fn names(&mut self, operation: Option<Operation>) {
        self.operation = operation;
    }
    pub(super) fn operation(&self) -> Option<Operation> {
        self.operation
    }

    // The checker's.
    pub(super) fn hinted(&mut self, hint: Option<(String, &'static str)>) {
        self.hint = hint;
    }
    pub(super) fn hint(&self) -> Option<(&str, &'static str)> {
        self.hint.as_ref().map(|(f, r)| (f.as_str(), *r))
    }
    pub(super) fn carries(&mut self, message_id: Option<String>) {
        self.message_id = message_id;
    }
    pub(super) fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }
    pub(super) fn checked(&mut self, facts: MessageFacts) {
        self.facts = facts;
    }
    pub(super) fn facts(&self) -> &MessageFacts {
        &self.facts
    }

    // The admission's.
    pub(super) fn rate_limited(&mut self, wait_secs: u64) {
        self.retry_after = Some(wait_secs);
    }
    pub(super) fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    // The decider's.
    /// The caller (built from the peer the first time) and the facts, for a decision.
    pub(super) fn caller_and_facts(&mut self) -> (&Caller, &MessageFacts) {
        let caller = self.caller.get_or_insert_with(|| Caller::from_peer(self.peer));
        (caller, &self.facts)
    }
    /// The caller, taken for the reply's minimisation (the last use).
    pub(super) fn take_caller(&mut self) -> Caller {
        self.caller.take().unwrap_or_else(|| Caller::from_peer(self.peer))
    }
    pub(super) fn decided(&mut self, d: Decided) {
        self.decision = Some(d);
    }
    pub(super) fn decision(&self) -> Option<&Decided> {
        self.decision.as_ref()
    }

    // The correlator's.
    pub(super) fn claims(&mut self, message_id: String, pending: Pending) {
        self.claimed = Some((message_id, pending));
    }
    pub(super) fn take_claim(&mut self) -> Option<(String, Pending)> {
        self.claimed.take()
    }

    // The recorder's.
    pub(super) fn bound_for(&mut self, recipient: &'static str, request_sha256: String) {
        self.recipient = Some(recipient);
        self.request_sha256 = Some(request_sha256);
    }
    pub(super) fn recipient(&self) -> Option<&'static str> {
        self.recipient
    }
    pub(super) fn request_sha256(&self) -> Option<&str> {
        self.request_sha256.as_deref()
    }
    pub(super) fn request_recorded(&mut self, state: RequestRecord) {
        self.request_record = state;
    }
    pub(super) fn take_request_record(&mut self) -> RequestRecord {
        std::mem::replace(&mut self.request_record, RequestRecord::Missing)
    }
    /// Whether the request has no record of its own (refused before one was built).
    pub(super) fn unrecorded(&self) -> bool {
        matches!(self.request_record, RequestRecord::Missing)
    }

    /// Something the records must say of this request (a callback accepted during a partition).
    pub(super) fn noted(&mut self, note: &'static str) {
        self.note = Some(note);
    }
    pub(super) fn note(&self) -> Option<&'static str> {
        self.note
    }

    // The forwarder's and the reply check's.
    pub(super) fn upstream_answered(&mut self, status: u16) {
        self.upstream_status = Some(status);
    }
    pub(super) fn upstream_status(&self) -> Option<u16> {
        self.upstream_status
    }
    pub(super) fn withheld(&mut self, removed: impl IntoIterator<Item = String>) {
        self.removed.extend(removed);
    }
    pub(super) fn removed(&self) -> &[String] {
        &self.removed
    }
    pub(super) fn passed_back(&mut self, response_sha256: String) {
        self.response_sha256 = Some(response_sha256);
    }
    pub(super) fn response_sha256(&self) -> Option<&str> {
        self.response_sha256.as_deref()
    }
}
