//! Decide: the access policy for the caller, the operation, the route and the message facts,
//! with the bundle taken once (the reply's minimisation follows the same one); a callback
//! consumes the messageID it answers.

use std::sync::Arc;

use http::HeaderValue;
use http::StatusCode;

use super::super::fault::Refusal;
use super::super::routes::{Operation, Route};
use super::{Exchange, Outcome, Pipeline};
use crate::policy::{Bundle, Caller};
use crate::xml::SoapVersion;

/// The `statusInfo` of a SPOC's unsolicited notification that new certificates are available.
const NEW_CERTIFICATES: &str = "new_cert_available_notification";

impl Pipeline {
    pub(super) fn decide(
        &self,
        x: &mut Exchange<'_>,
        route: &Route,
        operation: Operation,
        version: SoapVersion,
    ) -> Result<Arc<Bundle>, Outcome> {
        let bundle = self.policy.current();
        let caller = x.caller.insert(Caller::from_peer(x.peer));
        let d = bundle.decide(caller, operation.element(), route.name, &x.facts, super::unix_now());
        let policies = d.policies.join(",");
        x.decision = Some(super::Decided {
            allowed: d.allowed,
            policies: policies.clone(),
            bundle: bundle.digest[..16].to_owned(),
        });
        if !d.allowed {
            let why = if d.errors.is_empty() { String::new() } else { format!("; errors: {}", d.errors.join("; ")) };
            let by =
                if policies.is_empty() { "no policy permits".to_owned() } else { format!("forbidden by {policies}") };
            return Err(Outcome::Refused(Refusal::PolicyDenied, format!("{by}{why}")));
        }
        // A callback consumes the messageID it answers: one the gateway never forwarded, or
        // one already answered, is answered here. A SPOC's unsolicited notification of new
        // certificates carries no messageID: it is no callback, and passes as policy allows.
        let unsolicited = x.facts.message_id.is_none() && x.facts.result.as_deref() == Some(NEW_CERTIFICATES);
        if operation == Operation::SendCertificates && !unsolicited {
            let claimed =
                x.facts.message_id.as_deref().and_then(|id| Some((id.to_owned(), self.policy.forwarded.claim(id)?)));
            if claimed.is_none() {
                return Err(Outcome::Answered(Box::new(callback_unknown(version))));
            }
            x.claimed = claimed;
        }
        Ok(bundle)
    }
}

/// The gateway's own answer to a SendCertificatesRequest it cannot correlate (CSN 36 9791).
fn callback_unknown(version: SoapVersion) -> super::super::upstream::Reply {
    let ns = super::super::routes::CSN_NS;
    let body = crate::xml::soap::envelope(
        version,
        &format!(
            "<SendCertificatesResponse xmlns=\"{ns}\"><result>failure_messageID_unknown</result></SendCertificatesResponse>"
        ),
    );
    let ct = version.content_type();
    super::super::upstream::Reply {
        retry_after: None,
        request_id: None,
        status: StatusCode::OK,
        content_type: Some(HeaderValue::from_static(ct)),
        body: bytes::Bytes::from(body),
    }
}
