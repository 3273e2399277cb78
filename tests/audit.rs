//! The audit log: tampering is detected and named, crashes lose nothing acknowledged, a full
//! disk refuses requests before anything is forwarded, proofs verify and fail when altered.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use spocgw::audit::{Audit, AuditConfig, AuditMetrics, Record};
use spocgw::sim::messages::{self, BioRequest};
use spocgw::xml::SoapVersion;

const XML11: &str = "text/xml; charset=utf-8";

/// A tmpfs mounted over `dir` for one test, unmounted on drop. None (the test is skipped) when
/// it cannot be mounted outside CI; in CI that fails the test.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, options: &str) -> Option<Tmpfs> {
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !mounted {
            assert!(std::env::var_os("CI").is_none(), "this test needs to mount a tmpfs (root) in CI");
            eprintln!("SKIPPED: cannot mount a tmpfs here");
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn audit_config(w: &World, dir: &std::path::Path) -> AuditConfig {
    let toml = format!(
        "dir = {:?}\ncheckpoint_key = {:?}\npseudonym_key = {:?}\ncheckpoint_every = 10\ncheckpoint_interval_ms = 50",
        dir,
        w.path("gateway/audit-checkpoint.key"),
        w.path("gateway/audit-pseudonym.key")
    );
    toml::from_str(&toml).unwrap()
}

fn verify(w: &World, dir: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(dir)
        .arg("--key")
        .arg(w.path("gateway/audit-checkpoint.pub.pem"))
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A log of 25 records and its checkpoints, written through the real writer.
async fn small_log(w: &World, dir: &std::path::Path) {
    let audit = Audit::start(&audit_config(w, dir)).unwrap();
    for i in 0..25 {
        let mut r = Record::now("request");
        r.incident_id = Some(format!("incident-{i}"));
        r.operation = Some("CheckIdentityRequest".into());
        audit.append_durable(&r).await.unwrap();
    }
    audit.checkpoint_now().await.unwrap();
    drop(audit);
    released(dir);
}

/// Waits until the log's writer has finished (its last checkpoint written) and let the log go:
/// dropping an `Audit` stops its thread without waiting for it.
fn released(dir: &std::path::Path) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if std::fs::File::open(dir.join("writer.lock")).is_ok_and(|f| f.try_lock().is_ok()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the audit writer did not let {} go", dir.display());
}

fn lines(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("segment-000001.jsonl")).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(dir: &std::path::Path, l: &[String]) {
    std::fs::write(dir.join("segment-000001.jsonl"), l.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_and_named() {
    let w = World::new();
    let base = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let d = base.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let original = fresh("original");
    small_log(&w, &original).await;
    let (ok, out) = verify(&w, &original);
    assert!(ok, "{out}");
    assert!(out.contains("26 records"), "{out}"); // start + 25
    let copy = |name: &str| {
        let d = fresh(name);
        for f in ["segment-000001.jsonl", "checkpoints.jsonl"] {
            std::fs::copy(original.join(f), d.join(f)).unwrap();
        }
        d
    };

    // A flipped byte inside a record.
    let d = copy("flip");
    let mut l = lines(&d);
    l[5] = l[5].replace("incident-4", "incident-X");
    write_lines(&d, &l);
    let (ok, out) = verify(&w, &d);
    assert!(!ok && out.contains("altered") && out.contains("checkpoint"), "{out}");

    // A dropped record, two reordered records.
    let d = copy("drop");
    let mut l = lines(&d);
    l.remove(7);
    write_lines(&d, &l);
    let (ok, out) = verify(&w, &d);
    assert!(!ok && out.contains("record 7") && out.contains("sequence"), "{out}");
    let d = copy("reorder");
    let mut l = lines(&d);
    l.swap(3, 4);
    write_lines(&d, &l);
    let (ok, out) = verify(&w, &d);
    assert!(!ok && out.contains("record 3"), "{out}");

    // Truncated: the last records removed (the signed checkpoint still covers them).
    let d = copy("truncate");
    let l = lines(&d);
    write_lines(&d, &l[..20]);
    let (ok, out) = verify(&w, &d);
    assert!(!ok && out.contains("removed"), "{out}");

    // A checkpoint replaced (root changed) and one re-signed with another key.
    let d = copy("checkpoint");
    let cps = std::fs::read_to_string(d.join("checkpoints.jsonl")).unwrap();
    let mut cp: serde_json::Value = serde_json::from_str(cps.lines().last().unwrap()).unwrap();
    cp["root_hash"] = serde_json::Value::String("00".repeat(32));
    std::fs::write(d.join("checkpoints.jsonl"), format!("{cp}\n")).unwrap();
    let (ok, out) = verify(&w, &d);
    assert!(!ok && out.contains("signature does not verify"), "{out}");

    let other = World::new(); // another key pair
    let d = fresh("resigned");
    small_log(&other, &d).await;
    let (ok, out) = verify(&w, &d);
    assert!(!ok && out.contains("signature does not verify"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_at_start_and_recorded() {
    let w = World::new();
    let d = tempfile::tempdir().unwrap();
    small_log(&w, d.path()).await;
    let seg = d.path().join("segment-000001.jsonl");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(b"{\"seq\":27,\"time\":\"2026-");
    std::fs::write(&seg, bytes).unwrap();
    let (ok, out) = verify(&w, d.path());
    assert!(!ok && out.contains("torn"), "{out}");
    small_log(&w, d.path()).await; // reopens: recovery, then 25 more
    let (ok, out) = verify(&w, d.path());
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(&seg).unwrap();
    assert!(text.contains("\"event\":\"recovery\"") && text.contains("cut a torn tail of 23 bytes"), "{text}");
}

/// Half a checkpoint line (a full disk, a crash mid-write) is cut at start: the next
/// checkpoint starts a line of its own and `audit verify` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_checkpoint_line_is_cut_at_start() {
    let w = World::new();
    let d = tempfile::tempdir().unwrap();
    small_log(&w, d.path()).await;
    let cps = d.path().join("checkpoints.jsonl");
    let whole = std::fs::read(&cps).unwrap();
    let mut torn = whole.clone();
    torn.extend_from_slice(b"{\"origin\":\"spocgw\",\"tree_size\":2");
    std::fs::write(&cps, torn).unwrap();
    small_log(&w, d.path()).await; // reopens: the torn line goes, then 25 more and a checkpoint
    let (ok, out) = verify(&w, d.path());
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(&cps).unwrap();
    assert!(text.starts_with(std::str::from_utf8(&whole).unwrap()) && text.ends_with('\n'), "{text}");
    assert!(text.lines().all(|l| l.starts_with('{') && l.ends_with('}')), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zero_filled_space_ahead_of_the_records_is_no_record() {
    let w = World::new();
    let d = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let seg = d.path().join("segment-000001.jsonl");
    {
        let audit = Audit::start(&audit_config(&w, d.path())).unwrap();
        for i in 0..5 {
            let mut r = Record::now("request");
            r.incident_id = Some(format!("running-{i}"));
            audit.append_durable(&r).await.unwrap();
        }
        // While the writer runs, the segment is longer than its records: zeros follow them.
        let bytes = std::fs::read(&seg).unwrap();
        let end = bytes.iter().position(|&b| b == 0).expect("no zero-filled space ahead of the records");
        assert!(bytes[end..].iter().all(|&b| b == 0) && bytes[..end].ends_with(b"\n"));
        // An officer verifies the live log: the zeros are not a record.
        std::thread::sleep(Duration::from_millis(120)); // a checkpoint (every 50 ms)
        let (ok, out) = verify(&w, d.path());
        assert!(ok && out.contains("6 records"), "{out}"); // key_event + 5
        // The gateway dies here (no stop): what is on disk now is what a restart finds, the
        // zeros included, with half a record in them.
        for f in ["segment-000001.jsonl", "checkpoints.jsonl"] {
            std::fs::copy(d.path().join(f), crashed.path().join(f)).unwrap();
        }
    }
    let d = crashed;
    let seg = d.path().join("segment-000001.jsonl");
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = bytes.iter().position(|&b| b == 0).unwrap();
    bytes[end..end + 9].copy_from_slice(b"{\"seq\":6,");
    std::fs::write(&seg, &bytes).unwrap();
    small_log(&w, d.path()).await; // reopens, cuts the tail, 25 more, stops (checkpoint_now)
    let (ok, out) = verify(&w, d.path());
    assert!(ok, "{out}");
    let bytes = std::fs::read(&seg).unwrap();
    assert!(!bytes.contains(&0), "a stopped log's segment is cut to its records");
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("cut a torn tail of 9 bytes") && text.contains("\"incident-24\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inclusion_proofs_verify_and_fail_when_altered() {
    let w = World::new();
    let d = tempfile::tempdir().unwrap();
    small_log(&w, d.path()).await;
    let out =
        Command::new(BIN).args(["audit", "prove"]).arg(d.path()).args(["--incident", "incident-13"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let proof = d.path().join("proof.json");
    std::fs::write(&proof, &out.stdout).unwrap();
    let check = || {
        let o = Command::new(BIN)
            .args(["audit", "verify-proof", "--key"])
            .arg(w.path("gateway/audit-checkpoint.pub.pem"))
            .arg(&proof)
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let (code, text) = check();
    assert_eq!(code, Some(0), "{text}");
    let altered = String::from_utf8_lossy(&out.stdout).replace("incident-13", "incident-99");
    std::fs::write(&proof, altered).unwrap();
    let (code, text) = check();
    assert_eq!(code, Some(1), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_a_client_was_told() {
    let mut w = World::full();
    let gw = w.procs.len() - 1;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let c = w.client("officer", false);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let end = Instant::now() + Duration::from_millis(1500);
            let mut i = 0;
            while Instant::now() < end {
                let mut b = BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 1024);
                b.case_reference = format!("LOAD-{t}-{i}");
                i += 1;
                match post(
                    &c,
                    "/bio/v1",
                    XML11,
                    Some("CheckIdentityRequest"),
                    messages::envelope(SoapVersion::V11, &b.check_identity()),
                )
                .await
                {
                    Ok(r) => {
                        if let Some(id) = r.request_id {
                            ids.push(id);
                        }
                    }
                    Err(_) => break, // the gateway died under us
                }
            }
            ids
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    w.procs[gw].signal("KILL");
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    assert!(seen.len() > 20, "too little load: {}", seen.len());
    w.procs.remove(gw);
    // Restart on the same log: it opens (cutting any torn tail), and verifies.
    w.start_gateway();
    w.wait_ready();
    let gw = w.procs.len() - 1;
    w.procs[gw].signal("TERM");
    w.procs[gw].wait_exit(Duration::from_secs(10)).expect("gateway did not stop");
    let (ok, out) = verify(&w, &w.path("audit"));
    assert!(ok, "{out}");
    let text: String = spocgw::audit::segments(&w.path("audit"))
        .unwrap()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let missing: Vec<_> = seen.iter().filter(|id| !text.contains(&format!("\"incident_id\":\"{id}\""))).collect();
    assert!(missing.is_empty(), "{} of {} acknowledged incidents missing", missing.len(), seen.len());
    // Fingerprint data, names and plain document numbers never reach the log.
    assert!(!text.contains("NOVAKOVA") && !text.contains("X1234567"), "personal data in the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_requests_and_nothing_is_forwarded() {
    let mut w = World::new();
    let audit = w.path("audit");
    let Some(_guard) = Tmpfs::mount(&audit, "size=96k") else { return };
    w.start_ministry();
    w.start_gateway();
    w.wait_ready();
    let c = w.client("officer", false);
    let send = |case: String| {
        let c = c.clone();
        async move {
            let mut b = BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 1024);
            b.case_reference = case;
            post(
                &c,
                "/bio/v1",
                XML11,
                Some("CheckIdentityRequest"),
                messages::envelope(SoapVersion::V11, &b.check_identity()),
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(send("BEFORE-FULL".into()).await.status, 200);
    // Fill the disk, leaving less than one record.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1k", "count=200"])
        .arg(format!("of={}", audit.join("filler").display()))
        .output();
    // The last page the segment already has may still take a record or two; after that,
    // every request is refused before it is forwarded.
    let mut refused = Vec::new();
    let mut passed = Vec::new();
    for i in 0..12 {
        let case = format!("FULL-{i:02}");
        let r = send(case.clone()).await;
        if r.status == 503 {
            assert_eq!(fault_code(&r).as_deref(), Some("AuditUnavailable"));
            refused.push(case);
        } else {
            assert_eq!(r.status, 200);
            passed.push(case);
        }
    }
    assert!(refused.len() >= 8, "passed: {passed:?}");
    // Once refusals start, the disk's last bytes may still take one smaller batch (a refused
    // batch held the previous outcome record too), never more.
    let first_refusal = refused.first().cloned().unwrap_or_default();
    let after: Vec<&String> = passed.iter().filter(|c| **c > first_refusal).collect();
    assert!(after.len() <= 1, "refused, then passed again and again: {passed:?} {refused:?}");
    let (status, body) = admin_get(w.admin_port, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("audit: failing"), "{body}");
    std::thread::sleep(Duration::from_millis(100)); // the simulator writes its log every 20 ms
    let sim = std::fs::read_to_string(w.path("ministry.log")).unwrap();
    assert!(sim.contains("\"case_reference\":\"BEFORE-FULL\""), "{sim}");
    for case in &passed {
        assert!(
            sim.contains(&format!("\"case_reference\":\"{case}\"")),
            "{case} passed but the Ministry did not see it"
        );
    }
    for case in &refused {
        assert!(
            !sim.contains(&format!("\"case_reference\":\"{case}\"")),
            "the Ministry received {case}, which was not recorded"
        );
    }
    // Space again: the gateway recovers by itself.
    std::fs::remove_file(audit.join("filler")).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let mut ok = false;
    while Instant::now() < end && !ok {
        ok = send("AFTER".into()).await.status == 200;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "did not recover after space was freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_segments_and_the_rest_still_verifies() {
    let w = World::new();
    let d = tempfile::tempdir().unwrap();
    let mut cfg = audit_config(&w, d.path());
    cfg.segment_max_bytes = 4096;
    cfg.retention_s = 1;
    let write = |audit: std::sync::Arc<Audit>, from: u32, n: u32| async move {
        for i in from..from + n {
            let mut r = Record::now("request");
            r.incident_id = Some(format!("incident-{i}"));
            r.operation = Some("CheckIdentityRequest".into());
            audit.append_durable(&r).await.unwrap();
        }
        audit.checkpoint_now().await.unwrap();
    };
    let audit = Audit::start(&cfg).unwrap();
    write(audit.clone(), 0, 60).await;
    // The peer's copy, taken now: it keeps what retention will prune here.
    let copy = tempfile::tempdir().unwrap();
    for f in spocgw::audit::segments(d.path()).unwrap() {
        let text = std::fs::read(&f).unwrap();
        std::fs::write(copy.path().join(f.file_name().unwrap()), &text[..spocgw::audit::records_end(&text)]).unwrap();
    }
    let before = spocgw::audit::segments(d.path()).unwrap().len();
    assert!(before >= 2, "{before} segments");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    write(audit.clone(), 60, 60).await;
    let after = spocgw::audit::segments(d.path()).unwrap();
    assert!(!after.iter().any(|p| p.ends_with("segment-000001.jsonl")), "nothing pruned: {after:?}");
    assert!(d.path().join("anchor.json").exists());
    // Pruning is accepted only when the verifier expects it.
    let (ok, out) = verify(&w, d.path());
    assert!(!ok && out.contains("were pruned") && out.contains("--allow-pruned-before"), "{out}");
    let tomorrow = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let tomorrow = format!("{:04}-{:02}-{:02}", tomorrow.year(), u8::from(tomorrow.month()), tomorrow.day());
    let (ok, out) = verify_with(&w, d.path(), &["--allow-pruned-before", &tomorrow]);
    assert!(ok && out.contains("pruned by retention"), "{out}");
    // 1 start record + 120: the count includes the pruned part, which the anchor stands for.
    assert!(out.contains("121 records"), "{out}");
    let (ok, out) = verify_with(&w, d.path(), &["--allow-pruned-before", "2020-01-01"]);
    assert!(!ok && out.contains("not only before"), "records pruned after the date given: {out}");
    // The copy that still holds the pruned records proves them: the log verifies whole.
    let (ok, out) = verify_with(&w, d.path(), &["--peer-copy", copy.path().to_str().unwrap()]);
    assert!(ok && out.contains("holds them and they give the anchor's tree"), "{out}");
    // Another log's records do not.
    let other = tempfile::tempdir().unwrap();
    small_log(&w, other.path()).await;
    let (ok, out) = verify_with(&w, d.path(), &["--peer-copy", other.path().to_str().unwrap()]);
    assert!(!ok && out.contains("not this log's pruned prefix"), "{out}");
    // A record altered after the anchor is still caught.
    let last = after.last().unwrap();
    let text = std::fs::read_to_string(last).unwrap().replacen("incident-1", "incident-X", 1);
    std::fs::write(last, text).unwrap();
    let (ok, out) = verify_with(&w, d.path(), &["--allow-pruned-before", &tomorrow]);
    assert!(!ok, "{out}");
}

/// The officer's identity check, answered 200 (its request and outcome then stand in the log).
async fn officer_checks_identity(w: &World) {
    let r = post(
        &w.client("officer", false),
        "/bio/v1",
        XML11,
        Some("CheckIdentityRequest"),
        messages::envelope(
            SoapVersion::V11,
            &BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 1024).check_identity(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_log_is_itself_recorded_and_one_writer_owns_the_log() {
    let w = World::full();
    officer_checks_identity(&w).await;
    let query = || {
        let out = Command::new(BIN)
            .args(["audit", "query"])
            .arg(w.path("audit"))
            .args(["--officer", "OFF-0001"])
            // Anyone sets USER: the record names the uid the kernel gives the reader instead.
            .env("USER", "innocent-colleague")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let rows = |listing: &str, event: &str| {
        listing.lines().filter(|l| l.split_whitespace().nth(2) == Some(event) && l.contains("OFF-0001")).count()
    };
    // The outcome (written within 10 ms of the reply) names only the incident and how it
    // ended; the search joins it to its request's record.
    let mut listing = query();
    let end = Instant::now() + Duration::from_secs(10);
    while rows(&listing, "outcome") == 0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
        listing = query();
    }
    assert_eq!((rows(&listing, "request"), rows(&listing, "outcome")), (1, 1), "{listing}");
    let out = Command::new(BIN)
        .args(["audit", "query"])
        .arg(w.path("audit"))
        .args(["--officer", "OFF-0001", "--code", "ok", "--json"])
        .output()
        .unwrap();
    let stored = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(stored.lines().count(), 1, "{stored}");
    let outcome: serde_json::Value = serde_json::from_str(stored.trim()).unwrap();
    assert_eq!(outcome["event"], "outcome", "{stored}");
    assert_eq!(outcome["operation"], "CheckIdentityRequest", "{stored}");
    assert_eq!(outcome["status"], 200, "{stored}");
    assert!(outcome.get("client").is_none() && outcome.get("officer_id").is_none(), "{stored}");
    let segments_text = || -> String {
        spocgw::audit::segments(&w.path("audit")).unwrap().iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
    };
    let end = Instant::now() + Duration::from_secs(10);
    while !segments_text().contains("\"event\":\"audit_access\"") && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = segments_text();
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:").map(|r| r.split_whitespace().next().unwrap().to_owned()))
        .unwrap();
    assert!(text.contains(&format!("audit query officer=OFF-0001 by uid {uid} (")), "{text}");
    assert!(!text.contains("innocent-colleague"), "{text}");
    assert!(text.contains("\"event\":\"key_event\"") && text.contains("police listener certificate "), "{text}");
    // A second gateway on the same log is refused: one writer per log.
    let out = Command::new(BIN).args(["serve", "--config"]).arg(w.path("gateway.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another process writes this audit log"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, out) = verify(&w, &w.path("audit"));
    assert!(ok, "{out}");
}

#[test]
fn an_unwritable_audit_directory_stops_the_gateway_at_start() {
    let w = World::new();
    let audit = w.path("audit");
    let Some(guard) = Tmpfs::mount(&audit, "ro,size=64k") else { return };
    let out = Command::new(BIN).args(["serve", "--config"]).arg(w.path("gateway.toml")).output();
    drop(guard);
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("audit") && err.contains("Read-only"), "{err}");
    // Nothing listens: nothing could have been forwarded.
    assert!(std::net::TcpStream::connect(("127.0.0.1", w.gateway_port)).is_err());
}

/// Group commit without a writer thread: concurrent requests each get their own sequence
/// number, records nobody waits on are written although no request follows them, checkpoints
/// come by count (not only by time), and dropping the log closes it (final checkpoint, segment
/// cut to its records).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_committed_by_whoever_comes_first_and_nothing_is_left_behind() {
    let w = World::new();
    let d = tempfile::tempdir().unwrap();
    let mut cfg = audit_config(&w, d.path());
    // Checkpoints by time only after a minute: any sooner one came by count.
    cfg.checkpoint_interval_ms = 60_000;
    cfg.checkpoint_every = 10;
    let seg = d.path().join("segment-000001.jsonl");
    let records = || -> Vec<String> {
        let bytes = std::fs::read(&seg).unwrap();
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8(bytes[..end].to_vec()).unwrap().lines().map(str::to_owned).collect()
    };
    let checkpoint_sizes = || -> Vec<u64> {
        std::fs::read_to_string(d.path().join("checkpoints.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["tree_size"].as_u64().unwrap())
            .collect()
    };
    let eventually = async |what: &str, ok: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(5);
        while !ok() {
            assert!(Instant::now() < end, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let audit = Audit::start(&cfg).unwrap();
    assert_eq!(records().len(), 1, "the start record");
    // Idle: the log's own thread sleeps until the next checkpoint; outcome records wake it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..3 {
        let mut r = Record::now("outcome");
        r.incident_id = Some(format!("outcome-{i}"));
        audit.append(&r);
    }
    eventually("outcome records with no request after them were not written", &|| records().len() == 4).await;
    // 200 requests at once: each acknowledged with its own sequence number.
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let a = audit.clone();
            tokio::spawn(async move {
                let mut r = Record::now("request");
                r.incident_id = Some(format!("incident-{i}"));
                a.append_durable(&r).await.unwrap()
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (4..204).collect::<Vec<u64>>());
    let lines = records();
    assert_eq!(lines.len(), 204);
    for i in 0..200 {
        assert_eq!(lines.iter().filter(|l| l.contains(&format!("\"incident-{i}\""))).count(), 1, "incident-{i}");
    }
    // By count: at most 9 records after the last checkpoint.
    eventually("no checkpoint by count", &|| checkpoint_sizes().iter().any(|&s| s >= 195)).await;
    // Dropping the last handle closes the log: a checkpoint of every record, no zeros after them.
    drop(audit);
    eventually("not closed at drop", &|| {
        checkpoint_sizes().last() == Some(&204) && std::fs::read(&seg).unwrap().iter().all(|&b| b != 0)
    })
    .await;
    let (ok, out) = verify(&w, d.path());
    assert!(ok && out.contains("204 records"), "{out}");
}

/// Requests that the runtime is about to run join the leader's batch: on one thread, fifty
/// requests arriving together are made durable by one fsync, not fifty; a lone request is not
/// held back (its batch closes after one pass that brings nothing).
#[tokio::test(flavor = "current_thread")]
async fn a_leader_gathers_the_records_of_requests_about_to_run_into_one_batch() {
    let w = World::new();
    let d = tempfile::tempdir().unwrap();
    let audit = Audit::start(&audit_config(&w, d.path())).unwrap();
    let written = AuditMetrics::default();
    audit.attach_metrics(written.clone());
    let request = |i: usize| {
        let a = audit.clone();
        tokio::spawn(async move {
            let mut r = Record::now("request");
            r.incident_id = Some(format!("incident-{i}"));
            a.append_durable(&r).await.unwrap()
        })
    };
    request(0).await.unwrap();
    assert_eq!((written.records.get(), written.batches.get()), (1, 1), "a lone request");
    let tasks: Vec<_> = (1..=50).map(request).collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(written.records.get(), 51);
    assert_eq!(written.batches.get(), 2, "fifty requests arriving together: one batch");
    drop(audit);
    let (ok, out) = verify(&w, d.path());
    assert!(ok, "{out}");
}

fn verify_with(w: &World, dir: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(dir)
        .arg("--key")
        .arg(w.path("gateway/audit-checkpoint.pub.pem"))
        .args(extra)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_checkpoint_proves_truncation_and_rewritten_history() {
    let w = World::new();
    let d = tempfile::tempdir().unwrap();
    small_log(&w, d.path()).await;
    let kept = w.path("kept-checkpoint.json");
    let cps = std::fs::read_to_string(d.path().join("checkpoints.jsonl")).unwrap();
    std::fs::write(&kept, cps.lines().last().unwrap()).unwrap();
    let kept_s = kept.to_str().unwrap();
    // The log grows: still consistent with what the auditor kept.
    let audit = Audit::start(&audit_config(&w, d.path())).unwrap();
    audit.append_durable(&Record::now("request")).await.unwrap();
    audit.checkpoint_now().await.unwrap();
    drop(audit);
    released(d.path());
    let (ok, out) = verify_with(&w, d.path(), &["--expect", kept_s]);
    assert!(ok && out.contains("consistent with the kept checkpoint"), "{out}");

    // Dropping the last records, back to a checkpoint at least 7 records earlier, and the
    // checkpoints that cover them: the signatures and the tree of what is left still verify (a
    // cut anywhere else leaves records no checkpoint covers, which fail); the kept checkpoint
    // does not.
    let mut l = lines(d.path());
    l.retain(|x| !x.trim_matches('\0').is_empty());
    let keep = std::fs::read_to_string(d.path().join("checkpoints.jsonl"))
        .unwrap()
        .lines()
        .map(|c| serde_json::from_str::<spocgw::audit::Checkpoint>(c).unwrap().tree_size as usize)
        .filter(|&n| n + 7 <= l.len())
        .max()
        .unwrap();
    write_lines(d.path(), &l[..keep]);
    let cps: Vec<String> = std::fs::read_to_string(d.path().join("checkpoints.jsonl"))
        .unwrap()
        .lines()
        .filter(|c| serde_json::from_str::<spocgw::audit::Checkpoint>(c).unwrap().tree_size <= keep as u64)
        .map(str::to_owned)
        .collect();
    std::fs::write(d.path().join("checkpoints.jsonl"), cps.join("\n") + "\n").unwrap();
    assert!(verify(&w, d.path()).0, "the plain check cannot see a clean truncation (docs/audit.md says so)");
    let (ok, out) = verify_with(&w, d.path(), &["--expect", kept_s]);
    assert!(!ok && out.contains("records were removed"), "{out}");

    // A history rewritten by someone holding the checkpoint key (another log, same key and
    // origin, as long as the kept one): every signature verifies, the proof does not.
    let other = tempfile::tempdir().unwrap();
    small_log(&w, other.path()).await;
    let audit = Audit::start(&audit_config(&w, other.path())).unwrap();
    for _ in 0..3 {
        audit.append_durable(&Record::now("request")).await.unwrap();
    }
    audit.checkpoint_now().await.unwrap();
    drop(audit);
    released(other.path());
    assert!(verify(&w, other.path()).0);
    let (ok, out) = verify_with(&w, other.path(), &["--expect", kept_s]);
    assert!(!ok && out.contains("history was rewritten"), "{out}");
}

/// Officer tools that cannot mislead: a time with an offset is the same instant as in UTC; an
/// unknown value, a time that does not parse or a directory that is not a log is an error (exit
/// 2), and nothing is written there; the table names purpose, case, terminal and decision; CSV
/// defuses formulas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_mean_what_they_say_or_refuse() {
    let w = World::full();
    officer_checks_identity(&w).await;
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(["audit"]).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let dir = w.path("audit");
    let dir = dir.to_str().unwrap();
    // The request's time, written as UTC and as the same instant at +01:00.
    let (_, json, _) = run(&["query", dir, "--officer", "OFF-0001", "--format", "json"]);
    let time = serde_json::from_str::<serde_json::Value>(json.lines().next().unwrap()).unwrap()["time"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = time::OffsetDateTime::parse(&time, &time::format_description::well_known::Rfc3339).unwrap();
    let utc = at.replace_nanosecond(0).unwrap().format(&time::format_description::well_known::Rfc3339).unwrap();
    let plus1 = at
        .replace_nanosecond(0)
        .unwrap()
        .to_offset(time::macros::offset!(+1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let count = |since: &str| {
        run(&["query", dir, "--officer", "OFF-0001", "--since", since, "--format", "json"]).1.lines().count()
    };
    assert!(count(&utc) >= 1);
    assert_eq!(count(&plus1), count(&utc), "{plus1} is {utc}");
    let day = &time[..10];
    assert_eq!(
        run(&["query", dir, "--officer", "OFF-0001", "--until", day, "--format", "json"]).1.lines().count(),
        count(&utc)
    );
    for (args, needle) in [
        (vec!["--since", "yesterday"], "--since \"yesterday\""),
        (vec!["--decision", "denied"], "allow or deny"),
        (vec!["--code", "policydenied"], "PolicyDenied"),
        (vec!["--operation", "Verify"], "VerifyFingerprintRequest"),
        (vec!["--format", "xml"], "table, json or csv"),
    ] {
        let (code, out, err) = run(&[&["query", dir][..], &args].concat());
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(needle) && out.is_empty(), "{args:?}: {err}");
    }
    let wrong = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&["query", wrong.path().to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not an audit log"), "{err}");
    assert_eq!(std::fs::read_dir(wrong.path()).unwrap().count(), 0, "nothing written in a directory that is not a log");
    let (code, _, err) = run(&["export", wrong.path().to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    // The table's columns, and CSV.
    let (_, table, _) = run(&["query", dir, "--officer", "OFF-0001"]);
    let header = table.lines().next().unwrap();
    for col in ["purpose", "case", "bcp", "terminal", "decision"] {
        assert!(header.split_whitespace().any(|c| c == col), "{header}");
    }
    assert!(table.contains("IDENTITY_DOUBT") && table.contains("officer-0001") && table.contains("allow"), "{table}");
    let (_, csv, _) = run(&["query", dir, "--officer", "OFF-0001", "--purpose", "IDENTITY_DOUBT", "--format", "csv"]);
    assert!(
        csv.starts_with("seq,time,event,incident,operation,purpose,case,bcp,officer,terminal,decision,status,code\n"),
        "{csv}"
    );
    assert!(csv.lines().count() >= 2, "{csv}");
    // Filters normalise what has one spelling (a purpose's case, a fingerprint's case and
    // colons, a document number's hyphens) and refuse what names nothing.
    let (code, _, err) = run(&["query", dir, "--purpose", "NO_SUCH_PURPOSE"]);
    assert!(code == Some(2) && err.contains("not a purpose") && err.contains("IDENTITY_DOUBT"), "{err}");
    let by = |args: &[&str]| run(&[&["query", dir, "--format", "json"][..], args].concat());
    let exact = by(&["--purpose", "IDENTITY_DOUBT"]).1;
    assert!(!exact.is_empty());
    assert_eq!(by(&["--purpose", "identity_doubt"]).1, exact);
    let first: serde_json::Value = serde_json::from_str(exact.lines().next().unwrap()).unwrap();
    let fp = first["client"]["fingerprint"].as_str().unwrap().to_owned();
    let colons: Vec<String> =
        fp.to_uppercase().as_bytes().chunks(2).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
    let by_fp = by(&["--client", &fp]).1;
    assert!(!by_fp.is_empty());
    assert_eq!(by(&["--client", &colons.join(":")]).1, by_fp);
    let (code, _, err) = run(&["query", dir, "--client", "AB:CD"]);
    assert!(code == Some(2) && err.contains("64 hex digits"), "{err}");
    let (code, _, err) = run(&["query", dir, "--code", "revoked"]);
    assert_eq!(code, Some(0), "handshake refusals are queryable by their code: {err}");
    let key = w.path("gateway/audit-pseudonym.key");
    let key = key.to_str().unwrap();
    let doc =
        |number: &str, state: &str| by(&["--document", number, "--issuing-state", state, "--pseudonym-key", key]).1;
    let found = doc("X1234567", "CZE");
    assert!(found.contains("CheckIdentityRequest") && !found.contains("X1234567"), "{found}");
    assert_eq!(doc("x123-4567", "cze"), found, "the number's spelling does not matter");
    assert_eq!(doc("X1234567", "SVK"), "", "the same number of another state is another document");
    // export in a window.
    let (code, exported, _) = run(&["export", dir, "--since", &utc]);
    assert_eq!(code, Some(0));
    assert!(exported.lines().count() >= 1 && exported.lines().all(|l| l.contains("\"time\":\"")), "{exported}");
    let (_, none, _) = run(&["export", dir, "--until", "2000-01-01"]);
    assert_eq!(none, "");
}

/// A checkpoint signer that signs once (the checkpoint at start, on the caller's thread), then
/// panics: the duties thread, which signs every later checkpoint, dies.
struct SignsOnce(spocgw::audit::FileSigner, std::sync::atomic::AtomicBool);

impl spocgw::audit::CheckpointSigner for SignsOnce {
    fn public_key(&self) -> Vec<u8> {
        self.0.public_key()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        assert!(!self.1.swap(true, std::sync::atomic::Ordering::SeqCst), "the signer broke (test)");
        self.0.sign(message)
    }
}

/// A duties thread that ends (here a panic, as an overflowing retention caused) turns the log
/// unhealthy, refuses new records, and answers a checkpoint request instead of hanging the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_duties_thread_fails_readiness_and_does_not_hang_the_stop() {
    let w = World::new();
    let d = tempfile::tempdir().unwrap();
    let cfg = audit_config(&w, d.path());
    let signer = spocgw::audit::FileSigner::load(&w.path("gateway/audit-checkpoint.key")).unwrap();
    let key = zeroize::Zeroizing::new(vec![1; 32]);
    let audit = Audit::start_with(&cfg, Box::new(SignsOnce(signer, Default::default())), key).unwrap();
    assert!(audit.is_healthy());
    // The next checkpoint (50 ms later) kills the duties thread.
    audit.append_durable(&Record::now("request")).await.unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while audit.is_healthy() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!audit.is_healthy(), "the duties thread died and the log still says healthy");
    let stop = tokio::time::timeout(Duration::from_secs(5), audit.checkpoint_now()).await;
    assert!(matches!(stop, Ok(Err(ref e)) if e.contains("duties thread has ended")), "{stop:?}");
    let refused = audit.append_durable(&Record::now("request")).await;
    assert!(refused.is_err_and(|e| e.contains("duties thread has ended")));
}

/// `audit report` needs the trust root (`--key`), writes its page as a new 0600 file (never
/// through a link planted at `--out`, never keeping an old file's mode), and exits 1 when the
/// log does not verify, so that a scheduled job notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_trusts_only_the_key_given_writes_privately_and_fails_on_tampering() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let w = World::new();
    let d = tempfile::tempdir().unwrap();
    small_log(&w, d.path()).await;
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("report.html");
    let report = |key: Option<&std::path::Path>| {
        let mut c = Command::new(BIN);
        c.args(["audit", "report"]).arg(d.path()).arg("--out").arg(&out);
        if let Some(k) = key {
            c.arg("--key").arg(k);
        }
        let o = c.output().unwrap();
        (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    };
    let key = w.path("gateway/audit-checkpoint.pub.pem");
    assert_eq!(report(None).0, Some(2), "no trust root given");
    // A link planted at --out, to a file the officer can write.
    let victim = out_dir.path().join("victim.txt");
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, &out).unwrap();
    let (code, text) = report(Some(&key));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("passed (key ID "), "{text}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep", "the link was followed");
    let meta = std::fs::symlink_metadata(&out).unwrap();
    assert!(meta.file_type().is_file() && meta.mode() & 0o777 == 0o600, "{:o}", meta.mode());
    // An existing readable file does not keep its mode.
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(report(Some(&key)).0, Some(0));
    assert_eq!(std::fs::metadata(&out).unwrap().mode() & 0o777, 0o600);
    // The log altered and re-signed with a new key that replaces the one beside it: the page and
    // the exit code say so, whatever the file beside the log says.
    let other = World::new();
    std::fs::copy(other.path("gateway/audit-checkpoint.pub.pem"), d.path().join("checkpoint.pub.pem")).unwrap();
    let mut l = lines(d.path());
    l[5] = l[5].replace("incident-4", "incident-X");
    write_lines(d.path(), &l);
    let (code, text) = report(Some(&key));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAILED") && std::fs::read_to_string(&out).unwrap().contains("Log verification: FAILED"));
}

/// How many records of the log carry `needle`.
fn count_in_log(dir: &std::path::Path, needle: &str) -> usize {
    spocgw::audit::segments(dir)
        .unwrap()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().lines().filter(|l| l.contains(needle)).count())
        .sum()
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A spooled record is appended once: a file the writer could not remove (it comes back here,
/// as a root-owned file in a root-owned spool did) is not appended again, at the next look or
/// after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_record_is_appended_once_even_when_its_file_stays() {
    let w = World::new();
    let d = tempfile::tempdir().unwrap();
    let cfg = audit_config(&w, d.path());
    let audit = Audit::start(&cfg).unwrap();
    let mut r = Record::now("audit_access");
    r.detail = Some("audit query --officer X by uid 4242 (test)".into());
    let file = spocgw::audit::spool(d.path(), &r).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let needle = "by uid 4242 (test)";
    assert!(wait_until(Duration::from_secs(5), || count_in_log(d.path(), needle) == 1));
    // The file comes back (the writer could not remove it): never appended again.
    std::fs::write(&file, &bytes).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !file.exists()), "the writer removes what it already holds");
    std::fs::write(&file, &bytes).unwrap();
    drop(audit);
    released(d.path());
    let audit = Audit::start(&cfg).unwrap();
    audit.checkpoint_now().await.unwrap();
    drop(audit);
    released(d.path());
    assert_eq!(count_in_log(d.path(), needle), 1, "appended again");
    assert!(!file.exists());
}

/// Officer tools run as another user, as a package install sets them up: the log's directory
/// belongs to the gateway (here root) and to the officers' group (here nogroup, set-group-ID),
/// and an officer (here nobody) reads it and leaves its access record without sudo; the
/// gateway appends it once and removes the file. With sudo (root, umask 077) the same. A tool
/// never creates a spool in a log another user owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officers_read_the_log_as_themselves_and_each_access_is_recorded_once() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false);
    if !root || !spocgw_common_have("setpriv") {
        assert!(std::env::var_os("CI").is_none(), "this test runs tools as another uid: root and setpriv in CI");
        eprintln!("SKIPPED: not root, or no setpriv");
        return;
    }
    let w = World::new();
    let top = tempfile::tempdir().unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = top.path().join("audit");
    std::fs::create_dir(&d).unwrap();
    assert!(Command::new("chgrp").arg("65534").arg(&d).status().unwrap().success());
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o2750)).unwrap();
    let audit = Audit::start(&audit_config(&w, &d)).unwrap();
    audit.append_durable(&Record::now("request")).await.unwrap();
    let as_officer = |umask: &str, user: Option<&str>| {
        let mut c = Command::new("setpriv");
        match user {
            Some(u) => c.args(["--reuid", u, "--regid", u, "--clear-groups"]),
            None => c.args(["--reuid", "0"]),
        };
        let script = format!("umask {umask}; exec \"$0\" audit query \"$1\" --format json");
        let out = c.args(["sh", "-c", &script, BIN]).arg(&d).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = as_officer("077", Some("65534"));
    assert_eq!(code, Some(0), "an officer in the log's group reads it: {err}");
    let (code, err) = as_officer("077", None);
    assert_eq!(code, Some(0), "{err}");
    let spool = d.join("spool");
    assert!(wait_until(Duration::from_secs(5), || count_in_log(&d, "by uid 65534") == 1
        && count_in_log(&d, "by uid 0") == 1));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!((count_in_log(&d, "by uid 65534"), count_in_log(&d, "by uid 0")), (1, 1), "each access once");
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0, "the spool is emptied");
    drop(audit);
    released(&d);

    // A log owned by another user, without a spool: the tool refuses rather than make one the
    // gateway could not empty.
    let theirs = top.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    for f in ["segment-000001.jsonl", "checkpoints.jsonl"] {
        std::fs::copy(d.join(f), theirs.join(f)).unwrap();
    }
    assert!(Command::new("chown").arg("-R").arg("65534:65534").arg(&theirs).status().unwrap().success());
    let out = Command::new(BIN).args(["audit", "query"]).arg(&theirs).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("creates it at start"));
    assert!(!theirs.join("spool").exists());
}

fn spocgw_common_have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}
