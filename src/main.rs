#![forbid(unsafe_code)]
//! The `laminate-proxy` binary: parse the command line and hand over.

use std::process::ExitCode;

use clap::Parser;
use laminate_proxy::cli::{Cli, Command};

fn main() -> ExitCode {
    // Before any thread exists (see the module).
    laminate_proxy::malloc_tuning::tune();
    // The DICOM crates capture a backtrace for every error they create when
    // RUST_LIB_BACKTRACE (or, if unset, RUST_BACKTRACE) is 1, and their
    // parsers create errors on paths that are not failures: with
    // RUST_BACKTRACE=1 that cost ~4 % of the ingest SCP's CPU (`perf`).
    // Panics still print a backtrace when RUST_BACKTRACE asks; an explicit
    // RUST_LIB_BACKTRACE wins. Set before any thread exists.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => laminate_proxy::run::main(args),
        Command::Demo(args) => laminate_proxy::demo::main(args),
        Command::Doctor(args) => laminate_proxy::doctor::main(args),
        Command::Healthcheck(api) => laminate_proxy::ops::healthcheck(api),
        Command::RebuildIndex { data_dir } => laminate_proxy::ops::rebuild_index(data_dir),
        Command::Nodes { command, api } => laminate_proxy::ops::nodes(command, api),
        Command::Dispatches { command, api } => laminate_proxy::ops::dispatches(command, api),
    }
}
