#![forbid(unsafe_code)]
//! The `laminate-proxy` binary: parse the command line and hand over.

use std::process::ExitCode;

use clap::Parser;
use laminate_proxy::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => laminate_proxy::run::main(args),
        Command::Demo(args) => laminate_proxy::demo::main(args),
        Command::Healthcheck(api) => laminate_proxy::ops::healthcheck(api),
        Command::RebuildIndex { data_dir } => laminate_proxy::ops::rebuild_index(data_dir),
        Command::Nodes { command, api } => laminate_proxy::ops::nodes(command, api),
        Command::Dispatches { command, api } => laminate_proxy::ops::dispatches(command, api),
    }
}
