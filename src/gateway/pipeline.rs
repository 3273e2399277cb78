//! One request, start to end (DESIGN.md): route, media type, body within its limit, envelope
//! read once, operation and action checked, forwarded upstream, reply checked, returned.
//! Every step that says no produces a [`Refusal`]; every request ends in one log line and one
//! metrics update under its incident ID.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use super::body::{BodyError, read_limited};
use super::fault::Refusal;
use super::routes::{
    ListenerKind, MediaTypeError, Route, RouteTable, SoapMediaType, UpstreamKind, action_agrees, parse_content_type,
};
use super::upstream::{Upstream, UpstreamError, soap_headers};
use crate::admin::metrics::{
    Metrics, RequestLabels, RouteLabels, UpstreamError as UpstreamErrorLabels, UpstreamLabels,
};
use crate::audit::{Audit, ClientCert, Record};
use crate::policy::{Bundle, Caller, PolicyState, minimise};
use crate::tls::PeerIdentity;
use crate::xml::facts::MessageFacts;
use crate::xml::validate::{Expect, HeaderOutline, Validated, XmlRefusal, line_col, validate, validate_outlined};
use crate::xml::xsd::Schema;
use crate::xml::{self, FaultText, SoapVersion};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FAULT: HeaderName = HeaderName::from_static("x-spocgw-fault");
const SOAPACTION: HeaderName = HeaderName::from_static("soapaction");

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
    pub metrics: Arc<Metrics>,
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
    /// The policy decision: allowed, deciding policy IDs, bundle digest (short).
    decision: Option<(bool, String, String)>,
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
    Forwarded(super::upstream::Reply),
    /// The gateway answers itself (a callback it cannot correlate).
    Answered(super::upstream::Reply),
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
    gauge: &'p prometheus_client::metrics::gauge::Gauge,
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

/// The `statusInfo` of a SPOC's unsolicited notification that new certificates are available.
const NEW_CERTIFICATES: &str = "new_cert_available_notification";

/// CSN 36 9791 results of a RequestCertificateRequest that announce a SendCertificatesRequest callback: the
/// request was received (or passed on) and is answered later. A synchronous answer
/// (`ok_cert_available`), a failure or a SOAP Fault expects no callback, so none is accepted.
const CALLBACK_FOLLOWS: [&str; 2] = ["ok_reception_ack", "ok_request_forwarded"];

/// The request's Content-Type, parsed; a second Content-Type header is refused like a
/// repeated parameter.
fn media_type(req: &Parts) -> Result<SoapMediaType, MediaTypeError> {
    let mut values = req.headers.get_all(CONTENT_TYPE).iter();
    let value = values.next().and_then(|v| v.to_str().ok()).ok_or(MediaTypeError::NotSoap)?;
    if values.next().is_some() {
        return Err(MediaTypeError::Repeated);
    }
    parse_content_type(value)
}

/// Whether an HTTP/1.1 client waits for `100 Continue` before sending its body: then a body
/// never asked for is not there to linger over.
fn expects_continue(req: &Parts) -> bool {
    req.version == http::Version::HTTP_11
        && req.headers.get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

fn no_upstream() -> Outcome {
    Outcome::Refused(Refusal::UpstreamUnavailable, "no police callback upstream".into())
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

    /// Admits a request whose body has arrived, under the in-flight cap: the cap counts
    /// requests the gateway is processing, not bodies a slow client is still sending, so a
    /// client trickling bodies cannot take every slot.
    /// One client certificate has at most its share of the slots.
    /// The error names the cap that was reached.
    fn admit(&self, peer: &PeerIdentity) -> Result<Admitted<'_>, &'static str> {
        let permit = self.in_flight.try_acquire().map_err(|_| "the gateway's in-flight cap reached")?;
        let client = self.in_flight_per_client.take(&peer.fingerprint).ok_or("the client's in-flight cap reached")?;
        self.metrics.in_flight.inc();
        Ok(Admitted { _permit: permit, _client: client, gauge: &self.metrics.in_flight })
    }

    async fn run(&self, x: &mut Exchange<'_>, req: &Parts, body: &mut Incoming) -> Outcome {
        // Route by listener and path.
        let Some(route) = self.routes.lookup(x.listener, req.uri.path()) else {
            x.version = media_type(req).ok().map(|m| m.version);
            // (The path is the caller's; only its length goes to the log.)
            let detail = format!("no route for a path of {} bytes", req.uri.path().len());
            return Outcome::Refused(Refusal::UnknownOperation, detail);
        };
        x.route = route.name;
        if req.method == Method::GET
            && x.listener == ListenerKind::Police
            && let Some(doc) = self.documents.get(route.path, req.uri.query())
        {
            x.operation = "ServiceDescription";
            return Outcome::Document(doc);
        }
        if req.method != Method::POST {
            return Outcome::Refused(Refusal::UnknownOperation, format!("method {}", req.method));
        }
        // Media type: SOAP 1.1 or 1.2, UTF-8, each parameter once.
        let media = match media_type(req) {
            Ok(m) => m,
            Err(e) => return Outcome::Refused(Refusal::UnsupportedMediaType, e.to_string()),
        };
        x.version = Some(media.version);
        let action = match media.version {
            SoapVersion::V11 => {
                let mut values = req.headers.get_all(SOAPACTION).iter();
                let first = values.next().and_then(|v| v.to_str().ok()).map(str::to_owned);
                if values.next().is_some() {
                    return Outcome::Refused(Refusal::SchemaViolation, "more than one SOAPAction header".into());
                }
                first
            }
            SoapVersion::V12 => media.action.clone(),
        };
        if self.bare {
            let content_type = req.headers.get(CONTENT_TYPE).cloned();
            return self.run_bare(x, route, body, content_type, action).await;
        }
        // Body, within the route's limit and the listener's deadline.
        let body = match self.read_body(route, body).await {
            Ok(b) => b,
            Err(refused) => return refused,
        };
        let _admitted = match self.admit(x.peer) {
            Ok(a) => a,
            Err(cap) => return Outcome::Refused(Refusal::Overloaded, cap.into()),
        };
        // The caller's rate on this route counts every request it sends, before any work is
        // spent on it: invalid and denied ones too (each would cost validation and a record).
        if let Err(wait) = self.policy.check_rate(route.name, &x.peer.fingerprint) {
            x.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
            return Outcome::Refused(Refusal::RateLimited, format!("over the rate of {}", route.name));
        }
        // Firewall, envelope and schema, in one pass.
        let expect = Expect::Soap { operations: &route.requests, fault_ok: false, headers: &route.request_headers };
        let validated = match validate(&self.schema, &route.limits, &body, expect) {
            Ok(v) => v,
            Err(e) => {
                x.hint = e.hint().map(|(field, rule)| (field.to_owned(), rule));
                return refuse_xml(&e, &body);
            }
        };
        x.message_id = validated.facts.message_id.clone();
        if validated.version != Some(media.version) {
            return Outcome::Refused(Refusal::SchemaViolation, "envelope version differs from content type".into());
        }
        let Some(operation) = route.operation(&validated.namespace, &validated.operation) else {
            return Outcome::Refused(Refusal::UnknownOperation, "operation not on this route".into());
        };
        x.operation = operation;
        x.facts = validated.facts;
        // An empty or absent SOAPAction (1.1) or `action` (1.2) leaves the Body to decide, as
        // SOAP stacks commonly send `SOAPAction: ""`; one that names another operation is refused.
        let named = action.as_deref().map(|a| a.trim().trim_matches('"')).filter(|a| !a.is_empty());
        if named.is_some_and(|a| !action_agrees(a, route.namespace, operation)) {
            return Outcome::Refused(
                Refusal::SchemaViolation,
                "SOAPAction/action does not name the Body's operation".into(),
            );
        }
        // Decide. The bundle is taken once: the reply's minimisation follows the same one.
        let bundle = self.policy.current();
        let caller = x.caller.insert(Caller::from_peer(x.peer));
        let now = unix_now();
        let d = bundle.decide(caller, operation, route.name, &x.facts, now);
        let policies = d.policies.join(",");
        x.decision = Some((d.allowed, policies.clone(), bundle.digest[..16].to_owned()));
        if !d.allowed {
            let why = if d.errors.is_empty() { String::new() } else { format!("; errors: {}", d.errors.join("; ")) };
            let by =
                if policies.is_empty() { "no policy permits".to_owned() } else { format!("forbidden by {policies}") };
            return Outcome::Refused(Refusal::PolicyDenied, format!("{by}{why}"));
        }
        // A callback consumes the messageID it answers: one the gateway never forwarded, or
        // one already answered, is answered here. A SPOC's unsolicited notification of new
        // certificates carries no messageID: it is no callback, and passes as policy allows.
        let unsolicited = x.facts.message_id.is_none() && x.facts.result.as_deref() == Some(NEW_CERTIFICATES);
        if operation == "SendCertificatesRequest" && !unsolicited {
            let claimed =
                x.facts.message_id.as_deref().and_then(|id| Some((id.to_owned(), self.policy.forwarded.claim(id)?)));
            if claimed.is_none() {
                return Outcome::Answered(callback_unknown(media.version));
            }
            x.claimed = claimed;
        }
        // What is forwarded: the message without the header entries the route does not let
        // through; its Content-Type and SOAPAction written by the gateway.
        let body = match &validated.header {
            Some(h) => minimise::without(&body, &h.cuts()),
            None => body,
        };
        if let Some(refused) = self.audit_request(x, route, &body).await {
            return refused;
        }
        // SOAP 1.1 over HTTP always carries a SOAPAction: `""` when the client named none.
        let (ct, soap_action) = match media.version {
            SoapVersion::V11 => {
                (SoapMediaType::forwarded(media.version, None), Some(format!("\"{}\"", named.unwrap_or_default())))
            }
            SoapVersion::V12 => (SoapMediaType::forwarded(media.version, named), None),
        };
        let headers = soap_headers(&ct, soap_action.as_deref(), Some(&x.incident));
        self.forward(x, route, &bundle, headers, body).await
    }

    /// Audit: the request's record must be durable before anything is forwarded; the refusal
    /// when it cannot be.
    async fn audit_request(&self, x: &mut Exchange<'_>, route: &Route, body: &[u8]) -> Option<Outcome> {
        x.request_sha256 = Some(crate::encoding::sha256_hex(body));
        x.recipient = Some(match route.upstream {
            UpstreamKind::Ministry => "ministry",
            UpstreamKind::PoliceCallback => "police_callback",
        });
        let record = self.record(x, "request");
        if let Err(e) = self.audit.append_durable(&record).await {
            x.request_record = RequestRecord::Unwritten(Box::new(record));
            return Some(Outcome::Refused(Refusal::AuditUnavailable, format!("audit: {e}")));
        }
        x.request_record = RequestRecord::Durable;
        None
    }

    /// The body, within the route's limit (else the refusal) and the listener's deadline.
    async fn read_body(&self, route: &Route, body: &mut Incoming) -> Result<Bytes, Outcome> {
        match tokio::time::timeout(self.request_timeout, read_limited(body, route.max_body)).await {
            Err(_) => Err(Outcome::Refused(
                Refusal::RequestTimeout,
                format!("body not received within {} ms", self.request_timeout.as_millis()),
            )),
            Ok(Err(BodyError::TooLarge)) => {
                Err(Outcome::Refused(Refusal::PayloadTooLarge, format!("over {} bytes", route.max_body)))
            }
            Ok(Err(BodyError::Read(e))) => Err(Outcome::Abandoned(format!("request body read failed: {e}"))),
            Ok(Ok(b)) => Ok(b),
        }
    }

    /// The route's upstream and its name for metrics; None when the police callback upstream
    /// is not configured (see [`no_upstream`]).
    fn upstream_for(&self, route: &Route) -> Option<(&Upstream, &'static str)> {
        match route.upstream {
            UpstreamKind::Ministry => Some((&self.ministry, "ministry")),
            UpstreamKind::PoliceCallback => self.police_callback.as_ref().map(|u| (u, "police_callback")),
        }
    }

    /// `bare_proxy`: the body within its limit, forwarded and its reply passed back as it is: no
    /// validation, policy or audit (with `bare_proxy_audit`, audited as in [`Self::run`]). The
    /// benchmark's floor, never a way to run the gateway.
    async fn run_bare(
        &self,
        x: &mut Exchange<'_>,
        route: &Route,
        body: &mut Incoming,
        content_type: Option<HeaderValue>,
        action: Option<String>,
    ) -> Outcome {
        let body = match self.read_body(route, body).await {
            Ok(b) => b,
            Err(refused) => return refused,
        };
        let _admitted = match self.admit(x.peer) {
            Ok(a) => a,
            Err(cap) => return Outcome::Refused(Refusal::Overloaded, cap.into()),
        };
        let ct = content_type.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("text/xml; charset=utf-8");
        let headers = soap_headers(ct, action.as_deref(), Some(&x.incident));
        let Some((upstream, _)) = self.upstream_for(route) else { return no_upstream() };
        if self.bare_audit
            && let Some(refused) = self.audit_request(x, route, &body).await
        {
            return refused;
        }
        match upstream.post(route.path, headers, body).await {
            Ok(reply) => {
                x.upstream_status = Some(reply.status.as_u16());
                Outcome::Forwarded(reply)
            }
            Err(e) if e.is_timeout() => Outcome::Refused(Refusal::UpstreamTimeout, e.to_string()),
            Err(e) => Outcome::Refused(Refusal::UpstreamUnavailable, e.to_string()),
        }
    }

    async fn forward(
        &self,
        x: &mut Exchange<'_>,
        route: &Route,
        bundle: &Bundle,
        headers: http::HeaderMap,
        body: Bytes,
    ) -> Outcome {
        let Some((upstream, name)) = self.upstream_for(route) else { return no_upstream() };
        let started = Instant::now();
        let result = upstream.post(route.path, headers, body).await;
        self.metrics
            .upstream_duration
            .get_or_create(&UpstreamLabels { upstream: name })
            .observe(started.elapsed().as_secs_f64());
        // (A request that found every pooled connection busy made no attempt to reach it.)
        if !matches!(result, Err(UpstreamError::Busy(..))) {
            self.metrics.upstream_up.get_or_create(&UpstreamLabels { upstream: name }).set(i64::from(result.is_ok()));
        }
        let reply = match result {
            Ok(r) => r,
            Err(e) => {
                self.metrics
                    .upstream_errors
                    .get_or_create(&UpstreamErrorLabels { upstream: name, kind: e.kind() })
                    .inc();
                let refusal = match &e {
                    e if e.is_timeout() => Refusal::UpstreamTimeout,
                    UpstreamError::TooLarge(_) => Refusal::UpstreamInvalidResponse,
                    _ => Refusal::UpstreamUnavailable,
                };
                return Outcome::Refused(refusal, format!("{name}: {e}"));
            }
        };
        x.upstream_status = Some(reply.status.as_u16());
        // A reply is passed back only when it is 200 with the operation's reply element, or a
        // 500 carrying a SOAP Fault, and valid against the schemas.
        let fault_ok = reply.status == StatusCode::INTERNAL_SERVER_ERROR;
        if reply.status != StatusCode::OK && !fault_ok {
            self.metrics.upstream_errors.get_or_create(&UpstreamErrorLabels { upstream: name, kind: "status" }).inc();
            return Outcome::Refused(Refusal::UpstreamUnavailable, format!("{name}: HTTP status {}", reply.status));
        }
        let expected: Vec<(&str, &str)> = route.reply_pairs(x.operation).into_iter().collect();
        let expect = Expect::Soap { operations: &expected, fault_ok, headers: &route.reply_headers };
        // The decision's bundle decides minimisation: the reply is outlined as deep as its
        // paths go.
        let fields = bundle.routes.minimise.get(x.operation).map(Vec::as_slice).unwrap_or_default();
        match validate_outlined(&self.schema, &route.limits, &reply.body, expect, minimise::depth(fields)) {
            Ok(v) if (fault_ok && v.operation != "Fault") || v.version != x.version => {
                self.metrics
                    .upstream_errors
                    .get_or_create(&UpstreamErrorLabels { upstream: name, kind: "invalid_reply" })
                    .inc();
                let why = if v.version != x.version {
                    "a SOAP version other than the request's"
                } else {
                    "HTTP 500 without a SOAP Fault"
                };
                Outcome::Refused(Refusal::UpstreamInvalidResponse, format!("{name}: {why}"))
            }
            Ok(v) => {
                // Only a request the Ministry took on for an answer later is waited for.
                if x.operation == "RequestCertificateRequest"
                    && v.operation != "Fault"
                    && v.facts.result.as_deref().is_some_and(|r| CALLBACK_FOLLOWS.contains(&r))
                    && let Some(id) = &x.facts.message_id
                {
                    self.policy.forwarded.remember(id);
                }
                // The reply's Content-Type is the gateway's too, for the version it checked.
                let mut reply = reply;
                let version = v.version.unwrap_or(SoapVersion::V11);
                reply.content_type = Some(HeaderValue::from_static(version.content_type()));
                Outcome::Forwarded(self.minimise(x, reply, bundle, fields, &v))
            }
            Err(e) => {
                self.metrics
                    .upstream_errors
                    .get_or_create(&UpstreamErrorLabels { upstream: name, kind: "invalid_reply" })
                    .inc();
                let (line, col) = line_col(&reply.body, e.offset());
                Outcome::Refused(Refusal::UpstreamInvalidResponse, format!("{name}: reply at {line}:{col}: {e}"))
            }
        }
    }

    /// An audit record of what is known about the request before it is forwarded.
    fn record(&self, x: &Exchange<'_>, event: &str) -> Record {
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
        r.route = Some(x.route.to_owned());
        r.operation = Some(x.operation.to_owned());
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
        r.document = f.document_number.as_ref().map(|d| self.audit.pseudonym(d));
        r.data = data;
        if let Some((allowed, policies, bundle)) = &x.decision {
            r.decision = Some(if *allowed { "allow" } else { "deny" }.to_owned());
            r.policies = Some(policies.clone());
            r.bundle = Some(bundle.clone());
        }
        r.request_sha256 = x.request_sha256.clone();
        r
    }

    /// The outcome's audit record: how the request ended. After a durable request record it
    /// names the incident and what is new (`audit query` joins the two); a request refused
    /// before its record was durable gets everything known about it here.
    fn outcome_record(&self, x: &mut Exchange<'_>, code: &str, status: u16) -> Record {
        let mut r = match std::mem::replace(&mut x.request_record, RequestRecord::Missing) {
            RequestRecord::Durable => {
                let mut r = Record::now("outcome");
                r.incident_id = Some(x.incident.clone());
                r.listener = Some(x.listener.name().to_owned());
                r.route = Some(x.route.to_owned());
                r.operation = Some(x.operation.to_owned());
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

    /// Removes from the validated reply what may not flow back: the Header's entries the route
    /// does not let through, and the reply fields of `fields` the policy does not let this
    /// caller receive (cut by the validator's outline, as deep as `fields` go).
    fn minimise(
        &self,
        x: &mut Exchange<'_>,
        mut reply: super::upstream::Reply,
        bundle: &Bundle,
        fields: &[String],
        v: &Validated,
    ) -> super::upstream::Reply {
        let mut cuts = v.header.as_ref().map(HeaderOutline::cuts).unwrap_or_default();
        if !cuts.is_empty() {
            x.removed.push("Header".to_owned());
        }
        if !fields.is_empty() {
            let caller = x.caller.take().unwrap_or_else(|| Caller::from_peer(x.peer));
            let now = unix_now();
            let withheld: Vec<&str> = fields
                .iter()
                .filter(|f| !bundle.may_receive(&caller, f, &x.facts, now).allowed)
                .map(String::as_str)
                .collect();
            let (spans, removed) = minimise::spans(&reply.body, &v.outline, &withheld);
            cuts.extend(spans);
            x.removed.extend(removed);
        }
        reply.body = minimise::without(&reply.body, &cuts);
        x.response_sha256 = Some(crate::encoding::sha256_hex(&reply.body));
        reply
    }

    /// Builds the response, then accounts for the request ([`Self::account`]).
    fn finish(&self, x: &mut Exchange<'_>, outcome: Outcome) -> Response<Full<Bytes>> {
        let delivered = matches!(&outcome, Outcome::Forwarded(r) if r.status == StatusCode::OK);
        let (mut response, code, detail) = match outcome {
            Outcome::Forwarded(reply) => (passed_back(reply), "ok", String::new()),
            Outcome::Answered(reply) => (
                passed_back(reply),
                "messageID_unknown",
                "callback for a messageID the gateway did not forward".to_owned(),
            ),
            Outcome::Refused(r, detail) => (self.refusal_response(x, r), r.code(), detail),
            Outcome::Document(doc) => {
                let mut resp = Response::new(Full::new(doc));
                resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/xml; charset=utf-8"));
                (resp, "ok", String::new())
            }
            Outcome::Abandoned(detail) => {
                // Nobody reads this response: status 0 on record says none was given.
                self.account(x, "cancelled", 0, &detail, false);
                return Response::new(Full::default());
            }
        };
        if let Ok(v) = HeaderValue::from_str(&x.incident) {
            response.headers_mut().insert(X_REQUEST_ID, v);
        }
        self.account(x, code, response.status().as_u16(), &detail, delivered);
        response
    }

    /// Every request ends here, answered, refused or abandoned (status 0: nobody was left to
    /// answer): its outcome record (refused ones included), its one log line, its metrics. A
    /// callback the police side did not take (`delivered`: a 200) leaves its messageID for a
    /// retry.
    fn account(&self, x: &mut Exchange<'_>, code: &'static str, status: u16, detail: &str, delivered: bool) {
        if let Some((id, at)) = x.claimed.take()
            && !delivered
        {
            self.policy.forwarded.restore(&id, at);
        }
        if !self.bare || self.bare_audit {
            // Refused for load before any record of its own: recorded within the window's
            // bound, else summarised, so that a client kept over a cap cannot fill the disk.
            if matches!(x.request_record, RequestRecord::Missing)
                && [Refusal::Overloaded.code(), Refusal::RateLimited.code()].contains(&code)
            {
                let record = self.outcome_record(x, code, status);
                self.load_refusals.refused(x.listener.name(), code, x.peer, || record);
            } else {
                let record = self.outcome_record(x, code, status);
                self.audit.append(&record);
            }
        }
        let elapsed = x.started.elapsed();
        let listener = x.listener.name();
        self.metrics
            .requests
            .get_or_create(&RequestLabels { listener, route: x.route, operation: x.operation, code })
            .inc();
        self.metrics
            .request_duration
            .get_or_create(&RouteLabels { listener, route: x.route })
            .observe(elapsed.as_secs_f64());
        // Strings as `&str`: a field given by `%` (Display) is formatted through `fmt` instead
        // of copied (about 400 instructions a line).
        let removed = x.removed.join(",");
        tracing::info!(
            incident_id = x.incident.as_str(),
            listener,
            route = x.route,
            operation = x.operation,
            message_id = x.message_id.as_deref().unwrap_or(""),
            peer_subject = x.peer.subject.as_str(),
            peer_fingerprint = x.peer.fingerprint.as_str(),
            code,
            detail,
            status,
            upstream_status = x.upstream_status.unwrap_or(0),
            latency_us = elapsed.as_micros() as u64,
            decision = x.decision.as_ref().map(|d| if d.0 { "allow" } else { "deny" }).unwrap_or(""),
            policies = x.decision.as_ref().map(|d| d.1.as_str()).unwrap_or(""),
            bundle = x.decision.as_ref().map(|d| d.2.as_str()).unwrap_or(""),
            removed = removed.as_str(),
            "request"
        );
    }

    fn refusal_response(&self, x: &Exchange<'_>, r: Refusal) -> Response<Full<Bytes>> {
        let text = FaultText {
            code: r.code(),
            reason: r.reason(),
            sender: r.is_sender(),
            incident_id: &x.incident,
            message_id: x.message_id.as_deref(),
            hint: x.hint.as_ref().map(|(f, r)| (f.as_str(), *r)),
        };
        let (body, ct) = match x.version {
            Some(v) => xml::soap_fault(v, &text),
            None => (xml::plain_fault(&text), "text/plain; charset=utf-8"),
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = r.status();
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        h.insert(X_FAULT, HeaderValue::from_static(r.code()));
        if let Some(s) = r.retry_after() {
            h.insert(RETRY_AFTER, HeaderValue::from_static(s));
        }
        if let Some(secs) = x.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            h.insert(RETRY_AFTER, v);
        }
        resp
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// An upstream's reply (or the gateway's own answer) as the client gets it: status, body and
/// the Content-Type the gateway set.
fn passed_back(reply: super::upstream::Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(reply.body));
    *resp.status_mut() = reply.status;
    if let Some(ct) = reply.content_type {
        resp.headers_mut().insert(CONTENT_TYPE, ct);
    }
    resp
}

/// The gateway's own answer to a SendCertificatesRequest it cannot correlate (CSN 36 9791).
fn callback_unknown(version: SoapVersion) -> super::upstream::Reply {
    let ns = super::routes::CSN_NS;
    let body = crate::xml::soap::envelope(
        version,
        &format!(
            "<SendCertificatesResponse xmlns=\"{ns}\"><result>failure_messageID_unknown</result></SendCertificatesResponse>"
        ),
    );
    let ct = version.content_type();
    super::upstream::Reply {
        retry_after: None,
        request_id: None,
        status: StatusCode::OK,
        content_type: Some(HeaderValue::from_static(ct)),
        body: Bytes::from(body),
    }
}

/// Maps a validator refusal to the contract's code; the detail (which limit, which element,
/// where) goes to the log only.
fn refuse_xml(e: &XmlRefusal, body: &[u8]) -> Outcome {
    let refusal = match e {
        XmlRefusal::Malformed { .. } => Refusal::XmlMalformed,
        XmlRefusal::Threat { .. } => Refusal::XmlThreat,
        XmlRefusal::Invalid { .. } => Refusal::SchemaViolation,
        XmlRefusal::UnknownOperation { .. } => Refusal::UnknownOperation,
        XmlRefusal::ContentMismatch { .. } => Refusal::ContentMismatch,
    };
    let (line, col) = line_col(body, e.offset());
    Outcome::Refused(refusal, format!("{e} at {line}:{col}"))
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
