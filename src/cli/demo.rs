//! `spocgw demo [--keep DIR]`: the whole system end to end on a fresh development PKI: the
//! simulated Ministry, the police callback receiver and the gateway, in this process, over
//! real mutual TLS on 127.0.0.1. Runs the scenarios of CONTRACT.md section 6 that the gateway
//! performs today, prints a table, and exits 0 only when every scenario behaved.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;

use super::dev_pki::{self, Ports};
use crate::gateway::Gateway;
use crate::gateway::config::{GatewayConfig, UpstreamConfig};
use crate::gateway::upstream::{Reply, Upstream, UpstreamError, soap_headers};
use crate::sim::messages::{self, BioRequest};
use crate::sim::{self, ministry::MinistryConfig, receiver::ReceiverConfig};
use crate::xml::SoapVersion;

pub(super) struct Row {
    pub(super) scenario: &'static str,
    pub(super) expected: &'static str,
    pub(super) observed: String,
    pub(super) pass: bool,
}

pub fn run(keep: Option<&Path>) -> ExitCode {
    exit_code("demo", run_inner(keep))
}

/// A demo's exit: 0 when every scenario behaved, 1 when one did not, 2 when it could not run.
pub(super) fn exit_code(name: &str, ran: anyhow::Result<bool>) -> ExitCode {
    match ran {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("spocgw {name}: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `N` distinct free ports for the demo's servers, below the kernel's ephemeral range (where an
/// outgoing connection could take one before its server binds it), all held until all are
/// chosen so that none is handed out twice.
pub(super) fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    const LOWEST: u32 = 10_000;
    let ephemeral: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(LOWEST).max(1_000);
    let start = std::process::id().wrapping_mul(7_919) % span;
    let mut held = Vec::with_capacity(N);
    for i in 0..span {
        let port = (LOWEST + (start + i) % span) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
            if held.len() == N {
                break;
            }
        }
    }
    let ports: Vec<u16> = held.iter().filter_map(|l| l.local_addr().ok().map(|a| a.port())).collect();
    ports.try_into().map_err(|_| anyhow::anyhow!("not {N} free ports between {LOWEST} and {ephemeral}"))
}

fn run_inner(keep: Option<&Path>) -> anyhow::Result<bool> {
    let tmp;
    let dir: PathBuf = match keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.to_path_buf()
        }
        None => {
            tmp = tempfile::Builder::new().prefix("spocgw-demo-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let [gateway, callback, admin, ministry, receiver] = free_ports()?;
    let ports = Ports { gateway, callback, admin, ministry, receiver };
    // TPM-backed by default: a software TPM for this run, provisioned by dev-pki.
    let swtpm = if crate::tpm::swtpm::installed() {
        Some(crate::tpm::swtpm::SoftTpm::start(&dir.join("swtpm-state")).context("cannot start swtpm")?)
    } else {
        None
    };
    let dev_tpm = swtpm.as_ref().map(|t| dev_pki::DevTpm { tcti: t.tcti(), pcrs: vec![0, 2, 4, 7] });
    dev_pki::generate_with(&dir, ports, dev_tpm.as_ref())?;
    // Logs go to a file so the table stays readable.
    let log_path = dir.join("demo.log");
    let log = std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let _ = tracing_subscriber::fmt().json().with_writer(Mutex::new(log)).try_init();
    println!("spocgw demo: development PKI and configurations in {}", dir.display());
    match &swtpm {
        Some(t) => {
            println!("spocgw demo: TPM-backed: gateway keys made in (or sealed by) swtpm at {}, none on disk", t.tcti())
        }
        None => {
            println!("{}", "!".repeat(78));
            println!("!! swtpm NOT FOUND: this demo runs with FILE KEYS (private keys on disk).");
            println!("!! An appliance never does; `make demo` installs swtpm (Debian package swtpm).");
            println!("{}", "!".repeat(78));
        }
    }

    let rt = super::runtime()?;
    let rows = rt.block_on(async {
        let ministry_file = dir.join("ministry.toml");
        let receiver_file = dir.join("receiver.toml");
        let gateway_file = dir.join("gateway.toml");
        let ministry = sim::start_ministry(&MinistryConfig::load(&ministry_file)?, &ministry_file).await?;
        let (receiver, received) = sim::start_receiver(&ReceiverConfig::load(&receiver_file)?, &receiver_file).await?;
        let gateway = Gateway::start(&GatewayConfig::load(&gateway_file)?, &gateway_file).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gateway.is_ready() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (rows, incidents, secrets) = scenarios(&dir, &gateway, &received).await?;
        gateway.shutdown().await;
        receiver.stop().await;
        ministry.stop().await;
        let mut rows = rows;
        audit_rows(&dir, &incidents, &secrets, &mut rows);
        if swtpm.is_some() {
            custody_row(&dir, &mut rows);
        }
        anyhow::Ok(rows)
    })?;

    let passed = print_table(&rows);
    if keep.is_some() {
        println!("logs: {}", log_path.display());
    }
    Ok(passed)
}

/// The scenario table; true when every row passed.
pub(super) fn print_table(rows: &[Row]) -> bool {
    let w = rows.iter().map(|r| r.scenario.len()).max().unwrap_or(8);
    let we = rows.iter().map(|r| r.expected.len()).max().unwrap_or(8);
    let wo = rows.iter().map(|r| r.observed.len()).max().unwrap_or(8);
    println!("\n{:<w$}  {:<we$}  {:<wo$}  pass", "scenario", "expected", "observed");
    println!("{}", "-".repeat(w + we + wo + 10));
    for r in rows {
        println!("{:<w$}  {:<we$}  {:<wo$}  {}", r.scenario, r.expected, r.observed, if r.pass { "yes" } else { "NO" });
    }
    let passed = rows.iter().filter(|r| r.pass).count();
    println!("\n{passed} passed, {} failed", rows.len() - passed);
    passed == rows.len()
}

/// With a TPM: no gateway private key exists as a file.
fn custody_row(dir: &Path, rows: &mut Vec<Row>) {
    let files: Vec<String> = std::fs::read_dir(dir.join("gateway"))
        .map(|d| {
            d.flatten()
                .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("PRIVATE KEY")))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let observed = if files.is_empty() { "none on disk".to_owned() } else { files.join(", ") };
    let pass = files.is_empty();
    rows.push(Row { scenario: "gateway private keys in the TPM", expected: "none on disk", observed, pass });
}

pub(super) fn client(dir: &Path, port: u16, who: &str, http2: bool) -> anyhow::Result<Upstream> {
    let mut cfg = UpstreamConfig::client(
        format!("https://127.0.0.1:{port}"),
        &dir.join("ca/police-ca.pem"),
        &dir.join(format!("clients/{who}.pem")),
        &dir.join(format!("clients/{who}.key")),
    );
    cfg.http2 = http2;
    Ok(Upstream::new(&cfg)?)
}

pub(super) async fn post(c: &Upstream, path: &str, action: &str, body: String) -> Result<Reply, UpstreamError> {
    c.post(path, soap_headers("text/xml; charset=utf-8", Some(action), None), Bytes::from(body)).await
}

pub(super) fn describe(r: &Result<Reply, UpstreamError>, needle: &str) -> String {
    match r {
        Ok(reply) => {
            let text = String::from_utf8_lossy(&reply.body);
            let code = [
                "XmlThreat",
                "XmlMalformed",
                "SchemaViolation",
                "ContentMismatch",
                "UnknownOperation",
                "PolicyDenied",
                "RateLimited",
            ]
            .into_iter()
            .find(|c| text.contains(&format!("<Code>{c}</Code>")));
            match code {
                Some(c) => format!("{} {c}", reply.status.as_u16()),
                None if !needle.is_empty() && text.contains(needle) => {
                    format!("{} {}", reply.status.as_u16(), strip(needle))
                }
                None => format!("{}", reply.status.as_u16()),
            }
        }
        Err(e) => format!("refused ({})", e.kind()),
    }
}

fn strip(tagged: &str) -> String {
    tagged.split(['<', '>']).filter(|s| !s.is_empty() && !s.contains('/')).nth(1).unwrap_or(tagged).to_owned()
}

/// The audit log's scenarios, run on the stopped gateway's log: it verifies, every incident ID a
/// client was given is in it, and no biometric data, name or document number is.
fn audit_rows(dir: &Path, incidents: &[String], secrets: &[String], rows: &mut Vec<Row>) {
    let mut row = |scenario, expected: &'static str, observed: String| {
        let pass = observed == expected;
        rows.push(Row { scenario, expected, observed, pass });
    };
    let log_dir = dir.join("audit");
    match crate::audit::verify::verify(&log_dir, &dir.join("gateway/audit-checkpoint.pub.pem"), &Default::default()) {
        Ok(s) => {
            println!("audit chain head: {} records, root {}", s.records, s.root);
            row("audit verify", "passes", "passes".into());
        }
        Err(e) => row("audit verify", "passes", e),
    }
    let text = crate::audit::segments(&log_dir)
        .map(|segs| segs.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect::<String>())
        .unwrap_or_default();
    let missing = incidents.iter().filter(|id| !text.contains(&format!("\"incident_id\":\"{id}\""))).count();
    row(
        "every incident ID a client got is in the log",
        "all recorded",
        if missing == 0 && !incidents.is_empty() {
            "all recorded".into()
        } else {
            format!("{missing} of {} missing", incidents.len())
        },
    );
    let leaked = secrets.iter().filter(|s| text.contains(s.as_str())).count();
    row(
        "no fingerprint data, name or document number in the log",
        "none found",
        if leaked == 0 { "none found".into() } else { format!("{leaked} found") },
    );
}

/// The rows so far, and every incident ID a client was given (the audit rows check them).
#[derive(Default)]
struct Tally {
    rows: Vec<Row>,
    incidents: Vec<String>,
}

impl Tally {
    fn row(&mut self, scenario: &'static str, expected: &'static str, observed: String) {
        let pass = observed == expected;
        self.rows.push(Row { scenario, expected, observed, pass });
    }

    fn note(&mut self, r: &Result<Reply, UpstreamError>) {
        if let Ok(reply) = r
            && let Some(id) = &reply.request_id
        {
            self.incidents.push(id.clone());
        }
    }
}

async fn scenarios(
    dir: &Path,
    gw: &Gateway,
    received: &sim::receiver::Receiver,
) -> anyhow::Result<(Vec<Row>, Vec<String>, Vec<String>)> {
    let port = gw.police_addr.port();
    let bio = BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 20 * 1024);
    let mut t = Tally::default();
    bio_rows(&mut t, dir, port, &bio).await?;
    hostile_rows(&mut t, dir, port, &bio).await?;
    csn_rows(&mut t, dir, gw, received).await?;
    // What must never reach the log: image data (any 40 characters of its base64), the
    // holder's name, the document number.
    let image = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bio.live[0].data);
    let secrets = vec![image[400..440].to_owned(), "NOVAKOVA".to_owned(), bio.document_number.clone()];
    Ok((t.rows, t.incidents, secrets))
}

/// What police terminals ask, and what policy lets them.
async fn bio_rows(t: &mut Tally, dir: &Path, port: u16, bio: &BioRequest) -> anyhow::Result<()> {
    let officer = client(dir, port, "officer", false)?;
    let officer_h2 = client(dir, port, "officer", true)?;
    let analyst = client(dir, port, "analyst", false)?;
    let v11 = SoapVersion::V11;
    let r =
        post(&officer, "/bio/v1", "VerifyFingerprintRequest", messages::envelope(v11, &bio.verify_fingerprint())).await;
    t.row("officer verifies a fingerprint", "200 MATCH", describe(&r, "<Result>MATCH</Result>"));

    let r =
        post(&officer_h2, "/bio/v1", "VerifyFingerprintRequest", messages::envelope(v11, &bio.verify_fingerprint()))
            .await;
    t.row("officer verifies a fingerprint over HTTP/2", "200 MATCH", describe(&r, "<Result>MATCH</Result>"));

    let r = post(&officer, "/bio/v1", "CheckIdentityRequest", messages::envelope(v11, &bio.check_identity())).await;
    t.note(&r);
    let observed = match &r {
        Ok(reply) if reply.status == 200 => {
            let t = String::from_utf8_lossy(&reply.body);
            match (t.contains("<DocumentStatus>VALID</DocumentStatus>"), t.contains("<Address>")) {
                (true, false) => "200 VALID, Address removed".to_owned(),
                (true, true) => "200 VALID, Address present".to_owned(),
                _ => describe(&r, ""),
            }
        }
        _ => describe(&r, ""),
    };
    t.row("officer checks identity (IDENTITY_DOUBT)", "200 VALID, Address removed", observed);

    let r =
        post(&analyst, "/bio/v1", "VerifyFingerprintRequest", messages::envelope(v11, &bio.verify_fingerprint())).await;
    t.row("analyst asks to verify a fingerprint", "403 PolicyDenied", describe(&r, ""));

    let mut burst = Vec::new();
    for _ in 0..8 {
        let r = post(&analyst, "/bio/v1", "CheckIdentityRequest", messages::envelope(v11, &bio.check_identity())).await;
        t.note(&r);
        burst.push(r.map(|r| r.status.as_u16()).unwrap_or(0));
    }
    let limited = burst.iter().filter(|s| **s == 429).count();
    t.row(
        "burst of 8 identity checks from one terminal",
        "429 RateLimited",
        if limited > 0 { "429 RateLimited".into() } else { format!("statuses {burst:?}") },
    );
    Ok(())
}

/// Hostile and broken messages, a revoked certificate: each refused with its code. Refused
/// requests count against a terminal's rate too (2/s, burst 5, on bio_v1): the rows are spread
/// over two terminals, as the policy's rates would have them.
async fn hostile_rows(t: &mut Tally, dir: &Path, port: u16, bio: &BioRequest) -> anyhow::Result<()> {
    let officer = client(dir, port, "officer", false)?;
    let second_line = client(dir, port, "second-line", false)?;
    let revoked = client(dir, port, "revoked", false)?;
    let v11 = SoapVersion::V11;
    let doctype = format!(
        "<!DOCTYPE x [<!ENTITY e \"e\">]>{}",
        messages::envelope(v11, &bio.check_identity()).replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", "")
    );
    let r = post(&officer, "/bio/v1", "CheckIdentityRequest", doctype).await;
    t.note(&r);
    t.row("message with a DOCTYPE", "400 XmlThreat", describe(&r, ""));

    let mut invalid = bio.clone();
    invalid.purpose = "CURIOSITY";
    let r = post(&officer, "/bio/v1", "CheckIdentityRequest", messages::envelope(v11, &invalid.check_identity())).await;
    t.note(&r);
    t.row("schema-invalid message (unknown Purpose)", "400 SchemaViolation", describe(&r, ""));

    let mut mislabelled = bio.clone();
    mislabelled.live[0].format = "JPEG2000";
    let r = post(
        &second_line,
        "/bio/v1",
        "VerifyFingerprintRequest",
        messages::envelope(v11, &mislabelled.verify_fingerprint()),
    )
    .await;
    t.note(&r);
    t.row("WSQ image labelled JPEG2000", "400 ContentMismatch", describe(&r, ""));

    let broken = messages::envelope(v11, &bio.check_identity()).replace("</TravelDocument>", "");
    let r = post(&second_line, "/bio/v1", "CheckIdentityRequest", broken).await;
    t.note(&r);
    t.row("message that is not well-formed", "400 XmlMalformed", describe(&r, ""));

    let r =
        post(&second_line, "/bio/v1", "VerifyFingerprintRequest", messages::envelope(v11, &bio.check_identity())).await;
    t.note(&r);
    t.row("SOAPAction disagrees with the Body", "400 SchemaViolation", describe(&r, ""));

    let r = post(
        &second_line,
        "/bio/v1",
        "GetCACertificatesRequest",
        messages::envelope(v11, &messages::get_ca_certificates("M-1")),
    )
    .await;
    t.row("operation not on this route", "404 UnknownOperation", describe(&r, ""));

    let r = post(&revoked, "/bio/v1", "CheckIdentityRequest", messages::envelope(v11, &bio.check_identity())).await;
    t.note(&r);
    let observed = if r.is_err() { "handshake refused".to_owned() } else { describe(&r, "") };
    t.row("revoked certificate", "handshake refused", observed);
    Ok(())
}

/// CSN 36 9791 as deployed SPOC clients send it (`SOAPAction: ""`, the Body decides): a
/// request answered asynchronously and its callback, the National SPOC's unsolicited
/// notification, and a callback the gateway did not ask for.
async fn csn_rows(t: &mut Tally, dir: &Path, gw: &Gateway, received: &sim::receiver::Receiver) -> anyhow::Result<()> {
    let dv = client(dir, gw.police_addr.port(), "document-verifier", false)?;
    let v11 = SoapVersion::V11;
    let message_id = format!("DEMO-{}", uuid::Uuid::new_v4());
    // As deployed SPOC clients send it: `SOAPAction: ""`, the Body decides.
    let r = post(&dv, "/spoc/csn369791", "\"\"", messages::envelope(v11, &messages::request_certificate(&message_id)))
        .await;
    t.note(&r);
    t.row(
        "CSN RequestCertificateRequest, asynchronous",
        "200 ok_reception_ack",
        describe(&r, "<result>ok_reception_ack</result>"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !received.received().contains(&message_id) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = received.received().contains(&message_id);
    t.row(
        "its SendCertificatesRequest callback delivered",
        "delivered to police",
        if delivered { "delivered to police".into() } else { "not delivered".into() },
    );

    let ministry = Upstream::new(&UpstreamConfig::client(
        format!("https://127.0.0.1:{}", gw.callback_addr.map(|a| a.port()).unwrap_or(0)),
        &dir.join("ca/ministry-ca.pem"),
        &dir.join("ministry/client.pem"),
        &dir.join("ministry/client.key"),
    ))?;
    let notified = |r: &sim::receiver::Receiver| r.received().iter().filter(|id| id.is_empty()).count();
    let before = notified(received);
    let r =
        post(&ministry, "/spoc/csn369791", "\"\"", messages::envelope(v11, &messages::new_certificates_notification()))
            .await;
    t.note(&r);
    let deadline = Instant::now() + Duration::from_secs(5);
    while notified(received) == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let observed = match (describe(&r, "<result>ok_received_correctly</result>"), notified(received) > before) {
        (d, true) => format!("{d}, delivered"),
        (d, false) => format!("{d}, not delivered"),
    };
    t.row("unsolicited new_cert_available_notification", "200 ok_received_correctly, delivered", observed);

    let r = post(
        &ministry,
        "/spoc/csn369791",
        "\"\"",
        messages::envelope(v11, &messages::send_certificates("NEVER-FORWARDED-1")),
    )
    .await;
    t.note(&r);
    let forwarded = received.received().iter().any(|id| id == "NEVER-FORWARDED-1");
    let observed = match (describe(&r, "<result>failure_messageID_unknown</result>"), forwarded) {
        (d, false) => d,
        (d, true) => format!("{d}, but forwarded"),
    };
    t.row("callback with an unknown messageID", "200 failure_messageID_unknown", observed);
    Ok(())
}
