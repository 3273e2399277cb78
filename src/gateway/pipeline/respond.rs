//! Respond: the response the client gets (a reply passed back, the gateway's own answer, a
//! service description, or a refusal as a SOAP Fault), and the log line and metrics every
//! request ends with.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::super::refusal::Refusal;
use super::super::routes::Operation;
use super::super::upstream::Reply;
use super::exchange::{Decided, Exchange, Outcome};
use super::{RequestLabels, RequestMetrics, RouteLabels, X_FAULT, X_REQUEST_ID};
use crate::xml::{self, FaultText};

/// An upstream's reply (or the gateway's own answer) as the client gets it: status, body and
/// the Content-Type the gateway set.
fn passed_back(reply: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(reply.body));
    *resp.status_mut() = reply.status;
    if let Some(ct) = reply.content_type {
        resp.headers_mut().insert(CONTENT_TYPE, ct);
    }
    resp
}

/// How a request ended, for its record, log line and metrics.
pub(super) struct Ended {
    pub(super) code: &'static str,
    pub(super) status: u16,
    pub(super) detail: String,
    /// A callback the police side took (a 200 passed back).
    pub(super) delivered: bool,
}

/// The request metrics.
pub(super) struct Responder {
    metrics: RequestMetrics,
}

impl Responder {
    pub(super) fn new(metrics: RequestMetrics) -> Responder {
        Responder { metrics }
    }

    /// The response for `outcome` (none is read for an abandoned request: status 0 on record
    /// says none was given), and how the request ended.
    pub(super) fn respond(&self, x: &Exchange<'_>, outcome: Outcome) -> (Response<Full<Bytes>>, Ended) {
        let delivered = matches!(&outcome, Outcome::Forwarded(r) if r.status == StatusCode::OK);
        let (mut response, code, detail) = match outcome {
            Outcome::Forwarded(reply) => (passed_back(*reply), "ok", String::new()),
            Outcome::Answered(reply, why) => (passed_back(*reply), why.code(), why.detail().to_owned()),
            Outcome::Refused(r, detail) => (refusal_response(x, r), r.code(), detail),
            Outcome::Document(doc) => {
                let mut resp = Response::new(Full::new(doc));
                resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/xml; charset=utf-8"));
                (resp, "ok", String::new())
            }
            Outcome::Abandoned(detail) => {
                let ended = Ended { code: "cancelled", status: 0, detail, delivered: false };
                return (Response::new(Full::default()), ended);
            }
        };
        if let Ok(v) = HeaderValue::from_str(x.incident()) {
            response.headers_mut().insert(X_REQUEST_ID, v);
        }
        let status = response.status().as_u16();
        (response, Ended { code, status, detail, delivered })
    }

    /// The request's one log line and its metrics.
    pub(super) fn log(&self, x: &Exchange<'_>, ended: &Ended) {
        let elapsed = x.started().elapsed();
        let (listener, route, operation) = (x.listener().name(), x.route_name(), Operation::label(x.operation()));
        let code = ended.code;
        self.metrics.requests.get_or_create(&RequestLabels { listener, route, operation, code }).inc();
        self.metrics.duration.get_or_create(&RouteLabels { listener, route }).observe(elapsed.as_secs_f64());
        // Strings as `&str`: a field given by `%` (Display) is formatted through `fmt` instead
        // of copied (about 400 instructions a line).
        let removed = x.removed().join(",");
        let decision = x.decision();
        let peer = x.peer();
        tracing::info!(
            incident_id = x.incident(),
            listener,
            route,
            operation,
            message_id = x.message_id().unwrap_or(""),
            peer_subject = peer.subject.as_str(),
            peer_fingerprint = peer.fingerprint.as_str(),
            code,
            detail = ended.detail.as_str(),
            status = ended.status,
            upstream_status = x.upstream_status().unwrap_or(0),
            latency_us = elapsed.as_micros() as u64,
            decision = decision.map_or("", Decided::word),
            policies = decision.map_or("", |d| d.policies.as_str()),
            bundle = decision.map_or("", |d| d.bundle.as_str()),
            removed = removed.as_str(),
            "request"
        );
    }
}

/// A refusal as the client gets it: a SOAP Fault of the request's version (plain text when it
/// was no SOAP), the code in `X-Spocgw-Fault`, `Retry-After` where the refusal has one.
fn refusal_response(x: &Exchange<'_>, r: Refusal) -> Response<Full<Bytes>> {
    let text = FaultText {
        code: r.code(),
        reason: r.reason(),
        sender: r.is_sender(),
        incident_id: x.incident(),
        message_id: x.message_id(),
        hint: x.hint(),
    };
    let (body, ct) = match x.version() {
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
    if let Some(secs) = x.retry_after()
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        h.insert(RETRY_AFTER, v);
    }
    resp
}
