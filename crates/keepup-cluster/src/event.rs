//! What the core reports happened: for logs, status, metrics and tests.

use serde::Serialize;
use std::fmt;

/// Observable transitions, for logs, status and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A peer was heard for the first time or again after being dead.
    PeerUp {
        /// The peer.
        node: String,
    },
    /// A peer was silent on every link for the dead time.
    PeerDead {
        /// The peer.
        node: String,
        /// How long it had been silent, in ms.
        silent_ms: u64,
    },
    /// A peer announced a clean stop.
    PeerLeft {
        /// The peer.
        node: String,
    },
    /// A peer restarted (new boot generation).
    PeerRestarted {
        /// The peer.
        node: String,
    },
    /// One link to a peer went silent (the peer may be alive on others).
    LinkDown {
        /// The peer.
        node: String,
        /// Link index.
        link: usize,
    },
    /// A link to a peer carries heartbeats again.
    LinkUp {
        /// The peer.
        node: String,
        /// Link index.
        link: usize,
    },
    /// A heartbeat arrived later than the warn time.
    LateHeartbeat {
        /// The peer.
        node: String,
        /// Link index.
        link: usize,
        /// Gap since the previous one on that link, in ms.
        gap_ms: u64,
    },
    /// This node starts taking a group.
    Acquiring {
        /// The group.
        group: String,
        /// Why.
        reason: String,
    },
    /// This node now holds a group.
    Acquired {
        /// The group.
        group: String,
    },
    /// Another node that also held a group here gave it up; this node announces it again.
    Reasserted {
        /// The group.
        group: String,
        /// The node that also held it.
        other: String,
    },
    /// This node starts giving up a group.
    Releasing {
        /// The group.
        group: String,
        /// Why.
        reason: String,
    },
    /// This node no longer holds a group.
    Released {
        /// The group.
        group: String,
    },
    /// A group failed here and is backed off.
    GroupFailed {
        /// The group.
        group: String,
        /// The error.
        reason: String,
        /// Back-off before this node may try it again, in ms.
        backoff_ms: u64,
    },
    /// The consensus table gave this node a group at a new fencing epoch.
    LeaseGranted {
        /// The group.
        group: String,
        /// The fencing epoch.
        epoch: u64,
        /// The holder whose lease had expired, if it was taken over.
        from: Option<String>,
    },
    /// This node's lease is about to run out without a committed renewal
    /// (cut off from the majority, or paused): it stops the group now.
    LeaseExpiring {
        /// The group.
        group: String,
        /// The epoch it held.
        epoch: u64,
    },
    /// The table says another node (or nobody) holds a group this node ran.
    LeaseLost {
        /// The group.
        group: String,
        /// Who holds it now.
        holder: Option<String>,
    },
    /// A stop failed: the group stays on this node (nobody else starts it)
    /// until a retry succeeds, a fence succeeds or an operator runs `keepup cleanup`.
    StopFailed {
        /// The group.
        group: String,
        /// The stop error.
        reason: String,
        /// Next retry of the stop, in ms.
        retry_ms: u64,
    },
    /// This node fences another node before starting a group it held.
    Fencing {
        /// The group.
        group: String,
        /// The node being fenced.
        node: String,
    },
    /// A fence command finished.
    FenceDone {
        /// The group.
        group: String,
        /// The node.
        node: String,
        /// None on success, else the error.
        error: Option<String>,
    },
    /// A group failed because this node's own link lost its carrier: not
    /// charged to the back-off; the node may hold it again once the link returns.
    LinkFault {
        /// The group.
        group: String,
        /// The error.
        reason: String,
    },
    /// The consensus leader changed.
    Leader {
        /// The new leader (None: an election is running).
        node: Option<String>,
        /// Its term.
        term: u64,
    },
    /// This node lost or regained quorum.
    Quorum {
        /// Whether it has quorum now.
        has: bool,
    },
    /// This node lost or regained its ping targets.
    Connectivity {
        /// Whether it reaches them now.
        connected: bool,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::PeerUp { node } => write!(f, "peer {node} is up"),
            Event::PeerDead { node, silent_ms } => {
                write!(
                    f,
                    "peer {node} is dead (silent for {silent_ms} ms on every link)"
                )
            }
            Event::PeerLeft { node } => write!(f, "peer {node} left cleanly"),
            Event::PeerRestarted { node } => write!(f, "peer {node} restarted"),
            Event::LinkDown { node, link } => write!(f, "link {link} to {node} is down"),
            Event::LinkUp { node, link } => write!(f, "link {link} to {node} is up"),
            Event::LateHeartbeat { node, link, gap_ms } => {
                write!(
                    f,
                    "late heartbeat from {node} on link {link} ({gap_ms} ms gap)"
                )
            }
            Event::Acquiring { group, reason } => write!(f, "acquiring {group}: {reason}"),
            Event::Acquired { group } => write!(f, "acquired {group}"),
            Event::Reasserted { group, other } => {
                write!(
                    f,
                    "{other} also held {group} and gave it up: announcing it again"
                )
            }
            Event::Releasing { group, reason } => write!(f, "releasing {group}: {reason}"),
            Event::Released { group } => write!(f, "released {group}"),
            Event::GroupFailed {
                group,
                reason,
                backoff_ms,
            } => write!(
                f,
                "{group} failed here: {reason}; backing off {backoff_ms} ms"
            ),
            Event::LeaseGranted { group, epoch, from } => match from {
                Some(prev) => write!(
                    f,
                    "{group}: lease granted at epoch {epoch} (the lease of {prev} expired)"
                ),
                None => write!(f, "{group}: lease granted at epoch {epoch}"),
            },
            Event::LeaseExpiring { group, epoch } => write!(
                f,
                "{group}: lease of epoch {epoch} about to expire without a committed renewal: stopping it"
            ),
            Event::LeaseLost { group, holder } => match holder {
                Some(h) => write!(f, "{group}: the consensus table says {h} holds it: stopping it here"),
                None => write!(f, "{group}: the consensus table says nobody holds it: stopping it here"),
            },
            Event::StopFailed {
                group,
                reason,
                retry_ms,
            } => write!(
                f,
                "STOP FAILED for {group}: {reason}. It may still run here, so no other node starts it. \
                 Retrying in {retry_ms} ms; fix the resource, or configure a fence, or run \
                 `keepup cleanup {group}` once it is stopped by hand"
            ),
            Event::Fencing { group, node } => write!(f, "{group}: fencing {node} before taking over"),
            Event::FenceDone { group, node, error: None } => write!(f, "{group}: fenced {node}"),
            Event::FenceDone { group, node, error: Some(e) } => {
                write!(f, "{group}: fence of {node} failed: {e}")
            }
            Event::LinkFault { group, reason } => write!(
                f,
                "{group} failed on this node's own link ({reason}): not counted against it once the link returns"
            ),
            Event::Leader { node: Some(n), term } => write!(f, "consensus leader is {n} (term {term})"),
            Event::Leader { node: None, term } => write!(f, "no consensus leader (term {term}): electing"),
            Event::Quorum { has: true } => write!(f, "quorum regained"),
            Event::Quorum { has: false } => write!(f, "quorum lost: releasing everything"),
            Event::Connectivity { connected: true } => write!(f, "ping targets reachable again"),
            Event::Connectivity { connected: false } => {
                write!(f, "ping targets unreachable: releasing everything")
            }
        }
    }
}
