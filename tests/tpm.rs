//! Key custody with a real (software) TPM: one swtpm per test, on its own port pair and state
//! directory. With `CI` set, a missing swtpm or tpm2-tools fails these tests.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{BIN, Swtpm, World, admin_get, fault_code, metric, post};
use spocgw::sim::messages::{self, BioRequest};
use spocgw::xml::SoapVersion;

const SOAP11: &str = "text/xml; charset=utf-8";

fn verify_body(message_id: &str) -> String {
    messages::envelope(SoapVersion::V11, &BioRequest::matching(message_id, 512).verify_fingerprint())
}

fn spki_sha256(pem_file: &std::path::Path) -> String {
    let pem = std::fs::read_to_string(pem_file).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    spocgw::encoding::sha256_hex(&der)
}

/// A world whose keys live in `tpm` (bound to PCR 16), with the Ministry, the receiver and the
/// gateway serving.
fn serving_with_tpm(tpm: &Swtpm) -> World {
    let mut w = World::with_tpm(tpm, "16");
    w.start_ministry();
    w.start_receiver();
    w.start_gateway();
    w.wait_ready();
    w
}

/// The officer's fingerprint verification goes through (the gateway's keys work).
async fn officer_verifies(w: &World) {
    let officer = w.client("officer", false);
    let body = verify_body(&uuid::Uuid::new_v4().to_string());
    let r = post(&officer, "/bio/v1", SOAP11, Some("VerifyFingerprintRequest"), body).await.unwrap();
    assert_eq!(r.status, 200, "{}", common::text(&r));
}

fn spocgw(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn wait_for<F: FnMut() -> bool>(what: &str, limit: Duration, mut f: F) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// Every file under `dir` whose text holds a PEM private key.
fn private_key_files(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read_to_string(&p).is_ok_and(|t| t.contains("PRIVATE KEY")) {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioned_keys_serve_and_the_ministry_sees_the_tpm_key() {
    let Some(tpm) = Swtpm::start() else { return };
    let mut w = serving_with_tpm(&tpm);

    // No gateway private key on disk, in the clear or otherwise.
    assert_eq!(private_key_files(&w.path("gateway")), Vec::<String>::new());
    assert_eq!(private_key_files(&w.path("tpm")), Vec::<String>::new());
    assert!(std::fs::read_to_string(w.path("gateway.toml")).unwrap().contains("require_tpm = true"));

    officer_verifies(&w).await;

    // The certificate the Ministry saw carries the TPM key's public key.
    let want = spki_sha256(&w.path("tpm/ministry-client.pub.pem"));
    // The simulator writes its log every 20 ms.
    wait_for("the Ministry's log of the client key", Duration::from_secs(5), || {
        common::log_contains(&w.path("ministry.log"), &format!("\"public_key_sha256\":\"{want}\""))
    });
    let m = w.metrics();
    assert!(metric(&m, "spocgw_tpm_operations_total{op=\"sign\",result=\"ok\"}") >= 1.0, "{m}");
    let (code, ready) = admin_get(w.admin_port, "/readyz");
    assert_eq!(code, 200);
    assert!(ready.contains("tpm: ok"), "{ready}");

    // Provisioning again changes nothing; status shows every key present.
    let cfg = w.path("gateway.toml");
    let cfg = cfg.to_str().unwrap();
    let policy_key = w.path("release/pcr-policy.pub.pem");
    let out = spocgw(&["tpm", "provision", "--config", cfg, "--policy-key", policy_key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("already provisioned"));
    let out = spocgw(&["tpm", "status", "--config", cfg]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{status}");
    assert!(status.contains("ministry-client: tpm at 0x81000010, present"), "{status}");
    assert!(status.contains("PCRs [16]"), "{status}");

    // Checkpoints were signed by the TPM key: verified with its public key from provisioning.
    w.procs[2].signal("TERM");
    assert!(w.procs[2].wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()));
    let audit = w.path("audit");
    let key = w.path("tpm/audit-checkpoint.pub.pem");
    let out = spocgw(&["audit", "verify", audit.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(audit_has(&audit, "upstream.ministry.key tpm:ministry-client"), "no key_event record names the TPM key");
    // An officer finds the request by document number, with the pseudonymisation key the TPM unseals.
    let out = spocgw(&[
        "audit",
        "query",
        audit.to_str().unwrap(),
        "--document",
        "X1234567",
        "--pseudonym-key",
        "tpm:audit-pseudonym",
        "--config",
        cfg,
    ]);
    let found = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && found.contains("VerifyFingerprintRequest"),
        "{found}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn audit_has(dir: &std::path::Path, needle: &str) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(needle)))
}

#[test]
fn a_changed_pcr_refuses_the_unseal_and_serve_exits_2() {
    let Some(tpm) = Swtpm::start() else { return };
    let mut w = World::with_tpm(&tpm, "16");
    // The pair witness's seed is sealed with the other keys: its vkey (for the peer) opens now...
    let cfg = w.path("gateway.toml");
    let vkey = |name: &str| spocgw(&["pair", "vkey", "--config", cfg.to_str().unwrap(), "--name", name]);
    let out = vkey("gateway-a");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parsed = spocgw::audit::note::Vkey::parse(&text).unwrap();
    assert_eq!(parsed.name, "gateway-a/witness");
    assert_eq!(String::from_utf8_lossy(&vkey("gateway-a").stdout), text, "the same sealed seed each time");
    // PCR 16 is the debug PCR: resettable, extended here as a changed boot state would be.
    let out = tpm.tool(&["tpm2_pcrextend", &format!("16:sha256={}", "ab".repeat(32))]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // ...and not in another boot state.
    assert_eq!(vkey("gateway-a").status.code(), Some(2));
    let mut p = common::Proc::start(&["serve", "--config", cfg.to_str().unwrap()], w.path("gateway.log"));
    let status = p.wait_exit(Duration::from_secs(20)).expect("serve exits");
    assert_eq!(status.code(), Some(2));
    let log = p.log_text();
    assert!(log.contains("PCR values no longer match"), "{log}");
    assert!(log.contains("police-server") || log.contains("audit-pseudonym"), "{log}");
    // Nothing was served.
    assert!(std::net::TcpStream::connect(("127.0.0.1", w.gateway_port)).is_err());
    w.procs.clear();
}

/// Signs a SHA-256 digest with the resident checkpoint key as the gateway does (its library).
fn gateway_signs(w: &World) -> Result<Vec<u8>, spocgw::tpm::TpmError> {
    let cfg = spocgw::cli::tpm::read_tpm_table(&w.path("gateway.toml")).unwrap();
    let tpm = spocgw::tpm::Tpm::start(&cfg)?;
    let manifest = spocgw::tpm::provision::Manifest::load(&cfg.dir)?;
    let signed = manifest.authorize(&cfg, &tpm).and_then(|_| tpm.sign(0x8100_0011, [0x5a; 32]));
    tpm.disconnect();
    signed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_keys_sign_only_in_a_boot_state_a_signed_policy_approves() {
    let Some(tpm) = Swtpm::start() else { return };
    let mut w = World::with_tpm(&tpm, "16");
    // Anyone who reaches the TPM, with its empty password: refused for both resident keys.
    let msg = w.path("msg");
    std::fs::write(&msg, b"a checkpoint an insider would like signed").unwrap();
    for handle in ["0x81000010", "0x81000011"] {
        let sig = w.path(&format!("sig-{handle}"));
        let out = tpm.tool(&[
            "tpm2_sign",
            "-c",
            handle,
            "-g",
            "sha256",
            "-s",
            "ecdsa",
            "-o",
            sig.to_str().unwrap(),
            msg.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "tpm2_sign with the password session signed with {handle}");
    }
    // The gateway's policy session signs.
    assert!(gateway_signs(&w).is_ok());
    let cfg = w.path("gateway.toml");
    let cfg = cfg.to_str().unwrap();
    let status = spocgw(&["tpm", "status", "--config", cfg]);
    let text = format!("{}{}", String::from_utf8_lossy(&status.stdout), String::from_utf8_lossy(&status.stderr));
    assert!(text.contains("this boot state is approved"), "{text}");

    // Another boot state: no signature, no unseal, `tpm status` says so.
    let out = tpm.tool(&["tpm2_pcrextend", &format!("16:sha256={}", "cd".repeat(32))]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    match gateway_signs(&w) {
        Err(spocgw::tpm::TpmError::PcrMismatch { name, .. }) => assert_eq!(name, "audit-checkpoint"),
        other => panic!("signed in a boot state no policy approves: {:?}", other.map(|_| ())),
    }
    let status = spocgw(&["tpm", "status", "--config", cfg]);
    let text = format!("{}{}", String::from_utf8_lossy(&status.stdout), String::from_utf8_lossy(&status.stderr));
    assert!(!status.status.success() && text.contains("NOT approved"), "{text}");

    // A release signs the new state: the same keys work again, without provisioning anew.
    let key = w.path("release/pcr-policy.key.pem");
    let out = spocgw(&["tpm", "authorize", "--config", cfg, "--signing-key", key.to_str().unwrap(), "--current"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(gateway_signs(&w).is_ok());
    // A policy signed by another key is refused, however right its PCR values.
    let other = rcgen::KeyPair::generate().unwrap();
    let other_file = w.path("other.key.pem");
    std::fs::write(&other_file, other.serialize_pem()).unwrap();
    let out =
        spocgw(&["tpm", "authorize", "--config", cfg, "--signing-key", other_file.to_str().unwrap(), "--current"]);
    assert!(out.status.success());
    match gateway_signs(&w) {
        Err(e) => assert!(e.to_string().contains("not signed by the policy key"), "{e}"),
        Ok(_) => panic!("a policy signed by another key opened the keys"),
    }
    let out = spocgw(&["tpm", "authorize", "--config", cfg, "--signing-key", key.to_str().unwrap(), "--current"]);
    assert!(out.status.success());
    w.start_ministry();
    w.start_receiver();
    w.start_gateway();
    w.wait_ready();
    officer_verifies(&w).await;
}

#[test]
fn a_quote_verifies_with_tpm2_checkquote_and_spocgw_attest_and_another_nonce_or_state_fails() {
    let Some(tpm) = Swtpm::start() else { return };
    if !common::have_tool("tpm2_checkquote") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prov = dir.path().join("tpm");
    let (tcti, prov_s) = (tpm.tcti(), prov.to_str().unwrap().to_owned());
    let key = rcgen::KeyPair::generate().unwrap();
    let (key_file, pub_file) = (dir.path().join("policy.key.pem"), dir.path().join("policy.pub.pem"));
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::write(&pub_file, key.public_key_pem()).unwrap();
    let target = ["--tcti", &tcti, "--dir", &prov_s, "--pcrs", "0,16"];
    let out = spocgw(
        &[&["tpm", "authorize", "--current", "--signing-key", key_file.to_str().unwrap()], &target[..]].concat(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = spocgw(&[&["tpm", "provision", "--policy-key", pub_file.to_str().unwrap()], &target[..]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let q = dir.path().join("q");
    let nonce = "5eed0f1a2b3c4d5e6f708192a3b4c5d6";
    let out =
        spocgw(&["tpm", "quote", "--tcti", &tcti, "--dir", &prov_s, "--nonce", nonce, "--out", q.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let check = |n: &str| {
        let f = |name: &str| q.join(name).to_str().unwrap().to_owned();
        Command::new("tpm2_checkquote")
            .args(["-u", &f("attestation.pub.pem"), "-m", &f("quote.msg"), "-s", &f("quote.sig")])
            .args(["-f", &f("quote.pcrs"), "-l", "sha256:0,16", "-g", "sha256", "-q", n])
            .output()
            .unwrap()
    };
    let good = check(nonce);
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    let bad = check("5eed0f1a2b3c4d5e6f708192a3b4c5d7");
    assert!(!bad.status.success(), "a quote verified with the wrong nonce");
    // The attestation key is the one provisioning recorded.
    assert_eq!(spki_sha256(&q.join("attestation.pub.pem")), spki_sha256(&prov.join("attestation.pub.pem")));

    // `spocgw attest verify` against values known without the TPM (a fresh swtpm: PCRs 0
    // and 16 all zeros), as a verifier holding the image's predicted values checks.
    let zeros = "0".repeat(64);
    let run = |expected: String, n: &str| {
        let file = dir.path().join("expected.json");
        std::fs::write(&file, expected).unwrap();
        let ak = prov.join("attestation.pub.pem");
        let args = ["attest", "verify", "--expected", file.to_str().unwrap(), "--ak", ak.to_str().unwrap()];
        let out = spocgw(&[&args[..], &["--nonce", n, q.to_str().unwrap()]].concat());
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let expected = |v16: &str| format!(r#"{{"pcrs": {{"0": "{zeros}", "16": "{v16}"}}}}"#);
    let (code, out) = run(expected(&zeros), nonce);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(expected(&"ab".repeat(32)), nonce);
    assert_eq!(code, Some(1), "another boot state verified: {out}");
    assert!(out.contains("not the expected ones"), "{out}");
    let (code, out) = run(expected(&zeros), "5eed0f1a2b3c4d5e6f708192a3b4c5d7");
    assert_eq!(code, Some(1), "a replayed quote verified: {out}");
    let (code, out) = run(format!(r#"{{"0": "{zeros}"}}"#), nonce);
    assert_eq!(code, Some(1), "a quote over other PCRs verified: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_tpm_fails_new_upstream_handshakes_closed_and_recovers() {
    let Some(mut tpm) = Swtpm::start() else { return };
    let mut w = serving_with_tpm(&tpm);
    let officer = w.client("officer", false);
    let send = || {
        post(
            &officer,
            "/bio/v1",
            SOAP11,
            Some("VerifyFingerprintRequest"),
            verify_body(&uuid::Uuid::new_v4().to_string()),
        )
    };
    assert_eq!(send().await.unwrap().status, 200);

    tpm.kill();
    wait_for("/readyz to report the TPM", Duration::from_secs(15), || {
        let (code, body) = admin_get(w.admin_port, "/readyz");
        code == 503 && body.contains("tpm: unavailable")
    });
    // A new Ministry process: the pooled connections are gone, a new handshake needs the TPM.
    w.procs.remove(0);
    w.start_ministry();
    for _ in 0..2 {
        let r = send().await.unwrap();
        assert_eq!(r.status, 502, "{}", common::text(&r));
        assert_eq!(fault_code(&r).as_deref(), Some("UpstreamUnavailable"));
    }
    wait_for("a failed TPM signature", Duration::from_secs(10), || {
        metric(&w.metrics(), "spocgw_tpm_operations_total{op=\"sign\",result=\"failed\"}") >= 1.0
    });
    assert_eq!(admin_get(w.admin_port, "/healthz").0, 200, "the gateway stays up");
    assert!(w.gateway_log().contains("TLS signature with the TPM key failed"), "{}", w.gateway_log());

    tpm.restart();
    wait_for("the gateway to be ready again", Duration::from_secs(20), || admin_get(w.admin_port, "/readyz").0 == 200);
    let r = send().await.unwrap();
    assert_eq!(r.status, 200, "{}", common::text(&r));
}

#[test]
fn require_tpm_refuses_file_keys() {
    let w = World::new();
    let cfg = w.path("gateway.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("require_tpm = true\n{text}\n[tpm]\ntcti = \"swtpm:host=127.0.0.1,port=9\"\ndir = \"tpm\"\n"),
    )
    .unwrap();
    let out = spocgw(&["serve", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("police.key") && err.contains("require_tpm = true refuses the file key"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_log_fails_verification_against_the_tpm_counter() {
    let Some(tpm) = Swtpm::start() else { return };
    let mut w = serving_with_tpm(&tpm);
    let officer = w.client("officer", false);
    for _ in 0..5 {
        let body = verify_body(&uuid::Uuid::new_v4().to_string());
        let r = post(&officer, "/bio/v1", SOAP11, Some("VerifyFingerprintRequest"), body).await.unwrap();
        assert_eq!(r.status, 200);
    }
    w.procs[2].signal("TERM");
    assert!(w.procs[2].wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()));
    let audit = w.path("audit");
    let (cfg, key) = (w.path("gateway.toml"), w.path("tpm/audit-checkpoint.pub.pem"));
    let run = |extra: &[&str]| {
        let out =
            spocgw(&[&["audit", "verify", audit.to_str().unwrap(), "--key", key.to_str().unwrap()], extra].concat());
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let tpm_mode = ["--tpm", "--config", cfg.to_str().unwrap()];
    let (ok, out) = run(&tpm_mode);
    assert!(ok && out.contains("the newest checkpoint is the last one the TPM counted"), "{out}");

    // Drop the last records, back to a checkpoint at least 7 records earlier, and every
    // checkpoint that covers them (a cut anywhere else leaves records no checkpoint covers).
    let segs = spocgw::audit::segments(&audit).unwrap();
    assert_eq!(segs.len(), 1, "one segment");
    let text = std::fs::read_to_string(&segs[0]).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim_matches('\0').is_empty()).collect();
    let cps = audit.join("checkpoints.jsonl");
    let sizes = || {
        std::fs::read_to_string(&cps)
            .unwrap()
            .lines()
            .map(|c| (serde_json::from_str::<spocgw::audit::Checkpoint>(c).unwrap().tree_size as usize, c.to_owned()))
            .collect::<Vec<_>>()
    };
    let cut = sizes().iter().map(|(n, _)| *n).filter(|&n| n + 7 <= lines.len()).max().unwrap();
    std::fs::write(&segs[0], lines[..cut].join("\n") + "\n").unwrap();
    let kept: Vec<String> = sizes().into_iter().filter(|(n, _)| *n <= cut).map(|(_, c)| c).collect();
    assert!(!kept.is_empty());
    std::fs::write(&cps, kept.join("\n") + "\n").unwrap();
    let (ok, out) = run(&[]);
    assert!(ok, "the signature-only check passes a clean truncation (docs/audit.md says so): {out}");
    let (ok, out) = run(&tpm_mode);
    assert!(!ok && out.contains("missing from the disk (truncated)"), "{out}");

    // Root (or someone with the TPM in another OS) replaces the counter with an ordinary index
    // holding the truncated log's counter value: refused, whatever the value says.
    let logged = std::fs::read_to_string(&cps)
        .unwrap()
        .lines()
        .filter_map(|c| serde_json::from_str::<spocgw::audit::Checkpoint>(c).ok()?.tpm_counter)
        .max()
        .unwrap();
    let index = format!("{:#010x}", spocgw::tpm::AUDIT_COUNTER);
    let value = dir_file(&w, "forged-counter.bin", &logged.to_be_bytes());
    for args in [
        vec!["tpm2_nvundefine", "-C", "o", index.as_str()],
        vec!["tpm2_nvdefine", index.as_str(), "-C", "o", "-s", "8", "-a", "ownerread|ownerwrite|authread|authwrite"],
        vec!["tpm2_nvwrite", index.as_str(), "-C", "o", "-i", value.as_str()],
    ] {
        let o = tpm.tool(&args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let read = tpm.tool(&["tpm2_nvread", index.as_str(), "-C", "o", "-s", "8"]);
    assert_eq!(read.stdout, logged.to_be_bytes(), "the forged index holds the truncated log's counter");
    let (ok, out) = run(&tpm_mode);
    assert!(!ok && out.contains("is not the audit counter provisioning defined"), "{out}");
    assert!(out.contains("not a counter"), "{out}");
    // With --tcti alone (no provisioning record), the type check alone refuses it too.
    let (ok, out) = run(&["--tpm", "--tcti", &tpm.tcti()]);
    assert!(!ok && out.contains("not a counter"), "{out}");
}

/// A file in the world's directory holding `bytes`; its path.
fn dir_file(w: &World, name: &str, bytes: &[u8]) -> String {
    let p = w.path(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_owned()
}

/// The appliance's configuration as a signed bundle (`spocgw config sign | accept | check`)
/// against a real TPM's configuration record: only the operator's key, only a newer serial,
/// only a configuration that loads; a store altered on the disk or a record replaced in the
/// TPM is caught.
#[test]
fn configuration_bundles_are_accepted_only_signed_newer_and_whole() {
    let Some(tpm) = Swtpm::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prov = d.join("tpm");
    let policy = rcgen::KeyPair::generate().unwrap();
    let (policy_key, policy_pub) = (d.join("policy.key.pem"), d.join("policy.pub.pem"));
    std::fs::write(&policy_key, policy.serialize_pem()).unwrap();
    std::fs::write(&policy_pub, policy.public_key_pem()).unwrap();
    let target = ["--tcti", &tpm.tcti(), "--dir", prov.to_str().unwrap(), "--pcrs", "0,16"];
    let k = policy_key.to_str().unwrap();
    let out = spocgw(&[&["tpm", "authorize", "--current", "--signing-key", k], &target[..]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = spocgw(&[&["tpm", "provision", "--policy-key", policy_pub.to_str().unwrap()], &target[..]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tpm_toml = d.join("tpm.toml");
    std::fs::write(&tpm_toml, format!("[tpm]\ntcti = \"{}\"\ndir = \"tpm\"\npcrs = [0, 16]\n", tpm.tcti())).unwrap();

    let operator = |name: &str| {
        let kp = rcgen::KeyPair::generate().unwrap();
        let (key, public) = (d.join(format!("{name}.key.pem")), d.join(format!("{name}.pub.pem")));
        std::fs::write(&key, kp.serialize_pem()).unwrap();
        std::fs::write(&public, kp.public_key_pem()).unwrap();
        (key, public)
    };
    let (a_key, a_pub) = operator("a");
    let (b_key, b_pub) = operator("b");
    let medium = d.join("medium");
    let store = d.join("config");
    let bundle = |operator_pub: &std::path::Path, note: &str| {
        let _ = std::fs::remove_dir_all(&medium);
        std::fs::create_dir_all(medium.join("certs")).unwrap();
        std::fs::copy(operator_pub, medium.join("operator.pub.pem")).unwrap();
        std::fs::write(medium.join("certs/note.txt"), note).unwrap();
    };
    let sign = |key: &std::path::Path, serial: u64| {
        let s = serial.to_string();
        let out = spocgw(&["config", "sign", "--key", key.to_str().unwrap(), "--serial", &s, medium.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let record = ["--tpm-config", tpm_toml.to_str().unwrap(), "--policy-key", policy_pub.to_str().unwrap()];
    let accept = || {
        let args = ["config", "accept", "--from", medium.to_str().unwrap(), "--to", store.to_str().unwrap()];
        let out = spocgw(&[&args[..], &record[..]].concat());
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let check = || {
        let out = spocgw(&[&["config", "check", "--store", store.to_str().unwrap()], &record[..]].concat());
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let note = || std::fs::read_to_string(store.join("certs/note.txt")).ok();

    assert_eq!(check().0, Some(3), "nothing accepted yet");
    bundle(&a_pub, "one");
    let (code, out) = accept();
    assert!(code == Some(1) && out.contains("not signed") && note().is_none(), "unsigned: {out}");
    sign(&a_key, 1);
    let (code, out) = accept();
    assert!(code == Some(0) && out.contains("serial 1 accepted"), "{out}");
    assert_eq!(note().as_deref(), Some("one"));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(store.join("certs/note.txt")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the service reads the configuration; only root writes it");
    assert_eq!(check().0, Some(0), "{}", check().1);
    assert!(accept().1.contains("already in force"));

    // Changed after signing; signed by a stranger; an older serial; a configuration that does
    // not load: each refused, the configuration in force untouched.
    std::fs::write(medium.join("certs/note.txt"), "one, altered").unwrap();
    let (code, out) = accept();
    assert!(code == Some(1) && out.contains("changed after it was signed"), "{out}");
    bundle(&a_pub, "two");
    sign(&b_key, 2);
    let (code, out) = accept();
    assert!(code == Some(1) && out.contains("not signed by the operator key"), "{out}");
    sign(&a_key, 1);
    let (code, out) = accept();
    assert!(code == Some(1) && out.contains("not above the last accepted"), "{out}");
    std::fs::write(medium.join("gateway.toml"), "[police]\nlisten = \"nonsense\"\n").unwrap();
    sign(&a_key, 2);
    let (code, out) = accept();
    assert!(code == Some(1) && out.contains("gateway.toml does not load"), "{out}");
    assert_eq!(note().as_deref(), Some("one"));
    assert_eq!(check().0, Some(0), "{}", check().1);

    // The operator key rotated: the bundle naming B is signed by A; then only B signs.
    bundle(&b_pub, "three");
    sign(&a_key, 3);
    assert_eq!(accept().0, Some(0));
    bundle(&b_pub, "four");
    sign(&a_key, 4);
    assert!(accept().1.contains("not signed by the operator key"));
    sign(&b_key, 4);
    assert_eq!(accept().0, Some(0), "{}", accept().1);
    assert_eq!(note().as_deref(), Some("four"));

    // A power cut after the record was written but before the swap: the staged configuration
    // is the recorded one, and the next check finishes the swap.
    std::fs::rename(&store, d.join(".config.next")).unwrap();
    std::fs::create_dir(&store).unwrap();
    std::fs::write(store.join("stale.toml"), "the configuration before").unwrap();
    let (code, out) = check();
    assert!(code == Some(0) && out.contains("serial 4 in force"), "{out}");
    assert_eq!(note().as_deref(), Some("four"));
    assert!(!store.join("stale.toml").exists() && !d.join(".config.next").exists());

    // Someone with the disk edits the stored configuration: caught at the next check.
    std::fs::write(store.join("certs/note.txt"), "four, edited offline").unwrap();
    let (code, out) = check();
    assert!(code == Some(1) && out.contains("altered or replaced on the disk"), "{out}");
    std::fs::write(store.join("certs/note.txt"), "four").unwrap();
    assert_eq!(check().0, Some(0));

    // Someone with the TPM replaces the record with an index of their own (empty: "first
    // boot"): refused, and no bundle of theirs is taken on first use.
    let index = format!("{:#010x}", spocgw::tpm::CONFIG_RECORD);
    for args in [
        vec!["tpm2_nvundefine", "-C", "o", index.as_str()],
        vec!["tpm2_nvdefine", index.as_str(), "-C", "o", "-s", "72", "-a", "ownerread|ownerwrite|authread|authwrite"],
    ] {
        let o = tpm.tool(&args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let zeros = d.join("zeros");
    std::fs::write(&zeros, [0u8; 72]).unwrap();
    assert!(tpm.tool(&["tpm2_nvwrite", index.as_str(), "-C", "o", "-i", zeros.to_str().unwrap()]).status.success());
    let (code, out) = check();
    assert!(code == Some(1) && out.contains("not the configuration record provisioning defined"), "{out}");
    let (c_key, c_pub) = operator("c");
    bundle(&c_pub, "attacker");
    sign(&c_key, 99);
    let (code, out) = accept();
    assert!(code == Some(1) && out.contains("not the configuration record"), "{out}");
    assert_eq!(note().as_deref(), Some("four"));
}
