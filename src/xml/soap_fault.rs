//! SOAP Faults the gateway answers with (CONTRACT.md section 4): the request's SOAP version,
//! a `GatewayFault` detail in namespace [`FAULT_NS`] with `Code`, `IncidentID` and, where
//! known, `MessageID`. Nothing internal goes into a fault.

use quick_xml::escape::escape;

use super::soap::{SOAP11_NS, SOAP12_NS, SoapVersion};

pub const FAULT_NS: &str = "urn:spocgw:fault:1";

/// What a fault says.
#[derive(Debug, Clone, Copy)]
pub struct FaultText<'a> {
    /// Contract code, e.g. `XmlMalformed`.
    pub code: &'a str,
    /// One sentence for people; fixed per code, never built from input.
    pub reason: &'a str,
    /// True when the sender is at fault (SOAP 1.1 `Client`, 1.2 `Sender`).
    pub sender: bool,
    pub incident_id: &'a str,
    pub message_id: Option<&'a str>,
    /// For a schema violation: the element at fault and the kind of rule, never a value.
    pub hint: Option<(&'a str, &'a str)>,
}

/// Renders the fault as a SOAP envelope of `version`; returns the body and its content type.
pub fn soap_fault(version: SoapVersion, f: &FaultText<'_>) -> (String, &'static str) {
    let mut detail = format!(
        "<GatewayFault xmlns=\"{FAULT_NS}\"><Code>{}</Code><IncidentID>{}</IncidentID>",
        escape(f.code),
        escape(f.incident_id)
    );
    if let Some(m) = f.message_id {
        detail.push_str(&format!("<MessageID>{}</MessageID>", escape(m)));
    }
    if let Some((field, rule)) = f.hint {
        detail.push_str(&format!("<Field>{}</Field><Rule>{}</Rule>", escape(field), escape(rule)));
    }
    detail.push_str("</GatewayFault>");
    let reason = escape(f.reason);
    match version {
        SoapVersion::V11 => {
            let who = if f.sender { "Client" } else { "Server" };
            (
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soap:Envelope xmlns:soap=\"{SOAP11_NS}\"><soap:Body><soap:Fault>\
<faultcode>soap:{who}</faultcode><faultstring>{reason}</faultstring><detail>{detail}</detail>\
</soap:Fault></soap:Body></soap:Envelope>\n"
                ),
                version.content_type(),
            )
        }
        SoapVersion::V12 => {
            let who = if f.sender { "Sender" } else { "Receiver" };
            (
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<env:Envelope xmlns:env=\"{SOAP12_NS}\"><env:Body><env:Fault>\
<env:Code><env:Value>env:{who}</env:Value></env:Code><env:Reason><env:Text xml:lang=\"en\">{reason}</env:Text></env:Reason>\
<env:Detail>{detail}</env:Detail></env:Fault></env:Body></env:Envelope>\n"
                ),
                version.content_type(),
            )
        }
    }
}

/// The plain-text body used where the request was not SOAP at all.
pub fn plain_fault(f: &FaultText<'_>) -> String {
    format!("{}: {}\nIncidentID: {}\n", f.code, f.reason, f.incident_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::limits::Limits;
    use crate::xml::validate::{Expect, validate};
    use crate::xml::xsd::Schema;

    #[test]
    fn faults_are_soap_themselves() {
        for v in [SoapVersion::V11, SoapVersion::V12] {
            let f = FaultText {
                hint: None,
                code: "XmlMalformed",
                reason: "the message is not well-formed XML",
                sender: true,
                incident_id: "abc",
                message_id: Some("<m&>"),
            };
            let (body, _) = soap_fault(v, &f);
            assert!(body.contains("&lt;m&amp;&gt;"));
            // A fault with the message ID the gateway puts there (one its schema let through)
            // has the shape a reply Fault must have.
            let f = FaultText { message_id: Some("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01"), ..f };
            let (body, _) = soap_fault(v, &f);
            let schema = Schema::embedded().unwrap();
            let e = validate(&schema, &Limits::default(), body.as_bytes(), Expect::Any).unwrap();
            assert_eq!(e.operation, "Fault");
            let reply = Expect::Soap { operations: &[], fault_ok: true, headers: &[] };
            validate(&schema, &Limits::default(), body.as_bytes(), reply).unwrap();
        }
    }
}
