//! Correlate: CSN 36 9791 certificate requests answered later. A RequestCertificateRequest the
//! Ministry took on for a later answer has its messageID remembered (and told to the peer in a
//! pair); a SendCertificatesRequest callback consumes the messageID it answers, and gives it back
//! when the police side did not take the callback.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, StatusCode};

use super::super::pair::PairLink;
use super::super::routes::Operation;
use super::super::upstream::Reply;
use super::exchange::{Exchange, Outcome};
use crate::policy::PolicyState;
use crate::xml::SoapVersion;

/// The `statusInfo` of a SPOC's unsolicited notification that new certificates are available.
const NEW_CERTIFICATES: &str = "new_cert_available_notification";

/// CSN 36 9791 results of a RequestCertificateRequest that announce a SendCertificatesRequest
/// callback: the request was received (or passed on) and is answered later. A synchronous answer
/// (`ok_cert_available`), a failure or a SOAP Fault expects no callback, so none is accepted.
pub(super) const CALLBACK_FOLLOWS: [&str; 2] = ["ok_reception_ack", "ok_request_forwarded"];

/// The messageIDs forwarded (in the policy state), and the pair's peer.
pub(super) struct Correlator {
    policy: Arc<PolicyState>,
    pair: Option<Arc<PairLink>>,
}

impl Correlator {
    pub(super) fn new(policy: Arc<PolicyState>, pair: Option<Arc<PairLink>>) -> Correlator {
        Correlator { policy, pair }
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
        let facts = x.facts();
        let unsolicited = facts.message_id.is_none() && facts.result.as_deref() == Some(NEW_CERTIFICATES);
        if operation != Operation::SendCertificates || unsolicited {
            return Ok(());
        }
        let unknown = || Outcome::Answered(Box::new(callback_unknown(version)));
        let id = facts.message_id.clone().ok_or_else(unknown)?;
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
        x.claims(id, at);
        Ok(())
    }

    /// Only a request the Ministry took on for an answer later (`result`, of a reply that is no
    /// Fault) is waited for: its messageID is remembered, and the peer told before the police
    /// system hears of it (the callback may land on the peer).
    pub(super) async fn remember(&self, x: &Exchange<'_>, operation: Operation, result: Option<&str>) {
        if operation == Operation::RequestCertificate
            && result.is_some_and(|r| CALLBACK_FOLLOWS.contains(&r))
            && let Some(id) = &x.facts().message_id
        {
            self.policy.forwarded.remember(id);
            if let Some(p) = &self.pair {
                p.remember(id).await;
            }
        }
    }

    /// A callback the police side did not take (`delivered`: a 200) leaves its messageID for
    /// the SPOC's retry.
    pub(super) fn release(&self, x: &mut Exchange<'_>, delivered: bool) {
        if let Some((id, at)) = x.take_claim()
            && !delivered
        {
            self.policy.forwarded.restore(&id, at);
            if let Some(p) = &self.pair {
                p.give_back(id, at.elapsed());
            }
        }
    }
}

/// The gateway's own answer to a SendCertificatesRequest it cannot correlate (CSN 36 9791).
fn callback_unknown(version: SoapVersion) -> Reply {
    let ns = super::super::routes::CSN_NS;
    let body = crate::xml::soap::envelope(
        version,
        &format!(
            "<SendCertificatesResponse xmlns=\"{ns}\"><result>failure_messageID_unknown</result></SendCertificatesResponse>"
        ),
    );
    Reply {
        retry_after: None,
        request_id: None,
        status: StatusCode::OK,
        content_type: Some(HeaderValue::from_static(version.content_type())),
        body: bytes::Bytes::from(body),
    }
}
