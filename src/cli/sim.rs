//! `spocgw sim ministry|police-receiver --config FILE`.

use std::process::ExitCode;

use super::SimCommand;
use crate::sim::{self, ministry::MinistryConfig, receiver::ReceiverConfig};

pub fn run(which: SimCommand) -> ExitCode {
    let _log = super::init_logging();
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spocgw sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let running = match which {
            SimCommand::Ministry { config } => match MinistryConfig::load(&config) {
                Ok(cfg) => sim::start_ministry(&cfg, &config).await,
                Err(e) => Err(e),
            },
            SimCommand::PoliceReceiver { config } => match ReceiverConfig::load(&config) {
                Ok(cfg) => sim::start_receiver(&cfg, &config).await.map(|(r, _)| r),
                Err(e) => Err(e),
            },
        };
        let running = match running {
            Ok(r) => r,
            Err(e) => {
                eprintln!("spocgw sim: {e}");
                return ExitCode::from(2);
            }
        };
        super::termination().await;
        running.stop().await;
        ExitCode::SUCCESS
    })
}
