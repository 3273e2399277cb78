//! Hostile XML: each input is refused with the right code, and refused early: the offset at
//! which the validator stopped shows it never read (or held) more than the limit allows.

use spocgw::gateway::routes::BIO_NS;
use spocgw::sim::messages::{self, BioRequest};
use spocgw::xml::SoapVersion;
use spocgw::xml::limits::{Breach, Limits};
use spocgw::xml::validate::{Expect, XmlRefusal, validate};
use spocgw::xml::xsd::Schema;

const OPS: &[(&str, &str)] = &[(BIO_NS, "VerifyFingerprintRequest"), (BIO_NS, "CheckIdentityRequest")];

fn check(body: &[u8]) -> Result<(), XmlRefusal> {
    check_with(body, &Limits::default())
}

fn check_with(body: &[u8], limits: &Limits) -> Result<(), XmlRefusal> {
    let schema = Schema::embedded().unwrap();
    validate(&schema, limits, body, Expect::Soap { operations: OPS, fault_ok: false, headers: &[] }).map(|_| ())
}

fn threat(body: &[u8]) -> (Breach, usize) {
    match check(body) {
        Err(XmlRefusal::Threat { breach, offset }) => (breach, offset),
        other => panic!("expected a threat, got {other:?}"),
    }
}

fn valid_message() -> String {
    messages::envelope(
        SoapVersion::V11,
        &BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 2048).check_identity(),
    )
}

/// The valid message with `inner` put in front of the operation element's first child.
fn with_inside(inner: &str) -> String {
    valid_message().replace("<MessageID>", &format!("{inner}<MessageID>"))
}

#[test]
fn the_valid_message_passes() {
    check(valid_message().as_bytes()).unwrap();
}

#[test]
fn dtds_in_every_form_are_refused_at_the_doctype() {
    let body = valid_message().replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", "");
    let cases = [
        // billion laughs
        format!(
            "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">{}]>{body}",
            (3..10)
                .map(|i| format!("<!ENTITY lol{i} \"{}\">", format!("&lol{};", i - 1).repeat(10)))
                .collect::<String>()
        ),
        // quadratic blowup
        format!(
            "<!DOCTYPE q [<!ENTITY a \"{}\">]>{}",
            "a".repeat(50_000),
            body.replace("OFF-0001", &"&a;".repeat(1000))
        ),
        // external entities
        format!("<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{}", body.replace("OFF-0001", "&e;")),
        format!("<!DOCTYPE x [<!ENTITY e SYSTEM \"http://attacker.invalid/x\">]>{}", body.replace("OFF-0001", "&e;")),
        // parameter entities
        "<!DOCTYPE x [<!ENTITY % p SYSTEM \"http://attacker.invalid/p.dtd\"> %p;]><x/>".to_owned(),
        format!("<!DOCTYPE Envelope SYSTEM \"http://attacker.invalid/soap.dtd\">{body}"),
    ];
    for c in cases {
        let (b, offset) = threat(c.as_bytes());
        assert_eq!(b, Breach::Dtd);
        assert!(offset < 16, "read past the DOCTYPE: {offset}");
    }
    // An entity reference without any DTD.
    assert_eq!(threat(valid_message().replace("OFF-0001", "&xxe;").as_bytes()).0, Breach::EntityReference);
    assert_eq!(threat(with_inside("<?php evil() ?>").as_bytes()).0, Breach::ProcessingInstruction);
}

#[test]
fn deep_nesting_stops_at_the_depth_limit() {
    let open = "<a xmlns=\"urn:x\">".repeat(100_000);
    let body = format!("<s:Envelope xmlns:s=\"{}\"><s:Body>{open}", SoapVersion::V11.namespace());
    let schema = Schema::embedded().unwrap();
    let limits = Limits { max_message_bytes: 4 * 1024 * 1024, ..Limits::default() };
    // As a bare document, so the depth limit (not the schema) is what stops it.
    let deep = format!("{open}{}", "</a>".repeat(100_000));
    // No schema declares {urn:x}a; reading goes on with the firewall, which stops at the depth.
    match validate(&schema, &limits, deep.as_bytes(), Expect::Any) {
        Err(XmlRefusal::Threat { breach: Breach::Depth, offset }) => assert!(offset < 20 * 40, "read {offset} bytes"),
        other => panic!("{other:?}"),
    }
    match check_with(body.as_bytes(), &limits) {
        // The unknown operation is noticed first; what matters is that reading stopped early.
        Err(e) => assert!(e.offset() < 40 * 100, "read {} bytes", e.offset()),
        Ok(()) => panic!("accepted"),
    }
    let nested_in_header = format!("<s:Envelope xmlns:s=\"{}\"><s:Header>{open}", SoapVersion::V11.namespace());
    match check_with(nested_in_header.as_bytes(), &limits) {
        Err(XmlRefusal::Threat { breach: Breach::Depth, offset }) => assert!(offset < 40 * 40, "read {offset} bytes"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn floods_and_huge_names_hit_their_limits() {
    let attrs: String = (0..1000).map(|i| format!(" a{i}=\"1\"")).collect();
    assert_eq!(threat(with_inside(&format!("<x{attrs}/>")).as_bytes()).0, Breach::Attributes);
    let million: String = (0..1_000_000).map(|i| format!(" a{i}=\"1\"")).collect();
    assert_eq!(threat(with_inside(&format!("<x{million}/>")).as_bytes()).0, Breach::MessageBytes);
    let name = "n".repeat(100_000);
    assert_eq!(threat(with_inside(&format!("<{name}/>")).as_bytes()).0, Breach::NameBytes);
    assert_eq!(threat(with_inside(&format!("<x a=\"{}\"/>", "v".repeat(10_000))).as_bytes()).0, Breach::AttributeBytes);
    let comments = "<!-- flood -->".repeat(1000);
    assert_eq!(threat(with_inside(&comments).as_bytes()).0, Breach::CommentBytes);
    let cdata = valid_message().replace("OFF-0001", &format!("<![CDATA[{}]]>", "x".repeat(200_000)));
    assert_eq!(threat(cdata.as_bytes()).0, Breach::TextBytes);
    let ns: String = (0..100).map(|i| format!(" xmlns:p{i}=\"urn:{i}\"")).collect();
    let many_ns = valid_message().replace("<soap:Body>", &format!("<soap:Body{ns}>"));
    // 100 declarations on one element trip the attribute count first; spread out, the namespace count.
    assert!(matches!(threat(many_ns.as_bytes()).0, Breach::Attributes | Breach::Namespaces));
    let spread: String = (0..40).map(|i| format!("<h{i} xmlns:p{i}=\"urn:{i}\"/>")).collect();
    let spread = valid_message().replace("<soap:Body>", &format!("<soap:Header>{spread}</soap:Header><soap:Body>"));
    assert_eq!(threat(spread.as_bytes()).0, Breach::Namespaces);
    let children = valid_message()
        .replace("<soap:Body>", &format!("<soap:Header>{}</soap:Header><soap:Body>", "<h/>".repeat(600)));
    assert_eq!(threat(children.as_bytes()).0, Breach::Children);
    let elements = valid_message().replace(
        "<soap:Body>",
        &format!(
            "<soap:Header>{}</soap:Header><soap:Body>",
            "<h><i/><i/><i/><i/><i/><i/><i/><i/><i/><i/></h>".repeat(480)
        ),
    );
    assert_eq!(threat(elements.as_bytes()).0, Breach::Elements);
}

#[test]
fn encodings_other_than_utf8_are_malformed() {
    let v = valid_message();
    let utf16: Vec<u8> = [0xFF, 0xFE].into_iter().chain(v.encode_utf16().flat_map(|u| u.to_le_bytes())).collect();
    assert!(matches!(check(&utf16), Err(XmlRefusal::Malformed { .. })));
    let latin1 = v.replace("encoding=\"UTF-8\"", "encoding=\"ISO-8859-1\"");
    assert!(matches!(check(latin1.as_bytes()), Err(XmlRefusal::Malformed { .. })));
    let mut invalid = v.clone().into_bytes();
    let pos = v.find("OFF").unwrap();
    invalid[pos] = 0xFF;
    assert!(matches!(check(&invalid), Err(XmlRefusal::Malformed { .. })));
    let overlong = v.replace("OFF-0001", "OFF\u{1}0001").into_bytes();
    let mut overlong = overlong;
    let p = overlong.iter().position(|&b| b == 1).unwrap();
    overlong.splice(p..=p, [0xC0, 0xAF]);
    assert!(matches!(check(&overlong), Err(XmlRefusal::Malformed { .. })));
}

#[test]
fn soap_structure_tricks_are_refused() {
    let v = valid_message();
    let body_start = v.find("<soap:Body>").unwrap();
    let body_end = v.find("</soap:Body>").unwrap() + "</soap:Body>".len();
    let body = &v[body_start..body_end];
    let two_bodies = v.replace(body, &format!("{body}{body}"));
    assert!(matches!(check(two_bodies.as_bytes()), Err(XmlRefusal::Invalid { .. })));
    let body_in_header = v.replace("<soap:Body>", &format!("<soap:Header>{body}</soap:Header><soap:Body>"));
    assert!(matches!(check(body_in_header.as_bytes()), Err(XmlRefusal::Invalid { .. })));
    let must = v.replace(
        "<soap:Body>",
        "<soap:Header><w:Security xmlns:w=\"urn:ws\" soap:mustUnderstand=\"1\"/></soap:Header><soap:Body>",
    );
    assert!(matches!(check(must.as_bytes()), Err(XmlRefusal::Invalid { .. })));
    let optional = v.replace(
        "<soap:Body>",
        "<soap:Header><w:Trace xmlns:w=\"urn:ws\" soap:mustUnderstand=\"0\">t</w:Trace></soap:Header><soap:Body>",
    );
    check(optional.as_bytes()).unwrap();
    // Same local name, another namespace: not our operation.
    let other_ns = v.replace("xmlns=\"urn:spocgw:bio:1\"", "xmlns=\"urn:spocgw:bio:2\"");
    assert!(matches!(check(other_ns.as_bytes()), Err(XmlRefusal::UnknownOperation { .. })));
    // The right operation, with one child moved to another namespace by a prefix.
    let child_ns =
        v.replace("<OfficerID>OFF-0001</OfficerID>", "<e:OfficerID xmlns:e=\"urn:evil\">OFF-0001</e:OfficerID>");
    assert!(matches!(check(child_ns.as_bytes()), Err(XmlRefusal::Invalid { .. })));
    // A prefix bound to our namespace is fine; a rebinding of it inside is not ours any more.
    let prefixed = v
        .replace(
            "<CheckIdentityRequest xmlns=\"urn:spocgw:bio:1\">",
            "<b:CheckIdentityRequest xmlns:b=\"urn:spocgw:bio:1\" xmlns=\"urn:spocgw:bio:1\">",
        )
        .replace("</CheckIdentityRequest>", "</b:CheckIdentityRequest>");
    check(prefixed.as_bytes()).unwrap();
    for hint in [
        "xsi:type=\"xs:string\"",
        "xsi:schemaLocation=\"urn:x http://attacker.invalid/x.xsd\"",
        "xsi:noNamespaceSchemaLocation=\"x.xsd\"",
    ] {
        let t = v.replace(
            "<OfficerID>",
            &format!("<OfficerID xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" {hint}>"),
        );
        assert!(matches!(check(t.as_bytes()), Err(XmlRefusal::Threat { .. })), "{hint}");
    }
    // An invalid message that is also not well-formed further on is refused as malformed.
    let both = v.replace("IDENTITY_DOUBT", "CURIOSITY").replace("</TravelDocument>", "");
    assert!(matches!(check(both.as_bytes()), Err(XmlRefusal::Malformed { .. })));
}

#[test]
fn a_mislabelled_image_is_a_content_mismatch() {
    let mut b = BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 4096);
    check(messages::envelope(SoapVersion::V11, &b.verify_fingerprint()).as_bytes()).unwrap();
    b.chip[0].format = "JPEG2000";
    let r = check(messages::envelope(SoapVersion::V11, &b.verify_fingerprint()).as_bytes());
    assert!(matches!(r, Err(XmlRefusal::ContentMismatch { .. })), "{r:?}");
    b.chip[0].format = "ISO19794-4";
    assert!(matches!(
        check(messages::envelope(SoapVersion::V11, &b.verify_fingerprint()).as_bytes()),
        Err(XmlRefusal::ContentMismatch { .. })
    ));
}

/// A character XML 1.0 does not allow is refused as not well-formed wherever it stands: in a
/// value, a base64 field, an attribute, a name, a comment, CDATA, white space between elements,
/// a header entry that would be dropped, as a raw byte or as a reference.
#[test]
fn illegal_characters_are_malformed_wherever_they_stand() {
    let v = valid_message();
    let prints = messages::envelope(
        SoapVersion::V11,
        &BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 2048).verify_fingerprint(),
    );
    let data_at = prints.find("<Data>").expect("no Data") + "<Data>".len();
    for bad in ["\u{1}", "\u{1f}", "\u{fffe}", "\u{ffff}"] {
        let cases = [
            v.replace("OFF-0001", &format!("OFF{bad}0001")),
            format!("{}{bad}{}", &prints[..data_at + 8], &prints[data_at + 8..]),
            v.replace("<OfficerID>", &format!("<OfficerID a=\"x{bad}\">")),
            v.replace("<OfficerID>OFF-0001</OfficerID>", &format!("<Officer{bad}ID>OFF-0001</Officer{bad}ID>")),
            with_inside(&format!("<!-- a{bad}b -->")),
            v.replace("OFF-0001", &format!("<![CDATA[OFF{bad}0001]]>")),
            v.replace("<soap:Body>", &format!("<soap:Body>{bad}")),
            v.replace(
                "<soap:Body>",
                &format!("<soap:Header><e:x xmlns:e=\"urn:e\">{bad}</e:x></soap:Header><soap:Body>"),
            ),
            v.replace("?>", &format!(" ?>{bad}")),
        ];
        for c in cases {
            assert!(matches!(check(c.as_bytes()), Err(XmlRefusal::Malformed { .. })), "{bad:?} in {c}");
        }
    }
    for reference in ["&#x1;", "&#31;", "&#xFFFE;", "&#65535;", "&#0;", "&#xD800;"] {
        let text = v.replace("OFF-0001", &format!("OFF{reference}0001"));
        assert!(matches!(check(text.as_bytes()), Err(XmlRefusal::Malformed { .. })), "{reference}");
        let attr = v.replace("<OfficerID>", &format!("<OfficerID xmlns:z=\"urn:{reference}\">"));
        assert!(matches!(check(attr.as_bytes()), Err(XmlRefusal::Malformed { .. })), "{reference} in an attribute");
    }
    // Their legal neighbours pass.
    for good in ["&#x9;", "\u{fffd}", "&#xFFFD;", "\u{10000}"] {
        let text = v.replace("<OfficerID>", &format!("<OfficerID xmlns:z=\"urn:{good}\">"));
        check(text.as_bytes()).unwrap_or_else(|e| panic!("{good:?}: {e:?}"));
    }
}
