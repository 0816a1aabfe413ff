//! `keepup`: the one binary. It parses the command line, loads the config,
//! builds the runtime and maps errors to exit codes; the work lives in the
//! library crates (`keepup-agent`, `keepup-lb`, `keepup-db`, ...).

#![forbid(unsafe_code)]

mod cli;
mod cmd;
mod ext;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            // A closed pipe (`keepup status | head`) is not an error worth a message.
            if err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("keepup: {err:#}");
            if err.chain().any(|c| c.is::<keepup_config::ConfigErrors>()) {
                // EX_CONFIG from sysexits.h: bad configuration.
                ExitCode::from(78)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
