//! Reply: the upstream's answer read once like a request (firewall, envelope, schema) and
//! passed back only when it is the operation's reply element (or, with HTTP 500, a SOAP Fault in
//! its fixed shape) in the request's SOAP version; then minimised: the Header entries the route
//! does not let through, and the reply fields the policy withholds from this caller.

use std::sync::Arc;

use http::HeaderValue;

use super::super::refusal::Refusal;
use super::super::routes::{Operation, Route};
use super::super::schemas::Schemas;
use super::super::upstream::{Reply, UpstreamMetrics};
use super::decide::unix_now;
use super::exchange::{Exchange, Outcome};
use super::forward::Answer;
use crate::policy::{Bundle, minimise};
use crate::xml::SoapVersion;
use crate::xml::validate::{Expect, HeaderOutline, Validated, line_col, validate_outlined};

/// A reply that passed: as the client gets it, and the CSN `result` it carried (None for a
/// Fault), which the correlator reads.
pub(super) struct Passed {
    pub(super) reply: Reply,
    pub(super) result: Option<String>,
}

/// The schemas replies are read against.
pub(super) struct ReplyCheck {
    schemas: Arc<Schemas>,
    metrics: Arc<UpstreamMetrics>,
}

impl ReplyCheck {
    pub(super) fn new(schemas: Arc<Schemas>, metrics: Arc<UpstreamMetrics>) -> ReplyCheck {
        ReplyCheck { schemas, metrics }
    }

    pub(super) fn check(
        &self,
        x: &mut Exchange<'_>,
        route: &Route,
        operation: Operation,
        bundle: &Bundle,
        answer: Answer,
    ) -> Result<Passed, Outcome> {
        let Answer { reply, upstream: name, fault_expected } = answer;
        let expected: Vec<(&str, &str)> = route.reply_pairs(operation).into_iter().collect();
        let expect = Expect::Soap { operations: &expected, fault_ok: fault_expected, headers: &route.reply_headers };
        // The decision's bundle decides minimisation: the reply is outlined as deep as its
        // paths go.
        let fields = bundle.routes.minimise.get(operation.element()).map(Vec::as_slice).unwrap_or_default();
        let depth = minimise::depth(fields);
        let v = validate_outlined(&self.schemas.current().schema, &route.limits, &reply.body, expect, depth).map_err(
            |e| {
                self.metrics.failed(name, "invalid_reply");
                let (line, col) = line_col(&reply.body, e.offset());
                Outcome::Refused(Refusal::UpstreamInvalidResponse, format!("{name}: reply at {line}:{col}: {e}"))
            },
        )?;
        let fault = v.operation == "Fault";
        if (fault_expected && !fault) || v.version != x.version() {
            self.metrics.failed(name, "invalid_reply");
            let why = if v.version != x.version() {
                "a SOAP version other than the request's"
            } else {
                "HTTP 500 without a SOAP Fault"
            };
            return Err(Outcome::Refused(Refusal::UpstreamInvalidResponse, format!("{name}: {why}")));
        }
        // The reply's Content-Type is the gateway's too, for the version it checked.
        let mut reply = reply;
        reply.content_type = Some(HeaderValue::from_static(v.version.unwrap_or(SoapVersion::V11).content_type()));
        let result = if fault { None } else { v.facts.result.clone() };
        Ok(Passed { reply: minimised(x, reply, bundle, fields, &v), result })
    }
}

/// Removes from the validated reply what may not flow back: the Header's entries the route does
/// not let through, and the reply fields of `fields` the policy does not let this caller receive
/// (cut by the validator's outline, as deep as `fields` go).
fn minimised(x: &mut Exchange<'_>, mut reply: Reply, bundle: &Bundle, fields: &[String], v: &Validated) -> Reply {
    let mut cuts = v.header.as_ref().map(HeaderOutline::cuts).unwrap_or_default();
    if !cuts.is_empty() {
        x.withheld(["Header".to_owned()]);
    }
    if !fields.is_empty() {
        let caller = x.take_caller();
        let now = unix_now();
        let withheld: Vec<&str> = fields
            .iter()
            .filter(|f| !bundle.may_receive(&caller, f, x.facts(), now).allowed)
            .map(String::as_str)
            .collect();
        let (spans, removed) = minimise::spans(&reply.body, &v.outline, &withheld);
        cuts.extend(spans);
        x.withheld(removed);
    }
    reply.body = minimise::without(&reply.body, &cuts);
    x.passed_back(crate::encoding::sha256_hex(&reply.body));
    reply
}
