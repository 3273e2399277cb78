//! Revocation while the gateway serves: a CRL file replaced is in force within seconds, with no
//! restart; a bad one leaves the previous lists and says so; an expired one refuses every
//! client (or, with `crl_expired = "alarm"`, is reported); the callback listener has CRLs too.

mod common;

use std::time::{Duration, Instant};

use common::*;
use spocgw::sim::messages::{self, BioRequest};
use spocgw::xml::SoapVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const XML11: &str = "text/xml; charset=utf-8";

fn ci() -> String {
    messages::envelope(
        SoapVersion::V11,
        &BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 64).check_identity(),
    )
}

/// Whether `who` gets an answer on a new connection.
async fn served(w: &World, who: &str) -> bool {
    post(&w.client(who, false), "/bio/v1", XML11, Some("CheckIdentityRequest"), ci())
        .await
        .is_ok_and(|r| r.status == 200)
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if done().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}");
}

fn readyz(w: &World) -> (u16, String) {
    admin_get(w.admin_port, "/readyz")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_revoked_while_the_gateway_serves_is_refused_within_seconds() {
    let w = World::full();
    assert!(served(&w, "officer").await);
    let (_, body) = readyz(&w);
    assert!(body.contains("crl police: ok (1 lists") && body.contains("crl callback: ok (1 lists"), "{body}");

    // A file that is no CRL: refused, the previous lists stay in force.
    std::fs::write(w.path("ca/police-ca.crl.pem"), "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n").unwrap();
    wait_for("no refusal on /readyz", async || readyz(&w).1.contains("crl police: reload-failed")).await;
    assert!(served(&w, "officer").await);
    assert!(!served(&w, "revoked").await, "the previous lists were dropped");

    // A connection the officer keeps open, served before the lists change.
    let mut kept = w.raw_client("officer").await;
    let request = format!(
        "POST /bio/v1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: {XML11}\r\nSOAPAction: CheckIdentityRequest\r\nContent-Length: {}\r\n\r\n{}",
        ci().len(),
        ci()
    );
    kept.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    // (the rest of the answer, if it came in pieces)
    let _ = tokio::time::timeout(Duration::from_millis(200), kept.read(&mut buf)).await;

    // The next CRL revokes the officer too: refused on its next handshake, no restart.
    std::fs::copy(w.path("ca/police-ca.next.crl.pem"), w.path("ca/police-ca.crl.pem")).unwrap();
    let took = wait_for("the officer is still served", async || !served(&w, "officer").await).await;
    eprintln!("revocation in force after {took:?}");
    // ...and on the connection it kept open: its next request is not answered, the
    // connection ends.
    let _ = kept.write_all(request.as_bytes()).await;
    let n = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut buf)).await.expect("no end").unwrap_or(0);
    assert_eq!(n, 0, "a revoked certificate's open connection was served: {}", String::from_utf8_lossy(&buf[..n]));
    assert!(served(&w, "analyst").await, "a client the CRL does not name is refused");
    let (status, body) = readyz(&w);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("crl police: ok"), "{body}");
    let m = w.metrics();
    assert_eq!(metric(&m, r#"spocgw_crl_reloads_total{listener="police",result="ok"}"#), 1.0, "{m}");
    assert_eq!(metric(&m, r#"spocgw_crl_reloads_total{listener="police",result="refused"}"#), 1.0, "{m}");
    assert!(metric(&m, r#"spocgw_tls_handshake_failures_total{listener="police",reason="revoked"}"#) >= 1.0);
    assert_eq!(
        metric(&m, r#"spocgw_tls_handshake_failures_total{listener="police",reason="revoked_in_session"}"#),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_crl_refuses_every_client_unless_configured_to_alarm() {
    let w = World::full();
    std::fs::copy(w.path("ca/police-ca.expired.crl.pem"), w.path("ca/police-ca.crl.pem")).unwrap();
    wait_for("the expired CRL is not reported", async || readyz(&w).1.contains("crl police: expired")).await;
    let (status, body) = readyz(&w);
    assert_eq!(status, 503, "{body}");
    assert!(!served(&w, "analyst").await, "served under an expired CRL");
    drop(w);

    let mut w = World::new();
    w.edit(
        "gateway.toml",
        "crls = [\"ca/police-ca.crl.pem\"]",
        "crls = [\"ca/police-ca.expired.crl.pem\"]\ncrl_expired = \"alarm\"",
    );
    w.start_ministry();
    w.start_gateway();
    let (status, body) = readyz(&w);
    assert!(body.contains("crl police: expired (crl_expired = \"alarm\""), "{status} {body}");
    w.wait_ready();
    assert!(served(&w, "analyst").await);
    assert!(!served(&w, "revoked").await, "the expired list still revokes");
}
