//! The cluster's brain, with no I/O: membership, failure detection,
//! election and failback as a state machine, written like raft-rs's core.
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
//!   gone at once.
//! - A node is *eligible* for a group when it is alive, allowed for the
//!   group, not in standby, connected (reaches a ping target, if any), has
//!   quorum, and has not just failed to start the group.
//! - The *rank* of a node is (priority descending, name ascending).
//! - The *holder* of a group is the best-ranked eligible node that says it is
//!   starting or owning it. The *desired owner* is the holder if there is one
//!   and failback is off (or the holder is the best eligible node, or the best
//!   has not been up for the failback delay); otherwise the best eligible node.
//! - A node starts a group only when it is the desired owner and **no other
//!   live node holds it in any state** — so a handover waits for the old
//!   owner to finish stopping, and two nodes never own at once as long as
//!   they hear each other. Every node computes the same answer from the same
//!   view, which makes two nodes starting together end with one owner.
//! - After boot a node acts on nobody's absence until it has heard every
//!   peer or `initial_dead` has passed.
//! - A failed start (or a monitor that cannot repair) stops the group, marks
//!   it `Failed` here for a back-off that doubles on each failure, and the
//!   next node takes it: the cluster moves on without flapping.

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
