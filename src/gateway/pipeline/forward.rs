//! Forward: to the route's upstream, and the reply validated and minimised on its way back.

use super::*;

/// The headers the gateway writes toward the upstream: Content-Type, SOAPAction (SOAP 1.1
/// over HTTP always carries one: `""` when the client named none) and X-Request-Id.
pub(super) fn forwarded_headers(version: SoapVersion, action: Option<&str>, incident: &str) -> http::HeaderMap {
    let (ct, soap_action) = match version {
        SoapVersion::V11 => {
            (SoapMediaType::forwarded(version, None), Some(format!("\"{}\"", action.unwrap_or_default())))
        }
        SoapVersion::V12 => (SoapMediaType::forwarded(version, action), None),
    };
    soap_headers(&ct, soap_action.as_deref(), Some(incident))
}

pub(super) fn no_upstream() -> Outcome {
    Outcome::Refused(Refusal::UpstreamUnavailable, "no police callback upstream".into())
}

/// CSN 36 9791 results of a RequestCertificateRequest that announce a SendCertificatesRequest callback: the
/// request was received (or passed on) and is answered later. A synchronous answer
/// (`ok_cert_available`), a failure or a SOAP Fault expects no callback, so none is accepted.
pub(super) const CALLBACK_FOLLOWS: [&str; 2] = ["ok_reception_ack", "ok_request_forwarded"];

impl Pipeline {
    /// The route's upstream and its name for metrics; None when the police callback upstream
    /// is not configured (see [`no_upstream`]).
    pub(super) fn upstream_for(&self, route: &Route) -> Option<(&Upstream, &'static str)> {
        match route.upstream {
            UpstreamKind::Ministry => Some((&self.ministry, route.upstream.name())),
            UpstreamKind::PoliceCallback => self.police_callback.as_ref().map(|u| (u, route.upstream.name())),
        }
    }

    pub(super) async fn forward(
        &self,
        x: &mut Exchange<'_>,
        route: &Route,
        operation: Operation,
        bundle: &Bundle,
        headers: http::HeaderMap,
        body: Bytes,
    ) -> Outcome {
        let Some((upstream, name)) = self.upstream_for(route) else { return no_upstream() };
        let started = Instant::now();
        let result = upstream.post(route.path, headers, body).await;
        self.upstream_metrics.exchange(name, started.elapsed(), &result);
        let reply = match result {
            Ok(r) => r,
            Err(e) => {
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
            self.upstream_metrics.failed(name, "status");
            return Outcome::Refused(Refusal::UpstreamUnavailable, format!("{name}: HTTP status {}", reply.status));
        }
        let expected: Vec<(&str, &str)> = route.reply_pairs(operation).into_iter().collect();
        let expect = Expect::Soap { operations: &expected, fault_ok, headers: &route.reply_headers };
        // The decision's bundle decides minimisation: the reply is outlined as deep as its
        // paths go.
        let fields = bundle.routes.minimise.get(operation.element()).map(Vec::as_slice).unwrap_or_default();
        match validate_outlined(
            &self.schemas.current().schema,
            &route.limits,
            &reply.body,
            expect,
            minimise::depth(fields),
        ) {
            Ok(v) if (fault_ok && v.operation != "Fault") || v.version != x.version => {
                self.upstream_metrics.failed(name, "invalid_reply");
                let why = if v.version != x.version {
                    "a SOAP version other than the request's"
                } else {
                    "HTTP 500 without a SOAP Fault"
                };
                Outcome::Refused(Refusal::UpstreamInvalidResponse, format!("{name}: {why}"))
            }
            Ok(v) => {
                // Only a request the Ministry took on for an answer later is waited for.
                if operation == Operation::RequestCertificate
                    && v.operation != "Fault"
                    && v.facts.result.as_deref().is_some_and(|r| CALLBACK_FOLLOWS.contains(&r))
                    && let Some(id) = &x.facts.message_id
                {
                    self.policy.forwarded.remember(id);
                    // Before the police system hears of it: the callback may land on the peer.
                    if let Some(p) = &self.pair {
                        p.remember(id).await;
                    }
                }
                // The reply's Content-Type is the gateway's too, for the version it checked.
                let mut reply = reply;
                let version = v.version.unwrap_or(SoapVersion::V11);
                reply.content_type = Some(HeaderValue::from_static(version.content_type()));
                Outcome::Forwarded(Box::new(self.minimise(x, reply, bundle, fields, &v)))
            }
            Err(e) => {
                self.upstream_metrics.failed(name, "invalid_reply");
                let (line, col) = line_col(&reply.body, e.offset());
                Outcome::Refused(Refusal::UpstreamInvalidResponse, format!("{name}: reply at {line}:{col}: {e}"))
            }
        }
    }

    /// Removes from the validated reply what may not flow back: the Header's entries the route
    /// does not let through, and the reply fields of `fields` the policy does not let this
    /// caller receive (cut by the validator's outline, as deep as `fields` go).
    pub(super) fn minimise(
        &self,
        x: &mut Exchange<'_>,
        mut reply: super::super::upstream::Reply,
        bundle: &Bundle,
        fields: &[String],
        v: &Validated,
    ) -> super::super::upstream::Reply {
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
}
