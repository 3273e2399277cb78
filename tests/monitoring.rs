//! What ships for monitoring: the alert rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`: each alert fires on what should fire it), and every metric the rules
//! and the Grafana dashboard name is one the gateway exports (a renamed metric would leave an
//! alert that can never fire).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::*;
use spocgw::sim::messages::{self, BioRequest};
use spocgw::xml::SoapVersion;

fn deploy(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

/// The metric names an expression text refers to.
fn referenced(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\b(?:spocgw|process)_[a-z_]+").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_owned()).collect()
}

#[test]
fn alert_rules_check_and_their_unit_tests_pass() {
    if !have_tool("promtool") {
        return;
    }
    let out = Command::new("promtool").arg("check").arg("rules").arg(deploy("prometheus/alerts.yml")).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let out = Command::new("promtool")
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(deploy("prometheus"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_the_dashboard_name_is_exported() {
    let w = World::full();
    // A request and a refused handshake: the families that appear with their first sample.
    let r = w
        .client("officer", false)
        .post(
            "/bio/v1",
            spocgw::gateway::upstream::soap_headers("text/xml; charset=utf-8", Some("VerifyFingerprintRequest"), None),
            bytes::Bytes::from(messages::envelope(
                SoapVersion::V11,
                &BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 1024).verify_fingerprint(),
            )),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let _ = w.client("untrusted", false).post("/bio/v1", http::HeaderMap::new(), bytes::Bytes::new()).await;
    std::thread::sleep(std::time::Duration::from_millis(200));
    let text = w.metrics();
    let exported: BTreeSet<String> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next().map(str::to_owned)).collect();
    // Families that only a TPM, a pair or an upstream failure fills: registered in the source
    // by their name.
    let source: String = ["src/gateway/watchers.rs", "src/gateway/pair/mod.rs", "src/gateway/upstream/metrics.rs"]
        .iter()
        .map(|f| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(f)).unwrap())
        .collect();
    let dashboard = std::fs::read_to_string(deploy("grafana/spocgw.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let exprs: String = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap_or_default().to_owned() + "\n")
        .collect();
    assert!(exprs.contains("spocgw_requests_total") && exprs.contains("spocgw_audit_write_duration_seconds_bucket"));
    let alerts = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let mut missing = Vec::new();
    for name in referenced(&exprs).into_iter().chain(referenced(&alerts)) {
        let family =
            ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name).to_owned();
        let core = family.trim_start_matches("spocgw_").trim_end_matches("_total");
        let registered = source.contains(&format!("\"{core}\""));
        if !exported.contains(&family) && !registered {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "named but not exported: {missing:?}\n{text}");
    for series in ["spocgw_certificate_expiry_seconds{listener=\"police\",role=\"server\"}", "spocgw_audit_healthy 1"] {
        assert!(text.contains(series), "{series}: {text}");
    }
    let days = metric(&text, "spocgw_certificate_expiry_seconds{listener=\"police\",role=\"server\"}") / 86400.0;
    assert!((300.0..366.0).contains(&days), "the development certificate is valid for a year: {days}");
}
