//! The streaming validator on its own (no I/O): throughput on 5 KB, 50 KB and 200 KB
//! VerifyFingerprintRequest envelopes, as the gateway validates them.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use spocgw::gateway::routes::BIO_NS;
use spocgw::sim::messages::{self, BioRequest, Finger, synthetic_image};
use spocgw::xml::SoapVersion;
use spocgw::xml::firewall::Limits;
use spocgw::xml::validate::{Expect, validate};
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
        assert!(validate(&schema, &limits, &msg, Expect::Soap { operations: &ops, fault_ok: false }).is_ok());
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &msg, |b, msg| {
            b.iter(|| validate(&schema, &limits, msg, Expect::Soap { operations: &ops, fault_ok: false }))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
