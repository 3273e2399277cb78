//! The benchmark-only stage list (`bare_proxy = true`, under `spocgw bench serve` only): route,
//! body within its limit, admission, forward, and the reply passed back as it is; no
//! validation, policy or audit (with `bare_proxy_audit`, the audit stage too). The floor the
//! full pipeline is measured against, never a way to run the gateway.

use http::header::CONTENT_TYPE;
use http::request::Parts;

use super::super::body::MessageBody;
use super::super::refusal::Refusal;
use super::super::upstream::soap_headers;
use super::Pipeline;
use super::exchange::{Exchange, Outcome};

/// What the floor keeps of the pipeline.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bare {
    /// The audit stage too (`bare_proxy_audit`).
    pub(super) audit: bool,
}

impl Pipeline {
    pub(super) async fn bare_stages<'a, B: MessageBody>(
        &'a self,
        bare: Bare,
        x: &mut Exchange<'a>,
        req: &Parts,
        body: &mut B,
    ) -> Result<Outcome, Outcome> {
        let (route, _, action) = self.router.route(x, req)?;
        let body = self.admission.read_body(route, body).await?;
        let _admitted = self.admission.admit(x.peer())?;
        let (upstream, _) = self.forwarder.upstream_for(route)?;
        if bare.audit {
            self.recorder.audit_request(x, route, &body).await?;
        }
        // The client's Content-Type and SOAPAction, as they came.
        let ct = req.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("text/xml; charset=utf-8");
        let headers = soap_headers(ct, action.as_deref(), Some(x.incident()));
        match upstream.post(route.path, headers, body).await {
            Ok(reply) => {
                x.upstream_answered(reply.status.as_u16());
                Ok(Outcome::Forwarded(Box::new(reply)))
            }
            Err(e) if e.is_timeout() => Err(Outcome::Refused(Refusal::UpstreamTimeout, e.to_string())),
            Err(e) => Err(Outcome::Refused(Refusal::UpstreamUnavailable, e.to_string())),
        }
    }
}
