//! The gateway as police systems see it: the real binary, real mutual TLS on 127.0.0.1,
//! certificates from `spocgw dev-pki`, the simulated Ministry behind it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use spocgw::sim::messages::{self, BioRequest};
use spocgw::xml::SoapVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const XML11: &str = "text/xml; charset=utf-8";

fn bio() -> BioRequest {
    BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 8 * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officer_reaches_every_operation_over_http1_and_http2() {
    let w = World::full();
    let b = bio();
    let cases: Vec<(&str, &str, String, &str)> = vec![
        ("/bio/v1", "VerifyFingerprintRequest", b.verify_fingerprint(), "<Result>MATCH</Result>"),
        ("/bio/v1", "CheckIdentityRequest", b.check_identity(), "<DocumentStatus>VALID</DocumentStatus>"),
        (
            "/spoc/csn369791",
            "RequestCertificateRequest",
            messages::request_certificate("SYNC-1"),
            "<result>ok_cert_available</result>",
        ),
        (
            "/spoc/csn369791",
            "RequestCertificateRequest",
            messages::request_certificate("ASYNC-1"),
            "<result>ok_reception_ack</result>",
        ),
        (
            "/spoc/csn369791",
            "GetCACertificatesRequest",
            messages::get_ca_certificates("G-1"),
            "<result>ok_cert_available</result>",
        ),
        ("/spoc/csn369791", "GeneralMessage", messages::general_message("M-1", "hello"), "<result>ok</result>"),
    ];
    for http2 in [false, true] {
        let c = w.client("officer", http2);
        let dv = w.client("document-verifier", http2);
        for (path, action, op, expect) in &cases {
            let c = if *path == "/bio/v1" { &c } else { &dv };
            let r = post(c, path, XML11, Some(action), messages::envelope(SoapVersion::V11, op)).await.unwrap();
            assert_eq!(r.status, 200, "{action} http2={http2}: {}", text(&r));
            assert!(text(&r).contains(expect), "{action}: {}", text(&r));
        }
        // SOAP 1.2: the action travels in the content type.
        let ct = messages::content_type(SoapVersion::V12, "urn:spocgw:bio:1/VerifyFingerprintRequest");
        let r = post(&c, "/bio/v1", &ct, None, messages::envelope(SoapVersion::V12, &b.verify_fingerprint()))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", text(&r));
        assert!(text(&r).contains(spocgw::xml::SOAP12_NS));
    }
    let m = w.metrics();
    assert!(
        metric(
            &m,
            r#"spocgw_requests_total{listener="police",route="bio_v1",operation="VerifyFingerprintRequest",code="ok"}"#
        ) >= 4.0,
        "{m}"
    );
    // Every forwarded request's record was written and made durable, in batches of one fsync.
    let (records, batches) =
        (metric(&m, "spocgw_audit_records_written_total"), metric(&m, "spocgw_audit_batches_written_total"));
    assert!(records >= 4.0 && batches >= 1.0 && batches <= records, "{m}");
    // The request ID the gateway assigned reached the upstream and comes back to the client.
    let log = w.gateway_log();
    assert!(log.contains("\"peer_subject\":\"C=CZ, O=Border Police, OU=border-verifier, CN=officer-0001\""), "{log}");
    assert!(!log.contains(&b.document_number), "document number leaked into the log");
}

#[test]
fn curl_and_openssl_clients_get_through() {
    let w = World::full();
    let sample = w.path("samples/verify-fingerprint.xml");
    for http in ["--http1.1", "--http2"] {
        let out = Command::new("curl")
            .args(["-sS", http, "--fail-with-body", "--cacert"])
            .arg(w.path("ca/police-ca.pem"))
            .arg("--cert")
            .arg(w.path("clients/officer.pem"))
            .arg("--key")
            .arg(w.path("clients/officer.key"))
            .args(["-H", "Content-Type: text/xml; charset=utf-8", "-H", "SOAPAction: \"VerifyFingerprintRequest\""])
            .arg("--data-binary")
            .arg(format!("@{}", sample.display()))
            .arg(format!("https://localhost:{}/bio/v1", w.gateway_port))
            .output()
            .expect("curl must be installed (make test installs it)");
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "curl {http}: {} {body}", String::from_utf8_lossy(&out.stderr));
        assert!(body.contains("<Result>MATCH</Result>"), "{body}");
    }

    // openssl s_client, HTTP/1.1 written by hand.
    let payload = std::fs::read_to_string(&sample).unwrap();
    let request = format!(
        "POST /bio/v1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: VerifyFingerprintRequest\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect"])
        .arg(format!("127.0.0.1:{}", w.gateway_port))
        .arg("-CAfile")
        .arg(w.path("ca/police-ca.pem"))
        .arg("-cert")
        .arg(w.path("clients/officer.pem"))
        .arg("-key")
        .arg(w.path("clients/officer.key"))
        .args(["-servername", "localhost", "-verify_return_error"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl must be installed (make test installs it)");
    use std::io::Write;
    child.stdin.as_mut().unwrap().write_all(request.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text} / {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("<Result>MATCH</Result>"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_certificates_are_refused_at_the_handshake_and_counted() {
    let w = World::full();
    let body = messages::envelope(SoapVersion::V11, &bio().check_identity());
    for who in ["revoked", "expired", "untrusted", "wrong-eku"] {
        let r = post(&w.client(who, false), "/bio/v1", XML11, Some("CheckIdentityRequest"), body.clone()).await;
        assert!(r.is_err(), "{who} got through: {:?}", r.map(|r| r.status));
    }
    // No certificate at all.
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(w.path("ca/police-ca.pem"))
        .args([
            "-H",
            "Content-Type: text/xml; charset=utf-8",
            "-H",
            "SOAPAction: CheckIdentityRequest",
            "--data",
            &body,
        ])
        .arg(format!("https://localhost:{}/bio/v1", w.gateway_port))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a client without certificate got an answer");
    // The officer still gets through.
    let r = post(&w.client("officer", false), "/bio/v1", XML11, Some("CheckIdentityRequest"), body).await.unwrap();
    assert_eq!(r.status, 200);

    // Refused handshakes are on record too.
    let log: String = spocgw::audit::segments(&w.path("audit"))
        .unwrap()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    for (reason, who) in
        [("revoked", "revoked"), ("expired", "expired"), ("untrusted", "untrusted"), ("wrong_purpose", "wrong-eku")]
    {
        // Each names the certificate that tried.
        let fingerprint =
            spocgw::encoding::sha256_hex(&spocgw::tls::load_certs(&w.path(&format!("clients/{who}.pem"))).unwrap()[0]);
        assert!(
            log.lines().any(|l| l.contains("\"event\":\"handshake_refusal\",\"listener\":\"police\"")
                && l.contains(&format!("\"code\":\"{reason}\""))
                && l.contains(&format!("\"fingerprint\":\"{fingerprint}\""))),
            "{reason}: {log}"
        );
    }
    let m = w.metrics();
    for reason in ["revoked", "expired", "untrusted", "wrong_purpose", "no_certificate"] {
        let line = format!(r#"spocgw_tls_handshake_failures_total{{listener="police",reason="{reason}"}}"#);
        assert_eq!(metric(&m, &line), 1.0, "{reason}: {m}");
    }
}

/// A flood of connections that never finish a handshake writes no record per connection: they
/// are counted, and summarised per window (here, at shutdown). Certificates refused are
/// recorded one by one up to the window's bound, the rest summarised too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshakes_are_recorded_by_certificate_and_summarised_otherwise() {
    let mut w = World::full();
    let closed = r#"spocgw_tls_handshake_failures_total{listener="police",reason="closed"}"#;
    // (The harness's own check that the gateway listens was one connect and close.)
    let before = metric(&w.metrics(), closed);
    for _ in 0..200 {
        drop(std::net::TcpStream::connect(("127.0.0.1", w.gateway_port)).unwrap());
    }
    let body = messages::envelope(SoapVersion::V11, &bio().check_identity());
    for _ in 0..103 {
        let r = post(&w.client("revoked", false), "/bio/v1", XML11, Some("CheckIdentityRequest"), body.clone()).await;
        assert!(r.is_err());
    }
    let end = Instant::now() + Duration::from_secs(10);
    while metric(&w.metrics(), closed) < before + 200.0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = metric(&w.metrics(), closed);
    assert_eq!(total, before + 200.0);
    let gateway = w.procs.len() - 1;
    w.procs[gateway].signal("TERM");
    assert!(w.procs[gateway].wait_exit(Duration::from_secs(20)).is_some(), "the gateway did not stop");
    let log: String = spocgw::audit::segments(&w.path("audit"))
        .unwrap()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let one_by_one: Vec<&str> = log.lines().filter(|l| l.contains("\"event\":\"handshake_refusal\"")).collect();
    assert_eq!(one_by_one.len(), 100, "one record per refused certificate, up to the window's bound");
    assert!(one_by_one.iter().all(|l| l.contains("CN=revoked")), "{one_by_one:?}");
    let summary = log.lines().find(|l| l.contains("\"event\":\"handshake_refusals\"")).expect("a summary");
    assert!(summary.contains(&format!("reason closed x{total}")) && summary.contains("reason revoked x3"), "{summary}");
    assert!(summary.contains(&format!("network 127.0.0.0/24 x{}", total + 3.0)), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unknown_and_mistyped_requests_get_contract_faults() {
    let w = World::full();
    let c = w.client("officer", false);
    let b = bio();
    let ci = messages::envelope(SoapVersion::V11, &b.check_identity());

    let r = post(&c, "/nowhere", XML11, Some("CheckIdentityRequest"), ci.clone()).await.unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (404, Some("UnknownOperation")));
    let r = post(
        &c,
        "/bio/v1",
        XML11,
        Some("GeneralMessage"),
        messages::envelope(SoapVersion::V11, &messages::general_message("x", "y")),
    )
    .await
    .unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (404, Some("UnknownOperation")));

    let r = post(&c, "/bio/v1", "application/json", None, "{}".into()).await.unwrap();
    assert_eq!(r.status, 415);
    assert!(text(&r).starts_with("UnsupportedMediaType"), "{}", text(&r));
    let r =
        post(&c, "/bio/v1", "text/xml; charset=iso-8859-1", Some("CheckIdentityRequest"), ci.clone()).await.unwrap();
    assert_eq!(r.status, 415);

    let r = post(&c, "/bio/v1", XML11, Some("VerifyFingerprintRequest"), ci.clone()).await.unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (400, Some("SchemaViolation")));
    // Faults carry the incident ID and, when known, the MessageID; never internal detail.
    let t = text(&r);
    assert!(t.contains("<IncidentID>"), "{t}");
    assert!(t.contains(&format!("<MessageID>{}</MessageID>", b.message_id)), "{t}");
    assert!(!t.contains("SOAPAction/action"), "internal detail leaked: {t}");
    // No SOAPAction, or an empty one as SOAP stacks send it: the Body decides.
    let r = post(&c, "/bio/v1", XML11, None, ci.clone()).await.unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = post(&c, "/bio/v1", XML11, Some("\"\""), ci.clone()).await.unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));

    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), ci.replace("</Requester>", "")).await.unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (400, Some("XmlMalformed")));
    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), ci.replace("OFF-0001", "&xxe;")).await.unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (400, Some("XmlThreat")));
    let billion = format!(
        "<!DOCTYPE l [<!ENTITY l \"l\"><!ENTITY l2 \"&l;&l;&l;&l;\">]>{}",
        ci.replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", "")
    );
    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), billion).await.unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (400, Some("XmlThreat")));
    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), ci.replace("IDENTITY_DOUBT", "CURIOSITY"))
        .await
        .unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (400, Some("SchemaViolation")));
    let mut mislabelled = bio();
    mislabelled.chip[0].format = "JPEG2000";
    let vf = messages::envelope(SoapVersion::V11, &mislabelled.verify_fingerprint());
    let r = post(&c, "/bio/v1", XML11, Some("VerifyFingerprintRequest"), vf).await.unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (400, Some("ContentMismatch")));
    // The log names the limit or rule; the client's fault does not.
    assert!(!text(&r).contains("JPEG2000"), "{}", text(&r));
    let m = w.metrics();
    assert!(
        metric(&m, r#"spocgw_requests_total{listener="police",route="bio_v1",operation="unknown",code="XmlThreat"}"#)
            >= 1.0,
        "{m}"
    );
}

async fn read_status(s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("no response").unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_refused_while_it_streams() {
    let mut w = World::new();
    w.append("gateway.toml", "\n[routes]\nbio_max_body_bytes = 65536\n");
    w.start_ministry();
    w.start_gateway();
    w.wait_ready();

    // Declared too large: refused before any body byte is read.
    let mut s = w.raw_client("officer").await;
    s.write_all(b"POST /bio/v1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nSOAPAction: VerifyFingerprintRequest\r\nContent-Length: 10000000\r\n\r\n").await.unwrap();
    let head = read_status(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("PayloadTooLarge"), "{head}");

    // Chunked, no length declared: 128 KiB sent of a body that would never end; the 413
    // arrives while the client is still sending, so the gateway never holds the whole body.
    let s = w.raw_client("officer").await;
    let (mut rd, mut wr) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        wr.write_all(b"POST /bio/v1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nSOAPAction: VerifyFingerprintRequest\r\nTransfer-Encoding: chunked\r\n\r\n").await?;
        let chunk = format!("{:x}\r\n{}\r\n", 8192, "<".repeat(8192));
        let mut sent = 0usize;
        // Up to 64 MiB; the gateway must answer long before.
        for _ in 0..8192 {
            wr.write_all(chunk.as_bytes()).await?;
            sent += 8192;
        }
        std::io::Result::Ok(sent)
    });
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await.expect("no response").unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // The writer was stopped by the gateway closing the connection, far short of the 64 MiB.
    let sent = writer.await.unwrap();
    assert!(sent.is_err(), "the gateway read the whole 64 MiB body: {sent:?}");
    let m = w.metrics();
    assert_eq!(
        metric(
            &m,
            r#"spocgw_requests_total{listener="police",route="bio_v1",operation="unknown",code="PayloadTooLarge"}"#
        ),
        2.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_become_502_and_504_and_others_keep_being_served() {
    let mut w = World::new();
    w.edit(
        "gateway.toml",
        "key = \"gateway/ministry-side.key\"\n",
        "key = \"gateway/ministry-side.key\"\nresponse_timeout_ms = 1000\n",
    );
    w.start_ministry();
    w.start_receiver();
    w.start_gateway();
    w.wait_ready();
    let c = w.client("officer", false);
    let with_case = |case: &str| {
        let mut b = bio();
        b.case_reference = case.to_owned();
        messages::envelope(SoapVersion::V11, &b.check_identity())
    };

    // Slower than the deadline -> 504, while another client is served meanwhile.
    let slow = {
        let c = c.clone();
        let body = with_case("SIM-DELAY-3000");
        tokio::spawn(async move { post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), body).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let other = w.client("officer", true);
    let r = post(&other, "/bio/v1", XML11, Some("CheckIdentityRequest"), with_case("CASE-1")).await.unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = slow.await.unwrap().unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (504, Some("UpstreamTimeout")));

    // Reset mid-response -> 502.
    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), with_case("SIM-RESET")).await.unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (502, Some("UpstreamUnavailable")));
    // A 503 from the Ministry -> 502; a reply that is not XML -> 502 UpstreamInvalidResponse.
    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), with_case("SIM-STATUS-503")).await.unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (502, Some("UpstreamUnavailable")));
    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), with_case("SIM-MALFORMED")).await.unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (502, Some("UpstreamInvalidResponse")));
    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), with_case("SIM-NOTSOAP")).await.unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (502, Some("UpstreamInvalidResponse")));
    // Well-formed SOAP that breaks the reply's schema: refused too.
    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), with_case("SIM-INVALID")).await.unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (502, Some("UpstreamInvalidResponse")));
    assert!(!text(&r).contains("FINE"), "the invalid reply leaked: {}", text(&r));
    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), with_case("CASE-2")).await.unwrap();
    assert_eq!(r.status, 200);

    // Upstream down -> 502 at once (no waiting for the response deadline), readyz says why.
    w.procs.remove(0); // the simulated Ministry, killed on drop
    let started = Instant::now();
    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), with_case("CASE-3")).await.unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (502, Some("UpstreamUnavailable")));
    assert!(started.elapsed() < Duration::from_millis(1000), "took {:?}", started.elapsed());
    let (status, body) = admin_get(w.admin_port, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ministry: unreachable"), "{body}");
    let m = w.metrics();
    assert!(metric(&m, r#"spocgw_upstream_errors_total{upstream="ministry",kind="connect"}"#) >= 1.0, "{m}");
    assert!(metric(&m, r#"spocgw_upstream_errors_total{upstream="ministry",kind="response_timeout"}"#) >= 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let mut w = World::full();
    let c = w.client("officer", false);
    let mut b = bio();
    b.case_reference = "SIM-DELAY-1500".into();
    let body = messages::envelope(SoapVersion::V11, &b.check_identity());
    let in_flight = tokio::spawn(async move { post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), body).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gw = w.procs.len() - 1;
    w.procs[gw].signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No new connections once draining.
    assert!(std::net::TcpStream::connect(("127.0.0.1", w.gateway_port)).is_err(), "still accepting after SIGTERM");
    let r = in_flight.await.unwrap().unwrap();
    assert_eq!(r.status, 200, "in-flight request cut: {}", text(&r));
    let status = w.procs[gw].wait_exit(Duration::from_secs(15)).expect("gateway did not exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn broken_configs_exit_2_with_one_line_naming_file_key_and_problem() {
    let w = World::new();
    let run = |file: &std::path::Path| {
        let out = Command::new(BIN).args(["serve", "--config"]).arg(file).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    w.edit("gateway.toml", "cert = \"gateway/police-side.pem\"", "cert = \"gateway/missing.pem\"");
    let (code, err) = run(&w.path("gateway.toml"));
    assert_eq!(code, Some(2));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("gateway.toml") && err.contains("police.cert") && err.contains("missing.pem"), "{err}");

    w.edit("gateway.toml", "cert = \"gateway/missing.pem\"", "cert = \"gateway/police-side.pem\"\ncolour = \"blue\"");
    let (code, err) = run(&w.path("gateway.toml"));
    assert_eq!(code, Some(2));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("gateway.toml") && err.contains("colour") && err.contains("police"), "{err}");

    let (code, err) = run(&w.path("nonexistent.toml"));
    assert_eq!(code, Some(2));
    assert!(err.contains("nonexistent.toml"), "{err}");

    // Sizes and durations with their units, as the documentation writes them; nonsense and
    // zeros that would switch something off are refused with the key named.
    let good = std::fs::read_to_string(w.path("gateway.toml")).unwrap().replace("\ncolour = \"blue\"", "");
    let with = |extra: &str, table: &str| {
        let text = good.replacen(&format!("[{table}]\n"), &format!("[{table}]\n{extra}\n"), 1);
        std::fs::write(w.path("variant.toml"), text).unwrap();
        let parsed = spocgw::gateway::config::GatewayConfig::load(&w.path("variant.toml"));
        parsed.map(|_| ()).map_err(|e| e.to_string())
    };
    assert_eq!(with("max_response_bytes = \"4 MiB\"\nresponse_timeout_ms = \"2 s\"", "upstream.ministry"), Ok(()));
    assert_eq!(with("retention_s = \"400 d\"\ncheckpoint_interval_ms = \"500 ms\"", "audit"), Ok(()));
    // Durations are bounded where the law or the arithmetic needs it (config/units.rs): a
    // retention that would delete evidence within a year, one that overflows the date
    // arithmetic, a zero or overflowing TPM timeout.
    for (extra, table, key, why) in [
        ("retention_s = \"1 s\"", "audit", "audit.retention_s", "below the minimum of 365 d"),
        ("retention_s = \"30 d\"", "audit", "audit.retention_s", "below the minimum of 365 d"),
        ("retention_s = \"10000000 d\"", "audit", "audit.retention_s", "above the maximum"),
        ("segment_max_age_s = \"1 s\"", "audit", "audit.segment_max_age_s", "below the minimum"),
    ] {
        let err = with(extra, table).unwrap_err();
        assert!(err.contains(key) && err.contains(why), "{extra}: {err}");
    }
    for (timeout, why) in [("0", "below the minimum of 1 ms"), ("\"10000000 d\"", "above the maximum")] {
        let tpm = format!("\n[tpm]\ntcti = \"device:/dev/tpmrm0\"\ndir = \"tpm\"\ntimeout_ms = {timeout}\n");
        std::fs::write(w.path("variant.toml"), format!("{good}{tpm}")).unwrap();
        let err = spocgw::gateway::config::GatewayConfig::load(&w.path("variant.toml")).unwrap_err().to_string();
        assert!(err.contains("tpm.timeout_ms") && err.contains(why), "{timeout}: {err}");
    }
    for (extra, table, key) in [
        ("durable_timeout_ms = 0", "audit", "audit.durable_timeout_ms"),
        ("checkpoint_every = 0", "audit", "audit.checkpoint_every"),
        ("max_response_bytes = \"lots\"", "upstream.ministry", "upstream.ministry.max_response_bytes"),
        ("response_timeout_ms = \"2 fortnights\"", "upstream.ministry", "upstream.ministry.response_timeout_ms"),
        ("request_timeout_ms = 0", "police", "police.request_timeout_ms"),
    ] {
        let err = with(extra, table).unwrap_err();
        assert!(err.contains(key), "{extra}: {err}");
    }
}

/// The benchmark modes: with `bare_proxy` what the full pipeline refuses is forwarded unchecked
/// (the Ministry answers it) and nothing is audited; `bare_proxy_audit` adds the audit stage
/// back: each request's record and its outcome, in a log that verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_proxy_forwards_unchecked_and_audits_only_with_bare_proxy_audit() {
    for audited in [false, true] {
        let mut w = World::new();
        let cfg = w.path("gateway.toml");
        let original = std::fs::read_to_string(&cfg).unwrap();
        if !audited {
            std::fs::write(&cfg, format!("bare_proxy_audit = true\n{original}")).unwrap();
            let out = Command::new(BIN).args(["serve", "--config"]).arg(&cfg).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(err.contains("bare_proxy_audit needs bare_proxy = true"), "{err}");
        }
        std::fs::write(&cfg, format!("bare_proxy = true\nbare_proxy_audit = {audited}\n{original}")).unwrap();
        // A production `serve` refuses the benchmark modes; only `bench serve` runs them.
        let out = Command::new(BIN).args(["serve", "--config"]).arg(&cfg).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("bare_proxy: a benchmark mode") && err.contains("spocgw bench serve"), "{err}");
        w.start_ministry();
        w.start_gateway_with(&["bench", "serve"]);
        w.wait_ready();
        // (the gateway's own records: its start, its keys)
        let before = metric(&w.metrics(), "spocgw_audit_records_written_total");
        let c = w.client("officer", false);
        let ci = messages::envelope(SoapVersion::V11, &bio().check_identity());
        let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), ci.clone()).await.unwrap();
        assert_eq!(r.status, 200, "{}", text(&r));
        // A purpose the schema refuses (the full pipeline answers SchemaViolation) reaches the
        // Ministry, which does not know it.
        let bad = ci.replace("IDENTITY_DOUBT", "CURIOSITY");
        let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), bad).await.unwrap();
        assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (500, Some("NotUnderstood")), "{}", text(&r));
        // Two records a request (the outcome's within the writer's sync delay), or none.
        // (unaudited: time for records that should not come)
        let (want, wait) = if audited { (before + 4.0, 5000) } else { (before, 100) };
        let end = Instant::now() + Duration::from_millis(wait);
        let mut written = metric(&w.metrics(), "spocgw_audit_records_written_total");
        while (written != want || !audited) && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
            written = metric(&w.metrics(), "spocgw_audit_records_written_total");
        }
        assert_eq!(written, want, "audited={audited}");
        assert!(w.gateway_log().contains("BENCHMARK MODE"));
        if audited {
            let out = Command::new(BIN)
                .args(["audit", "verify"])
                .arg(w.path("audit"))
                .arg("--key")
                .arg(w.path("gateway/audit-checkpoint.pub.pem"))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        }
    }
}

#[test]
fn healthz_readyz_and_metrics_answer() {
    let w = World::full();
    assert_eq!(admin_get(w.admin_port, "/healthz"), (200, "ok\n".to_owned()));
    let (status, body) = admin_get(w.admin_port, "/readyz");
    assert_eq!(status, 200);
    assert!(body.contains("ministry: ok"), "{body}");
    // Without asking for OpenMetrics: the Prometheus text format, which promtool checks.
    let m = w.metrics();
    assert!(m.contains("spocgw_requests_in_flight") && !m.contains("# EOF"), "{m}");
    // Every family an alert needs is there before its first event, at 0; the build and the
    // process too.
    for series in [
        "spocgw_connections_refused_total{listener=\"police\",reason=\"connection_cap\"} 0",
        "spocgw_policy_reloads_total{result=\"refused\"} 0",
        "spocgw_crl_reloads_total{listener=\"police\",result=\"refused\"} 0",
        "spocgw_build_info{version=\"",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "# TYPE spocgw_audit_records_written_total counter",
    ] {
        assert!(m.contains(series), "{series}: {m}");
    }
    if have_tool("promtool") {
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), m.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let findings = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && findings.trim().is_empty(), "promtool check metrics: {findings}");
    }
    // A scraper asking for OpenMetrics gets it.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", w.admin_port)).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=1.0.0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut om = String::new();
    std::io::Read::read_to_string(&mut s, &mut om).unwrap();
    assert!(om.contains("application/openmetrics-text") && om.contains("# EOF"), "{om}");
}

/// Reads one HTTP/1.1 response (head and a Content-Length body); returns the head.
async fn read_response(
    s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    pending: &mut Vec<u8>,
) -> String {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("a Content-Length");
            if pending.len() >= end + 4 + len {
                pending.drain(..end + 4 + len);
                return head;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("no response").unwrap();
        assert!(n > 0, "the gateway closed the connection");
        pending.extend_from_slice(&buf[..n]);
    }
}

/// An HTTP/1.1 keep-alive connection idle for a while is parked (hyper's buffers let go, the
/// TLS connection kept) and serves on: after a pause, with a request split by a pause, with
/// two pipelined requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_parked_and_serves_on() {
    let w = World::full();
    let body = messages::envelope(SoapVersion::V11, &bio().check_identity());
    let request = format!(
        "POST /bio/v1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: CheckIdentityRequest\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let pause = spocgw::gateway::listener::PARK_AFTER * 4;
    let parked = |w: &World| metric(&w.metrics(), r#"spocgw_connections_parked{listener="police"}"#);
    let mut s = w.raw_client("officer").await;
    let mut pending = Vec::new();
    s.write_all(request.as_bytes()).await.unwrap();
    let head = read_response(&mut s, &mut pending).await;
    assert!(head.starts_with("http/1.1 200") && !head.contains("connection: close"), "{head}");
    tokio::time::sleep(pause).await;
    assert_eq!(parked(&w), 1.0, "the idle connection was not parked: {}", w.gateway_log());
    // The next request on the same TLS connection.
    s.write_all(request.as_bytes()).await.unwrap();
    assert!(read_response(&mut s, &mut pending).await.starts_with("http/1.1 200"));
    assert_eq!(parked(&w), 0.0);
    // Half a request, a pause, the rest: a request that has begun is never parked away.
    tokio::time::sleep(pause).await;
    let (first, rest) = request.split_at(40);
    s.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(pause).await;
    s.write_all(rest.as_bytes()).await.unwrap();
    assert!(read_response(&mut s, &mut pending).await.starts_with("http/1.1 200"));
    // Two requests in one write after a pause.
    tokio::time::sleep(pause).await;
    s.write_all(format!("{request}{request}").as_bytes()).await.unwrap();
    for _ in 0..2 {
        let head = read_response(&mut s, &mut pending).await;
        assert!(head.starts_with("http/1.1 200") && !head.contains("connection: close"), "{head}");
    }
    let m = w.metrics();
    assert_eq!(metric(&m, r#"spocgw_connections_open{listener="police"}"#), 1.0, "{m}");
}

/// A pooled connection the Ministry closed while it sat idle (here the Ministry restarts) is
/// not used for a request, or the request is sent again on a new connection: nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_the_ministry_closed_are_replaced() {
    let mut w = World::full();
    let c = w.client("officer", false);
    let send = || {
        let body = messages::envelope(
            SoapVersion::V11,
            &BioRequest::matching(&uuid::Uuid::new_v4().to_string(), 1024).check_identity(),
        );
        post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), body)
    };
    // Four at once, so the pool holds several connections.
    let four = || async {
        let (a, b, c, d) = tokio::join!(send(), send(), send(), send());
        [a, b, c, d].map(|r| r.map(|r| r.status.as_u16()).map_err(|e| e.to_string()))
    };
    let first = four().await;
    assert!(first.iter().all(|s| matches!(s, Ok(200))), "{first:?}");
    w.procs.remove(0);
    w.start_ministry();
    for _ in 0..3 {
        let after = four().await;
        assert!(after.iter().all(|s| matches!(s, Ok(200))), "{after:?}");
    }
}

/// More requests at once than the Ministry pool's connections: they wait for a connection
/// (no connection beyond the bound is opened, none is closed after one exchange); one that
/// waits longer than the response timeout is refused 504 `UpstreamTimeout`, and the pool goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_upstream_pool_wait_for_a_connection() {
    let mut w = World::new();
    w.edit("ministry.toml", "latency_ms = 0", "latency_ms = 200");
    w.edit(
        "gateway.toml",
        "[upstream.ministry]\n",
        "[upstream.ministry]\npool_max_connections = 2\nresponse_timeout_ms = 1000\n",
    );
    w.start_ministry();
    w.start_receiver();
    w.start_gateway();
    w.wait_ready();
    let c = w.client("officer", false);
    let status = |r: Result<spocgw::gateway::upstream::Reply, spocgw::gateway::upstream::UpstreamError>| match r {
        Ok(r) => (r.status.as_u16(), fault_code(&r)),
        Err(e) => (0, Some(e.to_string())),
    };
    // `n` requests at once, each on its own client connection.
    let at_once = |n: usize| {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let c = c.clone();
            set.spawn(async move {
                let id = uuid::Uuid::new_v4().to_string();
                let body = messages::envelope(SoapVersion::V11, &BioRequest::matching(&id, 1024).check_identity());
                status(post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), body).await)
            });
        }
        set.join_all()
    };
    let opened = |w: &World| metric(&w.metrics(), "spocgw_upstream_connections_opened_total{upstream=\"ministry\"}");
    // Six at once through two connections, 200 ms each: three rounds, well within the second.
    let six = at_once(6).await;
    assert!(six.iter().all(|s| s.0 == 200), "{six:?}");
    assert_eq!(opened(&w), 2.0);
    // Sixteen at once: eight rounds of 200 ms; those still waiting after a second are refused.
    // (Twelve, six rounds, left 200 ms of margin: on a busy machine the clients' own
    // handshakes spread the arrivals over that much, and every one got its slot in time.)
    let many = at_once(16).await;
    let ok = many.iter().filter(|s| s.0 == 200).count();
    let refused = many.iter().filter(|s| *s == &(504, Some("UpstreamTimeout".to_owned()))).count();
    assert!(ok >= 2 && refused >= 1 && ok + refused == 16, "{many:?}");
    assert_eq!(opened(&w), 2.0);
    assert!(metric(&w.metrics(), "spocgw_upstream_errors_total{upstream=\"ministry\",kind=\"busy\"}") >= 1.0);
    // A busy pool says nothing of whether the Ministry is reachable.
    assert_eq!(metric(&w.metrics(), "spocgw_upstream_up{upstream=\"ministry\"}"), 1.0);
    let after = at_once(1).await;
    assert_eq!(after[0].0, 200, "{after:?}");
}

/// The Ministry down under load: without a breaker every request tried to connect (77,152
/// attempts in 10 s). With it, a few attempts open it, the rest are refused at once, and a
/// trial closes it when the Ministry is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_ministry_trips_the_breaker_and_a_trial_closes_it_when_it_returns() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let mut w = World::new();
    w.edit(
        "gateway.toml",
        "key = \"gateway/ministry-side.key\"",
        "key = \"gateway/ministry-side.key\"\nbreaker_failures = 3\nbreaker_open_ms = 1000",
    );
    // A "Ministry" that accepts TCP and hangs up at once: every handshake fails. It counts.
    let listener = std::net::TcpListener::bind(("127.0.0.1", w.ministry_port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (accepted, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let counter = {
        let (accepted, stop) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        drop(s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        })
    };
    w.start_gateway();
    let c = w.client("officer", false);
    let ci = messages::envelope(SoapVersion::V11, &bio().check_identity());
    let started = Instant::now();
    for _ in 0..60 {
        let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), ci.clone()).await.unwrap();
        assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (502, Some("UpstreamUnavailable")), "{}", text(&r));
    }
    let elapsed = started.elapsed();
    let tries = accepted.load(Ordering::Relaxed);
    // 3 to open it, then at most one trial a second and the background probe every 2 s.
    let bound = 3 + 2 * (elapsed.as_secs() as usize + 1);
    assert!(tries <= bound, "{tries} connection attempts for 60 requests in {elapsed:?}");
    let m = w.metrics();
    assert!(metric(&m, "spocgw_upstream_breaker_state{upstream=\"ministry\"}") >= 1.0, "{m}");
    assert!(metric(&m, "spocgw_upstream_errors_total{upstream=\"ministry\",kind=\"breaker_open\"}") >= 40.0, "{m}");
    assert!(w.gateway_log().contains("circuit breaker open"));

    // The Ministry comes back: a trial (or the probe) closes the breaker and requests pass.
    stop.store(true, Ordering::Relaxed);
    counter.join().unwrap();
    w.start_ministry();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), ci.clone()).await.unwrap();
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < end, "the breaker did not close: {}", text(&r));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(metric(&w.metrics(), "spocgw_upstream_breaker_state{upstream=\"ministry\"}"), 0.0);
    assert!(w.gateway_log().contains("circuit breaker closed"));
}

/// Upstream key pinning: a certificate that chains to the Ministry CA but carries another key
/// is refused; the pinned key passes. A malformed pin stops `serve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_upstream_accepts_only_its_pinned_key() {
    use x509_parser::prelude::FromDer;
    let mut w = World::new();
    let pem = std::fs::read_to_string(w.path("ministry/server.pem")).unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
        .unwrap();
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
    let right = spocgw::encoding::sha256_hex(cert.public_key().raw);
    let wrong = "ab".repeat(32);
    let key_line = "key = \"gateway/ministry-side.key\"";
    w.edit("gateway.toml", key_line, &format!("{key_line}\nspki_sha256 = [\"{wrong}\"]"));
    w.start_ministry();
    w.start_gateway();
    let c = w.client("officer", false);
    let ci = messages::envelope(SoapVersion::V11, &bio().check_identity());
    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), ci.clone()).await.unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (502, Some("UpstreamUnavailable")), "{}", text(&r));
    assert!(w.gateway_log().contains("not one of the pinned keys"), "{}", w.gateway_log());
    w.procs.pop();

    w.edit(
        "gateway.toml",
        &format!("spki_sha256 = [\"{wrong}\"]"),
        &format!("spki_sha256 = [\"{wrong}\", \"{right}\"]"),
    );
    w.start_gateway();
    let c = w.client("officer", false);
    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), ci).await.unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    w.procs.pop();

    w.edit("gateway.toml", &format!("spki_sha256 = [\"{wrong}\", \"{right}\"]"), "spki_sha256 = [\"sha256//abc\"]");
    let out = Command::new(BIN).args(["serve", "--config"]).arg(w.path("gateway.toml")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("upstream.ministry.spki_sha256"), "{err}");
}

/// `dev-pki` on a directory that already holds a PKI refuses (exit 2) and changes nothing:
/// regenerating would replace the checkpoint key, and the old checkpoints would no longer verify.
#[test]
fn dev_pki_does_not_overwrite_an_existing_pki_without_force() {
    let w = World::new();
    let key = w.path("gateway/audit-checkpoint.key");
    let before = std::fs::read(&key).unwrap();
    let out = std::process::Command::new(BIN).args(["dev-pki", "--out"]).arg(w.dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&key).unwrap(), before, "nothing was replaced");
    let out = std::process::Command::new(BIN).args(["dev-pki", "--force", "--out"]).arg(w.dir.path()).output().unwrap();
    assert!(out.status.success());
    assert_ne!(std::fs::read(&key).unwrap(), before);
}
