//! `keepup run`: the agent.

use clap::Args;
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `keepup run`.
#[derive(Debug, Args)]
#[command(
    long_about = "Runs the agent on this node until SIGTERM or SIGINT.\n\n\
On SIGTERM the node releases its resource groups, tells its peers, and exits, so the \
handover takes one round trip instead of a dead time. Logs go to stderr; set RUST_LOG \
(e.g. RUST_LOG=keepup=debug) for more."
)]
pub struct RunArgs {}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(config: &Path, node: Option<&str>, _args: RunArgs) -> anyhow::Result<ExitCode> {
    let (config, me) = super::load_for_this_host(config, node)?;
    init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let opts = keepup_agent::AgentOptions {
            config,
            me,
            extensions: Vec::new(),
        };
        keepup_agent::run(opts, shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr, `info` by default, `RUST_LOG` to change.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers we can only run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
