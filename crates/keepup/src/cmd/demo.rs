//! `keepup demo`: the whole site in network namespaces on this machine.

use clap::Args;
use std::process::ExitCode;

/// Arguments of `keepup demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run the scripted failovers once and exit (for CI).
    #[arg(long)]
    pub once: bool,
    /// Leave the site running after the walk-through, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
}

/// Runs the demo.
pub fn run(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}
