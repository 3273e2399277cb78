//! One request, start to end (DESIGN.md): route, media type, body within its limit, envelope
//! read once, operation and action checked, forwarded upstream, reply checked, returned.
//! Every step that says no produces a [`Refusal`]; every request ends in one log line and one
//! metrics update under its incident ID.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Semaphore;

mod admit;
mod check;
mod decide;
mod forward;
mod record;
mod respond;

use super::fault::Refusal;
use super::routes::{ListenerKind, Route, RouteTable, SoapMediaType, UpstreamKind};
use super::upstream::{Upstream, UpstreamError, UpstreamMetrics, soap_headers};
use crate::audit::{Audit, ClientCert, Record};
use crate::policy::{Bundle, Caller, PolicyState, minimise};
use crate::tls::PeerIdentity;
use crate::xml::facts::MessageFacts;
use crate::xml::validate::{Expect, HeaderOutline, Validated, line_col, validate_outlined};
use crate::xml::xsd::Schema;
use crate::xml::{self, FaultText, SoapVersion};
use admit::expects_continue;
use forward::forwarded_headers;
use respond::unix_now;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FAULT: HeaderName = HeaderName::from_static("x-spocgw-fault");

/// The client went away (its body broke off) before it was answered: the connection is dropped.
#[derive(Debug, thiserror::Error)]
#[error("the client went away before it was answered")]
pub struct ClientGone;

/// What the pipeline needs, shared by every connection.
pub struct Pipeline {
    pub routes: RouteTable,
    pub schema: Arc<Schema>,
    pub policy: Arc<PolicyState>,
    pub audit: Arc<Audit>,
    pub ministry: Upstream,
    pub police_callback: Option<Upstream>,
    pub metrics: RequestMetrics,
    pub upstream_metrics: Arc<UpstreamMetrics>,
    pub in_flight: Semaphore,
    /// Requests in process per client certificate, bounded within `in_flight`.
    pub in_flight_per_client: super::admission::PerKey<String>,
    /// Requests refused for load, recorded within bounds and summarised.
    pub load_refusals: Arc<super::refusals::RequestRefusals>,
    /// The WSDLs and schemas served on the police listener.
    pub documents: super::wsdl::Documents,
    pub request_timeout: std::time::Duration,
    /// Benchmark floor only (`bare_proxy = true`): route, body limit and forward, nothing else.
    pub bare: bool,
    /// Benchmarks only, with `bare`: the audit stage too (`bare_proxy_audit = true`).
    pub bare_audit: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: &'static str,
    route: &'static str,
    operation: &'static str,
    /// `ok`, or the contract fault code.
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    listener: &'static str,
    route: &'static str,
}

/// The pipeline's metrics: requests by outcome, their duration, those in process.
#[derive(Clone)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(crate::admin::metrics::latency_histogram as fn() -> Histogram),
            in_flight: Gauge::default(),
        }
    }
}

impl RequestMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register("requests", "Requests by listener, route, operation and outcome code", self.requests.clone());
        registry.register("request_duration_seconds", "Time from request headers to response", self.duration.clone());
        registry.register("requests_in_flight", "Requests being processed", self.in_flight.clone());
    }
}

/// What is known about a request as it travels; filled in stage by stage.
struct Exchange<'a> {
    incident: String,
    listener: ListenerKind,
    peer: &'a PeerIdentity,
    route: &'static str,
    operation: &'static str,
    version: Option<SoapVersion>,
    message_id: Option<String>,
    /// What validation learned of the request, for policy and audit.
    facts: MessageFacts,
    upstream_status: Option<u16>,
    /// The caller as policy sees it (built once, used for the decision and minimisation).
    caller: Option<Caller>,
    /// The policy decision, once made.
    decision: Option<Decided>,
    /// A callback's messageID, claimed (taken out of the forwarded set) until it is delivered;
    /// put back if it is not.
    claimed: Option<(String, Instant)>,
    /// Seconds to wait, for a RateLimited refusal.
    retry_after: Option<u64>,
    /// For a schema violation: the element at fault and the kind of rule (the fault says so).
    hint: Option<(String, &'static str)>,
    /// Reply fields removed by data minimisation.
    removed: Vec<String>,
    request_sha256: Option<String>,
    response_sha256: Option<String>,
    recipient: Option<&'static str>,
    /// Where the request's audit record stands; the outcome's record depends on it.
    request_record: RequestRecord,
    started: Instant,
}

/// What the policy decided, as the record and the log line say it.
struct Decided {
    allowed: bool,
    /// The deciding policies' IDs, comma-separated.
    policies: String,
    /// The bundle's digest, short.
    bundle: String,
}

impl Decided {
    fn word(&self) -> &'static str {
        if self.allowed { "allow" } else { "deny" }
    }
}

/// The request's audit record, as the outcome's record needs to know it.
enum RequestRecord {
    /// None yet (the request was refused before it had one).
    Missing,
    /// Durable: the outcome's record carries only what is new (the request's record says the
    /// rest under the same incident ID).
    Durable,
    /// Built but not made durable: the outcome's record carries it all.
    Unwritten(Box<Record>),
}

/// Where a request ended: the reply to pass back, or a refusal with its detail for the log.
enum Outcome {
    Forwarded(Box<super::upstream::Reply>),
    /// The gateway answers itself (a callback it cannot correlate).
    Answered(Box<super::upstream::Reply>),
    /// A service description (WSDL or schema) the gateway serves.
    Document(Bytes),
    Refused(Refusal, String),
    /// Nobody is left to answer: the client's body broke off.
    Abandoned(String),
}

/// A request under way. If its future is dropped before it ends (the client closed the
/// connection or reset its HTTP/2 stream while the request was upstream), the drop still ends
/// it: an outcome record `cancelled` (after a request record, so every forwarded request has
/// its outcome), a log line and the metrics ([`Admitted`] gives the in-flight slot back).
struct Underway<'p, 'a> {
    pipeline: &'p Pipeline,
    x: Exchange<'a>,
    /// Accounted for (record, log line, metrics) by [`Pipeline::finish`].
    ended: bool,
}

/// A request admitted under the in-flight cap: its slot and its place in
/// `spocgw_requests_in_flight`, both given back when it is dropped, however the request ends.
struct Admitted<'p> {
    _permit: tokio::sync::SemaphorePermit<'p>,
    _client: super::admission::Slot<String>,
    gauge: &'p Gauge,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Drop for Underway<'_, '_> {
    fn drop(&mut self) {
        if !self.ended {
            self.pipeline.account(&mut self.x, "cancelled", 0, "the client went away before the answer", false);
        }
    }
}

/// A random (version 4) UUID. `Uuid::new_v4` makes a getrandom system call per request and a
/// call to aws-lc's generator costs about as much (RDRAND and a key schedule each time): each
/// runtime thread draws 32 IDs' worth of random bytes from aws-lc at once.
fn incident_id() -> String {
    const IDS: usize = 32;
    thread_local! {
        static POOL: std::cell::RefCell<([u8; 16 * IDS], usize)> = const { std::cell::RefCell::new(([0; 16 * IDS], IDS)) };
    }
    let drawn = POOL.with_borrow_mut(|(bytes, next)| {
        if *next == IDS {
            aws_lc_rs::rand::fill(bytes).ok()?;
            *next = 0;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[16 * *next..16 * (*next + 1)]);
        *next += 1;
        Some(id)
    });
    match drawn {
        Some(id) => uuid::Builder::from_random_bytes(id).into_uuid().to_string(),
        None => uuid::Uuid::new_v4().to_string(),
    }
}

impl Pipeline {
    /// Runs one request through the pipeline.
    pub async fn handle(
        &self,
        listener: ListenerKind,
        peer: &PeerIdentity,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, ClientGone> {
        let x = Exchange {
            incident: incident_id(),
            listener,
            peer,
            route: "none",
            operation: "unknown",
            version: None,
            message_id: None,
            facts: MessageFacts::default(),
            upstream_status: None,
            caller: None,
            decision: None,
            claimed: None,
            retry_after: None,
            hint: None,
            removed: Vec::new(),
            request_sha256: None,
            response_sha256: None,
            recipient: None,
            request_record: RequestRecord::Missing,
            started: Instant::now(),
        };
        let mut u = Underway { pipeline: self, x, ended: false };
        let (parts, mut body) = req.into_parts();
        let outcome = self.run(&mut u.x, &parts, &mut body).await;
        u.ended = true;
        // A body not read to its end (refused early, or over its limit) is read and discarded
        // for a bounded while after the response goes out, so that the client reads the
        // response instead of a reset (RFC 9112 9.6; RFC 9113 8.1 for HTTP/2).
        if !hyper::body::Body::is_end_stream(&body) {
            super::body::linger(body, expects_continue(&parts));
        }
        let gone = matches!(outcome, Outcome::Abandoned(_));
        let response = self.finish(&mut u.x, outcome);
        if gone { Err(ClientGone) } else { Ok(response) }
    }

    /// The request path, as DESIGN.md draws it: each stage either hands the next what it
    /// learned or ends the request with its outcome.
    async fn run(&self, x: &mut Exchange<'_>, req: &Parts, body: &mut Incoming) -> Outcome {
        match self.stages(x, req, body).await {
            Ok(outcome) | Err(outcome) => outcome,
        }
    }

    async fn stages(&self, x: &mut Exchange<'_>, req: &Parts, body: &mut Incoming) -> Result<Outcome, Outcome> {
        let (route, media, action) = self.route(x, req)?;
        if self.bare {
            let content_type = req.headers.get(CONTENT_TYPE).cloned();
            return Ok(self.run_bare(x, route, body, content_type, action).await);
        }
        let body = self.read_body(route, body).await?;
        let _admitted = self.admit(x.peer).map_err(|cap| Outcome::Refused(Refusal::Overloaded, cap.into()))?;
        self.check_rate(x, route)?;
        let checked = self.check(x, route, media.version, action.as_deref(), &body)?;
        let bundle = self.decide(x, route, checked.operation, media.version)?;
        // What is forwarded: the message without the header entries the route does not let
        // through; its Content-Type and SOAPAction written by the gateway.
        let body = match &checked.header {
            Some(h) => minimise::without(&body, &h.cuts()),
            None => body,
        };
        self.audit_request(x, route, &body).await?;
        let headers = forwarded_headers(media.version, checked.action.as_deref(), &x.incident);
        Ok(self.forward(x, route, &bundle, headers, body).await)
    }
}

#[cfg(test)]
mod tests {
    /// Incident IDs are version 4 UUIDs and do not repeat across refills of the pool.
    #[test]
    fn incident_ids_are_random_uuids() {
        let ids: std::collections::HashSet<String> = (0..200).map(|_| super::incident_id()).collect();
        assert_eq!(ids.len(), 200);
        for id in &ids {
            let u = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version(), Some(uuid::Version::Random), "{id}");
        }
    }
}
