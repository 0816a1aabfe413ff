//! `keepup run`: the agent.

use clap::Args;
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `keepup run`.
#[derive(Debug, Args)]
pub struct RunArgs {}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(config: &Path, node: Option<&str>, _args: RunArgs) -> anyhow::Result<ExitCode> {
    let _ = super::load_for_this_host(config, node)?;
    anyhow::bail!("not yet implemented")
}
