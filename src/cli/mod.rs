//! The commands of CONTRACT.md section 1, one file per command family. `anyhow` stays here,
//! at the edge; exit codes follow the contract (2: usage or configuration).

pub mod attest;
pub mod audit;
pub mod callbacks;
pub mod config;
pub mod demo;
pub mod dev_pki;
pub mod docs;
pub mod log;
pub mod notify;
pub mod pair;
pub mod pair_demo;
pub mod policy;
pub mod serve;
pub mod sim;
pub mod tpm;
pub mod validate;
pub mod waiting;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// spocgw: the SPOC interoperability gateway between police border systems and the
/// Ministry of Interior's National SPOC.
#[derive(Debug, Parser)]
#[command(name = "spocgw", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway until SIGTERM/SIGINT (then drain in-flight requests and exit 0).
    Serve {
        /// gateway.toml
        #[arg(long)]
        config: PathBuf,
    },
    /// Benchmarks: `bench serve --config FILE` serves like `serve` and also runs the benchmark
    /// modes (`bare_proxy`), which `serve` refuses.
    Bench {
        #[command(subcommand)]
        cmd: BenchCommand,
    },
    /// Run the whole system end to end on a fresh development PKI and print the scenarios.
    Demo {
        /// Keep the PKI, configurations and logs in this directory.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// An active-active pair on loopback behind HAProxy: failover, callbacks on either
    /// appliance, cross-witnessed audit logs, disaster recovery (docs/pair.md).
    PairDemo {
        /// Keep the PKI, configurations and logs in this directory.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Write the development PKI, configurations and sample messages.
    DevPki {
        /// Directory to write into (absent or empty; see --force)
        #[arg(long)]
        out: PathBuf,
        /// Write into a DIR that already holds files, replacing a PKI there: every key is new,
        /// so audit checkpoints signed before verify only with the old public key
        #[arg(long)]
        force: bool,
        /// The police listener's port in the written configuration
        #[arg(long, default_value_t = 8443)]
        gateway_port: u16,
        /// The callback listener's port
        #[arg(long, default_value_t = 8444)]
        callback_port: u16,
        /// The admin listener's port (healthz, readyz, metrics)
        #[arg(long, default_value_t = 8081)]
        admin_port: u16,
        /// The simulated Ministry's port
        #[arg(long, default_value_t = 9443)]
        ministry_port: u16,
        /// The police callback receiver's port
        #[arg(long, default_value_t = 8445)]
        receiver_port: u16,
        /// Make the gateway's keys in this TPM (e.g. swtpm:host=127.0.0.1,port=2321) instead of files
        #[arg(long)]
        tpm: Option<String>,
        /// PCRs the sealed keys are bound to (with --tpm)
        #[arg(long, value_delimiter = ',', default_value = "0,2,4,7")]
        tpm_pcrs: Vec<u8>,
    },
    /// Validate XML files against the schemas in DIR with the gateway's engine and limits.
    Validate {
        /// Directory of .xsd files (e.g. policies/schemas)
        #[arg(long)]
        schemas: PathBuf,
        /// Threads to use (default: one per core)
        #[arg(long)]
        jobs: Option<usize>,
        /// SOAP envelopes or bare documents
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Security officers' tools for the audit log.
    Audit {
        #[command(subcommand)]
        cmd: audit::AuditCommand,
    },
    /// Security officers' tools for the access policy bundle.
    Policy {
        #[command(subcommand)]
        cmd: policy::PolicyCommand,
    },
    /// The appliance's configuration as a bundle signed by the operator: sign, accept, check.
    Config {
        #[command(subcommand)]
        cmd: config::ConfigCommand,
    },
    /// The appliance's keys in the TPM: provision, status, attestation quotes.
    Tpm {
        #[command(subcommand)]
        cmd: tpm::TpmCommand,
    },
    /// Verifier's tools: check an appliance's quote against the PCR values its image predicts.
    Attest {
        #[command(subcommand)]
        cmd: attest::AttestCommand,
    },
    /// The appliance before its configuration: /healthz, and /readyz saying what it waits for.
    Waiting {
        /// The admin address (loopback)
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// Where the CSRs were written
        #[arg(long, default_value = "/var/lib/spocgw/tpm/csr")]
        csr_dir: PathBuf,
    },
    /// Print shell completions (bash, zsh or fish) for spocgw.
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: docs::Shell,
    },
    /// Write the manual pages (spocgw(1) and one per command) into a directory.
    #[command(hide = true)]
    Man {
        /// The directory to write the pages into
        #[arg(long)]
        out: PathBuf,
    },
    /// Callbacks awaited (CSN 36 9791 certificate requests answered later).
    Callbacks {
        #[command(subcommand)]
        cmd: CallbacksCommand,
    },
    /// The pair link (docs/pair.md).
    Pair {
        #[command(subcommand)]
        cmd: PairCommand,
    },
    /// Simulators for tests and demos.
    Sim {
        #[command(subcommand)]
        which: SimCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Serve gateway.toml, benchmark modes allowed
    Serve {
        /// gateway.toml
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CallbacksCommand {
    /// List the requests forwarded whose callback is still awaited, oldest first (from the
    /// correlation journal beside the audit log; read-only)
    Pending {
        /// gateway.toml
        #[arg(long)]
        config: PathBuf,
        /// One JSON object a line
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PairCommand {
    /// Print this appliance's witness verifier key (NAME+KEYID+BASE64) for the peer's
    /// pair.peer_witness and for officers
    Vkey {
        /// gateway.toml with a [pair] table; with --name, any file with a [tpm] table (tpm.toml)
        #[arg(long)]
        config: PathBuf,
        /// This appliance's pair name, when there is no gateway.toml yet: the key is the TPM's
        /// sealed tpm:pair-witness
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// The simulated Ministry National SPOC (mutual TLS).
    Ministry {
        /// ministry.toml
        #[arg(long)]
        config: PathBuf,
    },
    /// The police side's callback receiver (mutual TLS).
    PoliceReceiver {
        /// receiver.toml
        #[arg(long)]
        config: PathBuf,
    },
}

/// Runs a command and maps its result to the contract's exit codes.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve::run(&config, false),
        Command::Bench { cmd: BenchCommand::Serve { config } } => serve::run(&config, true),
        Command::Tpm { cmd } => tpm::run(cmd),
        Command::Config { cmd } => config::run(cmd),
        Command::Callbacks { cmd: CallbacksCommand::Pending { config, json } } => callbacks::pending(&config, json),
        Command::Attest { cmd } => attest::run(cmd),
        Command::Waiting { listen, csr_dir } => waiting::run(listen, &csr_dir),
        Command::Demo { keep } => demo::run(keep.as_deref()),
        Command::PairDemo { keep } => pair_demo::run(keep.as_deref()),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { out } => docs::man(&out),
        Command::Pair { cmd: PairCommand::Vkey { config, name } } => pair::vkey(&config, name.as_deref()),
        Command::DevPki {
            out,
            force,
            gateway_port,
            callback_port,
            admin_port,
            ministry_port,
            receiver_port,
            tpm,
            tpm_pcrs,
        } => {
            let ports = dev_pki::Ports {
                gateway: gateway_port,
                callback: callback_port,
                admin: admin_port,
                ministry: ministry_port,
                receiver: receiver_port,
            };
            let tpm = tpm.map(|tcti| dev_pki::DevTpm { tcti, pcrs: tpm_pcrs });
            let occupied = std::fs::read_dir(&out).is_ok_and(|mut d| d.next().is_some());
            if occupied && !force {
                eprintln!(
                    "spocgw dev-pki: {} is not empty: writing would replace every key and configuration there (old audit checkpoints would no longer verify with the new key); choose an empty directory, or pass --force",
                    out.display()
                );
                return ExitCode::from(2);
            }
            match dev_pki::generate_with(&out, ports, tpm.as_ref()) {
                Ok(()) => {
                    println!("development PKI and configurations written to {}", out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("spocgw dev-pki: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Sim { which } => sim::run(which),
        Command::Policy { cmd } => policy::run(cmd),
        Command::Audit { cmd } => audit::run(cmd),
        Command::Validate { schemas, jobs, files } => validate::run(&schemas, &files, jobs),
    }
}

/// JSON logs on stderr; `RUST_LOG` filters (default `info`). Lines are formatted where they
/// are logged and written by the log writer thread ([`log`]); keep the guard alive for as
/// long as the command runs (dropping it writes what is left).
pub fn init_logging() -> log::LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = log::BufferedStderr::start();
    let _ = tracing_subscriber::fmt()
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
        .event_format(log::JsonLines::new())
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
    guard
}

/// A multi-threaded runtime for the long-running commands.
///
/// # Errors
/// The runtime cannot be built (no threads or I/O driver available).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Waits for SIGTERM or SIGINT.
pub async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Every command and every argument says what it is in `--help` (and so in the manual pages
    /// generated from the same definition).
    #[test]
    fn every_command_and_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments().filter(|a| !["help", "version"].contains(&a.get_id().as_str())) {
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for s in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                if s.get_about().is_none() {
                    missing.push(format!("{path} {} (no description)", s.get_name()));
                }
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "spocgw", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }
}
