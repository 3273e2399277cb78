//! Callbacks that survive restarts: a CSN 36 9791 certificate request forwarded, the gateway
//! stopped (SIGTERM, as an upgrade does) or killed (SIGKILL, as a power cut does) and started
//! again, and the Ministry's callback delivered to the police system after it. A callback
//! consumed before a restart is still refused after it. `spocgw callbacks pending` shows what is
//! awaited.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use spocgw::sim::messages;
use spocgw::xml::SoapVersion;

const XML11: &str = "text/xml; charset=utf-8";

/// A world whose simulated Ministry does not call back by itself (the test sends the callback,
/// after the restart).
fn world() -> World {
    world_with(|_| {})
}

fn world_with(edit: impl FnOnce(&World)) -> World {
    let mut w = World::new();
    edit(&w);
    let m = w.path("ministry.toml");
    let text = std::fs::read_to_string(&m).unwrap().replace("callback_delay_ms = 300", "callback_delay_ms = 3600000");
    std::fs::write(&m, text).unwrap();
    w.start_ministry();
    w.start_receiver();
    w.start_gateway();
    w.wait_ready();
    w
}

async fn request_certificate(w: &World, id: &str) {
    let rc = messages::envelope(SoapVersion::V11, &messages::request_certificate(id));
    let r =
        post(&w.client("document-verifier", false), "/spoc/csn369791", XML11, Some("RequestCertificateRequest"), rc)
            .await
            .unwrap();
    assert!(text(&r).contains("ok_reception_ack"), "{}", text(&r));
}

async fn callback(w: &World, id: &str) -> String {
    let ministry = w.callback_client("ministry/client.pem", "ministry/client.key");
    let cb = messages::envelope(SoapVersion::V11, &messages::send_certificates(id));
    let r = post(&ministry, "/spoc/csn369791", XML11, Some("SendCertificatesRequest"), cb).await.unwrap();
    text(&r)
}

fn delivered(w: &World, id: &str) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if log_contains(&w.path("receiver.log"), id) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn pending(w: &World) -> String {
    let out =
        Command::new(BIN).args(["callbacks", "pending", "--config"]).arg(w.path("gateway.toml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_certificate_survives_a_stop_and_a_kill() {
    let mut w = world();
    for (signal, id) in [("TERM", "RESTART-TERM-1"), ("KILL", "RESTART-KILL-1")] {
        request_certificate(&w, id).await;
        let listed = pending(&w);
        assert!(listed.contains(id) && listed.contains("csn369791"), "{listed}");
        let metrics = admin_get(w.admin_port, "/metrics").1;
        assert!(metric(&metrics, "spocgw_callbacks_pending") >= 1.0, "{metrics}");
        let g = w.procs.len() - 1;
        w.procs[g].signal(signal);
        assert!(w.procs[g].wait_exit(Duration::from_secs(15)).is_some(), "the gateway did not stop");
        w.start_gateway();
        w.wait_ready();
        let answer = callback(&w, id).await;
        assert!(!answer.contains("failure_messageID_unknown"), "after SIG{signal}: {answer}");
        assert!(delivered(&w, id), "after SIG{signal}: the callback was not delivered");
        // Consumed: a replay is refused, also after another restart.
        let g = w.procs.len() - 1;
        w.procs[g].signal("KILL");
        assert!(w.procs[g].wait_exit(Duration::from_secs(15)).is_some());
        w.start_gateway();
        w.wait_ready();
        assert!(callback(&w, id).await.contains("failure_messageID_unknown"), "a replay after SIG{signal}");
        assert!(!pending(&w).contains(id));
    }
}

/// A callback after the TTL is answered as one never forwarded, but on record as late
/// (`messageID_expired`), and an officer finds it by that code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_callback_is_on_record_as_late() {
    let w = world_with(|w| {
        let g = w.path("gateway.toml");
        let text = std::fs::read_to_string(&g).unwrap().replacen("[policy]\n", "[policy]\ncallback_ttl_s = 1\n", 1);
        std::fs::write(&g, text).unwrap();
    });
    request_certificate(&w, "LATE-1").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(callback(&w, "LATE-1").await.contains("failure_messageID_unknown"));
    assert!(callback(&w, "NEVER-1").await.contains("failure_messageID_unknown"));
    let query = |code: &str| {
        let out = Command::new(BIN)
            .args(["audit", "query"])
            .arg(w.path("audit"))
            .args(["--code", code, "--format", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let late = query("messageID_expired");
    assert!(late.lines().count() == 1 && late.contains("SendCertificatesRequest"), "{late}");
    assert_eq!(query("messageID_unknown").lines().count(), 1);
}
