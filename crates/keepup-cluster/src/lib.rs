//! The cluster's brain, with no I/O: failure detection, ranking, group
//! phases, leases over the raft-backed table, and failback, as a state
//! machine driven like raft-rs's core.
//!
//! The caller (the agent's heartbeat thread, or the simulator in tests)
//! feeds it events with the current time — [`Core::on_packet`],
//! [`Core::on_resource`], [`Core::set_connected`], [`Core::tick`] — and
//! drains [`Action`]s: adverts to send, groups to start or stop, and events
//! to log. It never reads a clock or touches a socket, so every rule below
//! is tested deterministically with a simulated clock and network in
//! milliseconds (see `sim`), then again for real in network namespaces.
//!
//! # The rules
//! - A peer is alive while it was heard on any link within `dead`; a link is
//!   up while heard on it within `dead`. A peer that says it is leaving is
//!   gone at once. A peer counts only once its heartbeats echo this node's
//!   current boot generation (recordings from before a restart cannot).
//! - A node is *eligible* for a group when it is alive, not a witness,
//!   allowed for the group, not in standby, connected (reaches a ping target,
//!   if any), and not backed off after a failure there.
//! - The *rank* of a node is (priority descending, name ascending). The
//!   *desired owner* is the current holder if it is eligible (unless failback
//!   is on and a better node has been up for the failback delay), else the
//!   best eligible node.
//! - **Consensus ownership** (3+ voters, or `quorum = "majority"`): the
//!   holder is whoever the replicated lease table (`keepup-consensus`, raft)
//!   names. The desired owner proposes an acquisition once the table says
//!   the group is free, or once `lease × (1+ρ)/(1−ρ)` has passed on its own
//!   clock since it saw the lease last change; it starts the resources only
//!   when the acquisition is committed, at the new epoch. The holder renews
//!   every raft tick and stops a stop bound before its lease ends when
//!   renewals no longer commit. Failed stops are committed and keep the
//!   group in place until a retry, a fence or a cleanup.
//! - **Unguarded ownership** (`quorum = "none"`): a node starts a group when
//!   it is the desired owner and no other live node holds it in any state,
//!   so a handover waits for the old owner to finish stopping, and two
//!   nodes never own at once as long as they hear each other.
//! - After boot a node acts on nobody's absence until it has heard every
//!   peer or `initial_dead` has passed.
//! - A failed start (or a monitor that cannot repair) stops the group, marks
//!   it failed here for a back-off that doubles on each failure, and the
//!   next node takes it: the cluster moves on without flapping. A failure on
//!   a link without carrier is not charged.

#![forbid(unsafe_code)]

mod core;
mod event;
mod phase;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod view;

pub use crate::core::*;
pub use crate::event::Event;
pub use crate::phase::{AfterStop, Phase};
pub use crate::view::{ClusterView, ConsensusView, GroupView, NodeView};
pub use keepup_wire::{Advert, Flags, GroupState};
