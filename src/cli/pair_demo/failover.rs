//! The pair under failure: SIGKILL of appliance A under load through HAProxy, its restart and
//! catch-up, then both logs checked against each other's witness, A's log rebuilt from B's copy,
//! and a cut log caught by the peer's witness.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::demo::{client, describe};
use super::Pair;
use super::scenarios::{Rows, cosigned, is_recorded, log_text, vkey, wait_until, witnessed};
use crate::audit::{recovery, verify};
use crate::sim::receiver::Receiver;

/// Load clients through the balancer.
const WORKERS: usize = 8;
/// The survivor must take every request within this of the kill (HAProxy checks every 500 ms
/// and takes a server out after two failures; a refused connection is redispatched at once).
const TAKEOVER_MS: u128 = 2500;

/// One request's outcome under load: when it ended, and its incident ID or why it failed.
type Outcome = (Instant, Result<String, String>);

async fn worker(dir: std::path::PathBuf, port: u16, stop: Arc<AtomicBool>, out: Arc<Mutex<Vec<Outcome>>>) {
    let Ok(c) = client(&dir, port, "officer", false) else { return };
    while !stop.load(Ordering::Relaxed) {
        let r = super::scenarios::verify_fingerprint(&c).await;
        let outcome = match &r {
            Ok(reply) if reply.status == 200 => reply.request_id.clone().ok_or_else(|| "no incident ID".to_owned()),
            _ => Err(describe(&r, "")),
        };
        if let Ok(mut v) = out.lock() {
            v.push((Instant::now(), outcome));
        }
    }
}

pub(super) async fn kill_under_load(p: &mut Pair, rows: &mut Rows, received: &Receiver) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let out: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let tasks: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(worker(p.dir.clone(), p.ports.lb_police, stop.clone(), out.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = Instant::now();
    if let Some(a) = p.a.as_mut() {
        a.kill9();
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let outcomes = out.lock().map(|v| v.clone()).unwrap_or_default();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|(_, r)| r.is_err()).collect();
    let before = failed.iter().filter(|(at, _)| *at < killed).count();
    let last_ms = failed.iter().map(|(at, _)| at.saturating_duration_since(killed).as_millis()).max().unwrap_or(0);
    let after_ok = outcomes.iter().filter(|(at, r)| *at > killed && r.is_ok()).count();
    println!(
        "failover: {} requests by {WORKERS} clients through HAProxy; A killed (SIGKILL) after 2 s; {} failed ({} before the kill), \
         the last {last_ms} ms after it; {after_ok} served by B after the kill",
        outcomes.len(),
        failed.len(),
        before
    );
    rows.row(
        "kill -9 A under load: clients fail at most once, B takes all traffic",
        "<= 1 failure per client, B alone within 2.5 s",
        format!("{} of {} failed, last {last_ms} ms after the kill", failed.len(), outcomes.len()),
        before == 0 && failed.len() <= WORKERS && last_ms <= TAKEOVER_MS && after_ok > 0,
    );
    let (a, b) = (log_text(&p.dir.join("audit-a")), log_text(&p.dir.join("audit-b")));
    let ids: Vec<&String> = outcomes.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
    let missing = ids.iter().filter(|id| !is_recorded(&a, id) && !is_recorded(&b, id)).count();
    rows.row(
        "every incident ID a client received is in one of the two logs",
        "all recorded",
        if missing == 0 { "all recorded".into() } else { format!("{missing} of {} missing", ids.len()) },
        missing == 0 && !ids.is_empty(),
    );
    restart(p, rows, received).await
}

/// While A is down, B forwards a request whose callback comes to A once A is back: A took B's
/// correlations at start. A's log is cosigned again, extending what B witnessed before the kill.
async fn restart(p: &mut Pair, rows: &mut Rows, received: &Receiver) -> anyhow::Result<()> {
    let dir = p.dir.clone();
    let before = witnessed(&dir, "pair-b/witness", "spocgw-a").map_or(0, |w| w.body.size);
    let (message_id, asked) = super::scenarios::ask_certificate(&dir, p.ports.b_police, "PAIR-DOWN").await?;
    p.start_gateway('a')?;
    let ready = p.wait_ready('a', Duration::from_secs(30));
    // The first sync takes B's table; give it a tick.
    tokio::time::sleep(Duration::from_millis(800)).await;
    super::scenarios::call_back(&dir, p.ports.a.callback, &message_id, "<result>ok_received_correctly</result>")
        .await?;
    let delivered = wait_until(Duration::from_secs(5), || received.received().contains(&message_id)).await;
    rows.row(
        "A restarted: a callback for what B forwarded while A was down, at A",
        "ready, 200 ok_reception_ack, delivered",
        format!(
            "{}, {asked}, {}",
            if ready { "ready" } else { "not ready" },
            if delivered { "delivered" } else { "not delivered" }
        ),
        ready && asked == "200 ok_reception_ack" && delivered,
    );
    let b_vkey = vkey(&dir, "gateway-b")?;
    let again = wait_until(Duration::from_secs(15), || {
        witnessed(&dir, "pair-b/witness", "spocgw-a").is_some_and(|w| w.body.size > before)
            && cosigned(&dir, "audit-a", "gateway/audit-checkpoint.pub.pem", &b_vkey) > before
    })
    .await;
    let now = witnessed(&dir, "pair-b/witness", "spocgw-a").map_or(0, |w| w.body.size);
    rows.row(
        "A restarted: B witnesses A's log again, from where it stopped",
        "cosigned beyond the kill",
        format!("B witnessed A through {before} before the kill, {now} now"),
        again,
    );
    Ok(())
}

/// The newest checkpoint each log holds cosigned and what the peer's witness kept agree.
fn agree(dir: &Path) -> Option<(u64, u64)> {
    let (a_vkey, b_vkey) = (vkey(dir, "gateway-a").ok()?, vkey(dir, "gateway-b").ok()?);
    let a = cosigned(dir, "audit-a", "gateway/audit-checkpoint.pub.pem", &b_vkey);
    let b = cosigned(dir, "audit-b", "gateway-b/audit-checkpoint.pub.pem", &a_vkey);
    let wa = witnessed(dir, "pair-b/witness", "spocgw-a")?.body.size;
    let wb = witnessed(dir, "pair-a/witness", "spocgw-b")?.body.size;
    (a == wa && b == wb && a > 0 && b > 0).then_some((a, b))
}

/// One log checked whole and against what the peer witnessed of it.
/// A log restored from a copy may end in records its newest checkpoint does not cover yet (the
/// gateway's first checkpoint after the restore signs them): reported, not refused.
fn check(dir: &Path, log: &str, key: &str, state: &str, origin: &str, witness: &str) -> Result<String, String> {
    let key = dir.join(key);
    let w = witnessed(dir, state, origin).ok_or("no witnessed checkpoint")?;
    let opts = verify::Options {
        roots_at: vec![w.body.size],
        unsealed_reported: log.starts_with("restored"),
        ..Default::default()
    };
    let s = verify::verify(&dir.join(log), &key, &opts)?;
    let vkey = vkey(dir, witness).map_err(|e| e.to_string())?;
    let point = verify::public_point(&key)?;
    let size = recovery::check_witnessed(&s, &point, &vkey, &w)?;
    Ok(format!("{} records, witnessed through {size}", s.records))
}

pub(super) async fn verify_and_recover(p: &mut Pair, rows: &mut Rows) -> anyhow::Result<()> {
    let dir = p.dir.clone();
    let agreed = wait_until(Duration::from_secs(15), || agree(&dir).is_some()).await;
    rows.row(
        "cross-witnessed checkpoints agree (each log's newest cosigned = the peer's witness state)",
        "agree",
        match agree(&dir) {
            Some((a, b)) => format!("A {a}, B {b}"),
            None => "differ".into(),
        },
        agreed,
    );
    p.stop();
    let a = check(&dir, "audit-a", "gateway/audit-checkpoint.pub.pem", "pair-b/witness", "spocgw-a", "gateway-b");
    let b = check(&dir, "audit-b", "gateway-b/audit-checkpoint.pub.pem", "pair-a/witness", "spocgw-b", "gateway-a");
    rows.row(
        "both logs verify, and hold what the peer witnessed",
        "both verify",
        format!("A: {}; B: {}", a.as_ref().unwrap_or_else(|e| e), b.as_ref().unwrap_or_else(|e| e)),
        a.is_ok() && b.is_ok(),
    );
    // Disaster recovery: A's disk is lost; B's copy rebuilds it.
    let restored = recovery::restore(&dir.join("pair-b/log"), &dir.join("restored-a")).and_then(|_| {
        check(&dir, "restored-a", "gateway/audit-checkpoint.pub.pem", "pair-b/witness", "spocgw-a", "gateway-b")
    });
    rows.row(
        "A's disk lost: `audit restore` from B's copy, then verify",
        "verifies through the witnessed checkpoint",
        restored.clone().unwrap_or_else(|e| e),
        restored.is_ok(),
    );
    let cut = cut_log(&dir).and_then(|()| {
        check(&dir, "cut-a", "gateway/audit-checkpoint.pub.pem", "pair-b/witness", "spocgw-a", "gateway-b")
    });
    let alone =
        verify::verify(&dir.join("cut-a"), &dir.join("gateway/audit-checkpoint.pub.pem"), &Default::default()).is_ok();
    rows.row(
        "A's log cut back by root (verifies alone), checked against B's witness",
        "truncation detected",
        match &cut {
            Err(e) if e.starts_with("truncated") => "truncation detected".into(),
            Err(e) => e.clone(),
            Ok(s) => format!("not detected: {s}"),
        },
        alone && cut.as_ref().is_err_and(|e| e.starts_with("truncated")),
    );
    Ok(())
}

/// A copy of A's log cut back to its first checkpoint: consistent in itself (as an insider with
/// root could leave it), shorter than what B witnessed.
fn cut_log(dir: &Path) -> Result<(), String> {
    let log = verify::read_log(&dir.join("audit-a"))?;
    let first = log.checkpoints.iter().find(|c| c.tree_size > 0).ok_or("no checkpoint")?.tree_size;
    let out = dir.join("cut-a");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let mut seg = Vec::new();
    for (_, bytes, _) in log.records.iter().take(first as usize) {
        seg.extend_from_slice(bytes);
        seg.push(b'\n');
    }
    std::fs::write(out.join("segment-000001.jsonl"), seg).map_err(|e| e.to_string())?;
    let cps: String = log
        .checkpoints
        .iter()
        .filter(|c| c.tree_size <= first)
        .filter_map(|c| serde_json::to_string(c).ok())
        .map(|l| l + "\n")
        .collect();
    std::fs::write(out.join(crate::audit::CHECKPOINTS_FILE), cps).map_err(|e| e.to_string())
}
