//! Check: firewall, envelope and schema in one pass; the operation the Body names, and the
//! SOAPAction agreeing with it.

use std::sync::Arc;

use bytes::Bytes;

use super::super::refusal::Refusal;
use super::super::routes::{Operation, Route, action_agrees};
use super::super::schemas::Schemas;
use super::exchange::{Exchange, Outcome};
use crate::policy::minimise;
use crate::xml::SoapVersion;
use crate::xml::validate::{Expect, HeaderOutline, XmlRefusal, body_element, line_col, validate};

/// What the check learned that the later stages need.
pub(super) struct Checked {
    /// The Body's operation.
    pub operation: Operation,
    /// The header entries the route does not let through, to cut before forwarding.
    pub header: Option<HeaderOutline>,
    /// The SOAPAction or `action` the client named (None: empty or absent).
    pub action: Option<String>,
}

impl Checked {
    /// What is forwarded: the message without the header entries the route does not let
    /// through.
    pub(super) fn forwardable(&self, body: Bytes) -> Bytes {
        match &self.header {
            Some(h) => minimise::without(&body, &h.cuts()),
            None => body,
        }
    }
}

/// The schemas in force, against which requests are read.
pub(super) struct Checker {
    schemas: Arc<Schemas>,
}

impl Checker {
    pub(super) fn new(schemas: Arc<Schemas>) -> Checker {
        Checker { schemas }
    }

    pub(super) fn check(
        &self,
        x: &mut Exchange<'_>,
        route: &Route,
        version: SoapVersion,
        action: Option<&str>,
        body: &[u8],
    ) -> Result<Checked, Outcome> {
        let expect = Expect::Soap { operations: &route.requests, fault_ok: false, headers: &route.request_headers };
        let validated = validate(&self.schemas.current().schema, &route.limits, body, expect).map_err(|e| {
            x.hinted(e.hint().map(|(field, rule)| (field.to_owned(), rule)));
            // A message refused for its content still named an operation: its record and
            // metrics say which (a malformed or hostile one is not read again).
            if matches!(e, XmlRefusal::Invalid { .. } | XmlRefusal::ContentMismatch { .. }) {
                let read = &body[..e.offset().min(body.len())];
                x.names(body_element(read).and_then(|(ns, local)| route.operation(&ns, &local)));
            }
            refuse_xml(&e, body)
        })?;
        x.carries(validated.facts.message_id.clone());
        if validated.version != Some(version) {
            return Err(Outcome::Refused(
                Refusal::SchemaViolation,
                "envelope version differs from content type".into(),
            ));
        }
        let Some(operation) = route.operation(&validated.namespace, &validated.operation) else {
            return Err(Outcome::Refused(Refusal::UnknownOperation, "operation not on this route".into()));
        };
        x.names(Some(operation));
        x.checked(validated.facts);
        // An empty or absent SOAPAction (1.1) or `action` (1.2) leaves the Body to decide, as
        // SOAP stacks commonly send `SOAPAction: ""`; one that names another operation is refused.
        let named = action.map(|a| a.trim().trim_matches('"')).filter(|a| !a.is_empty());
        if named.is_some_and(|a| !action_agrees(a, route.namespace, operation.element())) {
            return Err(Outcome::Refused(
                Refusal::SchemaViolation,
                "SOAPAction/action does not name the Body's operation".into(),
            ));
        }
        Ok(Checked { operation, header: validated.header, action: named.map(str::to_owned) })
    }
}

/// Maps a validator refusal to the contract's code; the detail (which limit, which element,
/// where) goes to the log only.
fn refuse_xml(e: &XmlRefusal, body: &[u8]) -> Outcome {
    let refusal = match e {
        XmlRefusal::Malformed { .. } => Refusal::XmlMalformed,
        XmlRefusal::Threat { .. } => Refusal::XmlThreat,
        XmlRefusal::Invalid { .. } => Refusal::SchemaViolation,
        XmlRefusal::UnknownOperation { .. } => Refusal::UnknownOperation,
        XmlRefusal::ContentMismatch { .. } => Refusal::ContentMismatch,
    };
    let (line, col) = line_col(body, e.offset());
    Outcome::Refused(refusal, format!("{e} at {line}:{col}"))
}
