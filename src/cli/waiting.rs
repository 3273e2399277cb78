//! `spocgw waiting --listen ADDR --csr-dir DIR`: what the appliance's admin address answers
//! between its first boot and the operator installing its configuration and certificates:
//! `/healthz` 200, `/readyz` 503 saying what it waits for (the CSRs it wrote, where the
//! certificates go), `/metrics` empty. The gateway itself cannot start without them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::admin::{self, AdminState, ReadyCheck};

/// `/readyz`'s check while the appliance waits: never ready, naming the CSRs in `csr_dir`.
pub fn waiting_check(csr_dir: PathBuf) -> ReadyCheck {
    Box::new(move || {
        let mut names: Vec<String> = std::fs::read_dir(&csr_dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.strip_suffix(".csr.pem").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        let csrs = if names.is_empty() { "none yet".to_owned() } else { names.join(", ") };
        (
            false,
            format!(
                "certificates: waiting for the configuration and the certified certificates (CSRs: {csrs}, in {} and \
                 on the provisioning medium's csr/); attach the medium with config/ and reboot\n",
                csr_dir.display()
            ),
        )
    })
}

pub fn run(listen: SocketAddr, csr_dir: &Path) -> ExitCode {
    let _log = super::init_logging();
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spocgw waiting: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let tcp = match tokio::net::TcpListener::bind(listen).await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("spocgw waiting: cannot listen on {listen}: {e}");
                return ExitCode::from(2);
            }
        };
        let exposition = admin::metrics::Exposition::new(admin::metrics::registry());
        let state = Arc::new(AdminState::new(exposition, vec![waiting_check(csr_dir.to_path_buf())]));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(admin::serve(tcp, state, stopped));
        tracing::warn!(addr = %listen, "waiting for the configuration and certificates; /readyz says what is missing");
        super::notify::notify("READY=1");
        super::termination().await;
        let _ = stop.send(true);
        let _ = server.await;
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    /// The check is never ready and names the CSRs the appliance wrote.
    #[test]
    fn readyz_says_what_the_appliance_waits_for() {
        let tmp = tempfile::tempdir().unwrap();
        let check = super::waiting_check(tmp.path().to_path_buf());
        let (ready, line) = check();
        assert!(!ready);
        assert!(line.contains("CSRs: none yet"), "{line}");
        for n in ["police-server", "ministry-client"] {
            std::fs::write(tmp.path().join(format!("{n}.csr.pem")), "x").unwrap();
        }
        let (ready, line) = check();
        assert!(!ready);
        assert!(line.contains("CSRs: ministry-client, police-server"), "{line}");
    }
}
