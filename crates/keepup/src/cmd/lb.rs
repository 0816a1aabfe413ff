//! `keepup lb ...`: load-balancer operations through the agent's API.

use clap::Args;
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `keepup lb`.
#[derive(Debug, Args)]
pub struct LbArgs {}

/// Runs an LB subcommand.
pub fn run(_config: &Path, _args: LbArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}

/// Renders the `lb` part of a status document for a person.
pub fn render_status(lb: &serde_json::Value, _colour: bool) -> String {
    format!("  {}\n", lb)
}
