//! Manual pages and shell completions, generated from the CLI definition itself (so they cannot
//! drift from `--help`): `spocgw completions bash|zsh|fish`, and the hidden `spocgw man --out
//! DIR` the package build runs (spocgw(1), and one page per command and subcommand:
//! spocgw-audit(1), spocgw-audit-query(1), ...).

use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory as _;

/// The shells completions are generated for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

pub fn completions(shell: Shell) -> ExitCode {
    let mut cmd = super::Cli::command();
    let mut out = std::io::stdout();
    match shell {
        Shell::Bash => clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "spocgw", &mut out),
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "spocgw", &mut out),
        Shell::Fish => clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "spocgw", &mut out),
    }
    ExitCode::SUCCESS
}

pub fn man(out: &Path) -> ExitCode {
    let written = std::fs::create_dir_all(out).and_then(|()| {
        let cmd = super::Cli::command()
            .name("spocgw")
            .about(
                "High-assurance SPOC interoperability gateway: mutual TLS, XML firewall, policy, tamper-evident audit",
            )
            .version(env!("CARGO_PKG_VERSION"));
        clap_mangen::generate_to(cmd, out)
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spocgw man: {}: {e}", out.display());
            ExitCode::from(2)
        }
    }
}
