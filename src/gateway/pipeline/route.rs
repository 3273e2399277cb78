//! Route: which route the listener and path name (a WSDL or schema asked for is answered here),
//! the media type (SOAP 1.1 or 1.2, UTF-8, each parameter once) and the SOAPAction or `action`.

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderName, Method};

use super::super::refusal::Refusal;
use super::super::routes::{
    ListenerKind, MediaTypeError, Operation, Route, RouteTable, SoapMediaType, parse_content_type,
};
use super::super::schemas::Schemas;
use super::exchange::{Exchange, Outcome};
use crate::xml::SoapVersion;

const SOAPACTION: HeaderName = HeaderName::from_static("soapaction");

/// The request's Content-Type, parsed; a second Content-Type header is refused like a
/// repeated parameter.
fn media_type(req: &Parts) -> Result<SoapMediaType, MediaTypeError> {
    let mut values = req.headers.get_all(http::header::CONTENT_TYPE).iter();
    let value = values.next().and_then(|v| v.to_str().ok()).ok_or(MediaTypeError::NotSoap)?;
    if values.next().is_some() {
        return Err(MediaTypeError::Repeated);
    }
    parse_content_type(value)
}

/// The route table, and the service descriptions served from the schemas in force.
pub(super) struct Router {
    routes: RouteTable,
    schemas: Arc<Schemas>,
}

impl Router {
    pub(super) fn new(routes: RouteTable, schemas: Arc<Schemas>) -> Router {
        Router { routes, schemas }
    }

    pub(super) fn routes(&self) -> &RouteTable {
        &self.routes
    }

    pub(super) fn schemas(&self) -> &Arc<Schemas> {
        &self.schemas
    }

    pub(super) fn route<'a>(
        &'a self,
        x: &mut Exchange<'a>,
        req: &Parts,
    ) -> Result<(&'a Route, SoapMediaType, Option<String>), Outcome> {
        let Some(route) = self.routes.lookup(x.listener(), req.uri.path()) else {
            x.versioned(media_type(req).ok().map(|m| m.version));
            // (The path is the caller's; only its length goes to the log.)
            let detail = format!("no route for a path of {} bytes", req.uri.path().len());
            return Err(Outcome::Refused(Refusal::UnknownOperation, detail));
        };
        x.routed(route);
        if req.method == Method::GET
            && x.listener() == ListenerKind::Police
            && let Some(doc) = self.schemas.current().documents.get(route.path, req.uri.query())
        {
            x.names(Some(Operation::ServiceDescription));
            return Err(Outcome::Document(doc));
        }
        if req.method != Method::POST {
            return Err(Outcome::Refused(Refusal::UnknownOperation, format!("method {}", req.method)));
        }
        let media = media_type(req).map_err(|e| Outcome::Refused(Refusal::UnsupportedMediaType, e.to_string()))?;
        x.versioned(Some(media.version));
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
}
