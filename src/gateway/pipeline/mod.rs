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
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Semaphore;

mod admit;
mod bare;
mod check;
mod decide;
mod forward;
mod record;
mod respond;

use super::body::MessageBody;
use super::fault::Refusal;
use super::routes::{ListenerKind, Operation, Route, RouteTable, SoapMediaType, UpstreamKind};
use super::upstream::{Upstream, UpstreamError, UpstreamMetrics, soap_headers};
use crate::audit::{Audit, ClientCert, Record};
use crate::policy::{Bundle, Caller, PolicyState, minimise};
use crate::tls::PeerIdentity;
use crate::xml::facts::MessageFacts;
use crate::xml::validate::{Expect, HeaderOutline, Validated, line_col, validate_outlined};
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
    /// The schemas in force, and the service descriptions served from them.
    pub schemas: Arc<super::schemas::Schemas>,
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
    pub request_timeout: std::time::Duration,
    /// Benchmark floor only (`bare_proxy = true`): route, body limit and forward, nothing else.
    pub bare: bool,
    /// Benchmarks only, with `bare`: the audit stage too (`bare_proxy_audit = true`).
    pub bare_audit: bool,
    /// The pair link to the other appliance, when this one is half of a pair.
    pub pair: Option<Arc<super::pair::PairLink>>,
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
    /// The route, once the path named one.
    route: Option<&'a Route>,
    /// The operation, once the Body (or a GET for a service description) named one.
    operation: Option<Operation>,
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

impl Exchange<'_> {
    /// The route's name on record and in metrics: `none` when the path named no route.
    fn route_name(&self) -> &'static str {
        self.route.map_or("none", |r| r.name)
    }
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
struct Underway<'a> {
    pipeline: &'a Pipeline,
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

impl Drop for Underway<'_> {
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
    ///
    /// # Errors
    /// [`ClientGone`] when the client's body broke off: nobody is left to answer, and the
    /// connection is dropped. Every other end (refusals included) is a response.
    pub async fn handle<'a, B: MessageBody>(
        &'a self,
        listener: ListenerKind,
        peer: &'a PeerIdentity,
        req: Request<B>,
    ) -> Result<Response<Full<Bytes>>, ClientGone> {
        let x = Exchange {
            incident: incident_id(),
            listener,
            peer,
            route: None,
            operation: None,
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
    async fn run<'a, B: MessageBody>(&'a self, x: &mut Exchange<'a>, req: &Parts, body: &mut B) -> Outcome {
        let ended = if self.bare { self.bare_stages(x, req, body).await } else { self.stages(x, req, body).await };
        match ended {
            Ok(outcome) | Err(outcome) => outcome,
        }
    }

    async fn stages<'a, B: MessageBody>(
        &'a self,
        x: &mut Exchange<'a>,
        req: &Parts,
        body: &mut B,
    ) -> Result<Outcome, Outcome> {
        let (route, media, action) = self.route(x, req)?;
        let body = self.read_body(route, body).await?;
        let _admitted = self.admit(x.peer).map_err(|cap| Outcome::Refused(Refusal::Overloaded, cap.into()))?;
        self.check_rate(x, route)?;
        let checked = self.check(x, route, media.version, action.as_deref(), &body)?;
        let bundle = self.decide(x, route, checked.operation)?;
        self.correlate(x, checked.operation, media.version).await?;
        // What is forwarded: the message without the header entries the route does not let
        // through; its Content-Type and SOAPAction written by the gateway.
        let body = match &checked.header {
            Some(h) => minimise::without(&body, &h.cuts()),
            None => body,
        };
        self.audit_request(x, route, &body).await?;
        let headers = forwarded_headers(media.version, checked.action.as_deref(), &x.incident);
        Ok(self.forward(x, route, checked.operation, &bundle, headers, body).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditConfig;
    use crate::gateway::config::{RouteLimits, UpstreamConfig, XmlConfig};
    use crate::policy::PolicyConfig;

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

    /// A pipeline over an audit log in `dir`, the embedded schemas and policy, and an upstream
    /// that nothing answers (these tests end before the forward stage); the caller's identity.
    fn pipeline(dir: &std::path::Path) -> (Pipeline, PeerIdentity) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "officer-0001");
        params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, "border-verifier");
        let cert = params.self_signed(&key).unwrap();
        for (name, text) in [("cert.pem", cert.pem()), ("key.pem", key.serialize_pem()), ("ps.key", "ab".repeat(32))] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let audit: AuditConfig = toml::from_str(&format!(
            "dir = {:?}\ncheckpoint_key = {:?}\npseudonym_key = {:?}",
            dir.join("log"),
            dir.join("key.pem"),
            dir.join("ps.key")
        ))
        .unwrap();
        let upstream: UpstreamConfig = toml::from_str(&format!(
            "url = \"https://127.0.0.1:9\"\nca = {:?}\ncert = {:?}\nkey = {:?}",
            dir.join("cert.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem")
        ))
        .unwrap();
        let limits: RouteLimits = toml::from_str("bio_max_body_bytes = 4096").unwrap();
        let policy: PolicyConfig = toml::from_str("").unwrap();
        let audit = crate::audit::Audit::start(&audit).unwrap();
        let routes = RouteTable::new(&limits, &XmlConfig::default());
        let schemas = super::super::schemas::Schemas::load(None, "https://gateway.test", &routes).unwrap();
        let pipeline = Pipeline {
            routes,
            schemas: Arc::new(schemas),
            policy: Arc::new(PolicyState::load(&policy).unwrap()),
            load_refusals: Arc::new(super::super::refusals::RequestRefusals::new(audit.clone())),
            audit,
            ministry: Upstream::new(&upstream).unwrap(),
            police_callback: None,
            metrics: RequestMetrics::default(),
            upstream_metrics: Arc::default(),
            in_flight: Semaphore::new(8),
            in_flight_per_client: super::super::admission::PerKey::new(8),
            request_timeout: std::time::Duration::from_secs(5),
            bare: false,
            bare_audit: false,
            pair: None,
        };
        (pipeline, PeerIdentity::from_der(cert.der()).unwrap())
    }

    fn post(path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
        Request::post(path).header(CONTENT_TYPE, "text/xml; charset=utf-8").body(Full::new(body.into())).unwrap()
    }

    /// The outcome records the log holds, once written.
    async fn outcomes(p: &Pipeline, dir: &std::path::Path) -> Vec<Record> {
        p.audit.checkpoint_now().await.unwrap();
        let log = crate::audit::verify::read_log(&dir.join("log")).unwrap();
        log.records.into_iter().map(|(r, _, _)| r).filter(|r| r.event == "outcome").collect()
    }

    /// The stages run over a body held in memory, with no listener, TLS or socket: each
    /// refusal reaches the client as its fault and the log as an outcome record naming the
    /// route and operation as far as they were known.
    #[tokio::test]
    async fn stages_refuse_in_memory_requests_on_record() {
        let tmp = tempfile::tempdir().unwrap();
        let (p, peer) = pipeline(tmp.path());
        let police = ListenerKind::Police;

        let r = p.handle(police, &peer, post("/nowhere", "<x/>")).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[X_FAULT], "UnknownOperation");

        let r = p.handle(police, &peer, post("/bio/v1", "<s:Envelope")).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[X_FAULT], "XmlMalformed");
        let incident = r.headers()[X_REQUEST_ID].to_str().unwrap().to_owned();

        let r = p.handle(police, &peer, post("/bio/v1", vec![b' '; 5000])).await.unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

        // Refused for its content: the record still names the operation the Body held.
        let bad = crate::sim::messages::BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 64)
            .verify_fingerprint()
            .replacen("<FingerPosition>", "<FingerPosition>99", 1);
        let bad = crate::xml::soap::envelope(crate::xml::SoapVersion::V11, &bad);
        let r = p.handle(police, &peer, post("/bio/v1", bad)).await.unwrap();
        assert_eq!(r.headers()[X_FAULT], "SchemaViolation");

        let wsdl = Request::get("/bio/v1?wsdl").body(Full::new(Bytes::new())).unwrap();
        let r = p.handle(police, &peer, wsdl).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);

        let got: Vec<(String, String, String)> = outcomes(&p, tmp.path())
            .await
            .into_iter()
            .map(|r| (r.route.unwrap(), r.operation.unwrap(), r.code.unwrap()))
            .collect();
        let want = [
            ("none", "unknown", "UnknownOperation"),
            ("bio_v1", "unknown", "XmlMalformed"),
            ("bio_v1", "unknown", "PayloadTooLarge"),
            ("bio_v1", "VerifyFingerprintRequest", "SchemaViolation"),
            ("bio_v1", "ServiceDescription", "ok"),
        ];
        let want: Vec<(String, String, String)> =
            want.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
        assert_eq!(got, want);
        let records = outcomes(&p, tmp.path()).await;
        assert_eq!(records[1].incident_id.as_deref(), Some(incident.as_str()));
        assert_eq!(records[1].client.as_ref().unwrap().fingerprint, peer.fingerprint);
    }
}
