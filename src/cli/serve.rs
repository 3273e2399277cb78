//! `spocgw serve --config FILE`, and `spocgw bench serve --config FILE`, the only way to run
//! the benchmark modes (`bare_proxy`).

use std::path::Path;
use std::process::ExitCode;

use crate::gateway::Gateway;
use crate::gateway::config::GatewayConfig;

pub fn run(file: &Path, bench: bool) -> ExitCode {
    let _log = super::init_logging();
    let cfg = match GatewayConfig::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spocgw serve: {e}");
            return ExitCode::from(2);
        }
    };
    if cfg.bare_proxy && !bench {
        eprintln!(
            "spocgw serve: {}: bare_proxy: a benchmark mode (requests forwarded without validation, policy or \
             audit) that only `spocgw bench serve` runs",
            file.display()
        );
        return ExitCode::from(2);
    }
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spocgw serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let gateway = match Gateway::start(&cfg, file).await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("spocgw serve: {e}");
                return ExitCode::from(2);
            }
        };
        // systemd (Type=notify): serving now; the watchdog pinged from the runtime.
        super::notify::notify("READY=1");
        let watchdog = super::notify::watchdog_interval().map(|every| tokio::spawn(super::notify::watchdog(every)));
        super::termination().await;
        super::notify::notify("STOPPING=1");
        if let Some(w) = watchdog {
            w.abort();
        }
        tracing::info!("stopping: no new connections; draining in-flight requests");
        if gateway.shutdown().await {
            tracing::info!("stopped");
        } else {
            tracing::warn!("stopped; some connections did not finish within the drain deadline");
        }
        ExitCode::SUCCESS
    })
}
