//! One request, start to end (DESIGN.md): route, media type, body within its limit, envelope
//! read once, operation and action checked, decided, recorded, forwarded upstream, reply checked
//! and minimised, returned. Each stage is a struct in the file named for it, holding what it
//! uses and nothing else; [`Pipeline::stages`] is the one list that runs them. Every step that
//! says no produces a [`Refusal`](super::Refusal); every request ends in one outcome record, one log line and
//! one metrics update under its incident ID.
//!
//! | stage | struct | file | holds |
//! |---|---|---|---|
//! | route | `Router` | `route.rs` | the route table, the schemas (service descriptions) |
//! | admit | `Admission` | `admit.rs` | the request deadline, the in-flight caps, the rates |
//! | check | `Checker` | `check.rs` | the schemas |
//! | decide | `Decider` | `decide.rs` | the policy |
//! | correlate | `Correlator` | `correlate.rs` | the callbacks awaited (their journal), the pair's peer |
//! | record | `Recorder` | `record.rs` | the audit log, the load-refusal summary |
//! | forward | `Forwarder` | `forward.rs` | the upstreams, their metrics |
//! | reply | `ReplyCheck` | `reply.rs` | the schemas, the upstreams' metrics |
//! | respond | `Responder` | `respond.rs` | the request metrics |

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderName;
use http::request::Parts;
use http::{Request, Response};
use http_body_util::Full;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

mod admit;
mod bare;
mod check;
mod correlate;
mod decide;
mod exchange;
mod forward;
mod record;
mod reply;
mod respond;
mod route;

use super::body::MessageBody;
use super::refusal_log::RequestRefusals;
use super::routes::{ListenerKind, RouteTable};
use super::schemas::Schemas;
use super::upstream::{Upstream, UpstreamMetrics};
use crate::audit::Audit;
use crate::policy::PolicyState;
use crate::tls::PeerIdentity;
use admit::{Admission, expects_continue};
use bare::Bare;
use check::Checker;
use correlate::Correlator;
use decide::Decider;
use exchange::{Exchange, Outcome};
use forward::{Forwarder, forwarded_headers};
use record::Recorder;
use reply::ReplyCheck;
use respond::{Ended, Responder};
use route::Router;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FAULT: HeaderName = HeaderName::from_static("x-spocgw-fault");

/// The client went away (its body broke off) before it was answered: the connection is dropped.
#[derive(Debug, thiserror::Error)]
#[error("the client went away before it was answered")]
pub struct ClientGone;

/// What the pipeline is built from, shared by every connection.
pub struct PipelineParts {
    pub routes: RouteTable,
    /// The schemas in force, and the service descriptions served from them.
    pub schemas: Arc<Schemas>,
    pub policy: Arc<PolicyState>,
    pub audit: Arc<Audit>,
    pub ministry: Upstream,
    pub police_callback: Option<Upstream>,
    pub metrics: RequestMetrics,
    pub upstream_metrics: Arc<UpstreamMetrics>,
    /// Requests in process at most, and per client certificate.
    pub max_in_flight: usize,
    pub max_in_flight_per_client: usize,
    /// Requests refused for load, recorded within bounds and summarised.
    pub load_refusals: Arc<RequestRefusals>,
    pub request_timeout: Duration,
    /// Benchmark floor only (`bare_proxy = true`): route, body limit and forward, nothing else.
    pub bare: bool,
    /// Benchmarks only, with `bare`: the audit stage too (`bare_proxy_audit = true`).
    pub bare_audit: bool,
    /// The pair link to the other appliance, when this one is half of a pair.
    pub pair: Option<Arc<super::pair::PairLink>>,
    /// The callbacks awaited.
    pub correlation: Arc<super::correlation::Correlation>,
}

/// The stages, each holding what it uses.
pub struct Pipeline {
    router: Router,
    admission: Admission,
    checker: Checker,
    decider: Decider,
    correlator: Correlator,
    recorder: Recorder,
    forwarder: Forwarder,
    reply_check: ReplyCheck,
    responder: Responder,
    /// The benchmark floor instead of the stages.
    bare: Option<Bare>,
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

/// A request under way. If its future is dropped before it ends (the client closed the
/// connection or reset its HTTP/2 stream while the request was upstream), the drop still ends
/// it: an outcome record `cancelled` (after a request record, so every forwarded request has
/// its outcome), a log line and the metrics (the in-flight slot is given back by its own drop).
struct Underway<'a> {
    pipeline: &'a Pipeline,
    x: Exchange<'a>,
    /// Accounted for (record, log line, metrics) by [`Pipeline::finish`].
    ended: bool,
}

impl Drop for Underway<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let ended = Ended {
                code: "cancelled",
                status: 0,
                detail: "the client went away before the answer".into(),
                delivered: false,
            };
            self.pipeline.account(&mut self.x, &ended);
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
    pub fn new(p: PipelineParts) -> Pipeline {
        let admission = Admission::new(
            p.request_timeout,
            (p.max_in_flight, p.max_in_flight_per_client),
            p.metrics.in_flight.clone(),
            p.policy.clone(),
        );
        Pipeline {
            checker: Checker::new(p.schemas.clone()),
            reply_check: ReplyCheck::new(p.schemas.clone(), p.upstream_metrics.clone()),
            router: Router::new(p.routes, p.schemas),
            admission,
            decider: Decider::new(p.policy.clone()),
            correlator: Correlator::new(p.correlation, p.pair),
            recorder: Recorder::new(p.audit, p.load_refusals, !p.bare || p.bare_audit),
            forwarder: Forwarder::new(p.ministry, p.police_callback, p.upstream_metrics),
            responder: Responder::new(p.metrics),
            bare: p.bare.then_some(Bare { audit: p.bare_audit }),
        }
    }

    /// The route table (the schemas' reload checks it).
    pub fn routes(&self) -> &RouteTable {
        self.router.routes()
    }

    /// The schemas in force.
    pub fn schemas(&self) -> &Arc<Schemas> {
        self.router.schemas()
    }

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
        let x = Exchange::new(incident_id(), listener, peer);
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
        let ended = match self.bare {
            Some(bare) => self.bare_stages(bare, x, req, body).await,
            None => self.stages(x, req, body).await,
        };
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
        let (route, media, action) = self.router.route(x, req)?;
        let body = self.admission.read_body(route, body).await?;
        let _admitted = self.admission.admit(x.peer())?;
        self.admission.check_rate(x, route)?;
        let checked = self.checker.check(x, route, media.version, action.as_deref(), &body)?;
        let bundle = self.decider.decide(x, route, checked.operation)?;
        self.correlator.correlate(x, checked.operation, media.version).await?;
        let body = checked.forwardable(body);
        self.recorder.audit_request(x, route, &body).await?;
        let headers = forwarded_headers(media.version, checked.action.as_deref(), x.incident());
        let answer = self.forwarder.forward(x, route, headers, body).await?;
        let passed = self.reply_check.check(x, route, checked.operation, &bundle, answer)?;
        self.correlator.remember(x, checked.operation, passed.result.as_deref()).await;
        Ok(Outcome::Forwarded(Box::new(passed.reply)))
    }

    /// The response, then the accounting every request ends with ([`Self::account`]).
    fn finish(&self, x: &mut Exchange<'_>, outcome: Outcome) -> Response<Full<Bytes>> {
        let (response, ended) = self.responder.respond(x, outcome);
        self.account(x, &ended);
        response
    }

    /// Every request ends here, answered, refused or abandoned (status 0: nobody was left to
    /// answer): a callback's messageID given back if it was not delivered, the outcome record,
    /// the log line and the metrics.
    fn account(&self, x: &mut Exchange<'_>, ended: &Ended) {
        self.correlator.release(x, ended.delivered);
        self.recorder.outcome(x, ended.code, ended.status);
        self.responder.log(x, ended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditConfig, Record};
    use crate::gateway::config::{RouteLimits, UpstreamConfig, XmlConfig};
    use crate::policy::PolicyConfig;
    use http::StatusCode;
    use http::header::CONTENT_TYPE;

    /// The stage table (this module's doc) is the code: each struct is defined in its file and
    /// is a field of `Pipeline`, `stages()` calls them in the table's order, and
    /// docs/request-path.md holds the same table.
    #[test]
    fn stages_are_documented_as_the_code_has_them() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let here = std::fs::read_to_string(root.join("src/gateway/pipeline/mod.rs")).unwrap();
        let rows: Vec<Vec<String>> = here
            .lines()
            .filter_map(|l| l.strip_prefix("//! | "))
            .skip(1)
            .map(|l| l.trim_end_matches(" |").split(" | ").map(|c| c.trim_matches('`').to_owned()).collect())
            .collect();
        assert_eq!(rows.len(), 9, "{rows:?}");
        let stages = &here[here.find("async fn stages<").unwrap()..];
        let stages = &stages[..stages.find("\n    }\n").unwrap()];
        let mut at = 0;
        let mut table = String::from("| stage | struct | file | holds |\n|---|---|---|---|\n");
        for row in &rows {
            let [stage, name, file, holds] = &row[..] else { panic!("{row:?}") };
            let text = std::fs::read_to_string(root.join("src/gateway/pipeline").join(file)).unwrap();
            assert!(text.contains(&format!("pub(super) struct {name} ")), "{name} is not defined in {file}");
            let field = here
                .lines()
                .find_map(|l| l.trim().strip_suffix(&format!(": {name},")).map(str::to_owned))
                .unwrap_or_else(|| panic!("{name} is no field of Pipeline"));
            // The response is made after the stages, however they ended.
            if stage == "respond" {
                assert!(here.contains(&format!("self.{field}.respond(")));
            } else {
                at += stages[at..].find(&format!("self.{field}.")).unwrap_or_else(|| panic!("{stage} out of order"));
            }
            table.push_str(&format!("| {stage} | `{name}` | `src/gateway/pipeline/{file}` | {holds} |\n"));
        }
        let doc = std::fs::read_to_string(root.join("docs/request-path.md")).unwrap();
        let (begin, end) = ("<!-- stages: begin -->\n", "<!-- stages: end -->");
        let a = doc.find(begin).unwrap() + begin.len();
        assert_eq!(&doc[a..doc.find(end).unwrap()], table, "docs/request-path.md's stage table");
    }

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
        let pipeline = Pipeline::new(PipelineParts {
            routes,
            schemas: Arc::new(schemas),
            policy: Arc::new(PolicyState::load(&policy).unwrap()),
            load_refusals: Arc::new(RequestRefusals::new(audit.clone())),
            audit,
            ministry: Upstream::new(&upstream).unwrap(),
            police_callback: None,
            metrics: RequestMetrics::default(),
            upstream_metrics: Arc::default(),
            max_in_flight: 8,
            max_in_flight_per_client: 8,
            request_timeout: std::time::Duration::from_secs(5),
            bare: false,
            bare_audit: false,
            pair: None,
            correlation: Arc::new(crate::gateway::correlation::Correlation::in_memory(
                crate::gateway::correlation::Rule::csn369791(std::time::Duration::from_secs(60)),
                16,
            )),
        });
        (pipeline, PeerIdentity::from_der(cert.der()).unwrap())
    }

    fn post(path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
        Request::post(path).header(CONTENT_TYPE, "text/xml; charset=utf-8").body(Full::new(body.into())).unwrap()
    }

    /// The outcome records the log holds, once written.
    async fn outcomes(p: &Pipeline, dir: &std::path::Path) -> Vec<Record> {
        p.recorder.audit().checkpoint_now().await.unwrap();
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
