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
            // Config problems: one `file:line: message` per line, nothing
            // in front, so editors and CI annotators can jump to each.
            if let Some(errors) = err
                .chain()
                .find_map(|c| c.downcast_ref::<keepup_config::ConfigErrors>())
            {
                eprintln!("{errors}");
                // EX_CONFIG from sysexits.h: bad configuration.
                return ExitCode::from(78);
            }
            if let Some(e) = err
                .chain()
                .find_map(|c| c.downcast_ref::<keepup_config::ConfigError>())
            {
                eprintln!("{e}");
                return ExitCode::from(78);
            }
            eprintln!("keepup: {err:#}");
            ExitCode::from(1)
        }
    }
}
