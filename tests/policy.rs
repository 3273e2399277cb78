//! Access policy as police systems, the Ministry and security officers meet it: decisions over
//! real TLS, rate limits, data minimisation, callback correlation, reloads, signed bundles, and
//! the officer tools.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use spocgw::sim::messages::{self, BioRequest};
use spocgw::xml::SoapVersion;

const XML11: &str = "text/xml; charset=utf-8";

fn bio(purpose: &'static str) -> BioRequest {
    let mut b = BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 4096);
    b.purpose = purpose;
    b
}

fn ci(purpose: &'static str) -> String {
    messages::envelope(SoapVersion::V11, &bio(purpose).check_identity())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_follow_the_policy_and_are_logged_with_their_reasons() {
    let w = World::full();
    let vf = messages::envelope(SoapVersion::V11, &bio("IDENTITY_DOUBT").verify_fingerprint());
    let r = post(&w.client("analyst", false), "/bio/v1", XML11, Some("VerifyFingerprintRequest"), vf.clone())
        .await
        .unwrap();
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (403, Some("PolicyDenied")));
    let r = post(&w.client("officer", false), "/bio/v1", XML11, Some("VerifyFingerprintRequest"), vf.clone())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // SYSTEM_TEST is forbidden on the production route, even for a border verifier.
    let test = messages::envelope(SoapVersion::V11, &bio("SYSTEM_TEST").verify_fingerprint());
    let r = post(&w.client("officer", false), "/bio/v1", XML11, Some("VerifyFingerprintRequest"), test).await.unwrap();
    assert_eq!(r.status, 403);
    // CSN traffic is the document verifier's alone.
    let rc = messages::envelope(SoapVersion::V11, &messages::request_certificate("SYNC-7"));
    let r = post(&w.client("officer", false), "/spoc/csn369791", XML11, Some("RequestCertificateRequest"), rc.clone())
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    let r =
        post(&w.client("document-verifier", false), "/spoc/csn369791", XML11, Some("RequestCertificateRequest"), rc)
            .await
            .unwrap();
    assert_eq!(r.status, 200);

    let log = w.gateway_log();
    assert!(log.contains("\"decision\":\"allow\",\"policies\":\"verify-fingerprint-by-border-verifiers\""), "{log}");
    assert!(log.contains("\"policies\":\"system-test-only-on-test-routes\""), "{log}");
    assert!(log.contains("\"code\":\"PolicyDenied\""), "{log}");
    let m = w.metrics();
    assert!(m.contains("spocgw_policy_bundle{digest="), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_rate_gets_429_with_retry_after() {
    let mut w = World::new();
    std::fs::write(
        w.path("policies/routes.toml"),
        "[rate.bio_v1]\nper_second = 1\nburst = 3\n\n[minimise]\nCheckIdentityRequest = [\"Holder/Address\"]\n",
    )
    .unwrap();
    w.start_ministry();
    w.start_gateway();
    w.wait_ready();
    let analyst = w.client("analyst", false);
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..8 {
        let r = post(&analyst, "/bio/v1", XML11, Some("CheckIdentityRequest"), ci("DOCUMENT_DOUBT")).await.unwrap();
        if r.status == 429 {
            assert_eq!(fault_code(&r).as_deref(), Some("RateLimited"));
            retry = r.retry_after.clone();
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 5, "{statuses:?}");
    let secs: u64 = retry.expect("Retry-After").to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&secs), "{secs}");
    // Refused requests count against the rate too: a caller the policy denies, or whose
    // messages are invalid, is held to it as well.
    let vf = messages::envelope(SoapVersion::V11, &bio("IDENTITY_DOUBT").verify_fingerprint());
    let officer_denied = w.client("second-line", false);
    let mut denied = Vec::new();
    for i in 0..8 {
        let body = if i % 2 == 0 { vf.clone() } else { "<not xml".to_owned() };
        let r = post(&officer_denied, "/bio/v1", XML11, Some("VerifyFingerprintRequest"), body).await.unwrap();
        denied.push(fault_code(&r).unwrap_or_default());
    }
    assert_eq!(denied.iter().filter(|c| *c == "RateLimited").count(), 5, "{denied:?}");
    assert_eq!(denied[..3], ["PolicyDenied", "XmlMalformed", "PolicyDenied"], "{denied:?}");
    // Another certificate has its own allowance.
    let r = post(&w.client("officer", false), "/bio/v1", XML11, Some("CheckIdentityRequest"), ci("DOCUMENT_DOUBT"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_flows_back_only_for_second_line_checks() {
    let w = World::full();
    let officer = w.client("officer", false);
    let r = post(&officer, "/bio/v1", XML11, Some("CheckIdentityRequest"), ci("IDENTITY_DOUBT")).await.unwrap();
    assert_eq!(r.status, 200);
    let t = text(&r);
    assert!(!t.contains("<Address>") && t.contains("<PlaceOfBirth>") && t.contains("<Surname>"), "{t}");
    let second_line = w.client("second-line", false);
    let r = post(&second_line, "/bio/v1", XML11, Some("CheckIdentityRequest"), ci("SECOND_LINE_CHECK")).await.unwrap();
    assert!(text(&r).contains("<Address>"), "{}", text(&r));
    // The minimised reply is still valid against the schema.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("reply.xml");
    let r = post(&officer, "/bio/v1", XML11, Some("CheckIdentityRequest"), ci("DOCUMENT_DOUBT")).await.unwrap();
    std::fs::write(&f, &r.body).unwrap();
    let out = Command::new(BIN).args(["validate", "--schemas", "policies/schemas"]).arg(&f).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(w.gateway_log().contains("\"removed\":\"Holder/Address\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_forwarded_only_for_messages_the_gateway_forwarded() {
    let w = World::full();
    let ministry = w.callback_client("ministry/client.pem", "ministry/client.key");
    let unknown = messages::envelope(SoapVersion::V11, &messages::send_certificates("NEVER-SENT-1"));
    let r = post(&ministry, "/spoc/csn369791", XML11, Some("SendCertificatesRequest"), unknown).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(text(&r).contains("<result>failure_messageID_unknown</result>"), "{}", text(&r));
    std::thread::sleep(Duration::from_millis(100)); // the receiver writes its log every 20 ms
    assert!(!std::fs::read_to_string(w.path("receiver.log")).unwrap().contains("NEVER-SENT-1"), "forwarded anyway");

    // A RequestCertificateRequest forwarded by the gateway: its callback passes (the simulated
    // Ministry calls back by itself after ~300 ms).
    let rc = messages::envelope(SoapVersion::V11, &messages::request_certificate("ASYNC-42"));
    let r =
        post(&w.client("document-verifier", false), "/spoc/csn369791", XML11, Some("RequestCertificateRequest"), rc)
            .await
            .unwrap();
    assert!(text(&r).contains("ok_reception_ack"));
    let end = Instant::now() + Duration::from_secs(10);
    while !log_contains(&w.path("receiver.log"), "ASYNC-42") && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(log_contains(&w.path("receiver.log"), "ASYNC-42"), "callback not delivered");
    // The police side may not send callbacks.
    let again = messages::envelope(SoapVersion::V11, &messages::send_certificates("ASYNC-42"));
    let police_on_callback = w.callback_client("clients/officer.pem", "clients/officer.key");
    assert!(
        post(&police_on_callback, "/spoc/csn369791", XML11, Some("SendCertificatesRequest"), again).await.is_err(),
        "police cert accepted on the callback listener"
    );
}

fn readyz(w: &World) -> String {
    admin_get(w.admin_port, "/readyz").1
}

fn wait_for(w: &World, what: &str, needle: &str) {
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        if readyz(w).contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: /readyz never said {needle:?}: {}", readyz(w));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_bundle_is_refused_on_reload_and_the_old_one_keeps_serving() {
    let mut w = World::new();
    w.edit("gateway.toml", "dir = \"policies\"", "dir = \"policies\"\nreload_interval_ms = 200");
    w.start_ministry();
    w.start_gateway();
    w.wait_ready();
    let vf = messages::envelope(SoapVersion::V11, &bio("IDENTITY_DOUBT").verify_fingerprint());
    let analyst = w.client("analyst", false);
    assert_eq!(
        post(&analyst, "/bio/v1", XML11, Some("VerifyFingerprintRequest"), vf.clone()).await.unwrap().status,
        403
    );

    // A syntax error: refused, old bundle active.
    std::fs::write(w.path("policies/extra.cedar"), "permit (principal, action, resource) when { oops").unwrap();
    wait_for(&w, "syntax error", "reload-failed");
    assert_eq!(
        post(&analyst, "/bio/v1", XML11, Some("VerifyFingerprintRequest"), vf.clone()).await.unwrap().status,
        403
    );
    assert_eq!(
        post(&w.client("officer", false), "/bio/v1", XML11, Some("VerifyFingerprintRequest"), vf.clone())
            .await
            .unwrap()
            .status,
        200
    );

    // A policy that breaks the bundle's own tests: refused too.
    std::fs::write(
        w.path("policies/extra.cedar"),
        "@id(\"analysts-verify\")\npermit (principal in Spoc::Role::\"analyst\", action == Spoc::Action::\"VerifyFingerprintRequest\", resource);\n",
    )
    .unwrap();
    wait_for(&w, "failing tests", "tests fail");
    assert_eq!(
        post(&analyst, "/bio/v1", XML11, Some("VerifyFingerprintRequest"), vf.clone()).await.unwrap().status,
        403
    );

    // Change the test too: the whole new bundle is consistent, and it is swapped in.
    w.edit("policies/tests/default.toml", "name = \"an analyst may not verify fingerprints\"\nprincipal = { cn = \"analyst-0001\", o = \"Border Police\", ou = \"analyst\" }\naction = \"VerifyFingerprintRequest\"\nroute = \"bio_v1\"\nfacts = { purpose = \"IDENTITY_DOUBT\", caseReference = \"CASE-1\", chipFingerprints = 1, liveFingerprints = 1, formats = [\"WSQ\"] }\nexpect = \"deny\"\npolicies = []", "name = \"analysts may verify fingerprints now\"\nprincipal = { cn = \"analyst-0001\", o = \"Border Police\", ou = \"analyst\" }\naction = \"VerifyFingerprintRequest\"\nroute = \"bio_v1\"\nfacts = { purpose = \"IDENTITY_DOUBT\", caseReference = \"CASE-1\", chipFingerprints = 1, liveFingerprints = 1, formats = [\"WSQ\"] }\nexpect = \"allow\"\npolicies = [\"analysts-verify\"]");
    wait_for(&w, "valid bundle", "policy: ok");
    assert_eq!(
        post(&analyst, "/bio/v1", XML11, Some("VerifyFingerprintRequest"), vf.clone()).await.unwrap().status,
        200
    );
    assert!(metric(&w.metrics(), r#"spocgw_policy_reloads_total{result="refused"}"#) >= 2.0);
    let log: String = spocgw::audit::segments(&w.path("audit"))
        .unwrap()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(log.contains("\"event\":\"policy_reload\"") && log.contains("\"code\":\"refused\""), "{log}");
}

fn serve_once(w: &World) -> (Option<i32>, String) {
    let mut p =
        Proc::start(&["serve", "--config", w.path("gateway.toml").to_str().unwrap()], w.path("gateway-once.log"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(s) = p.child.try_wait().unwrap() {
            return (s.code(), p.log_text());
        }
        // Serving: this process says it listens (a port another test happens to use is not it).
        if p.log_text().contains("\"listener\":\"police\"")
            && std::net::TcpStream::connect(("127.0.0.1", w.gateway_port)).is_ok()
        {
            return (None, p.log_text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (None, p.log_text())
}

#[test]
fn signed_bundles_are_required_when_configured() {
    let w = World::new();
    w.edit(
        "gateway.toml",
        "dir = \"policies\"",
        "dir = \"policies\"\nrequire_signed = true\nsigners = [\"officers/policy-officer.pub.pem\"]",
    );
    // Unsigned: refused at start, exit 2, one line saying why.
    let (code, err) = serve_once(&w);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not signed"), "{err}");

    // Signed by another key: refused.
    let other = w.path("other.key");
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success());
    let sign = |key: &std::path::Path| {
        Command::new(BIN).args(["policy", "sign", "--key"]).arg(key).arg(w.path("policies")).output().unwrap()
    };
    assert!(sign(&other).status.success());
    let (code, err) = serve_once(&w);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not verify"), "{err}");

    // Signed by the officer: serves.
    assert!(sign(&w.path("officers/policy-officer.key")).status.success());
    let (code, err) = serve_once(&w);
    assert_eq!(code, None, "{err}");

    // Changed after signing: refused.
    w.edit("policies/routes.toml", "[minimise]", "# edited\n[minimise]");
    std::thread::sleep(Duration::from_millis(300));
    let (code, err) = serve_once(&w);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("changed after it was signed"), "{err}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn readyz_says(w: &World, needle: &str) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if admin_get(w.admin_port, "/readyz").1.contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn an_older_signed_bundle_is_refused_as_a_rollback_also_after_a_restart() {
    let mut w = World::new();
    w.edit(
        "gateway.toml",
        "dir = \"policies\"",
        "dir = \"policies\"\nrequire_signed = true\nsigners = [\"officers/policy-officer.pub.pem\"]\nreload_interval_ms = 200",
    );
    let key = w.path("officers/policy-officer.key");
    let bundle = w.path("policies");
    let sign = |extra: &[&str]| {
        let out =
            Command::new(BIN).args(["policy", "sign", "--key"]).arg(&key).args(extra).arg(&bundle).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(sign(&[]).contains("serial 1"));
    let old = w.path("policies-serial-1");
    copy_dir(&w.path("policies"), &old);
    w.start_gateway();
    assert!(readyz_says(&w, "serial 1"));

    // A newer bundle loads; the older one, put back with its valid signature, does not.
    w.edit("policies/routes.toml", "[minimise]", "# serial 2\n[minimise]");
    assert!(sign(&[]).contains("serial 2"));
    assert!(readyz_says(&w, "policy: ok"), "{}", admin_get(w.admin_port, "/readyz").1);
    assert!(readyz_says(&w, "serial 2"));
    copy_dir(&old, &w.path("policies"));
    assert!(readyz_says(&w, "rollback refused"), "{}", admin_get(w.admin_port, "/readyz").1);
    // Another bundle under a serial already used: refused too.
    w.edit("policies/routes.toml", "[minimise]", "# other\n[minimise]");
    sign(&["--serial", "2"]);
    assert!(readyz_says(&w, "already loaded with other contents"), "{}", admin_get(w.admin_port, "/readyz").1);

    // After a restart the recorded serial still stands.
    w.procs.clear();
    copy_dir(&old, &w.path("policies"));
    let (code, err) = serve_once(&w);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("serial 1 is older") && err.contains("rollback refused"), "{err}");
}

#[test]
fn officer_tools_check_test_and_explain() {
    let w = World::new();
    let policy = |args: &[&str]| {
        let out = Command::new(BIN).arg("policy").args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let dir = w.path("policies");
    let dir = dir.to_str().unwrap();
    let (code, out) = policy(&["check", dir]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("8 policies valid") && out.contains("23 tests passed"), "{out}");
    let (code, out) = policy(&["test", dir]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("23 passed, 0 failed"), "{out}");

    let (code, out) = policy(&[
        "explain",
        dir,
        "--cert",
        w.path("clients/officer.pem").to_str().unwrap(),
        "--request",
        w.path("samples/verify-fingerprint.xml").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["policies"][0], "verify-fingerprint-by-border-verifiers");
    assert_eq!(v["context"]["purpose"], "IDENTITY_DOUBT");
    let parents: Vec<&str> =
        v["principal"]["parents"].as_array().unwrap().iter().filter_map(|p| p["id"].as_str()).collect();
    assert!(
        parents.contains(&"border-verifier") && parents.contains(&"police") && parents.contains(&"Border Police"),
        "{parents:?}"
    );
    let (code, out) = policy(&[
        "explain",
        dir,
        "--cn",
        "analyst-0001",
        "--ou",
        "analyst",
        "--o",
        "Border Police",
        "--field",
        "Holder/Address",
    ]);
    assert_eq!(code, Some(1), "{out}");

    // A rule that can never apply is reported by the lint; a wrong expectation fails the tests.
    let access = std::fs::read_to_string(w.path("policies/access.cedar")).unwrap();
    std::fs::write(
        w.path("policies/access.cedar"),
        format!("{access}\n@id(\"never\")\npermit (principal, action == Spoc::Action::\"GeneralMessage\", resource) when {{ false }};\n"),
    )
    .unwrap();
    let (code, out) = policy(&["check", dir]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("never: its condition is constant"), "{out}");
    std::fs::write(w.path("policies/access.cedar"), access).unwrap();
    w.edit("policies/tests/default.toml", "expect = \"deny\"\npolicies = []", "expect = \"allow\"\npolicies = []");
    let (code, out) = policy(&["test", dir]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAIL") && out.contains("22 passed, 1 failed"), "{out}");
}

#[test]
fn sighup_reloads_the_bundle() {
    let mut w = World::new();
    w.edit("gateway.toml", "dir = \"policies\"", "dir = \"policies\"\nreload_interval_ms = 3600000");
    w.start_ministry();
    let gw = w.start_gateway();
    w.wait_ready();
    // (Only the policy line: the CRL lines count down the seconds to the next update.)
    let policy_line = |w: &World| readyz(w).lines().find(|l| l.starts_with("policy:")).unwrap_or_default().to_owned();
    let before = policy_line(&w);
    assert!(before.contains("policy: ok"), "{before}");
    w.edit("policies/routes.toml", "[minimise]", "# reviewed by the security officer\n[minimise]");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(policy_line(&w), before, "reloaded without a signal");
    w.procs[gw].signal("HUP");
    let end = Instant::now() + Duration::from_secs(10);
    while policy_line(&w) == before && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = policy_line(&w);
    assert!(after.contains("policy: ok") && after != before, "{before} -> {after}");
    assert!(w.gateway_log().contains("policy bundle reloaded"));
}

/// CSN 36 9791 as deployed SPOCs send it: the element names of their WSDL, `SOAPAction: ""`
/// or the WSDL's operation name, CVCs that are BER-TLV objects, and a National SPOC's
/// unsolicited notification of new certificates (no messageID) delivered to the police side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csn_messages_pass_as_deployed_spocs_send_them() {
    use base64::Engine as _;
    let w = World::full();
    let dv = w.client("document-verifier", false);
    let post_csn = |action: Option<&'static str>, element: String| {
        let dv = dv.clone();
        async move {
            post(&dv, "/spoc/csn369791", XML11, action, messages::envelope(SoapVersion::V11, &element)).await.unwrap()
        }
    };
    for action in [Some("\"\""), None, Some("RequestCertificate"), Some("RequestCertificateRequest")] {
        let r =
            post_csn(action, messages::request_certificate(&format!("RC-{}", action.unwrap_or("none").len()))).await;
        assert_eq!(r.status, 200, "{action:?}: {}", text(&r));
        assert!(text(&r).contains("<result>ok_reception_ack</result>"), "{}", text(&r));
    }
    let r = post_csn(Some("GetCACertificates"), messages::request_certificate("RC-X")).await;
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (400, Some("SchemaViolation")));
    let r = post_csn(Some("\"\""), messages::get_ca_certificates("CA-1")).await;
    assert!(text(&r).contains("<result>ok_cert_available</result>"), "{}", text(&r));

    // An authenticated request (tag 67) passes; an X.509 certificate or a TLV whose length
    // does not match its data, under a CVC's name, does not.
    let b64 = |v: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(v);
    let with_request = |data: String| {
        let rc = messages::request_certificate("RC-TLV");
        let start = rc.find("<certificateRequest>").unwrap() + "<certificateRequest>".len();
        let end = rc.find("</certificateRequest>").unwrap();
        format!("{}{data}{}", &rc[..start], &rc[end..])
    };
    let r = post_csn(Some("\"\""), with_request(b64(messages::synthetic_cvc(&[0x67], 1, 200)))).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let mut x509 = vec![0x30, 0x82, 0x01, 0x00];
    x509.extend(vec![0u8; 256]);
    let mut short = messages::synthetic_cvc(&[0x7F, 0x21], 2, 200);
    short.pop();
    for bad in [x509, short] {
        let r = post_csn(Some("\"\""), with_request(b64(bad))).await;
        assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (400, Some("ContentMismatch")), "{}", text(&r));
    }
    // The names this gateway once invented are gone.
    let old = messages::get_ca_certificates("OLD-1").replace("GetCACertificatesRequest", "GetCACertificates");
    let r = post_csn(Some("\"\""), old).await;
    assert_eq!((r.status.as_u16(), fault_code(&r).as_deref()), (404, Some("UnknownOperation")), "{}", text(&r));

    // The National SPOC's unsolicited notification: no messageID, delivered and audited.
    let ministry = w.callback_client("ministry/client.pem", "ministry/client.key");
    let note = messages::envelope(SoapVersion::V11, &messages::new_certificates_notification());
    let r = post(&ministry, "/spoc/csn369791", XML11, Some("\"\""), note.clone()).await.unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(text(&r).contains("<result>ok_received_correctly</result>"), "{}", text(&r));
    let end = Instant::now() + Duration::from_secs(5);
    while !log_contains(&w.path("receiver.log"), "new_cert_available_notification") && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(log_contains(&w.path("receiver.log"), "new_cert_available_notification"), "not delivered");
    // Without a messageID, any other status is no callback of anything: answered here.
    let stray = note.replace("new_cert_available_notification", "ok_cert_available");
    let r = post(&ministry, "/spoc/csn369791", XML11, Some("\"\""), stray).await.unwrap();
    assert!(text(&r).contains("<result>failure_messageID_unknown</result>"), "{}", text(&r));
    let log = w.gateway_log();
    assert!(log.contains("\"operation\":\"SendCertificatesRequest\""), "{log}");
}
