//! Real SOAP clients: python zeep generates its client from the WSDLs the gateway serves
//! (`GET /bio/v1?wsdl`, `GET /spoc/csn369791?wsdl`, schemas at `?xsd=NAME`) and calls every
//! operation through the gateway over mutual TLS, as a police system's integrator would. The
//! client lives in a pinned virtualenv (`make soap-venv`, run by `make test`); with `CI` set, a
//! missing one fails these tests.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn venv_python() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/soap-venv/bin/python");
    if p.exists() {
        return Some(p);
    }
    assert!(std::env::var_os("CI").is_none(), "the SOAP client virtualenv is required when CI is set (make soap-venv)");
    eprintln!("SKIPPED: no SOAP client virtualenv (`make soap-venv` makes it)");
    None
}

fn run_client(w: &World, who: &str, scenario: &str) -> serde_json::Value {
    let python = venv_python().expect("venv");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/soap-client/client.py");
    let base = format!("https://127.0.0.1:{}", w.gateway_port);
    let out = Command::new(python)
        .arg(script)
        .args([&base, w.path("ca/police-ca.pem").to_str().unwrap()])
        .args([
            w.path(&format!("clients/{who}.pem")).to_str().unwrap(),
            w.path(&format!("clients/{who}.key")).to_str().unwrap(),
        ])
        .arg(scenario)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{scenario}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{scenario}: {e}: {stdout}"))
}

#[test]
fn a_client_generated_from_the_wsdl_calls_every_operation_and_reads_faults() {
    if venv_python().is_none() {
        return;
    }
    let w = World::full();
    // bio v1 over SOAP 1.1 and 1.2: typed replies; minimisation removed the address.
    let bio = run_client(&w, "officer", "bio");
    assert_eq!(bio["verify"]["Result"], "MATCH", "{bio}");
    assert_eq!(bio["identity"]["DocumentStatus"], "VALID", "{bio}");
    assert!(bio["identity"]["Surname"].is_string(), "{bio}");
    assert!(bio["identity"]["Address"].is_null(), "minimisation: {bio}");
    assert_eq!(bio["identity12"]["DocumentStatus"], "VALID", "{bio}");
    // A naive datetime: a SOAP Fault naming the field and the rule, never the value.
    assert_eq!(bio["naive"]["detail"]["Code"], "SchemaViolation", "{bio}");
    assert_eq!(bio["naive"]["detail"]["Field"], "Timestamp", "{bio}");
    assert_eq!(bio["naive"]["detail"]["Rule"], "pattern", "{bio}");

    // A refusal reaches the client as a zeep Fault with the GatewayFault detail.
    let refused = run_client(&w, "analyst", "refused");
    assert_eq!(refused["detail"]["Code"], "PolicyDenied", "{refused}");
    assert!(refused["detail"]["IncidentID"].is_string(), "{refused}");

    // CSN 36 9791 with the WSDL's soapActions.
    let csn = run_client(&w, "document-verifier", "csn");
    assert_eq!(csn["ca"]["result"], "ok_cert_available", "{csn}");
    assert_eq!(csn["ca"]["certificates"], 2, "{csn}");
    assert_eq!(csn["request"]["result"], "ok_reception_ack", "{csn}");
    assert_eq!(csn["general"]["result"], "ok", "{csn}");
}

/// The WSDL a client fetches names the gateway as the service and imports the schemas from
/// it; a path without a WSDL, or a schema it does not have, is no document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wsdls_and_schemas_are_served_over_mutual_tls() {
    let w = World::full();
    let get = |path: &'static str| {
        let w = &w;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = w.raw_client("officer").await;
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            String::from_utf8_lossy(&buf).into_owned()
        }
    };
    let wsdl = get("/bio/v1?wsdl").await;
    assert!(wsdl.starts_with("HTTP/1.1 200"), "{wsdl}");
    assert!(wsdl.contains(&format!("location=\"https://127.0.0.1:{}/bio/v1\"", w.gateway_port)), "{wsdl}");
    assert!(wsdl.contains("schemaLocation=\"?xsd=bio-v1.xsd\""), "{wsdl}");
    let xsd = get("/bio/v1?xsd=bio-v1.xsd").await;
    assert!(xsd.starts_with("HTTP/1.1 200") && xsd.contains("targetNamespace=\"urn:spocgw:bio:1\""), "{xsd}");
    let csn = get("/spoc/csn369791?wsdl").await;
    assert!(csn.contains("soapAction=\"RequestCertificate\""), "{csn}");
    for path in ["/bio/v1?xsd=../gateway.toml", "/bio/v1", "/nowhere?wsdl"] {
        let r = get(path).await;
        assert!(r.starts_with("HTTP/1.1 404"), "{path}: {r}");
    }
    // dev-pki wrote them next to the samples, importing the schemas beside them.
    let local = std::fs::read_to_string(w.path("wsdl/bio-v1.wsdl")).unwrap();
    assert!(local.contains("schemaLocation=\"bio-v1.xsd\"") && w.path("wsdl/bio-v1.xsd").exists());
}
