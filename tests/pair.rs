//! The active-active pair (docs/pair.md), as `make pair-demo` runs it: two gateways behind a real
//! HAProxy on loopback, the simulated Ministry and police receiver. Every scenario must pass:
//! requests spread over both; a callback for a request forwarded through A delivered at B and its
//! replay refused at A; both logs cosigned by the peer's witness; A killed with SIGKILL under
//! load (each client fails at most once, B takes all traffic, every incident ID a client got is
//! in a log); A restarted catches up (correlations, witness); both logs verify against the
//! peer's witness; A's log restored from B's copy; a cut log caught by B's witness.

mod common;

use std::process::Command;

#[test]
fn a_pair_survives_a_kill_and_neither_log_can_be_rewritten_alone() {
    if !common::have_tool("haproxy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::BIN).args(["pair-demo", "--keep"]).arg(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let table: Vec<&str> = text.lines().filter(|l| l.ends_with("  yes") || l.ends_with("  NO")).collect();
    assert!(
        out.status.success() && table.len() >= 13 && table.iter().all(|l| l.ends_with("  yes")),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for scenario in [
        "served by both",
        "arriving at B",
        "replayed at A",
        "kill -9 A under load",
        "every incident ID",
        "A restarted: a callback",
        "B witnesses A's log again",
        "checkpoints agree",
        "`audit restore`",
        "truncation detected",
    ] {
        assert!(table.iter().any(|l| l.contains(scenario)), "no row for {scenario:?}:\n{text}");
    }
    assert!(text.contains("failover: "), "{text}");
    // The CLI an officer uses says the same: the restored log verifies, with B's cosignatures
    // and B's witness state; the cut one does not.
    let state = std::fs::read_dir(dir.path().join("pair-b/witness"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "note"))
        .unwrap();
    let verify = |log: &str| {
        Command::new(common::BIN)
            .args(["audit", "verify"])
            .arg(dir.path().join(log))
            .arg("--key")
            .arg(dir.path().join("gateway/audit-checkpoint.pub.pem"))
            .arg("--witness")
            .arg(dir.path().join("pair/gateway-b-witness.vkey"))
            .arg("--witnessed")
            .arg(&state)
            .output()
            .unwrap()
    };
    let ok = verify("audit-a");
    let ok_text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success() && ok_text.contains("cosigned by gateway-b/witness") && ok_text.contains("witnessed by"),
        "{ok_text}"
    );
    let cut = verify("cut-a");
    let cut_text = String::from_utf8_lossy(&cut.stdout);
    assert!(cut.status.code() == Some(1) && cut_text.contains("truncated"), "{cut_text}");
}

fn pair_client(
    dir: &std::path::Path,
    port: u16,
    cert: &str,
    key: &str,
    ca: &str,
) -> spocgw::gateway::upstream::Upstream {
    let mut cfg = spocgw::gateway::config::UpstreamConfig::client(
        format!("https://127.0.0.1:{port}"),
        &dir.join(ca),
        &dir.join(cert),
        &dir.join(key),
    );
    cfg.server_name = Some("gateway-a".into());
    cfg.breaker_failures = 0;
    spocgw::gateway::upstream::Upstream::new(&cfg).unwrap()
}

async fn call(c: &spocgw::gateway::upstream::Upstream, path: &str, body: &str) -> Result<(u16, String), String> {
    c.post(path, http::HeaderMap::new(), bytes::Bytes::from(body.to_owned()))
        .await
        .map(|r| (r.status.as_u16(), String::from_utf8_lossy(&r.body).into_owned()))
        .map_err(|e| e.to_string())
}

/// A pair's development PKI and configurations, on free ports.
fn pair_pki() -> (tempfile::TempDir, spocgw::cli::pair_demo::setup::PairPorts) {
    use spocgw::cli::pair_demo::setup::{PairPorts, generate};
    let dir = tempfile::tempdir().unwrap();
    let p = |_| common::free_port();
    let ports = PairPorts {
        a: spocgw::cli::dev_pki::Ports { gateway: p(0), callback: p(0), admin: p(0), ministry: p(0), receiver: p(0) },
        b_police: p(0),
        b_callback: p(0),
        b_admin: p(0),
        a_pair: p(0),
        b_pair: p(0),
        lb_police: p(0),
        lb_callback: p(0),
    };
    generate(dir.path(), ports).unwrap();
    (dir, ports)
}

/// The simulated Ministry and police receiver of a pair's PKI (logs `m.log`, `r.log`).
fn simulators(dir: &std::path::Path) -> [common::Proc; 2] {
    let path = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    [
        common::Proc::start(&["sim", "ministry", "--config", &path("ministry.toml")], dir.join("m.log")),
        common::Proc::start(&["sim", "police-receiver", "--config", &path("receiver.toml")], dir.join("r.log")),
    ]
}

/// Appliance A alone (B never started): it serves, says so on /readyz, and a request whose
/// callback B should learn of is answered anyway (queued for B). Its pair link answers only B's
/// certificate; B cannot rewrite what it shipped, nor have a checkpoint signed by another key
/// cosigned.
#[test]
fn a_lone_appliance_serves_and_its_pair_link_answers_only_the_peer() {
    let (dir, ports) = pair_pki();
    // A copy quota of 100 bytes: one small record fits, a second does not.
    let a_toml = dir.path().join("gateway-a.toml");
    let text = std::fs::read_to_string(&a_toml).unwrap().replacen("[pair]\n", "[pair]\ncopy_max_bytes = 100\n", 1);
    std::fs::write(&a_toml, text).unwrap();
    let path = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let _sims = simulators(dir.path());
    let a = common::Proc::start(&["serve", "--config", &path("gateway-a.toml")], dir.path().join("a.log"));
    common::wait_port(ports.a.admin);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while common::admin_get(ports.a.admin, "/readyz").0 != 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (status, body) = common::admin_get(ports.a.admin, "/readyz");
    assert_eq!(status, 200, "a lone appliance serves: {body}\n{}", a.log_text());
    assert!(body.contains("pair: ") && body.contains("unreachable"), "{body}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dv = spocgw::gateway::upstream::Upstream::new(&spocgw::gateway::config::UpstreamConfig::client(
            format!("https://127.0.0.1:{}", ports.a.gateway),
            &dir.path().join("ca/police-ca.pem"),
            &dir.path().join("clients/document-verifier.pem"),
            &dir.path().join("clients/document-verifier.key"),
        ))
        .unwrap();
        let body = spocgw::sim::messages::request_certificate(&uuid::Uuid::new_v4().to_string());
        let r = dv
            .post(
                "/spoc/csn369791",
                spocgw::gateway::upstream::soap_headers("text/xml; charset=utf-8", Some("\"\""), None),
                bytes::Bytes::from(spocgw::xml::soap::envelope(spocgw::xml::SoapVersion::V11, &body)),
            )
            .await
            .unwrap();
        assert!(r.status == 200 && common::text(&r).contains("ok_reception_ack"), "{}", common::text(&r));
        let metrics = common::admin_get(ports.a.admin, "/metrics").1;
        assert_eq!(common::metric(&metrics, "spocgw_pair_pending"), 1.0, "{metrics}");

        let b = pair_client(dir.path(), ports.a_pair, "pair/gateway-b.pem", "pair/gateway-b.key", "pair/pair-ca.pem");
        assert_eq!(call(&b, "/pair/v1/ids/snapshot", "").await.unwrap().0, 200);
        assert_eq!(call(&b, "/pair/v1/ids/claim", "\"never-forwarded\"").await.unwrap().0, 404);
        // The copy takes whole records that continue it, and what B shipped stays as shipped.
        let seg = "/pair/v1/log/append?file=segment-000001.jsonl&offset=0";
        assert_eq!(call(&b, seg, "junk that is no record\n").await.unwrap().0, 409, "not a record");
        assert_eq!(call(&b, seg, &"x".repeat(4096)).await.unwrap().0, 409, "not whole lines");
        let first = String::from_utf8(spocgw::audit::Record::now("start").canonical()).unwrap() + "\n";
        let third = first.replacen("{\"seq\":0", "{\"seq\":2", 1);
        assert_eq!(call(&b, seg, &third).await.unwrap().0, 409, "out of sequence");
        assert_eq!(call(&b, seg, &first).await.unwrap().0, 200);
        let other = String::from_utf8(spocgw::audit::Record::now("other").canonical()).unwrap() + "\n";
        assert_eq!(call(&b, seg, &other).await.unwrap().0, 409, "a rewrite");
        // Past the copy's quota: 507, nothing written.
        let second = other.replacen("{\"seq\":0", "{\"seq\":1", 1);
        let at = format!("/pair/v1/log/append?file=segment-000001.jsonl&offset={}", first.len());
        assert_eq!(call(&b, &at, &second).await.unwrap().0, 507, "over the quota");
        // IDs only as the schema allows them, in bounded batches and bodies.
        let long = serde_json::json!([{ "remember": { "id": "x".repeat(65), "age_ms": 0 } }]).to_string();
        assert_eq!(call(&b, "/pair/v1/ids", &long).await.unwrap().0, 400, "an ID longer than the schema's");
        let odd = serde_json::json!([{ "remember": { "id": "a b", "age_ms": 0 } }]).to_string();
        assert_eq!(call(&b, "/pair/v1/ids", &odd).await.unwrap().0, 400, "an ID the schema does not allow");
        let many: Vec<serde_json::Value> =
            (0..1025).map(|i| serde_json::json!({ "remember": { "id": format!("id-{i}"), "age_ms": 0 } })).collect();
        assert_eq!(call(&b, "/pair/v1/ids", &serde_json::to_string(&many).unwrap()).await.unwrap().0, 400);
        let big = format!("\"{}\"", "y".repeat(300 << 10));
        assert_eq!(call(&b, "/pair/v1/ids/claim", &big).await.unwrap().0, 413, "a body past the call's bound");
        assert_eq!(call(&b, "/pair/v1/ids/claim", "\"no spaces allowed\"").await.unwrap().0, 400);
        let snapshot = call(&b, "/pair/v1/ids/snapshot", "").await.unwrap().1;
        assert!(snapshot.len() < 4096, "the refused IDs were not kept: {} bytes", snapshot.len());
        // Malformed checkpoints, many: a bounded number of pair_witness records.
        for _ in 0..30 {
            assert_eq!(call(&b, "/pair/v1/witness/add-checkpoint", "garbage").await.unwrap().0, 400);
        }
        assert_eq!(call(&b, "/pair/v1/log/append?file=..%2Fgateway-a.toml&offset=0", "x").await.unwrap().0, 409);
        // A checkpoint of B's origin that B's key did not sign is not cosigned.
        let forged = "old 0\n\nspocgw-b\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nspocgw-time t\n\n\u{2014} spocgw-b AAAAAAAAAAAAAAAAAAAAAAAAAAAA\n";
        assert_eq!(call(&b, "/pair/v1/witness/add-checkpoint", forged).await.unwrap().0, 403);
        // A's own pair certificate is the pair CA's, but not the peer's: refused.
        let me = pair_client(dir.path(), ports.a_pair, "pair/gateway-a.pem", "pair/gateway-a.key", "pair/pair-ca.pem");
        assert!(call(&me, "/pair/v1/ids/snapshot", "").await.is_err());
        // B's earlier certificate, revoked on the pair CA's CRL (a stolen or replaced
        // appliance): refused, though its name is the peer's.
        let stolen = pair_client(
            dir.path(),
            ports.a_pair,
            "pair/gateway-b-revoked.pem",
            "pair/gateway-b-revoked.key",
            "pair/pair-ca.pem",
        );
        assert!(call(&stolen, "/pair/v1/ids/snapshot", "").await.is_err(), "a revoked pair certificate was served");
        // A police client certificate does not chain to the pair CA.
        let officer = pair_client(dir.path(), ports.a_pair, "clients/officer.pem", "clients/officer.key", "pair/pair-ca.pem");
        assert!(call(&officer, "/pair/v1/ids/snapshot", "").await.is_err());
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !common::log_contains(&a.log, "not the peer appliance") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(common::log_contains(&a.log, "not the peer appliance"), "{}", a.log_text());
    let witness_records = spocgw::audit::segments(&dir.path().join("audit-a"))
        .unwrap()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().matches("\"event\":\"pair_witness\"").count())
        .sum::<usize>();
    assert!((1..=10).contains(&witness_records), "{witness_records} pair_witness records for 30 refusals");
}

/// The same callback sent to both appliances at once, 100 times: delivered exactly once each
/// time, whichever appliance wins (the one that did not forward the request claims it from the
/// one that did; the owner's table is the arbiter while the link is up).
#[test]
fn a_callback_sent_to_both_appliances_at_once_is_delivered_once() {
    use spocgw::gateway::config::UpstreamConfig;
    use spocgw::gateway::upstream::{Upstream, soap_headers};
    let (dir, ports) = pair_pki();
    // One terminal sends every request.
    common::lift_rates(&dir.path().join("policies/routes.toml"));
    // The test sends the callbacks itself.
    let m = dir.path().join("ministry.toml");
    let text = std::fs::read_to_string(&m).unwrap().replace("callback_delay_ms = 300", "callback_delay_ms = 3600000");
    std::fs::write(&m, text).unwrap();
    let path = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let _sims = simulators(dir.path());
    let a = common::Proc::start(&["serve", "--config", &path("gateway-a.toml")], dir.path().join("a.log"));
    let b = common::Proc::start(&["serve", "--config", &path("gateway-b.toml")], dir.path().join("b.log"));
    common::wait_port(ports.a.admin);
    common::wait_port(ports.b_admin);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let linked = |admin: u16| {
        let (s, body) = common::admin_get(admin, "/readyz");
        s == 200 && body.contains("pair: ") && !body.contains("unreachable")
    };
    while !(linked(ports.a.admin) && linked(ports.b_admin)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(linked(ports.a.admin) && linked(ports.b_admin), "{}\n{}", a.log_text(), b.log_text());
    let client = |port: u16, ca: &str, cert: &str, key: &str| {
        let d = dir.path();
        Upstream::new(&UpstreamConfig::client(
            format!("https://127.0.0.1:{port}"),
            &d.join(ca),
            &d.join(cert),
            &d.join(key),
        ))
        .unwrap()
    };
    let dv =
        client(ports.a.gateway, "ca/police-ca.pem", "clients/document-verifier.pem", "clients/document-verifier.key");
    let spoc = |port| client(port, "ca/ministry-ca.pem", "ministry/client.pem", "ministry/client.key");
    let (to_a, to_b) = (spoc(ports.a.callback), spoc(ports.b_callback));
    let headers = |action| soap_headers("text/xml; charset=utf-8", Some(action), None);
    let env = |body: String| bytes::Bytes::from(spocgw::xml::soap::envelope(spocgw::xml::SoapVersion::V11, &body));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut winners = [0usize; 2];
    rt.block_on(async {
        for i in 0..100 {
            let id = format!("ONCE-{i}");
            let r = dv
                .post(
                    "/spoc/csn369791",
                    headers("RequestCertificateRequest"),
                    env(spocgw::sim::messages::request_certificate(&id)),
                )
                .await
                .unwrap();
            assert!(common::text(&r).contains("ok_reception_ack"), "{}", common::text(&r));
            let cb = env(spocgw::sim::messages::send_certificates(&id));
            let (ra, rb) = tokio::join!(
                to_a.post("/spoc/csn369791", headers("SendCertificatesRequest"), cb.clone()),
                to_b.post("/spoc/csn369791", headers("SendCertificatesRequest"), cb),
            );
            let refused = |r: &spocgw::gateway::upstream::Reply| common::text(r).contains("failure_messageID_unknown");
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            match (refused(&ra), refused(&rb)) {
                (false, true) => winners[0] += 1,
                (true, false) => winners[1] += 1,
                other => panic!(
                    "{id}: refused by (A, B) = {other:?}: delivered {} times",
                    2 - other.0 as usize - other.1 as usize
                ),
            }
        }
    });
    // A power cut at the site: a certificate request forwarded through A, both appliances
    // killed and started again; the Ministry's callback, sent to B, is delivered.
    rt.block_on(async {
        let r = dv
            .post(
                "/spoc/csn369791",
                headers("RequestCertificateRequest"),
                env(spocgw::sim::messages::request_certificate("POWER-CUT-1")),
            )
            .await
            .unwrap();
        assert!(common::text(&r).contains("ok_reception_ack"));
    });
    let (mut a, mut b) = (a, b);
    for g in [&mut a, &mut b] {
        g.signal("KILL");
        assert!(g.wait_exit(std::time::Duration::from_secs(10)).is_some());
    }
    let mut a2 = common::Proc::start(&["serve", "--config", &path("gateway-a.toml")], dir.path().join("a2.log"));
    let _b = common::Proc::start(&["serve", "--config", &path("gateway-b.toml")], dir.path().join("b2.log"));
    common::wait_port(ports.a.admin);
    common::wait_port(ports.b_admin);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(linked(ports.a.admin) && linked(ports.b_admin)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let after = rt.block_on(async {
        let cb = env(spocgw::sim::messages::send_certificates("POWER-CUT-1"));
        common::text(
            &spoc(ports.b_callback).post("/spoc/csn369791", headers("SendCertificatesRequest"), cb).await.unwrap(),
        )
    });
    assert!(!after.contains("failure_messageID_unknown"), "lost in the power cut: {after}");
    // A partition: a request through A, then A gone; B accepts the callback on its replica
    // (availability first), and says so in its audit log and metrics.
    rt.block_on(async {
        let rc = env(spocgw::sim::messages::request_certificate("PARTITION-1"));
        let r = dv.post("/spoc/csn369791", headers("RequestCertificateRequest"), rc).await.unwrap();
        assert!(common::text(&r).contains("ok_reception_ack"));
    });
    a2.signal("KILL");
    assert!(a2.wait_exit(std::time::Duration::from_secs(10)).is_some());
    let during = rt.block_on(async {
        let cb = env(spocgw::sim::messages::send_certificates("PARTITION-1"));
        common::text(
            &spoc(ports.b_callback).post("/spoc/csn369791", headers("SendCertificatesRequest"), cb).await.unwrap(),
        )
    });
    assert!(!during.contains("failure_messageID_unknown"), "{during}");
    let metrics = common::admin_get(ports.b_admin, "/metrics").1;
    assert_eq!(common::metric(&metrics, "spocgw_pair_partition_claims_total"), 1.0, "{metrics}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let b_log: String = spocgw::audit::segments(&dir.path().join("audit-b"))
        .unwrap()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        b_log
            .lines()
            .any(|l| l.contains("\"message_id\":\"PARTITION-1\"") && l.contains("accepted during a partition")),
        "the partition claim is on record"
    );
    // The receiver saw each callback once.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = std::fs::read_to_string(dir.path().join("r.log")).unwrap();
    for i in 0..100 {
        let n = log.lines().filter(|l| l.contains("callback received") && l.contains(&format!("\"ONCE-{i}\""))).count();
        assert_eq!(n, 1, "ONCE-{i} delivered {n} times");
    }
    assert_eq!(log.matches("\"POWER-CUT-1\"").count(), 1, "the callback after the power cut");
    eprintln!("delivered by A {}, by B {}", winners[0], winners[1]);
}
