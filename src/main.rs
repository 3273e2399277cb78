//! `spocgw` command line: parsing only; each command lives in `cli/`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: fast for the gateway's many small per-request allocations, and it returns freed
/// pages to the system (glibc kept the ~80 MB that loading policies and schemas allocates
/// briefly at start, and fragments per-connection buffers).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = spocgw::cli::Cli::parse();
    spocgw::cli::run(cli)
}
