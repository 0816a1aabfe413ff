//! Group ownership by consensus: a lease per resource group in a table that
//! every node replicates through raft-rs (TiKV's Raft), with a fencing epoch
//! that grows with every acquisition.
//!
//! Why raft-rs: its core is I/O-free, driven by `tick` and `step` like
//! keepup's own cluster core, so the deterministic simulator runs the real
//! engine; openraft drives its own async runtime and timers.
//!
//! # Leases
//! Time never enters the replicated state. A holder proposes a renewal,
//! remembers when (its monotonic clock), and when the renewal is committed
//! its lease runs until `proposed + lease`. Every node that applies an
//! entry touching a group notes when (its own monotonic clock); it may
//! propose to take the group only once `lease × (1+ρ)/(1−ρ)` has passed
//! since then with no newer change, and the proposal names the version it
//! saw, so a renewal committed meanwhile voids it. Because the holder
//! proposed before anyone applied, the holder's lease ends first in real
//! time whenever clock rates differ by less than ρ. The holder stops its
//! resources a stop bound before its lease ends.

#![forbid(unsafe_code)]

mod node;
mod store;
mod table;

pub use node::{node_id, Consensus, Output, Persist, StepError, Voter};
pub use store::{ImageError, LogStore};
pub use table::{Applied, Command, Lease, LeaseTable};
