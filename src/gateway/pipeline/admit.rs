//! Admit: which route, which media type and action, the body within its limits, the
//! in-flight slot and the caller's rate.

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, Method};

use super::super::body::{BodyError, MessageBody, read_limited};
use super::super::fault::Refusal;
use super::super::routes::{ListenerKind, MediaTypeError, Operation, Route, SoapMediaType, parse_content_type};
use super::{Admitted, Exchange, Outcome, Pipeline};
use crate::tls::PeerIdentity;
use crate::xml::SoapVersion;

const SOAPACTION: HeaderName = HeaderName::from_static("soapaction");

/// The request's Content-Type, parsed; a second Content-Type header is refused like a
/// repeated parameter.
pub(super) fn media_type(req: &Parts) -> Result<SoapMediaType, MediaTypeError> {
    let mut values = req.headers.get_all(http::header::CONTENT_TYPE).iter();
    let value = values.next().and_then(|v| v.to_str().ok()).ok_or(MediaTypeError::NotSoap)?;
    if values.next().is_some() {
        return Err(MediaTypeError::Repeated);
    }
    parse_content_type(value)
}

/// Whether an HTTP/1.1 client waits for `100 Continue` before sending its body: then a body
/// never asked for is not there to linger over.
pub(super) fn expects_continue(req: &Parts) -> bool {
    req.version == http::Version::HTTP_11
        && req.headers.get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

impl Pipeline {
    /// The route by listener and path (a WSDL or schema asked for is answered here), the media
    /// type (SOAP 1.1 or 1.2, UTF-8, each parameter once) and the SOAPAction or `action`.
    pub(super) fn route<'a>(
        &'a self,
        x: &mut Exchange<'a>,
        req: &Parts,
    ) -> Result<(&'a Route, SoapMediaType, Option<String>), Outcome> {
        let Some(route) = self.routes.lookup(x.listener, req.uri.path()) else {
            x.version = media_type(req).ok().map(|m| m.version);
            // (The path is the caller's; only its length goes to the log.)
            let detail = format!("no route for a path of {} bytes", req.uri.path().len());
            return Err(Outcome::Refused(Refusal::UnknownOperation, detail));
        };
        x.route = Some(route);
        if req.method == Method::GET
            && x.listener == ListenerKind::Police
            && let Some(doc) = self.schemas.current().documents.get(route.path, req.uri.query())
        {
            x.operation = Some(Operation::ServiceDescription);
            return Err(Outcome::Document(doc));
        }
        if req.method != Method::POST {
            return Err(Outcome::Refused(Refusal::UnknownOperation, format!("method {}", req.method)));
        }
        let media = media_type(req).map_err(|e| Outcome::Refused(Refusal::UnsupportedMediaType, e.to_string()))?;
        x.version = Some(media.version);
        let action = match media.version {
            SoapVersion::V11 => {
                let mut values = req.headers.get_all(SOAPACTION).iter();
                let first = values.next().and_then(|v| v.to_str().ok()).map(str::to_owned);
                if values.next().is_some() {
                    return Err(Outcome::Refused(Refusal::SchemaViolation, "more than one SOAPAction header".into()));
                }
                first
            }
            SoapVersion::V12 => media.action.clone(),
        };
        Ok((route, media, action))
    }

    /// The body, within the route's limit (else the refusal) and the listener's deadline.
    pub(super) async fn read_body<B: MessageBody>(&self, route: &Route, body: &mut B) -> Result<Bytes, Outcome> {
        match tokio::time::timeout(self.request_timeout, read_limited(body, route.max_body)).await {
            Err(_) => Err(Outcome::Refused(
                Refusal::RequestTimeout,
                format!("body not received within {} ms", self.request_timeout.as_millis()),
            )),
            Ok(Err(BodyError::TooLarge)) => {
                Err(Outcome::Refused(Refusal::PayloadTooLarge, format!("over {} bytes", route.max_body)))
            }
            Ok(Err(BodyError::Read(e))) => Err(Outcome::Abandoned(format!("request body read failed: {e}"))),
            Ok(Ok(b)) => Ok(b),
        }
    }

    /// Admits a request whose body has arrived, under the in-flight cap: the cap counts
    /// requests the gateway is processing, not bodies a slow client is still sending, so a
    /// client trickling bodies cannot take every slot. One client certificate has at most its
    /// share of the slots. The error names the cap that was reached.
    pub(super) fn admit(&self, peer: &PeerIdentity) -> Result<Admitted<'_>, &'static str> {
        let permit = self.in_flight.try_acquire().map_err(|_| "the gateway's in-flight cap reached")?;
        let client = self.in_flight_per_client.take(&peer.fingerprint).ok_or("the client's in-flight cap reached")?;
        self.metrics.in_flight.inc();
        Ok(Admitted { _permit: permit, _client: client, gauge: &self.metrics.in_flight })
    }

    /// The caller's rate on this route counts every request it sends, before any work is
    /// spent on it: invalid and denied ones too (each would cost validation and a record).
    pub(super) fn check_rate(&self, x: &mut Exchange<'_>, route: &Route) -> Result<(), Outcome> {
        if let Err(wait) = self.policy.check_rate(route.name, &x.peer.fingerprint) {
            x.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
            return Err(Outcome::Refused(Refusal::RateLimited, format!("over the rate of {}", route.name)));
        }
        Ok(())
    }
}
