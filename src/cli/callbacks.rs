//! `spocgw callbacks pending --config gateway.toml`: the requests forwarded whose callback is
//! still awaited (CSN 36 9791 certificate requests), as the correlation journal beside the audit
//! log holds them: messageID, caller, route, when forwarded, and how long until the callback
//! would come too late. Read-only: it can run beside the gateway.

use std::path::Path;
use std::process::ExitCode;

use crate::gateway::config::GatewayConfig;
use crate::gateway::correlation::{JOURNAL, now_ms, replay};

pub fn pending(config: &Path, json: bool) -> ExitCode {
    let cfg = match GatewayConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spocgw callbacks: {e}");
            return ExitCode::from(2);
        }
    };
    let path = cfg.audit.dir.join(JOURNAL);
    let (seen, _) = match replay(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spocgw callbacks: {e}");
            return ExitCode::from(1);
        }
    };
    let ttl_ms = cfg.policy.callback_ttl_s.saturating_mul(1000);
    let now = now_ms();
    let mut live: Vec<_> = seen.into_iter().filter(|(_, p)| now.saturating_sub(p.at_ms) <= ttl_ms).collect();
    live.sort_by_key(|(_, p)| p.at_ms);
    let at = |ms: u64| crate::encoding::rfc3339_micros(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
    if json {
        for (id, p) in &live {
            let line = serde_json::json!({
                "message_id": id,
                "caller": p.caller,
                "route": p.route,
                "forwarded_at": at(p.at_ms),
                "expires_in_s": (p.at_ms + ttl_ms).saturating_sub(now) / 1000,
            });
            println!("{line}");
        }
        return ExitCode::SUCCESS;
    }
    println!("{} callback(s) awaited (TTL {} s)", live.len(), cfg.policy.callback_ttl_s);
    if !live.is_empty() {
        println!(
            "{:<38} {:<28} {:<20} {:<16} {:>10}",
            "messageID", "forwarded at (UTC)", "route", "caller", "expires in"
        );
    }
    for (id, p) in &live {
        let caller = p.caller.get(..16).unwrap_or(&p.caller);
        let left = (p.at_ms + ttl_ms).saturating_sub(now) / 1000;
        println!("{id:<38} {:<28} {:<20} {caller:<16} {left:>9}s", at(p.at_ms), p.route);
    }
    ExitCode::SUCCESS
}
