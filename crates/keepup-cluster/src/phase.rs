//! One group's state on one node, as one type: what the node is doing
//! with the group's resources, and only the facts that go with it.

use crate::Time;
use keepup_wire::GroupState;

/// What to become once a stop has finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// Nothing held here; may take it again by the normal rules.
    Release,
    /// A failure here: not a candidate until then.
    BackOff(Time),
    /// An operator moved it away: not a candidate until then.
    Decline(Time),
    /// This node's own link failed: not a candidate until it returns.
    AwaitLink,
}

/// A group's phase on this node. Resources may be active exactly in
/// `Starting`, `Held`, `Stopping` and `StopFailed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not held here.
    Released,
    /// Failed here; not a candidate until `until`.
    BackedOff {
        /// End of the back-off.
        until: Time,
    },
    /// Moved away by an operator; not a candidate until `until`.
    Declined {
        /// End of the hold.
        until: Time,
    },
    /// Failed because this node's own link lost carrier; not a candidate
    /// until the agent reports the link back.
    AwaitingLink,
    /// Consensus mode: an acquisition was proposed at `since` and is not committed yet.
    Acquiring {
        /// The proposal's nonce.
        nonce: u64,
        /// When it was proposed (the lease counts from here).
        since: Time,
    },
    /// The lease is ours, but the previous holder is being fenced first.
    Fencing {
        /// Fencing epoch.
        epoch: u64,
        /// The node being fenced.
        target: String,
        /// Lease end (consensus mode).
        lease_end: Option<Time>,
    },
    /// This node fences `target`, stuck on the group after a failed stop, to free it.
    FencingOther {
        /// The stuck holder.
        target: String,
        /// Its epoch.
        epoch: u64,
    },
    /// Resources starting.
    Starting {
        /// Fencing epoch.
        epoch: u64,
        /// Lease end (consensus mode; None when unguarded).
        lease_end: Option<Time>,
    },
    /// Resources running.
    Held {
        /// Fencing epoch.
        epoch: u64,
        /// Since when.
        since: Time,
        /// Lease end (consensus mode; None when unguarded).
        lease_end: Option<Time>,
    },
    /// Resources stopping.
    Stopping {
        /// The epoch they ran at.
        epoch: u64,
        /// What comes after.
        then: AfterStop,
    },
    /// The stop failed: resources may still run here. Retried at `retry_at`.
    StopFailed {
        /// The epoch they ran at.
        epoch: u64,
        /// What comes after the stop, once a retry succeeds.
        then: AfterStop,
        /// The stop error.
        reason: String,
        /// Next retry.
        retry_at: Time,
    },
}

impl Phase {
    /// What the heartbeat advert says about it.
    pub fn wire(&self) -> GroupState {
        match self {
            Phase::Released | Phase::Acquiring { .. } | Phase::FencingOther { .. } => {
                GroupState::Released
            }
            Phase::BackedOff { .. } | Phase::Declined { .. } | Phase::AwaitingLink => {
                GroupState::Failed
            }
            Phase::Fencing { .. } | Phase::Starting { .. } => GroupState::Starting,
            Phase::Held { .. } => GroupState::Owned,
            Phase::Stopping { .. } => GroupState::Stopping,
            Phase::StopFailed { .. } => GroupState::StopFailed,
        }
    }

    /// Resources may be active here.
    pub fn resources_may_run(&self) -> bool {
        matches!(
            self,
            Phase::Starting { .. }
                | Phase::Held { .. }
                | Phase::Stopping { .. }
                | Phase::StopFailed { .. }
        )
    }

    /// A start, stop or fence is running; its outcome is awaited.
    pub fn busy(&self) -> bool {
        matches!(
            self,
            Phase::Starting { .. }
                | Phase::Stopping { .. }
                | Phase::Fencing { .. }
                | Phase::FencingOther { .. }
        )
    }

    /// The epoch held here, if the lease is ours.
    pub fn held_epoch(&self) -> Option<u64> {
        match self {
            Phase::Fencing { epoch, .. }
            | Phase::Starting { epoch, .. }
            | Phase::Held { epoch, .. }
            | Phase::Stopping { epoch, .. }
            | Phase::StopFailed { epoch, .. } => Some(*epoch),
            _ => None,
        }
    }

    /// The lease end, where one counts (renewals extend it).
    pub fn lease_end_mut(&mut self) -> Option<&mut Time> {
        match self {
            Phase::Fencing { lease_end, .. }
            | Phase::Starting { lease_end, .. }
            | Phase::Held { lease_end, .. } => lease_end.as_mut(),
            _ => None,
        }
    }

    /// A short lower-case name for status.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Released => "released",
            Phase::BackedOff { .. } => "failed",
            Phase::Declined { .. } => "declined",
            Phase::AwaitingLink => "awaiting-link",
            Phase::Acquiring { .. } => "acquiring",
            Phase::Fencing { .. } => "fencing",
            Phase::FencingOther { .. } => "fencing-other",
            Phase::Starting { .. } => "starting",
            Phase::Held { .. } => "owned",
            Phase::Stopping { .. } => "stopping",
            Phase::StopFailed { .. } => "stop-failed",
        }
    }
}

impl AfterStop {
    /// The phase a finished stop leads to.
    pub fn phase(self) -> Phase {
        match self {
            AfterStop::Release => Phase::Released,
            AfterStop::BackOff(until) => Phase::BackedOff { until },
            AfterStop::Decline(until) => Phase::Declined { until },
            AfterStop::AwaitLink => Phase::AwaitingLink,
        }
    }
}
