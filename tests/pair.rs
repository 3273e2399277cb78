//! The active-active pair (docs/pair.md), as `make pair-demo` runs it: two gateways behind a real
//! HAProxy on loopback, the simulated Ministry and police receiver. Every scenario must pass:
//! requests spread over both; a callback for a request forwarded through A delivered at B and its
//! replay refused at A; both logs cosigned by the peer's witness; A killed with SIGKILL under
//! load (each client fails at most once, B takes all traffic, every incident ID a client got is
//! in a log); A restarted catches up (correlations, witness); both logs verify against the
//! peer's witness; A's log restored from B's copy; a cut log caught by B's witness.

mod common;

use std::process::Command;

#[test]
fn a_pair_survives_a_kill_and_neither_log_can_be_rewritten_alone() {
    if !common::have_tool("haproxy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::BIN).args(["pair-demo", "--keep"]).arg(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let table: Vec<&str> = text.lines().filter(|l| l.ends_with("  yes") || l.ends_with("  NO")).collect();
    assert!(
        out.status.success() && table.len() >= 13 && table.iter().all(|l| l.ends_with("  yes")),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for scenario in [
        "served by both",
        "arriving at B",
        "replayed at A",
        "kill -9 A under load",
        "every incident ID",
        "A restarted: a callback",
        "B witnesses A's log again",
        "checkpoints agree",
        "`audit restore`",
        "truncation detected",
    ] {
        assert!(table.iter().any(|l| l.contains(scenario)), "no row for {scenario:?}:\n{text}");
    }
    assert!(text.contains("failover: "), "{text}");
    // The CLI an officer uses says the same: the restored log verifies, with B's cosignatures
    // and B's witness state; the cut one does not.
    let state = std::fs::read_dir(dir.path().join("pair-b/witness"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "note"))
        .unwrap();
    let verify = |log: &str| {
        Command::new(common::BIN)
            .args(["audit", "verify"])
            .arg(dir.path().join(log))
            .arg("--key")
            .arg(dir.path().join("gateway/audit-checkpoint.pub.pem"))
            .arg("--witness")
            .arg(dir.path().join("pair/gateway-b-witness.vkey"))
            .arg("--witnessed")
            .arg(&state)
            .output()
            .unwrap()
    };
    let ok = verify("audit-a");
    let ok_text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success() && ok_text.contains("cosigned by gateway-b/witness") && ok_text.contains("witnessed by"), "{ok_text}");
    let cut = verify("cut-a");
    let cut_text = String::from_utf8_lossy(&cut.stdout);
    assert!(cut.status.code() == Some(1) && cut_text.contains("truncated"), "{cut_text}");
}
