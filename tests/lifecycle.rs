//! Requests that end early still end on record: a client that goes away while its request is
//! upstream, a body that stops arriving, a body that breaks off. Each gets its outcome record,
//! its log line and its metrics, and the in-flight gauge comes back down.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use spocgw::sim::messages::{self, BioRequest};
use spocgw::xml::SoapVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const XML11: &str = "text/xml; charset=utf-8";

fn slow_request(ms: u32) -> String {
    let mut b = BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 1024);
    b.case_reference = format!("SIM-DELAY-{ms}");
    messages::envelope(SoapVersion::V11, &b.check_identity())
}

/// The head of an HTTP/1.1 CheckIdentity request whose body is `len` bytes.
fn request_head(len: usize) -> String {
    format!(
        "POST /bio/v1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: {XML11}\r\nSOAPAction: \"CheckIdentityRequest\"\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// Audit records of `event` with `code` (any code when None).
fn records(w: &World, event: &str, code: Option<&str>) -> usize {
    spocgw::audit::segments(&w.path("audit"))
        .unwrap()
        .iter()
        .flat_map(|p| std::fs::read_to_string(p).unwrap().lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| l.contains(&format!("\"event\":\"{event}\"")))
        .filter(|l| code.is_none_or(|c| l.contains(&format!("\"code\":\"{c}\""))))
        .count()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}");
}

/// Three clients go away while their requests are upstream: three request records, three
/// `cancelled` outcomes, three log lines, and the in-flight gauge back at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_leaves_an_outcome_on_record() {
    let w = World::full();
    let mut tasks = Vec::new();
    for http2 in [false, true, false] {
        let c = w.client("officer", http2);
        tasks.push(tokio::spawn(async move {
            post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), slow_request(3000)).await
        }));
    }
    wait_until("the requests did not reach the Ministry", || {
        std::fs::read_to_string(w.path("ministry.log")).unwrap_or_default().matches("request received").count() >= 3
    });
    assert_eq!(metric(&w.metrics(), "spocgw_requests_in_flight"), 3.0);
    for t in &tasks {
        t.abort();
    }
    wait_until("no cancelled outcomes", || records(&w, "outcome", Some("cancelled")) == 3);
    assert_eq!(records(&w, "request", None), 3);
    wait_until("the in-flight gauge stays up", || metric(&w.metrics(), "spocgw_requests_in_flight") == 0.0);
    let m = w.metrics();
    assert_eq!(
        metric(
            &m,
            r#"spocgw_requests_total{listener="police",route="bio_v1",operation="CheckIdentityRequest",code="cancelled"}"#
        ),
        3.0,
        "{m}"
    );
    assert_eq!(w.gateway_log().matches("\"code\":\"cancelled\"").count(), 3);
}

/// A body that stops arriving gets a 408 `RequestTimeout` at the listener's deadline; one that
/// breaks off gets its outcome on record though nobody is left to answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_broken_body_is_answered_and_recorded() {
    let mut w = World::new();
    w.edit("gateway.toml", "[police]\n", "[police]\nrequest_timeout_ms = 1000\n");
    w.start_ministry();
    w.start_gateway();
    w.wait_ready();
    let body = slow_request(0);
    let head = request_head(body.len());
    let mut s = w.raw_client("officer").await;
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body.as_bytes()[..100]).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("no answer").unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("RequestTimeout"), "{answer}");

    let mut s = w.raw_client("officer").await;
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body.as_bytes()[..100]).await.unwrap();
    drop(s);
    wait_until("the broken-off body left no outcome", || records(&w, "outcome", Some("cancelled")) == 1);
    assert_eq!(records(&w, "outcome", Some("RequestTimeout")), 1);
    assert_eq!(records(&w, "request", None), 0, "nothing was forwarded");
    let log = w.gateway_log();
    assert!(log.contains("\"code\":\"RequestTimeout\"") && log.contains("\"status\":408"), "{log}");
    assert!(log.contains("\"code\":\"cancelled\"") && log.contains("request body read failed"), "{log}");
    assert_eq!(metric(&w.metrics(), "spocgw_requests_in_flight"), 0.0);

    // Headers that stop arriving: the connection is closed at the deadline, and counted.
    let mut s = w.raw_client("officer").await;
    s.write_all(b"POST /bio/v1 HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("not closed").unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    let m = w.metrics();
    assert_eq!(
        metric(&m, r#"spocgw_connections_refused_total{listener="police",reason="header_timeout"}"#),
        1.0,
        "{m}"
    );
}

/// A peer that stays down is logged when it goes down and when it is back, not every probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stays_down_is_logged_once() {
    let mut w = World::new();
    w.start_ministry();
    w.start_gateway(); // the police callback receiver is not started
    std::thread::sleep(Duration::from_secs(5));
    let down =
        |log: &str| log.lines().filter(|l| l.contains("upstream unreachable") && l.contains("police_callback")).count();
    assert_eq!(down(&w.gateway_log()), 1, "{}", w.gateway_log());
    w.start_receiver();
    wait_until("the receiver's return was not logged", || {
        w.gateway_log().lines().any(|l| l.contains("upstream reachable") && l.contains("police_callback"))
    });
    assert_eq!(down(&w.gateway_log()), 1);
}

/// The in-flight cap counts requests being processed, not bodies still arriving: clients that
/// trickle bodies do not take the slots other terminals need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_do_not_take_the_in_flight_slots() {
    let mut w = World::new();
    w.append("gateway.toml", "\n[limits]\nmax_in_flight = 4\n");
    w.start_ministry();
    w.start_gateway();
    w.wait_ready();
    let body = slow_request(0);
    let head = request_head(body.len());
    let mut trickling = Vec::new();
    for _ in 0..8 {
        let mut s = w.raw_client("analyst").await;
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body.as_bytes()[..10]).await.unwrap();
        trickling.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let r = post(&w.client("officer", false), "/bio/v1", XML11, Some("CheckIdentityRequest"), slow_request(0))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", text(&r));
    }
    drop(trickling);
}

/// An HTTP/2 connection with no request for `request_timeout_ms` is closed, however it keeps
/// answering PINGs; one with a request in flight is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed() {
    let mut w = World::new();
    w.edit("gateway.toml", "[police]\n", "[police]\nrequest_timeout_ms = 1000\n");
    w.start_ministry();
    w.start_gateway();
    w.wait_ready();
    let open = r#"spocgw_connections_open{listener="police"}"#;
    let c = w.client("officer", true);
    // A request longer than the idle time is not cut.
    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), slow_request(1800)).await.unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(metric(&w.metrics(), open), 1.0);
    wait_until("the idle HTTP/2 connection stays open", || metric(&w.metrics(), open) == 0.0);
    // The client opens a new one and is served.
    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), slow_request(0)).await.unwrap();
    assert_eq!(r.status, 200);
}

/// Early refusals on the wire: a 600 KB body declared by Content-Length on `/bio/v1` (limit
/// 512 KiB), sent by Python's http.client and by curl over HTTP/1.1 and HTTP/2. Each client
/// must read the 413 (and the 415 of a wrong media type), not a reset. Before: Python 86/100,
/// curl HTTP/1.1 18/20, curl HTTP/2 0/20.
#[test]
fn early_refusals_reach_python_and_curl_over_http1_and_http2() {
    if !have_tool("python3") || !have_tool("curl") {
        return;
    }
    let mut w = World::new();
    w.start_gateway();
    let body = w.path("big.xml");
    std::fs::write(&body, vec![b'x'; 600_000]).unwrap();
    let (ca, cert, key) = (w.path("ca/police-ca.pem"), w.path("clients/officer.pem"), w.path("clients/officer.key"));
    let url = format!("https://127.0.0.1:{}/bio/v1", w.gateway_port);
    let script = format!(
        r#"
import http.client, ssl
ctx = ssl.create_default_context(cafile={ca:?})
ctx.load_cert_chain({cert:?}, {key:?})
body = open({body:?}, "rb").read()
for _ in range(30):
    c = http.client.HTTPSConnection("127.0.0.1", {port}, context=ctx)
    try:
        c.request("POST", "/bio/v1", body=body, headers={{"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "VerifyFingerprintRequest"}})
        print(c.getresponse().status)
    except Exception as e:
        print(type(e).__name__)
    c.close()
"#,
        ca = ca.to_str().unwrap(),
        cert = cert.to_str().unwrap(),
        key = key.to_str().unwrap(),
        body = body.to_str().unwrap(),
        port = w.gateway_port
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().filter(|l| *l == "413").count(),
        30,
        "python http.client: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (proto, content_type, want) in [
        ("--http1.1", "text/xml; charset=utf-8", "413"),
        ("--http2", "text/xml; charset=utf-8", "413"),
        ("--http2", "application/json", "415"),
        ("--http1.1", "application/json", "415"),
    ] {
        let mut got = Vec::new();
        for _ in 0..10 {
            let out = Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", proto, "--cacert", ca.to_str().unwrap()])
                .args(["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()])
                .args(["-H", &format!("Content-Type: {content_type}"), "-H", "SOAPAction: VerifyFingerprintRequest"])
                .args(["--data-binary", &format!("@{}", body.to_str().unwrap()), &url])
                .output()
                .unwrap();
            got.push(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        assert!(got.iter().all(|g| g == want), "curl {proto} {content_type}: {got:?}");
    }
}

/// A flood of connections from one source that never handshake: before, they held every
/// connection slot for the handshake timeout and every terminal was refused. Now one source
/// holds at most its share, and a terminal elsewhere is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_is_served_while_one_source_floods_the_listener() {
    let mut w = World::new();
    w.edit(
        "gateway.toml",
        "crls = [\"ca/police-ca.crl.pem\"]",
        "crls = [\"ca/police-ca.crl.pem\"]\nmax_connections = 64\nmax_connections_per_source = 16",
    );
    w.start_ministry();
    w.start_receiver();
    w.start_gateway();
    w.wait_ready();
    // 200 connections from 127.0.0.2 that say nothing.
    let mut flood = Vec::new();
    for _ in 0..200 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        if let Ok(c) = s.connect(([127, 0, 0, 1], w.gateway_port).into()).await {
            flood.push(c);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = w.client("officer", false);
    let r = post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), slow_request(0)).await.unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    let m = w.metrics();
    assert!(metric(&m, r#"spocgw_connections_refused_total{listener="police",reason="source_cap"}"#) >= 150.0, "{m}");
    drop(flood);
}

/// One terminal keeping many requests in process cannot take every in-flight slot: another
/// terminal is served, and the first one's refusals are recorded within a bound, the rest
/// summarised in a `request_refusals` record, not one record each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_terminal_over_its_share_does_not_stop_another_and_its_refusals_are_summarised() {
    let mut w = World::new();
    w.edit("gateway.toml", "[audit]", "[limits]\nmax_in_flight = 16\nmax_in_flight_per_client = 4\n\n[audit]");
    w.start_ministry();
    w.start_receiver();
    w.start_gateway();
    w.wait_ready();
    let flooder = w.client("officer", true);
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let c = flooder.clone();
        tasks.push(tokio::spawn(async move {
            post(&c, "/bio/v1", XML11, Some("CheckIdentityRequest"), slow_request(1500))
                .await
                .map(|r| r.status.as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = w.client("second-line", false);
    let r = post(&other, "/bio/v1", XML11, Some("CheckIdentityRequest"), slow_request(0)).await.unwrap();
    assert_eq!(r.status, 200, "another terminal was refused: {}", text(&r));
    let mut statuses = std::collections::BTreeMap::new();
    for t in tasks {
        *statuses.entry(t.await.unwrap().unwrap_or(0)).or_insert(0) += 1;
    }
    assert!(statuses.get(&200).copied().unwrap_or(0) >= 4, "{statuses:?}");
    let refused = statuses.get(&503).copied().unwrap_or(0);
    assert!(refused >= 200, "{statuses:?}");
    w.procs[2].signal("TERM");
    assert!(w.procs[2].wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()));
    let one_by_one = records(&w, "outcome", Some("Overloaded"));
    assert!(one_by_one <= 100, "{one_by_one} Overloaded records for {refused} refusals");
    let summary: Vec<String> = spocgw::audit::segments(&w.path("audit"))
        .unwrap()
        .iter()
        .flat_map(|p| std::fs::read_to_string(p).unwrap().lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| l.contains("\"event\":\"request_refusals\""))
        .collect();
    assert_eq!(summary.len(), 1, "{summary:?}");
    let counted = refused - one_by_one;
    assert!(summary[0].contains(&format!("code Overloaded x{counted}")), "{counted}: {}", summary[0]);
    assert!(summary[0].contains("officer"), "{}", summary[0]);
}

/// One client certificate holds at most `max_connections_per_client` connections: the next
/// one is closed after its handshake (and counted), other certificates are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_certificate_holds_at_most_its_connections() {
    let mut w = World::new();
    w.edit(
        "gateway.toml",
        "crls = [\"ca/police-ca.crl.pem\"]",
        "crls = [\"ca/police-ca.crl.pem\"]\nmax_connections_per_client = 2",
    );
    w.start_ministry();
    w.start_receiver();
    w.start_gateway();
    w.wait_ready();
    let mut held = [w.raw_client("officer").await, w.raw_client("officer").await];
    let body = slow_request(0);
    // The client's handshake can end before the gateway has counted the connection: wait until
    // it has both.
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let open = || metric(&admin_get(w.admin_port, "/metrics").1, "spocgw_connections_open{listener=\"police\"}");
    while open() < 2.0 && std::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A third connection of the same certificate: closed, no answer.
    let mut third = w.raw_client("officer").await;
    let _ = third.write_all(format!("{}{body}", request_head(body.len())).as_bytes()).await;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await.expect("not closed").unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    // Another certificate is served; the held ones still serve.
    let r = post(&w.client("second-line", false), "/bio/v1", XML11, Some("CheckIdentityRequest"), body.clone())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    held[0].write_all(format!("{}{body}", request_head(body.len())).as_bytes()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), held[0].read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let m = w.metrics();
    assert_eq!(metric(&m, r#"spocgw_connections_refused_total{listener="police",reason="client_cap"}"#), 1.0, "{m}");
}
