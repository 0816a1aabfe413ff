//! `keepup config --example`: the commented template, the schema's own documentation.

use clap::Args;
use std::process::ExitCode;

/// Arguments of `keepup config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print a commented example keepup.toml.
    #[arg(long)]
    pub example: bool,
}

/// Prints the example.
pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    if !args.example {
        anyhow::bail!("nothing to do: try `keepup config --example`");
    }
    print!("{}", keepup_config::EXAMPLE);
    Ok(ExitCode::SUCCESS)
}
