//! The keepup agent: the I/O around the pure cluster core.
//!
//! ```text
//!   heartbeat thread (own OS thread, SCHED_FIFO, memory locked)
//!     UDP socket ──decode/verify/replay-check──> Core ──Send──> UDP to every peer, every link
//!                                                  │ Start/Stop              ▲ outcomes (channel + waker)
//!                                                  ▼                         │
//!   tokio runtime:  resource runner (start in order, stop in reverse, monitor)
//!                   ping checker (split-brain) ──connected──> heartbeat thread
//!                   HTTP API (status, events, metrics, control)
//! ```
//!
//! The heartbeat thread never waits on anything but its sockets and its
//! next deadline, so a slow resource script or a busy runtime cannot delay
//! a heartbeat or a failure detection. See `docs/lifecycle-agent.md`.

mod heartbeat;
mod ping;
mod rt;
mod runner;
mod shared;
mod systemd;

pub use heartbeat::{Command, HeartbeatHandle};
pub use shared::Shared;

use anyhow::Context;
use keepup_config::Config;
use std::sync::Arc;
use std::time::Duration;

/// Extra parts the binary plugs into the agent (load balancer, database).
pub trait Extension: Send + Sync {
    /// Status section name and JSON (e.g. `("lb", {...})`).
    fn status(&self) -> (&'static str, serde_json::Value);
    /// Prometheus text to append to `/metrics`.
    fn metrics(&self, out: &mut String);
    /// Handles a control request this extension owns (None: not mine).
    fn control(
        &self,
        req: &keepup_api::types::ControlRequest,
    ) -> Option<keepup_api::BoxFuture<'_, keepup_api::types::ControlResponse>>;
    /// Answers an unauthenticated GET this extension owns (health checks
    /// for outside load balancers): `(HTTP status, JSON body)`, None: not mine.
    fn http(&self, _path: &str, _query: Option<&str>) -> Option<(u16, String)> {
        None
    }
    /// Transitions this extension saw (backend up/down with the reason),
    /// merged by time into the node's timeline (`/v1/events`, status, dashboard).
    fn events(&self) -> Vec<keepup_api::types::EventRecord> {
        Vec::new()
    }
}

/// Builds resource kinds that live outside `keepup-resource` (the database
/// primary role, which needs `keepup-db`). Returns None for kinds it does not know.
pub trait ResourceFactory: Send + Sync {
    /// Builds `cfg` for group `ctx.group`, or None to fall back to `keepup_resource::build`.
    fn build(
        &self,
        cfg: &keepup_config::ResourceConfig,
        ctx: &keepup_resource::Context,
    ) -> Option<Result<Box<dyn keepup_resource::Resource>, keepup_resource::ResourceError>>;
}

/// Options of one agent run.
pub struct AgentOptions {
    /// The validated config.
    pub config: Config,
    /// This node's name.
    pub me: String,
    /// Extensions (load balancer, database) with their status and control.
    pub extensions: Vec<Arc<dyn Extension>>,
    /// Builder for resource kinds outside `keepup-resource`.
    pub resource_factory: Option<Arc<dyn ResourceFactory>>,
    /// Overrides `[cluster] state_dir` (several agents on one machine, tests).
    pub state_dir: Option<std::path::PathBuf>,
    /// HTTPS for the API (`[api.tls]`, loaded by the caller), or None.
    pub api_tls: Option<keepup_api::TlsAcceptor>,
}

/// Runs the agent until `shutdown` resolves, then releases everything and
/// tells the peers before returning.
pub async fn run(
    opts: AgentOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let cfg = &opts.config.file;
    let key = std::fs::read(cfg.cluster.key_file.get_ref()).with_context(|| {
        format!(
            "cannot read key file {}",
            cfg.cluster.key_file.get_ref().display()
        )
    })?;
    let shared = Arc::new(Shared::new(&opts.me));

    // Resources: built once; a stale VIP left by a crashed previous run is removed
    // before this node takes part (every stop is idempotent).
    let runner = runner::Runner::new(
        &opts.config,
        &opts.me,
        shared.clone(),
        opts.resource_factory.as_deref(),
    )?;
    runner.stop_everything_at_boot().await;

    let state_dir = opts
        .state_dir
        .clone()
        .unwrap_or_else(|| cfg.cluster.state_dir.clone());
    let (hb, mut from_core) = heartbeat::start(
        &opts.config,
        &opts.me,
        keepup_wire::Key::new(key),
        shared.clone(),
        &state_dir,
    )?;
    let runner = Arc::new(runner);

    // Resource operations requested by the core.
    {
        let runner = runner.clone();
        let hb = hb.clone();
        tokio::spawn(async move {
            while let Some(req) = from_core.recv().await {
                let runner = runner.clone();
                let hb = hb.clone();
                tokio::spawn(async move {
                    if let heartbeat::ResourceRequest::Reassert(group) = req {
                        runner.reassert(&group).await;
                        return;
                    }
                    let (group, outcome) = runner.perform(req, &hb).await;
                    hb.send(Command::Resource(group, outcome));
                });
            }
        });
    }

    // Split-brain protection: ping targets.
    if !cfg.split_brain.ping_targets.is_empty() {
        let targets = cfg
            .split_brain
            .ping_targets
            .iter()
            .filter_map(|t| t.get_ref().parse().ok())
            .collect();
        tokio::spawn(ping::run(
            targets,
            cfg.split_brain.ping_interval_ms.duration(),
            cfg.split_brain.ping_fail_count,
            hb.clone(),
        ));
    }

    // The API.
    let api_addr = cfg.api.listen_addr();
    let tokens = api_tokens(cfg).map_err(|e| anyhow::anyhow!(e))?;
    let serve_options = keepup_api::ServeOptions {
        policy: keepup_api::AccessPolicy {
            control_token: tokens.control,
            read_token: Some(tokens.read.clone()),
            port: api_addr.port(),
            hosts: cfg.api.hosts.iter().map(|h| h.get_ref().clone()).collect(),
        },
        max_connections: *cfg.api.max_connections.get_ref() as usize,
        header_timeout: Duration::from_secs(5),
        tls: opts.api_tls.clone(),
    };
    let peers = cfg
        .node
        .iter()
        .map(|n| {
            let name = n.name.get_ref().clone();
            let api = if name == opts.me {
                Ok(cfg.api.local_addr().to_string())
            } else {
                cfg.api.remote_addr(n).map(|a| a.to_string())
            };
            (name, api)
        })
        .collect();
    let backend = Arc::new(shared::ApiBackend {
        shared: shared.clone(),
        hb: hb.clone(),
        extensions: opts.extensions.clone(),
        peers,
        read_token: tokens.read.clone(),
        client: keepup_api::ApiClient::new(
            cfg.api.tls.as_ref().map(|t| t.cert.as_path()),
            keepup_api::cluster::ASK_TIMEOUT,
        )
        .map_err(|e| anyhow::anyhow!(e))?,
    });
    let listener = tokio::net::TcpListener::bind(api_addr)
        .await
        .with_context(|| format!("cannot listen for the API on {api_addr}"))?;
    let (api_stop_tx, api_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(keepup_api::serve(listener, backend, serve_options, async {
        let _ = api_stop_rx.await;
    }));
    tracing::info!(node = %opts.me, api = %api_addr, "agent running");

    shutdown.await;
    tracing::info!("stopping: releasing resources and telling peers");
    hb.send(Command::Shutdown);
    // Releasing waits for resource stops, each bounded by its timeout.
    let joined = tokio::task::spawn_blocking(move || hb.join()).await;
    if let Ok(Err(e)) = joined {
        tracing::warn!("heartbeat thread: {e}");
    }
    let _ = api_stop_tx.send(());
    let _ = api.await;
    Ok(())
}

/// The API tokens for `cfg`: its token files, else derived from the
/// cluster key (the agent and the `keepup` commands read them the same way).
pub fn api_tokens(cfg: &keepup_config::FileConfig) -> Result<keepup_api::ApiTokens, String> {
    keepup_api::ApiTokens::load(
        cfg.cluster.key_file.get_ref(),
        cfg.api.token_file.as_ref().map(|t| t.get_ref().as_path()),
        cfg.api
            .read_token_file
            .as_ref()
            .map(|t| t.get_ref().as_path()),
    )
}
