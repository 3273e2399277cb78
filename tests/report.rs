//! The officer's report, rendered by a real browser: `spocgw audit report` over a log the
//! gateway wrote, loaded in headless Chromium (Debian's `chromium`). The DOM after its script
//! ran must count what the log holds, say the log verified, and the page must load nothing from
//! anywhere; a screenshot is taken.

mod common;

use std::process::Command;

use common::*;
use spocgw::sim::messages::{self, BioRequest};
use spocgw::xml::SoapVersion;

fn chromium(args: &[&str]) -> std::process::Output {
    Command::new("chromium")
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_what_the_log_holds_in_a_browser() {
    if !have_tool("chromium") {
        return;
    }
    let w = World::full();
    let post = |who: &'static str, action: &'static str, body: String| {
        let c = w.client(who, false);
        async move {
            c.post(
                "/bio/v1",
                spocgw::gateway::upstream::soap_headers("text/xml; charset=utf-8", Some(action), None),
                bytes::Bytes::from(messages::envelope(SoapVersion::V11, &body)),
            )
            .await
            .unwrap()
        }
    };
    let id = || uuid::Uuid::new_v4().to_string();
    for _ in 0..3 {
        assert_eq!(
            post("officer", "VerifyFingerprintRequest", BioRequest::matching(&id(), 512).verify_fingerprint())
                .await
                .status,
            200
        );
    }
    // An identity check: the Address is minimised away. The analyst may not verify fingerprints.
    assert_eq!(
        post("officer", "CheckIdentityRequest", BioRequest::matching(&id(), 512).check_identity()).await.status,
        200
    );
    assert_eq!(
        post("analyst", "VerifyFingerprintRequest", BioRequest::matching(&id(), 512).verify_fingerprint()).await.status,
        403
    );
    // A terminal whose certificate was revoked: refused at the handshake, and on record.
    let revoked = w.client("revoked", false);
    let tried = revoked
        .post(
            "/bio/v1",
            spocgw::gateway::upstream::soap_headers("text/xml; charset=utf-8", Some("VerifyFingerprintRequest"), None),
            bytes::Bytes::from(messages::envelope(
                SoapVersion::V11,
                &BioRequest::matching(&id(), 512).verify_fingerprint(),
            )),
        )
        .await;
    assert!(tried.is_err(), "a revoked certificate is refused");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let dir = w.path("audit");
    // What the log holds: police requests (consultations), and refusals.
    let log = spocgw::audit::verify::read_log(&dir).unwrap();
    let consultations =
        log.records.iter().filter(|(r, _, _)| r.event == "request" && r.listener.as_deref() == Some("police")).count();
    assert!(consultations >= 4, "{consultations}");
    // Refused before a request record was written: the outcome carries who asked.
    let incidents: std::collections::HashSet<&str> = log
        .records
        .iter()
        .filter(|(r, _, _)| r.event == "request")
        .filter_map(|(r, _, _)| r.incident_id.as_deref())
        .collect();
    let attempts = log
        .records
        .iter()
        .filter(|(r, _, _)| {
            r.event == "outcome"
                && r.listener.as_deref() == Some("police")
                && r.code.as_deref() != Some("ok")
                && r.incident_id.as_deref().is_none_or(|i| !incidents.contains(i))
        })
        .count();
    assert!(attempts >= 1, "the analyst's denied attempt");
    let out = tempfile::tempdir().unwrap();
    let html = out.path().join("report.html");
    let made = Command::new(BIN)
        .args(["audit", "report"])
        .arg(&dir)
        .arg("--out")
        .arg(&html)
        .arg("--key")
        .arg(w.path("gateway/audit-checkpoint.pub.pem"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    // Nothing to load from anywhere: the only URL is the SVG namespace, and the page's CSP
    // allows no source.
    let urls = page.matches("://").count() - page.matches("http://www.w3.org/2000/svg").count();
    assert_eq!(urls, 0, "no external asset");
    assert!(!page.contains("src=") && !page.contains("<link") && page.contains("default-src 'none'"));
    let url = format!("file://{}", html.display());
    let dom = chromium(&["--virtual-time-budget=2000", "--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    let field = |id: &str| {
        let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in {dom}"));
        let rest = &dom[at..];
        rest[rest.find('>').unwrap() + 1..].split('<').next().unwrap().to_owned()
    };
    assert_eq!(field("total-consultations"), consultations.to_string());
    // The script ran: the filter count is the table's rows, denied attempts among them.
    assert_eq!(field("shown"), (consultations + attempts).to_string());
    assert_eq!(field("refused-attempts"), attempts.to_string());
    assert!(dom.contains("data-label=\"analyst-0001\" data-count=\"1\""), "refusals by terminal: {dom}");
    assert!(dom.contains("data-label=\"revoked\""), "handshake refusals by reason");
    assert_eq!(field("handshake-certificates-count"), "1");
    assert!(dom.contains("CN=revoked-0001</td>"), "the revoked certificate is listed");
    assert!(dom.contains("data-verified=\"true\""), "the log verified");
    assert!(dom.contains("data-label=\"PolicyDenied\" data-count=\"1\""), "one policy refusal");
    assert!(dom.contains("data-label=\"Holder/Address\" data-count=\"1\""), "the minimised Address");
    assert!(dom.contains("data-label=\"IDENTITY_DOUBT\""), "per purpose");
    let shot = out.path().join("report.png");
    let taken = chromium(&["--window-size=1280,1400", &format!("--screenshot={}", shot.display()), &url]);
    assert!(taken.status.success(), "{}", String::from_utf8_lossy(&taken.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a screenshot of the page");
    // The report's access is on record like a query's.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let recorded = || {
        spocgw::audit::segments(&dir)
            .unwrap()
            .iter()
            .any(|p| std::fs::read_to_string(p).unwrap().contains("\"detail\":\"audit report by uid "))
    };
    while !recorded() && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(recorded(), "the report's access is recorded");
}
