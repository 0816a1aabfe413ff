//! Snapshots of the core for status displays.

use crate::CoreCounters;
use serde::Serialize;

/// What `keepup status` shows about the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// Cluster name.
    pub cluster: String,
    /// This node.
    pub me: String,
    /// Whether the initial dead time is over (or every peer was heard).
    pub settled: bool,
    /// Every node, this one first.
    pub nodes: Vec<NodeView>,
    /// Every group.
    pub groups: Vec<GroupView>,
    /// How ownership is decided: "consensus" (leases) or "unguarded" (quorum = "none").
    pub ownership: String,
    /// The consensus engine's state (None in unguarded mode).
    pub consensus: Option<ConsensusView>,
    /// Protocol counters.
    pub counters: CoreCounters,
}

/// One node in a [`ClusterView`].
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Name.
    pub name: String,
    /// Is this the local node?
    pub me: bool,
    /// Election priority.
    pub priority: u32,
    /// Alive (heard within the dead time on some link).
    pub alive: bool,
    /// Milliseconds since last heard (None: never).
    pub last_heard_ms: Option<u64>,
    /// Per link: heard within the dead time.
    pub links: Vec<bool>,
    /// In standby.
    pub standby: bool,
    /// Reaches its ping targets.
    pub connected: bool,
    /// Has quorum.
    pub quorum: bool,
    /// A witness: votes, holds no resources.
    pub witness: bool,
}

/// The consensus engine in a [`ClusterView`].
#[derive(Debug, Clone, Serialize)]
pub struct ConsensusView {
    /// The leader this node knows (None: an election is running).
    pub leader: Option<String>,
    /// The raft term.
    pub term: u64,
    /// The voters in force.
    pub voters: Vec<String>,
    /// Index of the last applied log entry.
    pub applied_index: u64,
}

/// One group in a [`ClusterView`].
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    /// Name.
    pub name: String,
    /// The node that owns it (started and running), if any.
    pub owner: Option<String>,
    /// This node's state for it.
    pub local_state: String,
    /// The node that should hold it by the election rules.
    pub desired: Option<String>,
    /// Remaining failure back-off on this node, in ms.
    pub backoff_ms: Option<u64>,
    /// The fencing epoch of the current (or last) holder.
    pub epoch: u64,
    /// The holder by the consensus table (unguarded mode: by the adverts).
    pub holder: Option<String>,
    /// When the holder's stop failed: the error, and what to do.
    pub stop_failed: Option<String>,
    /// On the holder: ms left on its lease.
    pub lease_ms_left: Option<u64>,
}
