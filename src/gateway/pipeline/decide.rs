//! Decide: the access policy for the caller, the operation, the route and the message facts,
//! with the bundle taken once (the reply's minimisation follows the same one); a callback
//! consumes the messageID it answers.

use std::sync::Arc;
use std::time::Instant;

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
        Ok(bundle)
    }

    /// A callback consumes the messageID it answers: one the gateway never forwarded, or one
    /// already answered, is answered here. A SPOC's unsolicited notification of new certificates
    /// carries no messageID: it is no callback, and passes as policy allows. In a pair, a
    /// messageID the peer forwarded is claimed from the peer (within the pair link's deadline),
    /// and one claimed here is withdrawn from the peer.
    pub(super) async fn correlate(
        &self,
        x: &mut Exchange<'_>,
        operation: Operation,
        version: SoapVersion,
    ) -> Result<(), Outcome> {
        let unsolicited = x.facts.message_id.is_none() && x.facts.result.as_deref() == Some(NEW_CERTIFICATES);
        if operation != Operation::SendCertificates || unsolicited {
            return Ok(());
        }
        let unknown = || Outcome::Answered(Box::new(callback_unknown(version)));
        let id = x.facts.message_id.clone().ok_or_else(unknown)?;
        let at = match (self.policy.forwarded.claim(&id), &self.pair) {
            (Some(at), pair) => {
                if let Some(p) = pair {
                    p.forget(id.clone());
                }
                at
            }
            (None, Some(p)) => {
                p.claim(&id).await.and_then(|age| Instant::now().checked_sub(age)).ok_or_else(unknown)?
            }
            (None, None) => return Err(unknown()),
        };
        x.claimed = Some((id, at));
        Ok(())
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
