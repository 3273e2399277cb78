//! `spocgw` command line: parsing only; each command lives in `cli/`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = spocgw::cli::Cli::parse();
    spocgw::cli::run(cli)
}
