//! Respond: the response the client gets, and the accounting every request ends with (its
//! outcome record, its log line, its metrics).

use super::*;

/// An upstream's reply (or the gateway's own answer) as the client gets it: status, body and
/// the Content-Type the gateway set.
pub(super) fn passed_back(reply: super::super::upstream::Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(reply.body));
    *resp.status_mut() = reply.status;
    if let Some(ct) = reply.content_type {
        resp.headers_mut().insert(CONTENT_TYPE, ct);
    }
    resp
}

pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Pipeline {
    /// Builds the response, then accounts for the request ([`Self::account`]).
    pub(super) fn finish(&self, x: &mut Exchange<'_>, outcome: Outcome) -> Response<Full<Bytes>> {
        let delivered = matches!(&outcome, Outcome::Forwarded(r) if r.status == StatusCode::OK);
        let (mut response, code, detail) = match outcome {
            Outcome::Forwarded(reply) => (passed_back(*reply), "ok", String::new()),
            Outcome::Answered(reply) => (
                passed_back(*reply),
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
    pub(super) fn account(&self, x: &mut Exchange<'_>, code: &'static str, status: u16, detail: &str, delivered: bool) {
        if let Some((id, at)) = x.claimed.take()
            && !delivered
        {
            self.policy.forwarded.restore(&id, at);
            if let Some(p) = &self.pair {
                p.give_back(id, at.elapsed());
            }
        }
        if !self.bare || self.bare_audit {
            // Refused for load before any record of its own: recorded within the window's
            // bound, else summarised, so that a client kept over a cap cannot fill the disk.
            if matches!(x.request_record, RequestRecord::Missing)
                && [Refusal::Overloaded.code(), Refusal::RateLimited.code()].contains(&code)
            {
                // Built only when the window writes it: a flood over a cap costs no record each.
                let (listener, peer) = (x.listener.name(), x.peer);
                self.load_refusals.refused(listener, code, peer, || self.outcome_record(x, code, status));
            } else {
                let record = self.outcome_record(x, code, status);
                self.audit.append(&record);
            }
        }
        let elapsed = x.started.elapsed();
        let (listener, route, operation) = (x.listener.name(), x.route_name(), Operation::label(x.operation));
        self.metrics.requests.get_or_create(&RequestLabels { listener, route, operation, code }).inc();
        self.metrics.duration.get_or_create(&RouteLabels { listener, route }).observe(elapsed.as_secs_f64());
        // Strings as `&str`: a field given by `%` (Display) is formatted through `fmt` instead
        // of copied (about 400 instructions a line).
        let removed = x.removed.join(",");
        tracing::info!(
            incident_id = x.incident.as_str(),
            listener,
            route,
            operation,
            message_id = x.message_id.as_deref().unwrap_or(""),
            peer_subject = x.peer.subject.as_str(),
            peer_fingerprint = x.peer.fingerprint.as_str(),
            code,
            detail,
            status,
            upstream_status = x.upstream_status.unwrap_or(0),
            latency_us = elapsed.as_micros() as u64,
            decision = x.decision.as_ref().map_or("", Decided::word),
            policies = x.decision.as_ref().map_or("", |d| d.policies.as_str()),
            bundle = x.decision.as_ref().map_or("", |d| d.bundle.as_str()),
            removed = removed.as_str(),
            "request"
        );
    }

    pub(super) fn refusal_response(&self, x: &Exchange<'_>, r: Refusal) -> Response<Full<Bytes>> {
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
