//! Property tests of the XML firewall and validator.

#[path = "support/docgen.rs"]
mod docgen;

use base64::Engine as _;
use proptest::prelude::*;
use spocgw::gateway::routes::BIO_NS;
use spocgw::sim::messages::{self, BioRequest};
use spocgw::xml::SoapVersion;
use spocgw::xml::limits::Limits;
use spocgw::xml::validate::{Expect, XmlRefusal, validate};
use spocgw::xml::xsd::Schema;
use spocgw::xml::xsd::simple::{Base64Check, Decimal};

fn schema() -> &'static Schema {
    static S: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    S.get_or_init(|| Schema::embedded().unwrap())
}

const OPS: &[(&str, &str)] = &[(BIO_NS, "VerifyFingerprintRequest"), (BIO_NS, "CheckIdentityRequest")];

fn soap(body: &[u8]) -> Result<(), XmlRefusal> {
    validate(schema(), &Limits::default(), body, Expect::Soap { operations: OPS, fault_ok: false, headers: &[] })
        .map(|_| ())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the validator, in either mode.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = soap(&bytes);
        let _ = validate(schema(), &Limits::default(), &bytes, Expect::Any);
    }

    /// Any text, escaped, keeps a message well-formed: the verdict is valid or a schema
    /// violation, never "malformed" and never a firewall refusal.
    #[test]
    fn escaped_text_never_makes_a_message_malformed(text in "\\PC{0,60}") {
        let b = BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 1024);
        let msg = messages::envelope(SoapVersion::V11, &b.check_identity()).replace("OFF-0001", &escape(&text));
        match soap(msg.as_bytes()) {
            Ok(()) | Err(XmlRefusal::Invalid { .. }) => {}
            Err(e) => prop_assert!(false, "{e:?} for {text:?}"),
        }
    }

    /// Markup-like junk spliced into a valid message is refused, unless it is a comment or a
    /// CDATA section (which XML allows and which carry no markup).
    #[test]
    fn spliced_markup_is_refused(junk in "<[a-zA-Z!?/][^<>]{0,20}>?", at in 0usize..400) {
        let msg = messages::envelope(SoapVersion::V11, &BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 1024).check_identity());
        let mut pos = at.min(msg.len() - 1);
        while !msg.is_char_boundary(pos) { pos -= 1; }
        let spliced = format!("{}{}{}", &msg[..pos], junk, &msg[pos..]);
        let r = soap(spliced.as_bytes());
        if r.is_ok() {
            prop_assert!(junk.starts_with("<!--") || junk.starts_with("<![CDATA["), "accepted {junk:?} at {pos}");
        }
    }

    /// The streaming base64 check agrees with a real decoder: exact length, exact prefix,
    /// whatever whitespace is put between characters.
    #[test]
    fn base64_check_matches_a_decoder(data in proptest::collection::vec(any::<u8>(), 0..300), wrap in 1usize..80) {
        let text = base64::engine::general_purpose::STANDARD.encode(&data);
        let wrapped: String = text.as_bytes().chunks(wrap).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("\r\n ");
        let mut check = Base64Check::default();
        for piece in wrapped.as_bytes().chunks(7) {
            check.feed(piece);
        }
        prop_assert_eq!(check.finish(), Some(data.len() as u64));
        let n = check.prefix.len();
        prop_assert_eq!(&check.prefix[..], &data[..n]);
    }

    /// Decimal comparison agrees with integer comparison.
    #[test]
    fn decimals_order_like_integers(a in -1_000_000i64..1_000_000, b in -1_000_000i64..1_000_000, scale in 0u32..4) {
        let fmt = |v: i64| {
            let d = 10i64.pow(scale);
            if scale == 0 { v.to_string() } else { format!("{}{}.{:0w$}", if v < 0 { "-" } else { "" }, v.abs() / d, v.abs() % d, w = scale as usize) }
        };
        let (da, db) = (Decimal::parse(&fmt(a)).unwrap(), Decimal::parse(&fmt(b)).unwrap());
        prop_assert_eq!(da.cmp(&db), a.cmp(&b));
    }

    /// Generated valid documents validate, with or without a namespace prefix and with
    /// whitespace added between elements.
    #[test]
    fn generated_documents_validate_under_any_namespace_spelling(seed in any::<u8>()) {
        let s = schema();
        let mut g = docgen::Gen::new(s, seed);
        let mut globals: Vec<_> = s.globals.values().copied().collect();
        globals.sort();
        let decl = globals[g.below(globals.len())];
        let mut el = g.element(decl);
        for prefixed in [false, true] {
            let text = docgen::serialize(&el, prefixed);
            let r = validate(s, &Limits::default(), text.as_bytes(), Expect::Any);
            prop_assert!(r.is_ok(), "{r:?}\n{text}");
        }
        if docgen::mutate(&mut g, &mut el, docgen::MUTATIONS.iter().position(|m| *m == "whitespace between elements").unwrap()) {
            let text = docgen::serialize(&el, false);
            let r = validate(s, &Limits::default(), text.as_bytes(), Expect::Any);
            prop_assert!(r.is_ok(), "{r:?}\n{text}");
        }
    }
}
