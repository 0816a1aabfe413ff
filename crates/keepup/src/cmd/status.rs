//! `keepup status`.

use clap::Args;
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `keepup status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Asks the local agent and prints what it knows.
pub fn run(_config: &Path, _args: StatusArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}
