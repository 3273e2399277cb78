//! Decision time with the default bundle, including building the principal entity (from the
//! certificate's attributes), the entity set and the context: what the gateway does per request.

use criterion::{Criterion, criterion_group, criterion_main};
use spocgw::policy::{Bundle, Caller};
use spocgw::xml::facts::MessageFacts;

fn bench(c: &mut Criterion) {
    let bundle = Bundle::embedded().expect("default bundle");
    let caller = Caller {
        common_name: "officer-0001".into(),
        organization: "Border Police".into(),
        unit: "border-verifier".into(),
        fingerprint: "b7dfdaed31a301a4fe81971f8cc26a5da9ade0c8a13ebea9f845707f832569b1".into(),
        issuer: "C=CZ, O=Border Police, CN=spocgw dev Police CA".into(),
    };
    let facts = MessageFacts {
        message_id: Some("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01".into()),
        officer_id: Some("OFF-0001".into()),
        authority: Some("Border Police".into()),
        border_crossing_point: Some("PRG-AIRPORT-T1".into()),
        purpose: Some("IDENTITY_DOUBT".into()),
        case_reference: Some("CASE-2026-000123".into()),
        issuing_state: Some("CZE".into()),
        chip_fingerprints: 1,
        live_fingerprints: 1,
        formats: vec!["WSQ"],
        ..MessageFacts::default()
    };
    let now = 1_795_419_000;
    assert!(bundle.decide(&caller, "VerifyFingerprintRequest", "bio_v1", &facts, now).allowed);
    c.bench_function("decide/VerifyFingerprintRequest", |b| {
        b.iter(|| bundle.decide(&caller, "VerifyFingerprintRequest", "bio_v1", &facts, now))
    });
    c.bench_function("decide/ReceiveField", |b| b.iter(|| bundle.may_receive(&caller, "Holder/Address", &facts, now)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
