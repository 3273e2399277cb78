//! Audit log figures (run by `make bench`; not criterion: these are throughput runs):
//! durable records per second with group commit at several concurrencies, the latency one
//! durable append adds, and `audit verify` speed over 1,000,000 records; then an officer's
//! `audit query --document` over a month of them (the binary, as an officer runs it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use spocgw::audit::{Audit, AuditConfig, Record};

fn key_files(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let kp = rcgen::KeyPair::generate().expect("key");
    let key = dir.join("cp.key");
    let public = dir.join("cp.pub.pem");
    let ps = dir.join("ps.key");
    std::fs::write(&key, kp.serialize_pem()).expect("write");
    std::fs::write(&public, kp.public_key_pem()).expect("write");
    std::fs::write(&ps, "ab".repeat(32)).expect("write");
    (key, public, ps)
}

fn config(dir: &std::path::Path, key: &std::path::Path, ps: &std::path::Path) -> AuditConfig {
    toml::from_str(&format!(
        "dir = {:?}\ncheckpoint_key = {key:?}\npseudonym_key = {ps:?}\nqueue = 262144",
        dir.join("log")
    ))
    .expect("config")
}

/// A month, spread over a million records: record `i`'s time.
fn month_time(i: u64) -> String {
    let start = std::time::UNIX_EPOCH + Duration::from_secs(1_793_491_200); // 2026-11-01T00:00:00Z
    spocgw::encoding::rfc3339_micros(start + Duration::from_micros(i * 2_592_000_000_000 / 1_000_000))
}

fn record(i: u64) -> Record {
    let mut r = Record::now("request");
    r.time = month_time(i % 1_000_000);
    // One document looked up every 1000 requests; the one searched for below every 100,000th.
    if i.is_multiple_of(1000) {
        r.document = Some(if i.is_multiple_of(100_000) {
            // The pseudonym of X1234567 under the bench's key (32 bytes of 0xab).
            spocgw::audit::pseudonymise(&[0xab; 32], "X1234567")
        } else {
            format!("{i:064x}")
        });
    }
    r.incident_id = Some(format!("6f1c1c4e-3f0a-4d53-9a43-{i:012x}"));
    r.listener = Some("police".into());
    r.route = Some("bio_v1".into());
    r.operation = Some("VerifyFingerprintRequest".into());
    r.officer_id = Some("OFF-0001".into());
    r.purpose = Some("IDENTITY_DOUBT".into());
    r.case_reference = Some("CASE-2026-000123".into());
    r.data = vec!["fingerprint/WSQ x2".into()];
    r.decision = Some("allow".into());
    r.request_sha256 = Some("ab".repeat(32));
    r
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (key, public, ps) = key_files(tmp.path());
    println!("audit: durable appends (one fsync per batch), 3 s per concurrency");
    for concurrency in [1usize, 64, 1024] {
        let dir = tempfile::tempdir_in(tmp.path()).expect("tempdir");
        let audit = Audit::start(&config(dir.path(), &key, &ps)).expect("start");
        let (count, p50) = rt.block_on(async {
            let end = Instant::now() + Duration::from_secs(3);
            let mut tasks = Vec::new();
            for t in 0..concurrency {
                let a: Arc<Audit> = audit.clone();
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut i = t as u64 * 1_000_000;
                    while Instant::now() < end {
                        let s = Instant::now();
                        a.append_durable(&record(i)).await.expect("durable");
                        lat.push(s.elapsed());
                        i += 1;
                    }
                    lat
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.expect("task"));
            }
            all.sort();
            (all.len(), all.get(all.len() / 2).copied().unwrap_or_default())
        });
        println!("  concurrency {concurrency:>5}: {:>8.0} records/s, p50 append latency {:?}", count as f64 / 3.0, p50);
    }

    // verify speed: 1,000,000 records.
    let dir = tempfile::tempdir_in(tmp.path()).expect("tempdir");
    let cfg = config(dir.path(), &key, &ps);
    let audit = Audit::start(&cfg).expect("start");
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..512u64 {
            let a = audit.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..1953u64 {
                    a.append_durable(&record(t * 10_000 + i)).await.expect("durable");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        audit.checkpoint_now().await.expect("checkpoint");
    });
    println!("  wrote 999,936 records (and the start record) in {:?}", started.elapsed());
    let started = Instant::now();
    let s = spocgw::audit::verify::verify(&cfg.dir, &public, &Default::default()).expect("verify");
    println!("  audit verify: {} records, {} checkpoints in {:?}", s.records, s.checkpoints, started.elapsed());
    query_a_month(&cfg.dir, &ps);
}

/// `spocgw audit query --document ... --since ... --until ...` over the month, as an officer
/// runs it: the binary, its access recorded, the pseudonym computed from the document number.
fn query_a_month(dir: &std::path::Path, ps: &std::path::Path) {
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spocgw"))
        .args(["audit", "query"])
        .arg(dir)
        .args(["--document", "X1234567", "--pseudonym-key"])
        .arg(ps)
        .args(["--since", "2026-11-01", "--until", "2026-11-30T23:59:59+01:00", "--format", "json"])
        .output()
        .expect("spocgw audit query");
    let took = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    println!(
        "  audit query --document over a month of 1,000,000 records: {} rows in {took:?}",
        String::from_utf8_lossy(&out.stdout).lines().count()
    );
}
