//! `keepup db ...`: MariaDB replication setup, status, switchover.

use clap::Args;
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `keepup db`.
#[derive(Debug, Args)]
pub struct DbArgs {}

/// Runs a DB subcommand.
pub fn run(_config: &Path, _args: DbArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}

/// Renders the `db` part of a status document for a person.
pub fn render_status(db: &serde_json::Value, _colour: bool) -> String {
    format!("  {}\n", db)
}
