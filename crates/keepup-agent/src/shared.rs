//! State shared between the heartbeat thread, the runtime and the API.

use crate::heartbeat::{Command, HeartbeatHandle};
use crate::Extension;
use keepup_api::types::{
    cluster_json, ControlRequest, ControlResponse, EventRecord, ResourceStatus, StatusReport,
};
use keepup_api::BoxFuture;
use keepup_cluster::{ClusterView, Event};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

const EVENTS_KEPT: usize = 200;

/// What the agent publishes for status, metrics and the dashboard.
pub struct Shared {
    node: String,
    started: Instant,
    inner: Mutex<Inner>,
    /// Per group: its fencing epoch and grant, written by the heartbeat
    /// thread, read by the group's resources.
    epochs: Mutex<BTreeMap<String, keepup_resource::Epoch>>,
}

#[derive(Default)]
struct Inner {
    view: Option<ClusterView>,
    events: VecDeque<EventRecord>,
    drops: BTreeMap<String, u64>,
    resources: Vec<ResourceStatus>,
    realtime: bool,
    heartbeat_overruns: u64,
    persists: u64,
    persist_max_us: u64,
    persist_total_us: u64,
}

impl Shared {
    /// Empty state for node `node`.
    pub fn new(node: &str) -> Shared {
        Shared {
            node: node.to_string(),
            started: Instant::now(),
            inner: Mutex::new(Inner::default()),
            epochs: Mutex::new(BTreeMap::new()),
        }
    }

    /// The epoch cell of `group` (created on first use): one cell shared by
    /// the heartbeat thread, which grants and revokes, and the resources.
    pub(crate) fn epoch(&self, group: &str) -> keepup_resource::Epoch {
        self.epochs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(group.to_string())
            .or_default()
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock must not take status down with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_view(&self, view: ClusterView) {
        self.lock().view = Some(view);
    }

    pub(crate) fn push_event(&self, e: &Event) {
        let mut g = self.lock();
        g.events.push_back(EventRecord::now(&self.node, e));
        while g.events.len() > EVENTS_KEPT {
            g.events.pop_front();
        }
    }

    pub(crate) fn count_drop(&self, reason: &str) -> u64 {
        let mut g = self.lock();
        let c = g.drops.entry(reason.to_string()).or_insert(0);
        *c += 1;
        *c
    }

    pub(crate) fn set_realtime(&self, on: bool) {
        self.lock().realtime = on;
    }

    pub(crate) fn record_persist(&self, took: std::time::Duration) {
        let mut g = self.lock();
        let us = took.as_micros() as u64;
        g.persists += 1;
        g.persist_total_us += us;
        g.persist_max_us = g.persist_max_us.max(us);
    }

    pub(crate) fn count_overrun(&self) {
        self.lock().heartbeat_overruns += 1;
    }

    pub(crate) fn set_resources(&self, group: &str, list: Vec<ResourceStatus>) {
        let mut g = self.lock();
        g.resources.retain(|r| r.group != group);
        g.resources.extend(list);
    }

    /// The latest cluster view.
    pub fn view(&self) -> Option<ClusterView> {
        self.lock().view.clone()
    }

    /// Recent events, oldest first.
    pub fn events(&self) -> Vec<EventRecord> {
        self.lock().events.iter().cloned().collect()
    }

    /// The cluster's events and the extensions' (backend health changes)
    /// merged by time, oldest first, the newest [`EVENTS_SHOWN`] kept.
    pub fn timeline(&self, extensions: &[Arc<dyn Extension>]) -> Vec<EventRecord> {
        let mut all = self.events();
        for e in extensions {
            all.extend(e.events());
        }
        all.sort_by_key(|e| e.unix_ms);
        let skip = all.len().saturating_sub(EVENTS_SHOWN);
        all.split_off(skip)
    }

    /// The status document.
    pub fn report(&self, extensions: &[Arc<dyn Extension>]) -> StatusReport {
        let g = self.lock();
        let mut report = StatusReport {
            schema: 1,
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: self.node.clone(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            cluster: g.view.as_ref().map(cluster_json).unwrap_or_default(),
            dropped_packets: g.drops.clone(),
            realtime: g.realtime,
            resources: g.resources.clone(),
            events: Vec::new(),
            lb: None,
            db: None,
        };
        drop(g);
        report.events = self.timeline(extensions);
        for ext in extensions {
            match ext.status() {
                ("lb", v) => report.lb = Some(v),
                ("db", v) => report.db = Some(v),
                _ => {}
            }
        }
        report
    }

    /// Prometheus text for the cluster part.
    pub fn metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let g = self.lock();
        let _ = writeln!(out, "# HELP keepup_up Whether the agent runs (always 1 when scraped).\n# TYPE keepup_up gauge\nkeepup_up{{node=\"{}\"}} 1", self.node);
        let _ = writeln!(out, "# HELP keepup_build_info The running keepup's version (always 1).\n# TYPE keepup_build_info gauge\nkeepup_build_info{{version=\"{}\",wire=\"{}\"}} 1", env!("CARGO_PKG_VERSION"), keepup_wire::VERSION);
        process_metrics(out, self.started.elapsed().as_secs_f64());
        let _ = writeln!(out, "# HELP keepup_realtime Whether the heartbeat thread runs SCHED_FIFO with memory locked.\n# TYPE keepup_realtime gauge\nkeepup_realtime {}", g.realtime as u8);
        let _ = writeln!(out, "# HELP keepup_heartbeat_loop_overruns_total Times the heartbeat thread woke more than 10 ms after its deadline.\n# TYPE keepup_heartbeat_loop_overruns_total counter\nkeepup_heartbeat_loop_overruns_total {}", g.heartbeat_overruns);
        let _ = writeln!(out, "# HELP keepup_consensus_persists_total Consensus log images written and fsync'd.\n# TYPE keepup_consensus_persists_total counter\nkeepup_consensus_persists_total {}", g.persists);
        let _ = writeln!(out, "# HELP keepup_consensus_persist_seconds_max Longest write+fsync of the consensus log.\n# TYPE keepup_consensus_persist_seconds_max gauge\nkeepup_consensus_persist_seconds_max {:.6}", g.persist_max_us as f64 / 1e6);
        let _ = writeln!(out, "# HELP keepup_heartbeat_packets_dropped_total Heartbeat packets dropped, by reason.\n# TYPE keepup_heartbeat_packets_dropped_total counter");
        for reason in [
            "truncated",
            "oversized",
            "bad_magic",
            "bad_version",
            "bad_signature",
            "malformed",
            "wrong_cluster",
            "unknown_node",
            "wrong_link",
            "replayed",
            "unknown_source",
        ] {
            let _ = writeln!(
                out,
                "keepup_heartbeat_packets_dropped_total{{reason=\"{reason}\"}} {}",
                g.drops.get(reason).copied().unwrap_or(0)
            );
        }
        if let Some(v) = &g.view {
            let _ = writeln!(out, "# HELP keepup_node_up Whether a node is alive as seen from here.\n# TYPE keepup_node_up gauge");
            for n in &v.nodes {
                let _ = writeln!(
                    out,
                    "keepup_node_up{{node=\"{}\"}} {}",
                    n.name, n.alive as u8
                );
            }
            let _ = writeln!(out, "# HELP keepup_node_last_heard_seconds Time since a peer was last heard.\n# TYPE keepup_node_last_heard_seconds gauge");
            for n in v.nodes.iter().filter(|n| !n.me) {
                if let Some(ms) = n.last_heard_ms {
                    let _ = writeln!(
                        out,
                        "keepup_node_last_heard_seconds{{node=\"{}\"}} {:.3}",
                        n.name,
                        ms as f64 / 1000.0
                    );
                }
            }
            let _ = writeln!(out, "# HELP keepup_link_up Whether heartbeats arrive from a peer on a link.\n# TYPE keepup_link_up gauge");
            for n in v.nodes.iter().filter(|n| !n.me) {
                for (i, up) in n.links.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "keepup_link_up{{node=\"{}\",link=\"{i}\"}} {}",
                        n.name, *up as u8
                    );
                }
            }
            let _ = writeln!(out, "# HELP keepup_group_owned Whether this node owns a group.\n# TYPE keepup_group_owned gauge");
            for grp in &v.groups {
                let _ = writeln!(
                    out,
                    "keepup_group_owned{{group=\"{}\"}} {}",
                    grp.name,
                    (grp.owner.as_deref() == Some(v.me.as_str())) as u8
                );
            }
            let c = &v.counters;
            for (name, help, val) in [
                (
                    "keepup_heartbeats_received_total",
                    "Heartbeats accepted from peers.",
                    c.adverts_received,
                ),
                (
                    "keepup_heartbeats_sent_total",
                    "Adverts sent (each goes to every peer on every link).",
                    c.adverts_sent,
                ),
                (
                    "keepup_heartbeats_late_total",
                    "Heartbeats that arrived after the warn time.",
                    c.late_heartbeats,
                ),
                (
                    "keepup_peers_declared_dead_total",
                    "Times a peer was declared dead.",
                    c.peers_declared_dead,
                ),
                (
                    "keepup_group_acquisitions_total",
                    "Groups acquired by this node.",
                    c.acquisitions,
                ),
                (
                    "keepup_group_releases_total",
                    "Groups released by this node.",
                    c.releases,
                ),
            ] {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} counter\n{name} {val}"
                );
            }
        }
    }
}

/// Events in the timeline (status, `/v1/events`, dashboard).
pub const EVENTS_SHOWN: usize = 200;

/// The API's view of the agent.
pub(crate) struct ApiBackend {
    pub shared: Arc<Shared>,
    pub hb: HeartbeatHandle,
    pub extensions: Vec<Arc<dyn Extension>>,
    /// Every node's API address (this node's on loopback) for `/v1/cluster`,
    /// or why it cannot be asked.
    pub peers: Vec<(String, Result<String, String>)>,
    /// The read token `/v1/cluster` asks the peers with.
    pub read_token: String,
    /// The client it asks them with (HTTPS when the API has TLS).
    pub client: keepup_api::ApiClient,
}

impl ApiBackend {
    /// Posts a command that answers on a channel and waits (at most 5 s) for
    /// the heartbeat thread's answer; None when it did not answer.
    async fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(std::sync::mpsc::Sender<Result<T, String>>) -> Command,
    ) -> Option<Result<T, String>> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.hb.send(make(tx));
        tokio::task::spawn_blocking(move || rx.recv_timeout(std::time::Duration::from_secs(5)))
            .await
            .ok()
            .and_then(|r| r.ok())
    }
}

/// A control answer from the heartbeat thread's result.
fn answer_of(answer: Option<Result<String, String>>) -> ControlResponse {
    match answer {
        Some(Ok(message)) => ControlResponse { ok: true, message },
        Some(Err(message)) => ControlResponse {
            ok: false,
            message: format!("refused: {message}"),
        },
        None => ControlResponse {
            ok: false,
            message: "the heartbeat thread did not answer".into(),
        },
    }
}

impl keepup_api::Backend for ApiBackend {
    fn extra(
        &self,
        method: &keepup_api::Method,
        path: &str,
        query: Option<&str>,
    ) -> Option<(keepup_api::StatusCode, &'static str, keepup_api::Bytes)> {
        if method != keepup_api::Method::GET {
            return None;
        }
        self.extensions.iter().find_map(|e| {
            let (code, body) = e.http(path, query)?;
            let status = keepup_api::StatusCode::from_u16(code)
                .unwrap_or(keepup_api::StatusCode::INTERNAL_SERVER_ERROR);
            Some((status, "application/json", keepup_api::Bytes::from(body)))
        })
    }
    fn status_json(&self) -> serde_json::Value {
        serde_json::to_value(self.shared.report(&self.extensions)).unwrap_or_default()
    }
    fn cluster(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move {
            let answers =
                keepup_api::cluster::fetch_all(&self.client, self.peers.clone(), &self.read_token)
                    .await;
            keepup_api::cluster::document(answers)
        })
    }
    fn events_json(&self) -> serde_json::Value {
        serde_json::to_value(self.shared.timeline(&self.extensions)).unwrap_or_default()
    }
    fn metrics(&self) -> String {
        let mut out = String::new();
        self.shared.metrics(&mut out);
        for e in &self.extensions {
            e.metrics(&mut out);
        }
        out
    }
    fn control(&self, req: ControlRequest) -> BoxFuture<'_, ControlResponse> {
        Box::pin(async move {
            match req {
                ControlRequest::Standby => {
                    let refusal = self.shared.view().and_then(|v| {
                        let others = v
                            .nodes
                            .iter()
                            .filter(|n| !n.me && n.alive && !n.standby && n.connected)
                            .count();
                        let holds = v
                            .groups
                            .iter()
                            .any(|g| g.owner.as_deref() == Some(v.me.as_str()));
                        (others == 0 && holds).then(|| {
                            "refused: no other healthy node would take over this node's groups"
                                .to_string()
                        })
                    });
                    if let Some(message) = refusal {
                        return ControlResponse { ok: false, message };
                    }
                    self.hb.send(Command::Standby(true));
                    ControlResponse {
                        ok: true,
                        message: "standby: this node releases its groups".into(),
                    }
                }
                ControlRequest::Move { group, node } => {
                    let (g, n) = (group.clone(), node.clone());
                    let answer = self
                        .ask(move |reply| Command::Move {
                            group: g,
                            target: n,
                            reply,
                        })
                        .await;
                    answer_of(answer.map(|r| {
                        r.map(|()| {
                            format!("moving {group} to {node}: this node stops it and steps aside")
                        })
                    }))
                }
                ControlRequest::Cleanup { group } => {
                    let answer = self
                        .ask(move |reply| Command::Cleanup { group, reply })
                        .await;
                    answer_of(answer)
                }
                ControlRequest::Online => {
                    self.hb.send(Command::Standby(false));
                    ControlResponse {
                        ok: true,
                        message: "online: this node may hold groups again".into(),
                    }
                }
                other => {
                    for e in &self.extensions {
                        if let Some(fut) = e.control(&other) {
                            return fut.await;
                        }
                    }
                    ControlResponse {
                        ok: false,
                        message: format!("not configured on this node: {other:?}"),
                    }
                }
            }
        })
    }
}

/// Prometheus' standard process metrics, from /proc/self (no crate needed
/// for four numbers): CPU seconds, resident memory, open descriptors and
/// their limit, and start time.
fn process_metrics(out: &mut String, uptime_s: f64) {
    use std::fmt::Write;
    // utime and stime are fields 14 and 15 of /proc/self/stat, after the
    // parenthesised command name (which may hold spaces).
    let ticks = 100.0; // USER_HZ on Linux
    if let Some(rest) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.to_string()))
    {
        let f: Vec<&str> = rest.split_whitespace().collect();
        let cpu = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        let _ = writeln!(out, "# HELP process_cpu_seconds_total User and system CPU time spent.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {:.2}", cpu / ticks);
    }
    if let Some(kb) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| {
                    v.split_whitespace()
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                })
        })
    {
        let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}", kb * 1024);
    }
    if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(out, "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}", d.count());
    }
    if let Some(max) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(3)
                        .and_then(|n| n.parse::<u64>().ok())
                })
        })
    {
        let _ = writeln!(out, "# HELP process_max_fds Limit of open file descriptors.\n# TYPE process_max_fds gauge\nprocess_max_fds {max}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let _ = writeln!(out, "# HELP process_start_time_seconds Start time of the agent (Unix seconds).\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {:.0}", now - uptime_s);
}
