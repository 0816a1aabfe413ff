//! The load balancer and the database plugged into the agent as extensions:
//! their status in `keepup status` and the dashboard, their metrics in
//! `/metrics`, and the control requests they own.

use keepup_agent::Extension;
use keepup_api::types::{ControlRequest, ControlResponse};
use keepup_api::BoxFuture;
use keepup_config::{Config, HostChecks};
use keepup_lb::{AdminState, LbHandle};
use std::path::PathBuf;
use std::sync::Arc;

/// The running load balancer.
pub struct LbExtension {
    /// The handle from `keepup_lb::start`.
    pub handle: Arc<LbHandle>,
    /// The config file, re-read on reload.
    pub config_path: PathBuf,
    /// This node's name (on the timeline's entries).
    pub node: String,
}

impl LbExtension {
    /// Re-reads keepup.toml and applies its `[lb]` section without dropping connections.
    pub async fn reload(&self) -> ControlResponse {
        let cfg = match Config::load(&self.config_path, HostChecks::FileOnly) {
            Ok(c) => c,
            Err(e) => {
                return ControlResponse {
                    ok: false,
                    message: format!("reload refused, the running config stays: {e}"),
                }
            }
        };
        let Some(section) = cfg.file.lb else {
            return ControlResponse {
                ok: false,
                message: "reload refused: the new config has no [lb] section (removing the load balancer needs a restart)".into(),
            };
        };
        match self.handle.reload(&section).await {
            Ok(()) => {
                tracing::info!("load balancer reloaded from {}", self.config_path.display());
                ControlResponse {
                    ok: true,
                    message: "reloaded [lb]; open connections kept (cluster settings apply at the next restart)".into(),
                }
            }
            Err(e) => ControlResponse {
                ok: false,
                message: format!("reload refused, the running config stays: {e}"),
            },
        }
    }
}

impl Extension for LbExtension {
    fn status(&self) -> (&'static str, serde_json::Value) {
        (
            "lb",
            serde_json::to_value(self.handle.status()).unwrap_or_default(),
        )
    }

    fn metrics(&self, out: &mut String) {
        keepup_lb::prometheus(&self.handle.status(), out);
    }

    fn events(&self) -> Vec<keepup_api::types::EventRecord> {
        self.handle
            .health_events()
            .into_iter()
            .map(|e| keepup_api::types::EventRecord {
                unix_ms: e.unix_ms,
                node: self.node.clone(),
                text: format!(
                    "pool {}: backend {} ({}) {}: {}",
                    e.pool,
                    e.backend,
                    e.address,
                    if e.up { "up" } else { "DOWN" },
                    e.reason
                ),
                event: serde_json::json!({
                    "kind": if e.up { "backend_up" } else { "backend_down" },
                    "pool": e.pool,
                    "backend": e.backend,
                    "address": e.address,
                    "reason": e.reason,
                }),
            })
            .collect()
    }

    fn control(&self, req: &ControlRequest) -> Option<BoxFuture<'_, ControlResponse>> {
        match req {
            ControlRequest::LbBackend {
                pool,
                backend,
                state,
            } => {
                let state = match state.as_str() {
                    "enabled" | "enable" => AdminState::Enabled,
                    "drain" => AdminState::Drain,
                    "maintenance" => AdminState::Maintenance,
                    other => {
                        let message = format!(
                            "unknown backend state {other:?}: use enabled, drain or maintenance"
                        );
                        return Some(Box::pin(
                            async move { ControlResponse { ok: false, message } },
                        ));
                    }
                };
                let r = self.handle.set_backend_state(pool, backend, state);
                let resp = match r {
                    Ok(()) => ControlResponse {
                        ok: true,
                        message: format!("{pool}/{backend} is now {state:?}").to_lowercase(),
                    },
                    Err(e) => ControlResponse {
                        ok: false,
                        message: e.to_string(),
                    },
                };
                Some(Box::pin(async move { resp }))
            }
            ControlRequest::Reload => Some(Box::pin(self.reload())),
            _ => None,
        }
    }
}

/// The database extension: watches replication for status and metrics,
/// performs switchovers asked through the API, and builds `db-primary`
/// resources (the primary role as a cluster resource).
pub struct DbExtension {
    section: keepup_config::DatabaseSection,
    me: String,
    last: std::sync::Mutex<Option<keepup_db::DbStatus>>,
    /// The grants of the db-primary groups built here: `/db/primary`
    /// answers 200 only while one is current.
    grants: std::sync::Mutex<Vec<keepup_resource::Epoch>>,
}

impl DbExtension {
    /// For node `me`.
    pub fn new(section: keepup_config::DatabaseSection, me: &str) -> DbExtension {
        DbExtension {
            section,
            me: me.to_string(),
            last: std::sync::Mutex::new(None),
            grants: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Observes the servers every second for status and metrics.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let st = keepup_db::observe(&self.section).await;
            if let Ok(mut g) = self.last.lock() {
                *g = Some(st);
            }
        }
    }

    fn last(&self) -> Option<keepup_db::DbStatus> {
        self.last.lock().ok().and_then(|g| g.clone())
    }

    /// This node's server (the one whose `node` is this node).
    fn my_server(&self) -> Option<String> {
        self.section
            .server
            .iter()
            .find(|s| s.node() == self.me)
            .map(|s| s.name.clone())
    }
}

impl Extension for DbExtension {
    fn status(&self) -> (&'static str, serde_json::Value) {
        (
            "db",
            self.last()
                .map(|s| serde_json::to_value(s).unwrap_or_default())
                .unwrap_or_default(),
        )
    }

    fn metrics(&self, out: &mut String) {
        if let Some(s) = self.last() {
            keepup_db::prometheus(&s, out);
        }
    }

    fn http(&self, path: &str, query: Option<&str>) -> Option<(u16, String)> {
        use keepup_db::health::{health, HealthCheck};
        let check = match HealthCheck::parse(path, query) {
            Ok(Some(c)) => c,
            Ok(None) => return None,
            Err(e) => {
                return Some((
                    400,
                    serde_json::json!({"ok": false, "reason": e}).to_string(),
                ))
            }
        };
        let Some(server) = self.my_server() else {
            let reason = format!("no [[database.server]] runs on node {:?}", self.me);
            return Some((
                503,
                serde_json::json!({"ok": false, "reason": reason}).to_string(),
            ));
        };
        let holds = self
            .grants
            .lock()
            .map(|g| g.iter().any(|e| e.is_current()))
            .unwrap_or(false);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let last = self.last();
        let (ok, reason) = health(last.as_ref(), &server, check, holds, now);
        let body = serde_json::json!({"ok": ok, "server": server, "reason": reason});
        Some((if ok { 200 } else { 503 }, body.to_string()))
    }

    fn control(&self, req: &ControlRequest) -> Option<BoxFuture<'_, ControlResponse>> {
        let ControlRequest::DbSwitchover { to } = req else {
            return None;
        };
        let to = to.clone();
        Some(Box::pin(async move {
            match keepup_db::switchover(&self.section, &to).await {
                Ok(r) => ControlResponse {
                    ok: true,
                    message: format!(
                        "primary moved {} -> {}; writes unavailable {:.0} ms; the db-primary group follows",
                        r.old_primary, r.new_primary, r.write_unavailable_ms
                    ),
                },
                Err(e) => ControlResponse { ok: false, message: format!("switchover refused: {e}") },
            }
        }))
    }
}

impl keepup_agent::ResourceFactory for DbExtension {
    fn build(
        &self,
        cfg: &keepup_config::ResourceConfig,
        ctx: &keepup_resource::Context,
    ) -> Option<Result<Box<dyn keepup_resource::Resource>, keepup_resource::ResourceError>> {
        let keepup_config::ResourceConfig::DbPrimary(d) = cfg else {
            return None;
        };
        let server = d.server.clone().or_else(|| self.my_server());
        if let Ok(mut g) = self.grants.lock() {
            g.push(ctx.epoch.clone());
        }
        Some(match server {
            Some(server) => Ok(Box::new(DbPrimary {
                section: self.section.clone(),
                server,
                monitor: d.monitor_interval_ms.duration(),
                timeout: d.timeout_ms.duration(),
                read_only_checks: std::sync::atomic::AtomicU32::new(0),
                unknown_checks: std::sync::atomic::AtomicU32::new(0),
                epoch: ctx.epoch.clone(),
            }) as Box<dyn keepup_resource::Resource>),
            None => Err(keepup_resource::ResourceError::Config {
                resource: cfg.describe(),
                reason: format!(
                    "no [[database.server]] runs on node {:?} (set node = or server =)",
                    self.me
                ),
            }),
        })
    }
}

/// The MariaDB primary role on this node's server.
///
/// - start: already the writable primary → nothing; the old primary alive →
///   planned switchover to this server (no transaction lost); the old primary
///   dead → `promote_after_failure` (most advanced replica, catch-up, relay
///   logs applied), which must pick this server, else the start fails and the
///   group moves on to the node of the server that was picked.
/// - stop: `read_only = ON` and client connections killed; a refused
///   connection (nothing listens) counts as stopped, any other error (a
///   timeout, 1040 too many connections) fails the stop: the server may
///   still take writes, so the group stays here (stop failed) until a retry,
///   a fence or `keepup cleanup`.
/// - writes are opened only while this node's grant under the epoch is
///   current.
/// - monitor: the server answers and is writable; after a switchover done
///   outside the agent (this server read-only, another one the writable
///   primary) the monitor fails and the group (with its writer IP) follows
///   the new primary; read-only with no other primary fails after three
///   checks.
struct DbPrimary {
    section: keepup_config::DatabaseSection,
    server: String,
    monitor: std::time::Duration,
    timeout: std::time::Duration,
    /// Consecutive monitor checks that found this server read-only.
    read_only_checks: std::sync::atomic::AtomicU32,
    /// Consecutive monitor checks that could not reach it (not refused).
    unknown_checks: std::sync::atomic::AtomicU32,
    /// The fencing epoch of the acquisition this start belongs to.
    epoch: keepup_resource::Epoch,
}

impl DbPrimary {
    fn err(&self, op: &'static str, reason: impl Into<String>) -> keepup_resource::ResourceError {
        keepup_resource::ResourceError::Failed {
            resource: self.describe_name(),
            operation: op,
            reason: reason.into(),
        }
    }
    fn describe_name(&self) -> String {
        format!("db-primary {}", self.server)
    }
    async fn local(&self) -> Result<keepup_db::conn::Db, keepup_db::DbError> {
        let s = self
            .section
            .server(&self.server)
            .ok_or_else(|| keepup_db::DbError::Config(format!("no server {}", self.server)))?;
        keepup_db::conn::Db::connect(&self.section, s).await
    }
    /// Opens this server for writes, only while this node's lease of the
    /// group is current (a long start must not open it after the lease ran out).
    async fn open_writes(&self) -> Result<(), keepup_resource::ResourceError> {
        if !self.epoch.is_current() {
            return Err(self.err(
                "start",
                format!(
                    "not opening {} for writes: this node's lease (epoch {}) ran out during the start",
                    self.server,
                    self.epoch.get()
                ),
            ));
        }
        let mut db = self
            .local()
            .await
            .map_err(|e| self.err("start", e.to_string()))?;
        db.exec("set read_only", "SET GLOBAL read_only = 0")
            .await
            .map_err(|e| self.err("start", e.to_string()))?;
        db.close().await;
        Ok(())
    }
    async fn do_start(&self) -> Result<(), keepup_resource::ResourceError> {
        tracing::info!(
            server = %self.server,
            epoch = self.epoch.get(),
            "taking the primary role under fencing epoch {}",
            self.epoch.get()
        );
        // The group usually moves because the primary's node died: a dead
        // server must not cost the full connect timeout here (1 s by
        // default). A live one on the LAN answers within milliseconds; the
        // cap is the one promote_after_failure's last look uses.
        let st = keepup_db::observe(&keepup_db::with_dead_probe_timeout(&self.section)).await;
        use keepup_db::plan::StartPlan;
        let plan = keepup_db::plan::plan_db_start(&st, &self.server);
        tracing::info!(server = %self.server, "db-primary start: {plan:?}");
        match plan {
            StartPlan::AlreadyPrimary => Ok(()),
            StartPlan::Reopen => {
                let me = st
                    .server(&self.server)
                    .ok_or_else(|| self.err("start", "server missing from status"))?;
                self.reopen(me).await?;
                tracing::info!("db: {} is writable again", self.server);
                Ok(())
            }
            StartPlan::Switchover { from } => {
                let r = keepup_db::switchover(&self.section, &self.server)
                    .await
                    .map_err(|e| self.err("start", format!("switchover from {from}: {e}")))?;
                tracing::info!(
                    "db: switched over {} -> {} ({:.0} ms without writes)",
                    r.old_primary,
                    r.new_primary,
                    r.write_unavailable_ms
                );
                Ok(())
            }
            StartPlan::Promote { dead } => self.promote(&dead).await,
            StartPlan::Refuse(reason) => Err(self.err("start", reason)),
        }
    }
    /// Opens this server again (a demoted primary, a master-master
    /// takeover) only after it applied what it received and, when the
    /// server it replicates from answers, everything that one has.
    async fn reopen(
        &self,
        me: &keepup_db::ServerStatus,
    ) -> Result<(), keepup_resource::ResourceError> {
        let peer = me
            .replication
            .as_ref()
            .and_then(|r| r.source_server.clone())
            .filter(|p| *p != self.server);
        let received = me
            .replication
            .as_ref()
            .map(|r| r.gtid_io_pos.clone())
            .unwrap_or_default();
        let how = keepup_db::catch_up_before_opening(
            &self.section,
            &self.server,
            peer.as_deref(),
            &received,
        )
        .await
        .map_err(|e| {
            self.err(
                "start",
                format!(
                    "not opening {} for writes before it has caught up: {e}",
                    self.server
                ),
            )
        })?;
        tracing::info!(server = %self.server, "db: caught up before opening: {how:?}");
        self.open_writes().await
    }
    async fn promote(&self, dead: &str) -> Result<(), keepup_resource::ResourceError> {
        // do_start has just seen `dead` not answer within the probe cap.
        let r = keepup_db::promote_after_failure_seen_down(&self.section, dead, Some(&self.server))
            .await
            .map_err(|e| self.err("start", format!("promotion after {dead} died: {e}")))?;
        tracing::info!(
            "db: {} promoted after {} died, in {:.0} ms",
            r.new_primary,
            r.dead_primary,
            r.took_ms
        );
        if r.new_primary != self.server {
            return Err(self.err(
                "start",
                format!(
                    "{} was more advanced and became primary; its node should hold this group",
                    r.new_primary
                ),
            ));
        }
        Ok(())
    }
}

impl keepup_resource::Resource for DbPrimary {
    fn describe(&self) -> String {
        self.describe_name()
    }
    fn start(&self) -> keepup_resource::BoxFuture<'_, Result<(), keepup_resource::ResourceError>> {
        Box::pin(self.do_start())
    }
    fn stop(&self) -> keepup_resource::BoxFuture<'_, Result<(), keepup_resource::ResourceError>> {
        Box::pin(async move {
            match keepup_db::make_read_only(&self.section, &self.server).await {
                Ok(killed) => {
                    tracing::info!(
                        server = %self.server,
                        "db: {} is read-only, {killed} client connections killed",
                        self.server
                    );
                    Ok(())
                }
                // Refused: nothing listens, so it takes no writes.
                Err(e) if e.positively_down() => Ok(()),
                // A timeout, 1040 or a local error says nothing about
                // whether it still takes writes: not stopped. The group
                // stays here (stop failed) until a retry, a fence or
                // `keepup cleanup`, and nobody else opens a primary.
                Err(e) => Err(self.err(
                    "stop",
                    format!("{e}; it may still take writes, so this is not a stop"),
                )),
            }
        })
    }
    fn monitor(
        &self,
    ) -> keepup_resource::BoxFuture<
        '_,
        Result<keepup_resource::Health, keepup_resource::ResourceError>,
    > {
        Box::pin(async move {
            use std::sync::atomic::Ordering::Relaxed;
            let mut db = match self.local().await {
                Ok(db) => {
                    self.unknown_checks.store(0, Relaxed);
                    db
                }
                Err(e) if e.positively_down() => {
                    return Ok(keepup_resource::Health::Failed(format!(
                        "this node's server is down: {e}"
                    )))
                }
                // Busy (1040), slow or an agent-side error: unknown, not
                // down. Moving the role away would need a stop that cannot
                // be confirmed either; fail only when it lasts.
                Err(e) => {
                    let n = self.unknown_checks.fetch_add(1, Relaxed) + 1;
                    if n >= 3 {
                        return Ok(keepup_resource::Health::Failed(format!(
                            "this node's server has not answered for {n} checks: {e}"
                        )));
                    }
                    tracing::warn!(server = %self.server, "db-primary monitor: {e} (check {n} of 3)");
                    return Ok(keepup_resource::Health::Running);
                }
            };
            let ro = db
                .global("read_only")
                .await
                .map_err(|e| self.err("monitor", e.to_string()))?;
            db.close().await;
            if !(ro == "1" || ro.eq_ignore_ascii_case("on")) {
                self.read_only_checks.store(0, Relaxed);
                return Ok(keepup_resource::Health::Running);
            }
            // Read-only: follow a switchover only once it has finished (another
            // server is the writable primary). Failing while it is still
            // under way let the group move to a node whose server was not
            // primary yet, whose start then failed, and the group came back
            // here and switched the primary back.
            let n = self.read_only_checks.fetch_add(1, Relaxed) + 1;
            let st = keepup_db::observe(&keepup_db::with_dead_probe_timeout(&self.section)).await;
            match st.primary {
                Some(p) if p != self.server => Ok(keepup_resource::Health::Failed(format!(
                    "{p} is the writable primary now (switched over)"
                ))),
                _ if n >= 3 => Ok(keepup_resource::Health::Failed(
                    "read-only for three checks and no other server is the writable primary".into(),
                )),
                _ => Ok(keepup_resource::Health::Running),
            }
        })
    }
    fn monitor_interval(&self) -> std::time::Duration {
        self.monitor
    }
    fn timeout(&self) -> std::time::Duration {
        self.timeout
    }
}
