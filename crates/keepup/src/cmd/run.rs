//! `keepup run`: the agent.

use clap::Args;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `keepup run`.
#[derive(Debug, Args)]
#[command(
    long_about = "Runs the agent on this node until SIGTERM or SIGINT.\n\n\
On SIGTERM the node releases its resource groups, tells its peers, and exits, so the \
handover takes one round trip instead of a dead time. Logs go to stderr: plain text, \
--log-format json (one object per line), or journal (a <N> syslog priority per line, \
the default when stderr is the systemd journal). Set RUST_LOG (e.g. RUST_LOG=keepup=debug) \
for more."
)]
pub struct RunArgs {
    /// Where this node keeps its boot counter and consensus log (default: `[cluster] state_dir`).
    #[arg(long, env = "KEEPUP_STATE_DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// Log line format.
    #[arg(long, value_enum, default_value = "auto", env = "KEEPUP_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(config_path: &Path, node: Option<&str>, args: RunArgs) -> anyhow::Result<ExitCode> {
    let (config, me) = super::load_for_this_host(config_path, node)?;
    init_logging(args.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let path = config_path.to_path_buf();
    rt.block_on(async move {
        let mut extensions: Vec<Arc<dyn keepup_agent::Extension>> = Vec::new();
        // The load balancer starts first: its frontends bind the floating IP
        // with IP_FREEBIND, so they already listen when this node takes it.
        let mut lb = None;
        if let Some(section) = config
            .file
            .lb
            .as_ref()
            .filter(|lb| lb.nodes.is_empty() || lb.nodes.contains(&me))
            .filter(|_| !config.node(&me).is_some_and(|n| n.is_witness()))
        {
            let handle = Arc::new(
                keepup_lb::start(section)
                    .await
                    .map_err(|e| anyhow::anyhow!("load balancer: {e}"))?,
            );
            let ext = Arc::new(crate::ext::LbExtension {
                handle: handle.clone(),
                config_path: path.clone(),
                node: me.clone(),
            });
            tokio::spawn(reload_on_sighup(ext.clone()));
            extensions.push(ext);
            lb = Some(handle);
            tracing::info!("load balancer started");
        }
        let mut resource_factory: Option<Arc<dyn keepup_agent::ResourceFactory>> = None;
        if let Some(db) = &config.file.database {
            let ext = Arc::new(crate::ext::DbExtension::new(db.clone(), &me));
            tokio::spawn(ext.clone().watch());
            resource_factory = Some(ext.clone());
            extensions.push(ext);
        }
        let api_tls = match &config.file.api.tls {
            Some(t) => {
                Some(keepup_lb::api_acceptor(t).map_err(|e| anyhow::anyhow!("[api.tls]: {e}"))?)
            }
            None => None,
        };
        let opts = keepup_agent::AgentOptions {
            config,
            me,
            extensions,
            resource_factory,
            state_dir: args.state_dir,
            api_tls,
        };
        keepup_agent::run(opts, shutdown_signal()).await?;
        // The agent has released the floating IP: let in-flight requests finish.
        if let Some(handle) = lb {
            if let Ok(handle) = Arc::try_unwrap(handle) {
                handle.shutdown(Duration::from_secs(5)).await;
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP re-reads keepup.toml and reloads the load balancer, like HAProxy's reload.
async fn reload_on_sighup(lb: Arc<crate::ext::LbExtension>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let r = lb.reload().await;
        if r.ok {
            tracing::info!("SIGHUP: {}", r.message);
        } else {
            tracing::error!("SIGHUP: {}", r.message);
        }
    }
}

/// How `keepup run` writes its log lines (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `journal` when stderr is the systemd journal, else `text`.
    Auto,
    /// Timestamped lines for a terminal or a file.
    Text,
    /// One JSON object per line (tracing-subscriber's JSON), for log shippers.
    Json,
    /// Lines with a `<N>` syslog priority prefix and no timestamp: journald
    /// stores the priority, so `journalctl -p warning` finds the warnings.
    Journal,
}

/// Logs to stderr, `info` by default, `RUST_LOG` to change.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = match format {
        // systemd sets JOURNAL_STREAM when stderr is connected to the journal.
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogFormat::Journal,
        LogFormat::Auto => LogFormat::Text,
        f => f,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Journal => builder
            .with_ansi(false)
            .without_time()
            .event_format(Prioritised(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            ))
            .try_init(),
        _ => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// Prefixes each line with its syslog priority (`<3>` error ... `<7>`
/// debug), which journald reads from a service's stderr.
struct Prioritised<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Prioritised<F>
where
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", syslog_priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// The syslog priority of a tracing level.
pub fn syslog_priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
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
