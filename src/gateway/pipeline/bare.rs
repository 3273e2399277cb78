//! The benchmark-only stage list (`bare_proxy = true`, under `spocgw bench serve` only): route,
//! body within its limit, admission, forward, and the reply passed back as it is; no
//! validation, policy or audit (with `bare_proxy_audit`, the audit stage too). The floor the
//! full pipeline is measured against, never a way to run the gateway.

use super::*;

impl Pipeline {
    pub(super) async fn bare_stages<'a, B: MessageBody>(
        &'a self,
        x: &mut Exchange<'a>,
        req: &Parts,
        body: &mut B,
    ) -> Result<Outcome, Outcome> {
        let (route, _, action) = self.route(x, req)?;
        let body = self.read_body(route, body).await?;
        let _admitted = self.admit(x.peer).map_err(|cap| Outcome::Refused(Refusal::Overloaded, cap.into()))?;
        let Some((upstream, _)) = self.upstream_for(route) else { return Err(forward::no_upstream()) };
        if self.bare_audit {
            self.audit_request(x, route, &body).await?;
        }
        // The client's Content-Type and SOAPAction, as they came.
        let ct = req.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("text/xml; charset=utf-8");
        let headers = soap_headers(ct, action.as_deref(), Some(&x.incident));
        match upstream.post(route.path, headers, body).await {
            Ok(reply) => {
                x.upstream_status = Some(reply.status.as_u16());
                Ok(Outcome::Forwarded(Box::new(reply)))
            }
            Err(e) if e.is_timeout() => Err(Outcome::Refused(Refusal::UpstreamTimeout, e.to_string())),
            Err(e) => Err(Outcome::Refused(Refusal::UpstreamUnavailable, e.to_string())),
        }
    }
}
