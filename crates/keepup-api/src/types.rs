//! The JSON vocabulary of the API (described for clients in `openapi.json`, served at `/openapi.json`).

use keepup_cluster::{ClusterView, Event};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything `keepup status` shows, as one document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// Schema version of this document.
    pub schema: u32,
    /// keepup version of the agent.
    pub version: String,
    /// The node answering.
    pub node: String,
    /// Seconds since the agent started.
    pub uptime_s: f64,
    /// Cluster membership and groups as this node sees them.
    pub cluster: serde_json::Value,
    /// Heartbeat packets dropped, by reason (`bad_signature`, `replayed`, ...).
    pub dropped_packets: BTreeMap<String, u64>,
    /// Whether the heartbeat thread runs at real-time priority with memory locked.
    pub realtime: bool,
    /// Per group: resources and their last known state on this node.
    pub resources: Vec<ResourceStatus>,
    /// Most recent events, oldest first.
    pub events: Vec<EventRecord>,
    /// Load balancer status, when configured.
    pub lb: Option<serde_json::Value>,
    /// Database status, when configured.
    pub db: Option<serde_json::Value>,
}

/// Serializes a cluster view into the report's `cluster` field.
pub fn cluster_json(view: &ClusterView) -> serde_json::Value {
    serde_json::to_value(view).unwrap_or(serde_json::Value::Null)
}

/// One resource on this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceStatus {
    /// The group it belongs to.
    pub group: String,
    /// Its description (`vip 10.77.0.100/24`).
    pub resource: String,
    /// `stopped`, `starting`, `running`, `stopping`, `failed`.
    pub state: String,
    /// Last error, if any.
    pub last_error: Option<String>,
}

/// One event with its wall-clock time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    /// Unix time in milliseconds.
    pub unix_ms: u64,
    /// The node that saw it.
    pub node: String,
    /// Human text.
    pub text: String,
    /// The structured event.
    pub event: serde_json::Value,
}

impl EventRecord {
    /// Stamps `event` with the current wall-clock time.
    pub fn now(node: &str, event: &Event) -> EventRecord {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        EventRecord {
            unix_ms,
            node: node.to_string(),
            text: event.to_string(),
            event: serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A control request (`POST /v1/...`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Move everything off this node (maintenance).
    Standby,
    /// Let this node hold groups again.
    Online,
    /// Move a group held by this node to `node` (next in line).
    Move {
        /// The group.
        group: String,
        /// The node that should take it.
        node: String,
    },
    /// Set a load-balancer backend's admin state (`enabled`, `drain`, `maintenance`).
    LbBackend {
        /// Pool name.
        pool: String,
        /// Backend name.
        backend: String,
        /// New state.
        state: String,
    },
    /// An operator says a group stuck by a failed stop is stopped everywhere.
    Cleanup {
        /// The group.
        group: String,
    },
    /// Re-read the config file and apply the load-balancer part.
    Reload,
    /// Switch the database primary over to `to`.
    DbSwitchover {
        /// Target server.
        to: String,
    },
}

/// The answer to a control request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlResponse {
    /// Whether it was done.
    pub ok: bool,
    /// What happened, or why it was refused.
    pub message: String,
}
