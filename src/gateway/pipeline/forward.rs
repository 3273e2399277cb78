//! Forward: to the route's upstream over its pooled mutual-TLS connection, with the headers the
//! gateway writes; an upstream that fails, or answers with a status the contract does not pass
//! back, is the refusal.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::StatusCode;

use super::super::refusal::Refusal;
use super::super::routes::{Route, SoapMediaType, UpstreamKind};
use super::super::upstream::{Reply, Upstream, UpstreamError, UpstreamMetrics, soap_headers};
use super::exchange::{Exchange, Outcome};
use crate::xml::SoapVersion;

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

/// The upstreams, and their metrics.
pub(super) struct Forwarder {
    ministry: Upstream,
    police_callback: Option<Upstream>,
    metrics: Arc<UpstreamMetrics>,
}

/// A reply as it came, and the name of the upstream that sent it.
pub(super) struct Answer {
    pub(super) reply: Reply,
    pub(super) upstream: &'static str,
    /// HTTP 500: only a SOAP Fault may be in it.
    pub(super) fault_expected: bool,
}

impl Forwarder {
    pub(super) fn new(ministry: Upstream, police_callback: Option<Upstream>, metrics: Arc<UpstreamMetrics>) -> Self {
        Forwarder { ministry, police_callback, metrics }
    }

    /// The route's upstream and its name for metrics; the refusal when the police callback
    /// upstream is not configured.
    pub(super) fn upstream_for(&self, route: &Route) -> Result<(&Upstream, &'static str), Outcome> {
        match route.upstream {
            UpstreamKind::Ministry => Ok((&self.ministry, route.upstream.name())),
            UpstreamKind::PoliceCallback => match &self.police_callback {
                Some(u) => Ok((u, route.upstream.name())),
                None => Err(Outcome::Refused(Refusal::UpstreamUnavailable, "no police callback upstream".into())),
            },
        }
    }

    /// Sends the request; the reply when it is HTTP 200 or 500 (a SOAP Fault, if valid).
    pub(super) async fn forward(
        &self,
        x: &mut Exchange<'_>,
        route: &Route,
        headers: http::HeaderMap,
        body: Bytes,
    ) -> Result<Answer, Outcome> {
        let (upstream, name) = self.upstream_for(route)?;
        let started = Instant::now();
        let result = upstream.post(route.path, headers, body).await;
        self.metrics.exchange(name, started.elapsed(), &result);
        let reply = result.map_err(|e| {
            let refusal = match &e {
                e if e.is_timeout() => Refusal::UpstreamTimeout,
                UpstreamError::TooLarge(_) => Refusal::UpstreamInvalidResponse,
                _ => Refusal::UpstreamUnavailable,
            };
            Outcome::Refused(refusal, format!("{name}: {e}"))
        })?;
        x.upstream_answered(reply.status.as_u16());
        let fault_expected = reply.status == StatusCode::INTERNAL_SERVER_ERROR;
        if reply.status != StatusCode::OK && !fault_expected {
            self.metrics.failed(name, "status");
            return Err(Outcome::Refused(
                Refusal::UpstreamUnavailable,
                format!("{name}: HTTP status {}", reply.status),
            ));
        }
        Ok(Answer { reply, upstream: name, fault_expected })
    }
}
