//! The pair's scenarios, in order: both serve behind the balancer; a callback lands on the other
//! appliance; both logs are cosigned; one appliance is killed under load and the other takes the
//! traffic; it comes back and catches up; both logs verify against each other's witness; a lost
//! log is restored from the peer's copy; a cut log is caught by the peer's witness.

use std::path::Path;
use std::time::{Duration, Instant};

use super::super::demo::{Row, client, describe, post, print_table};
use super::Pair;
use crate::audit::note::Vkey;
use crate::audit::witness::{Witness, Witnessed};
use crate::audit::{recovery, verify};
use crate::gateway::config::UpstreamConfig;
use crate::gateway::upstream::{Reply, Upstream, UpstreamError};
use crate::sim::messages::{self, BioRequest};
use crate::sim::receiver::Receiver;
use crate::xml::SoapVersion;

pub(super) fn print(rows: &[Row]) -> bool {
    print_table(rows)
}

pub(super) struct Rows(Vec<Row>);

impl Rows {
    pub(super) fn row(&mut self, scenario: &'static str, expected: &'static str, observed: String, pass: bool) {
        self.0.push(Row { scenario, expected, observed, pass });
    }
}

pub(super) fn log_text(dir: &Path) -> String {
    crate::audit::segments(dir)
        .map(|segs| segs.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect::<String>())
        .unwrap_or_default()
}

pub(super) fn is_recorded(text: &str, id: &str) -> bool {
    text.contains(&format!("\"incident_id\":\"{id}\""))
}

pub(super) async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f()
}

pub(super) fn vkey(dir: &Path, name: &str) -> anyhow::Result<Vkey> {
    Ok(Vkey::parse(&std::fs::read_to_string(dir.join(format!("pair/{name}-witness.vkey")))?)?)
}

/// The newest cosigned size beside a log, 0 without any.
pub(super) fn cosigned(dir: &Path, log: &str, key: &str, witness: &Vkey) -> u64 {
    let point = verify::public_point(&dir.join(key)).unwrap_or_default();
    let Ok(contents) = verify::read_log(&dir.join(log)) else { return 0 };
    recovery::check_cosignatures(&dir.join(log), &contents, &point, witness).ok().flatten().map_or(0, |c| c.newest_size)
}

/// What the peer's witness holds for `origin` (its size, 0 without any).
pub(super) fn witnessed(dir: &Path, state: &str, origin: &str) -> Option<Witnessed> {
    Witnessed::read(&Witness::state_file(&dir.join(state), origin)).ok()
}

pub(super) async fn run(p: &mut Pair, received: &Receiver) -> anyhow::Result<Vec<Row>> {
    let mut rows = Rows(Vec::new());
    let dir = p.dir.clone();
    let ready = p.wait_ready('a', Duration::from_secs(30)) && p.wait_ready('b', Duration::from_secs(30));
    rows.row(
        "both appliances ready (HAProxy checks /readyz)",
        "ready",
        if ready { "ready".into() } else { "not ready".into() },
        ready,
    );
    anyhow::ensure!(ready, "the appliances did not become ready; see {}", dir.display());
    // HAProxy takes a server in after two passing checks, 500 ms apart.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    spread(p, &mut rows).await?;
    let message_id = callbacks(p, &mut rows, received).await?;
    let (a_vkey, b_vkey) = (vkey(&dir, "gateway-a")?, vkey(&dir, "gateway-b")?);
    let both = wait_until(Duration::from_secs(15), || {
        cosigned(&dir, "audit-a", "gateway/audit-checkpoint.pub.pem", &b_vkey) > 0
            && cosigned(&dir, "audit-b", "gateway-b/audit-checkpoint.pub.pem", &a_vkey) > 0
    })
    .await;
    rows.row(
        "each log's checkpoints cosigned by the peer's witness",
        "both cosigned",
        format!(
            "A through {} (by B), B through {} (by A)",
            cosigned(&dir, "audit-a", "gateway/audit-checkpoint.pub.pem", &b_vkey),
            cosigned(&dir, "audit-b", "gateway-b/audit-checkpoint.pub.pem", &a_vkey)
        ),
        both,
    );
    let _ = message_id;
    super::failover::kill_under_load(p, &mut rows, received).await?;
    super::failover::verify_and_recover(p, &mut rows).await?;
    Ok(rows.0)
}

/// An officer's fingerprint verification (a matching print) through `c`.
pub(super) async fn verify_fingerprint(c: &Upstream) -> Result<Reply, UpstreamError> {
    let bio = BioRequest::matching(&uuid::Uuid::new_v4().to_string(), 1024);
    post(c, "/bio/v1", "VerifyFingerprintRequest", messages::envelope(SoapVersion::V11, &bio.verify_fingerprint()))
        .await
}

/// Requests through the balancer reach both appliances, each records its own.
async fn spread(p: &Pair, rows: &mut Rows) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    for _ in 0..12 {
        // A new client each time: a new connection, which the balancer sends round robin.
        let c = client(&p.dir, p.ports.lb_police, "officer", false)?;
        let r = verify_fingerprint(&c).await;
        if let Ok(reply) = &r
            && reply.status == 200
            && let Some(id) = &reply.request_id
        {
            ids.push(id.clone());
        }
    }
    let (a, b) = (log_text(&p.dir.join("audit-a")), log_text(&p.dir.join("audit-b")));
    let on_a = ids.iter().filter(|id| is_recorded(&a, id)).count();
    let on_b = ids.iter().filter(|id| is_recorded(&b, id)).count();
    rows.row(
        "requests through HAProxy served by both, each recorded once",
        "12 served, both appliances",
        format!("{} served, {on_a} by A, {on_b} by B", ids.len()),
        ids.len() == 12 && on_a > 0 && on_b > 0 && on_a + on_b == 12,
    );
    Ok(())
}

fn ministry_client(dir: &Path, port: u16) -> anyhow::Result<Upstream> {
    Ok(Upstream::new(&UpstreamConfig::client(
        format!("https://127.0.0.1:{port}"),
        &dir.join("ca/ministry-ca.pem"),
        &dir.join("ministry/client.pem"),
        &dir.join("ministry/client.key"),
    ))?)
}

/// A RequestCertificateRequest for a new messageID, by the document verifier at the police
/// listener on `port`: the messageID, and how it was answered.
pub(super) async fn ask_certificate(dir: &Path, port: u16, tag: &str) -> anyhow::Result<(String, String)> {
    let dv = client(dir, port, "document-verifier", false)?;
    let message_id = format!("{tag}-{}", uuid::Uuid::new_v4());
    let body = messages::envelope(SoapVersion::V11, &messages::request_certificate(&message_id));
    let r = post(&dv, "/spoc/csn369791", "\"\"", body).await;
    Ok((message_id, describe(&r, "<result>ok_reception_ack</result>")))
}

/// The Ministry's SendCertificatesRequest for `message_id` at the callback listener on `port`:
/// how it was answered (`needle`: the result expected).
pub(super) async fn call_back(dir: &Path, port: u16, message_id: &str, needle: &str) -> anyhow::Result<String> {
    let body = messages::envelope(SoapVersion::V11, &messages::send_certificates(message_id));
    let r = post(&ministry_client(dir, port)?, "/spoc/csn369791", "\"\"", body).await;
    Ok(describe(&r, needle))
}

/// A RequestCertificate forwarded through A is answered by the Ministry's callback at B (the
/// simulated Ministry calls B back); a replay of that callback at A is refused.
async fn callbacks(p: &Pair, rows: &mut Rows, received: &Receiver) -> anyhow::Result<String> {
    let (message_id, asked) = ask_certificate(&p.dir, p.ports.a.gateway, "PAIR").await?;
    let delivered = wait_until(Duration::from_secs(15), || received.received().contains(&message_id)).await;
    rows.row(
        "callback for a request forwarded through A, arriving at B",
        "200 ok_reception_ack, delivered",
        format!("{asked}, {}", if delivered { "delivered" } else { "not delivered" }),
        asked == "200 ok_reception_ack" && delivered,
    );
    let replay =
        call_back(&p.dir, p.ports.a.callback, &message_id, "<result>failure_messageID_unknown</result>").await?;
    let twice = received.received().iter().filter(|id| **id == message_id).count();
    rows.row(
        "the same callback replayed at A",
        "200 failure_messageID_unknown",
        if twice > 1 { format!("{replay}, delivered twice") } else { replay.clone() },
        replay == "200 failure_messageID_unknown" && twice == 1,
    );
    Ok(message_id)
}
