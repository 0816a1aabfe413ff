//! Performs the core's resource operations on the tokio runtime: start a
//! group's resources in order, stop them in reverse, and monitor them while
//! the group is held here.

use crate::heartbeat::{Command, HeartbeatHandle, ResourceRequest};
use crate::shared::Shared;
use keepup_api::types::ResourceStatus;
use keepup_cluster::ResourceOutcome;
use keepup_config::Config;
use keepup_resource::{with_timeout, Context, Epoch, Health, Resource};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

struct Group {
    resources: Vec<Box<dyn Resource>>,
    monitor: Option<JoinHandle<()>>,
    ctx: Context,
    fence: Option<keepup_config::FenceConfig>,
}

/// Owns every resource of every group this node may hold.
pub(crate) struct Runner {
    groups: HashMap<String, Arc<Mutex<Group>>>,
    shared: Arc<Shared>,
}

impl Runner {
    /// Builds every resource from the config (errors name the resource).
    pub fn new(
        config: &Config,
        me: &str,
        shared: Arc<Shared>,
        factory: Option<&dyn crate::ResourceFactory>,
    ) -> anyhow::Result<Runner> {
        let mut groups = HashMap::new();
        let witness = config.node(me).is_some_and(|n| n.is_witness());
        for g in config.file.group.iter().filter(|_| !witness) {
            // Only groups this node may hold: a db-primary on a load-balancer
            // node, say, has nothing to build here and is never started here.
            if !g.nodes.is_empty() && !g.nodes.iter().any(|n| n.get_ref() == me) {
                continue;
            }
            let ctx = Context {
                cluster: config.file.cluster.name.get_ref().clone(),
                node: me.to_string(),
                group: g.name.get_ref().clone(),
                epoch: shared.epoch(g.name.get_ref()),
            };
            let mut resources = Vec::new();
            for r in &g.resource {
                let built = match factory.and_then(|f| f.build(r, &ctx)) {
                    Some(b) => b,
                    None => keepup_resource::build(r, &ctx),
                };
                resources.push(built?);
            }
            shared.set_resources(
                &ctx.group,
                resources
                    .iter()
                    .map(|r| status(&ctx.group, r.as_ref(), "stopped", None))
                    .collect(),
            );
            groups.insert(
                ctx.group.clone(),
                Arc::new(Mutex::new(Group {
                    resources,
                    monitor: None,
                    ctx: ctx.clone(),
                    fence: g.fence.clone(),
                })),
            );
        }
        Ok(Runner { groups, shared })
    }

    /// Stops everything once at boot: a crashed previous run may have left a
    /// VIP behind, and this node must not hold anything it has not acquired.
    pub async fn stop_everything_at_boot(&self) {
        for (name, g) in &self.groups {
            let g = g.lock().await;
            for r in g.resources.iter().rev() {
                if let Err(e) = with_timeout(r.as_ref(), "stop", r.stop()).await {
                    tracing::warn!(group = %name, "cleanup at boot: {e}");
                }
            }
        }
    }

    /// Performs one request; returns the outcome to report to the core.
    pub async fn perform(
        &self,
        req: ResourceRequest,
        hb: &HeartbeatHandle,
    ) -> (String, ResourceOutcome) {
        match req {
            ResourceRequest::Start(name, epoch) => {
                let outcome = self.start(&name, epoch, hb).await;
                (name, outcome)
            }
            ResourceRequest::Fence { group, node, epoch } => {
                let outcome = self.fence(&group, &node, epoch).await;
                (group, outcome)
            }
            ResourceRequest::Stop(name) => {
                let outcome = self.stop(&name).await;
                (name, outcome)
            }
            ResourceRequest::Reassert(name) => (name, ResourceOutcome::Started),
        }
    }

    /// Runs every resource's (idempotent) start again, so a VIP is announced
    /// afresh with gratuitous ARPs. Failures are left to the monitor.
    pub async fn reassert(&self, name: &str) {
        let Some(group) = self.groups.get(name) else {
            return;
        };
        let g = group.lock().await;
        for r in &g.resources {
            if let Err(e) = with_timeout(r.as_ref(), "start", r.start()).await {
                tracing::warn!(group = %name, "re-announcing: {e}");
            }
        }
    }

    /// Runs the group's fence against `node` (an exec fence reuses the
    /// exec resource's runner: timeout, process group, stderr in the error).
    async fn fence(&self, name: &str, node: &str, epoch: u64) -> ResourceOutcome {
        let Some(group) = self.groups.get(name) else {
            return ResourceOutcome::FenceFailed(format!("unknown group {name}"));
        };
        let (ctx, fence) = {
            let g = group.lock().await;
            (g.ctx.clone(), g.fence.clone())
        };
        let ctx = Context {
            epoch: Epoch::default(),
            ..ctx
        };
        ctx.epoch.set(epoch);
        let outcome = match fence {
            None => {
                return ResourceOutcome::FenceFailed(format!(
                    "group {name} has no fence configured"
                ))
            }
            Some(keepup_config::FenceConfig::Exec {
                command,
                timeout_ms,
            }) => {
                let cfg = keepup_config::ExecResource {
                    name: "fence".into(),
                    start: command,
                    stop: "true".into(),
                    status: None,
                    timeout_ms,
                    env: [("KEEPUP_FENCE_NODE".to_string(), node.to_string())].into(),
                    monitor_interval_ms: keepup_config::Millis(1000),
                };
                match keepup_resource::build(&keepup_config::ResourceConfig::Exec(cfg), &ctx) {
                    Ok(exec) => with_timeout(exec.as_ref(), "fence", exec.start()).await,
                    Err(e) => Err(e),
                }
            }
            Some(keepup_config::FenceConfig::Digitalocean {
                token_file,
                api_url,
                droplets,
                timeout_ms,
            }) => {
                let timeout = timeout_ms.duration();
                match keepup_resource::digitalocean::PowerOff::new(
                    &api_url,
                    &token_file,
                    droplets,
                    timeout,
                ) {
                    // The module's own deadline fires first, with its message.
                    Ok(p) => p.fence(node).await.map(|_| ()),
                    Err(e) => Err(e),
                }
            }
        };
        match outcome {
            Ok(()) => {
                tracing::warn!(group = %name, epoch, "fenced {node}");
                ResourceOutcome::Fenced
            }
            Err(e) => ResourceOutcome::FenceFailed(e.to_string()),
        }
    }

    async fn start(&self, name: &str, epoch: u64, hb: &HeartbeatHandle) -> ResourceOutcome {
        let Some(group) = self.groups.get(name) else {
            return ResourceOutcome::StartFailed(format!("unknown group {name}"));
        };
        let mut g = group.lock().await;
        g.ctx.epoch.set(epoch);
        let mut states: Vec<ResourceStatus> = g
            .resources
            .iter()
            .map(|r| status(name, r.as_ref(), "stopped", None))
            .collect();
        for i in 0..g.resources.len() {
            let r = g.resources[i].as_ref();
            states[i].state = "starting".into();
            self.shared.set_resources(name, states.clone());
            match with_timeout(r, "start", r.start()).await {
                Ok(()) => {
                    tracing::info!(group = %name, "started {}", r.describe());
                    states[i].state = "running".into();
                }
                Err(e) => {
                    tracing::error!(group = %name, "{e}");
                    states[i].state = "failed".into();
                    states[i].last_error = Some(e.to_string());
                    // Undo what was started, in reverse, so the next node starts clean.
                    for j in (0..i).rev() {
                        let rj = g.resources[j].as_ref();
                        if let Err(e2) = with_timeout(rj, "stop", rj.stop()).await {
                            tracing::error!(group = %name, "after failed start: {e2}");
                        }
                        states[j].state = "stopped".into();
                    }
                    self.shared.set_resources(name, states);
                    return ResourceOutcome::StartFailed(e.to_string());
                }
            }
        }
        self.shared.set_resources(name, states);
        g.monitor = Some(tokio::spawn(monitor(
            name.to_string(),
            group.clone(),
            hb.clone(),
            self.shared.clone(),
        )));
        ResourceOutcome::Started
    }

    async fn stop(&self, name: &str) -> ResourceOutcome {
        let Some(group) = self.groups.get(name) else {
            return ResourceOutcome::Stopped;
        };
        let mut g = group.lock().await;
        if let Some(m) = g.monitor.take() {
            m.abort();
        }
        let mut errors = Vec::new();
        let mut states = Vec::new();
        for r in g.resources.iter().rev() {
            match with_timeout(r.as_ref(), "stop", r.stop()).await {
                Ok(()) => states.push(status(name, r.as_ref(), "stopped", None)),
                Err(e) => {
                    tracing::error!(group = %name, "{e}");
                    states.push(status(name, r.as_ref(), "failed", Some(e.to_string())));
                    errors.push(e.to_string());
                }
            }
        }
        states.reverse();
        self.shared.set_resources(name, states);
        if errors.is_empty() {
            ResourceOutcome::Stopped
        } else {
            ResourceOutcome::StopFailed(errors.join("; "))
        }
    }
}

fn status(group: &str, r: &dyn Resource, state: &str, err: Option<String>) -> ResourceStatus {
    ResourceStatus {
        group: group.to_string(),
        resource: r.describe(),
        state: state.to_string(),
        last_error: err,
    }
}

/// Watches a held group's resources; reports an unrepairable failure.
async fn monitor(name: String, group: Arc<Mutex<Group>>, hb: HeartbeatHandle, shared: Arc<Shared>) {
    let interval = {
        let g = group.lock().await;
        g.resources
            .iter()
            .map(|r| r.monitor_interval())
            .min()
            .unwrap_or(std::time::Duration::from_secs(1))
    };
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        // try_lock: a stop in progress holds the lock and will abort us.
        let Ok(g) = group.try_lock() else { continue };
        for r in &g.resources {
            match with_timeout(r.as_ref(), "monitor", r.monitor()).await {
                Ok(Health::Running) => {}
                Ok(Health::Restored(what)) => {
                    tracing::warn!(group = %name, "{}: restored: {what}", r.describe());
                    shared.push_event(&keepup_cluster::Event::Acquired {
                        group: name.clone(),
                    });
                }
                Ok(Health::Failed(why)) => {
                    let why = format!("{}: {why}", r.describe());
                    match r.link().filter(|l| !has_carrier(l)) {
                        Some(link) => {
                            hb.send(Command::Resource(
                                name.clone(),
                                ResourceOutcome::LinkDown(format!("{why} ({link} has no carrier)")),
                            ));
                            tokio::spawn(await_carrier(name.clone(), link, hb.clone()));
                        }
                        None => hb.send(Command::Resource(
                            name.clone(),
                            ResourceOutcome::MonitorFailed(why),
                        )),
                    }
                    return;
                }
                Err(e) => {
                    hb.send(Command::Resource(
                        name.clone(),
                        ResourceOutcome::MonitorFailed(e.to_string()),
                    ));
                    return;
                }
            }
        }
    }
}

/// Whether interface `link` reports a carrier (an unreadable state counts as up,
/// so only a link known to be down is treated as a link fault).
fn has_carrier(link: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{link}/carrier"))
        .map(|s| s.trim() != "0")
        .unwrap_or(true)
}

/// Waits for `link`'s carrier to return, then tells the core.
async fn await_carrier(group: String, link: String, hb: HeartbeatHandle) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tick.tick().await;
        if has_carrier(&link) {
            tracing::info!(group = %group, "{link} carries again");
            hb.send(Command::LinkRestored(group));
            return;
        }
    }
}
