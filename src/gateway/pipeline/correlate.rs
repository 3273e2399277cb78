//! Correlate: the pipeline's three calls into callback correlation ([`Correlation`], which owns
//! the rule, the durable journal and the pair protocol's local side). A callback consumes the ID
//! it answers before it is forwarded; a request the upstream took on for a later answer has its
//! ID remembered before the police side hears of it; a callback the police side did not take
//! gives its ID back.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};

use super::super::correlation::{Correlation, Pending, now_ms};
use super::super::pair::PairLink;
use super::super::routes::Operation;
use super::super::upstream::Reply;
use super::exchange::{Exchange, Outcome, Uncorrelated};
use crate::xml::SoapVersion;

/// On the callback's records when it was accepted while the peer that forwarded the request did
/// not answer.
const PARTITION_CLAIM: &str = "accepted during a partition: the peer appliance that forwarded the request did not answer its claim, and may accept a replay too";

/// The callbacks awaited, and the pair's peer.
pub(super) struct Correlator {
    correlation: Arc<Correlation>,
    pair: Option<Arc<PairLink>>,
}

impl Correlator {
    pub(super) fn new(correlation: Arc<Correlation>, pair: Option<Arc<PairLink>>) -> Correlator {
        Correlator { correlation, pair }
    }

    /// A callback consumes the ID it answers: one the gateway never forwarded, or one already
    /// answered, is answered here. An unsolicited notification (no ID, the rule's result) is no
    /// callback, and passes as policy allows. In a pair, an ID the peer forwarded is claimed
    /// from the peer (within the pair link's deadline), and one claimed here is withdrawn from
    /// the peer.
    pub(super) async fn correlate(
        &self,
        x: &mut Exchange<'_>,
        operation: Operation,
        version: SoapVersion,
    ) -> Result<(), Outcome> {
        let rule = self.correlation.rule();
        let facts = x.facts();
        let unsolicited =
            facts.message_id.is_none() && facts.result.as_deref().is_some_and(|r| rule.unsolicited == Some(r));
        if operation != rule.callback || unsolicited {
            return Ok(());
        }
        let id = facts.message_id.clone();
        // Refused: never forwarded (or answered already), or forwarded longer ago than the TTL
        // (a distinct outcome on record; the SPOC hears `failure_messageID_unknown` either way).
        let unknown = || {
            let expired = id.as_deref().is_some_and(|i| self.correlation.expired(i));
            let why = if expired { Uncorrelated::Expired } else { Uncorrelated::Unknown };
            Outcome::Answered(Box::new(callback_unknown(version)), why)
        };
        let id = id.clone().ok_or_else(unknown)?;
        let pending = match (self.correlation.claim(&id), &self.pair) {
            // The peer forwarded it and owns it: the peer gives it up first, so that a replay
            // reaching both appliances at once is delivered once. While the peer does not
            // answer, availability comes first (counted: the peer may accept a replay too).
            (Some(p), Some(link)) if p.peer => match link.claim(&id).await {
                Ok(Some(_)) => p,
                Ok(None) => return Err(unknown()),
                Err(_) => {
                    link.partition_claim();
                    x.noted(PARTITION_CLAIM);
                    tracing::warn!(
                        incident_id = x.incident(),
                        "callback accepted on a messageID the unreachable peer forwarded"
                    );
                    p
                }
            },
            (Some(p), pair) => {
                if let Some(link) = pair {
                    link.forget(id.clone());
                }
                p
            }
            (None, Some(link)) => {
                let age = link.claim(&id).await.ok().flatten().ok_or_else(unknown)?;
                let at_ms = now_ms().saturating_sub(age.as_millis() as u64);
                Pending { at_ms, route: String::new(), caller: String::new(), peer: true }
            }
            (None, None) => return Err(unknown()),
        };
        x.claims(id, pending);
        Ok(())
    }

    /// A request the upstream took on for an answer later (a `result`, of a reply that is no
    /// Fault, that the rule says announces a callback) has its ID remembered durably, and the
    /// peer told, before the police system hears of it (the callback may land on the peer).
    pub(super) async fn remember(&self, x: &Exchange<'_>, operation: Operation, result: Option<&str>) {
        let rule = self.correlation.rule();
        if operation == rule.request
            && result.is_some_and(|r| rule.callback_follows.contains(&r))
            && let Some(id) = &x.facts().message_id
        {
            self.correlation.remember(id, x.route_name(), &x.peer().fingerprint);
            if let Some(p) = &self.pair {
                p.remember(id).await;
            }
        }
    }

    /// A callback the police side did not take (`delivered`: a 200) leaves its ID for the
    /// SPOC's retry.
    pub(super) fn release(&self, x: &mut Exchange<'_>, delivered: bool) {
        if let Some((id, pending)) = x.take_claim()
            && !delivered
        {
            let age = Duration::from_millis(now_ms().saturating_sub(pending.at_ms));
            // Ours again (the peer gave it up, or never had it); the peer keeps a replica.
            self.correlation.restore(&id, Pending { peer: false, ..pending });
            if let Some(p) = &self.pair {
                p.give_back(id, age);
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
