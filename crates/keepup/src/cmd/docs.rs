//! `keepup docs --out DIR` (hidden): man pages and shell completions made
//! from the CLI definition itself (clap_mangen, clap_complete), so they
//! cannot drift from the commands. The Debian package build runs it.

use anyhow::Context;
use clap::{Args, CommandFactory};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `keepup docs`.
#[derive(Debug, Args)]
pub struct DocsArgs {
    /// Directory to write `man/keepup*.1` and `completions/` into.
    #[arg(long)]
    pub out: PathBuf,
}

/// Writes one man page per command and completions for bash, zsh and fish.
pub fn run(args: DocsArgs) -> anyhow::Result<ExitCode> {
    let man = args.out.join("man");
    let completions = args.out.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let cmd = crate::cli::Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man)
        .with_context(|| format!("cannot write man pages into {}", man.display()))?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let mut c = cmd.clone();
        clap_complete::generate_to(shell, &mut c, "keepup", &completions)
            .with_context(|| format!("cannot write {shell} completions"))?;
    }
    println!(
        "man pages in {}, completions in {}",
        man.display(),
        completions.display()
    );
    Ok(ExitCode::SUCCESS)
}
