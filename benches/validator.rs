//! The streaming validator on its own (no I/O): throughput on 5 KB, 50 KB and 200 KB
//! VerifyFingerprintRequest envelopes, as the gateway validates them; and the pair the
//! side-by-side's 3 KB keep-alive row validates per request (its CheckIdentityRequest, padded
//! as `spocgw-load --sample identity:3000` pads it, and the simulated Ministry's reply,
//! outlined for minimisation), against quick-xml reading the same messages with namespaces and
//! nothing else: the part of validation no validator built on that parser can save.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quick_xml::NsReader;
use quick_xml::events::Event;
use spocgw::gateway::routes::BIO_NS;
use spocgw::sim::messages::{self, BioRequest, Finger, synthetic_image};
use spocgw::xml::SoapVersion;
use spocgw::xml::limits::Limits;
use spocgw::xml::validate::{Expect, validate, validate_outlined};
use spocgw::xml::xsd::Schema;

fn message(size: usize) -> Vec<u8> {
    let prints = if size < 20_000 { 2 } else { 6 };
    let chip: usize = if prints == 2 { 1 } else { 2 };
    let image = ((size.saturating_sub(1200)) * 3 / 4 / prints).clamp(512, 65_536);
    let mut b = BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", image);
    b.chip = (0..chip)
        .map(|k| Finger { position: k as u8 + 1, format: "WSQ", data: synthetic_image("WSQ", k as u32, image) })
        .collect();
    b.live = (0..prints - chip)
        .map(|k| Finger { position: k as u8 + 1, format: "WSQ", data: synthetic_image("WSQ", 9 + k as u32, image) })
        .collect();
    messages::envelope(SoapVersion::V11, &b.verify_fingerprint()).into_bytes()
}

fn bench(c: &mut Criterion) {
    let schema = Schema::embedded().expect("embedded schemas");
    let limits = Limits::default();
    let ops = [(BIO_NS, "VerifyFingerprintRequest")];
    let mut g = c.benchmark_group("validate");
    for size in [5_000usize, 50_000, 200_000] {
        let msg = message(size);
        assert!(
            validate(&schema, &limits, &msg, Expect::Soap { operations: &ops, fault_ok: false, headers: &[] }).is_ok()
        );
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &msg, |b, msg| {
            b.iter(|| validate(&schema, &limits, msg, Expect::Soap { operations: &ops, fault_ok: false, headers: &[] }))
        });
    }
    g.finish();

    // The screen for characters XML 1.0 forbids, over a whole message (the validator screens
    // tags, comments and text, all but base64 text, which its own check screens).
    let mut g = c.benchmark_group("chars");
    for size in [5_000usize, 50_000] {
        let msg = message(size);
        assert_eq!(spocgw::xml::chars::first_illegal(&msg), None);
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &msg, |b, msg| {
            b.iter(|| spocgw::xml::chars::first_illegal(std::hint::black_box(msg)))
        });
    }
    g.finish();

    // The 3 KB keep-alive row's request and reply.
    let b = BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 16);
    let bare = messages::envelope(SoapVersion::V11, &b.check_identity());
    let pad = " ".repeat(3000usize.saturating_sub(bare.len() + 1));
    let request = bare.replace("</CheckIdentityRequest>", &format!("\n{pad}</CheckIdentityRequest>")).into_bytes();
    let reply = messages::envelope(
        SoapVersion::V11,
        &format!(
            "<CheckIdentityResponse xmlns=\"{BIO_NS}\"><MessageID>{}</MessageID><Timestamp>2026-11-24T06:18:19Z</Timestamp>\
             <DocumentStatus>VALID</DocumentStatus><Holder><Surname>NOVAKOVA</Surname><GivenNames>JANA</GivenNames>\
             <DateOfBirth>1980-02-29</DateOfBirth><Nationality>CZE</Nationality><PlaceOfBirth>BRNO</PlaceOfBirth>\
             <Address>Namesti Svobody 1, 602 00 Brno</Address></Holder></CheckIdentityResponse>",
            b.message_id
        ),
    )
    .into_bytes();
    let (req_ops, reply_ops) = ([(BIO_NS, "CheckIdentityRequest")], [(BIO_NS, "CheckIdentityResponse")]);
    let validate_pair = || {
        let q =
            validate(&schema, &limits, &request, Expect::Soap { operations: &req_ops, fault_ok: false, headers: &[] });
        let r = validate_outlined(
            &schema,
            &limits,
            &reply,
            Expect::Soap { operations: &reply_ops, fault_ok: true, headers: &[] },
            2,
        );
        (q, r)
    };
    let (q, r) = validate_pair();
    assert!(q.is_ok() && r.is_ok(), "{q:?} {r:?}");
    assert!(read_events(&request) > 0 && read_events(&reply) > 0, "quick-xml refused a message");
    let mut g = c.benchmark_group("keepalive-3k");
    g.throughput(Throughput::Bytes((request.len() + reply.len()) as u64));
    g.bench_function("validate request and reply", |bch| bch.iter(validate_pair));
    g.bench_function("quick-xml reads them (no validation)", |bch| {
        bch.iter(|| read_events(&request) + read_events(&reply))
    });
    g.finish();
}

/// Reads every event with namespaces resolved, as the validator's parser does, and checks
/// nothing more; the number of elements (0 if quick-xml refuses the message).
fn read_events(doc: &[u8]) -> usize {
    let Ok(text) = std::str::from_utf8(doc) else { return 0 };
    let mut reader = NsReader::from_str(text);
    let cfg = reader.config_mut();
    cfg.check_end_names = true;
    cfg.check_comments = true;
    let mut elements = 0;
    loop {
        match reader.read_resolved_event() {
            Ok((_, Event::Start(_) | Event::Empty(_))) => elements += 1,
            Ok((_, Event::Eof)) => return elements,
            Err(_) => return 0,
            Ok(_) => {}
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
