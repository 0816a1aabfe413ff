//! The replicated state machine: one lease per resource group.
//!
//! Every node applies the same committed commands in the same order, so
//! every node computes the same table. Applying is a pure function of the
//! table, the log index and the command: no clock, no randomness. Time
//! enters only at the edges (see the crate docs): a proposer checks by its
//! own monotonic clock that a lease has expired, and the table only checks
//! that nothing changed since the proposer looked (`expect_version`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A command proposed to the replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `node` takes `group`, if its lease version is still `expect_version`
    /// (the proposer saw it free, or saw its lease expire, at that version).
    Acquire {
        /// The group.
        group: String,
        /// The node taking it.
        node: String,
        /// The version the proposer observed.
        expect_version: u64,
        /// Proposer's number for this proposal (to match the commit to its send time).
        nonce: u64,
    },
    /// `node` extends its leases on the listed (group, epoch) pairs.
    Renew {
        /// The holder.
        node: String,
        /// What it holds, with the epochs it holds them at.
        leases: Vec<(String, u64)>,
        /// Proposer's number for this proposal.
        nonce: u64,
    },
    /// `node` stopped `group` (held at `epoch`): anyone may take it now.
    Release {
        /// The group.
        group: String,
        /// The holder.
        node: String,
        /// Its epoch.
        epoch: u64,
    },
    /// `node` failed to stop `group`: its resources may still run there, so
    /// nobody else may take it until a retry, a fence or an operator clears it.
    StopFailed {
        /// The group.
        group: String,
        /// The holder.
        node: String,
        /// Its epoch.
        epoch: u64,
        /// The stop error.
        reason: String,
    },
    /// `by` fenced (powered off or otherwise cut) `node`, the holder of
    /// `group` at `epoch`: the group is free.
    Fenced {
        /// The group.
        group: String,
        /// The fenced holder.
        node: String,
        /// Its epoch.
        epoch: u64,
        /// The node that ran the fence.
        by: String,
    },
    /// An operator declared `group` stopped everywhere (`keepup cleanup`).
    Cleanup {
        /// The group.
        group: String,
    },
}

/// One group's lease as every node sees it after applying the same log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The node holding it, if any.
    pub holder: Option<String>,
    /// Fencing token: the number of the latest acquisition (0: never held).
    pub epoch: u64,
    /// Log index of the last accepted change or renewal.
    pub version: u64,
    /// Set when the holder's stop failed: the error.
    pub stop_failed: Option<String>,
}

impl Lease {
    /// The lease is free: nobody holds it.
    pub fn is_free(&self) -> bool {
        self.holder.is_none()
    }
}

/// What applying one committed command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// `node` holds `group` at `epoch` now (`previous`: the holder whose lease expired, if any).
    Acquired {
        /// The group.
        group: String,
        /// New holder.
        node: String,
        /// New epoch.
        epoch: u64,
        /// The holder it was taken from over an expired lease.
        previous: Option<String>,
        /// The proposer's nonce.
        nonce: u64,
    },
    /// `node`'s leases on `groups` were extended.
    Renewed {
        /// The holder.
        node: String,
        /// The groups whose renewal was accepted.
        groups: Vec<String>,
        /// The proposer's nonce.
        nonce: u64,
    },
    /// `group` is free again.
    Freed {
        /// The group.
        group: String,
        /// Who held it.
        node: String,
        /// Why: "released", "fenced by X", "cleaned up by the operator".
        how: String,
    },
    /// `group` is stuck on `node` until cleared.
    StopFailed {
        /// The group.
        group: String,
        /// Its holder.
        node: String,
        /// The error.
        reason: String,
    },
    /// The command did not apply (stale view, wrong epoch): nothing changed.
    Rejected {
        /// The command.
        command: Command,
        /// Why.
        why: String,
    },
}

/// The replicated lease table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTable {
    groups: BTreeMap<String, Lease>,
}

impl LeaseTable {
    /// The lease of `group` (a never-held group has the default lease).
    pub fn lease(&self, group: &str) -> Lease {
        self.groups.get(group).cloned().unwrap_or_default()
    }

    /// Every group that was ever held, with its lease.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Lease)> {
        self.groups.iter()
    }

    /// Applies one committed command at log `index`.
    pub fn apply(&mut self, index: u64, command: Command) -> Applied {
        let reject = |command: Command, why: String| Applied::Rejected { command, why };
        match &command {
            Command::Acquire {
                group,
                node,
                expect_version,
                nonce,
            } => {
                let lease = self.groups.entry(group.clone()).or_default();
                if lease.version != *expect_version {
                    let why = format!(
                        "lease changed since the proposer looked (version {} != {expect_version})",
                        lease.version
                    );
                    return reject(command, why);
                }
                if let Some(reason) = &lease.stop_failed {
                    let why = format!("stop failed on the holder: {reason}");
                    return reject(command, why);
                }
                if lease.holder.as_deref() == Some(node.as_str()) {
                    return reject(command, "already the holder".into());
                }
                let previous = lease.holder.take();
                lease.holder = Some(node.clone());
                lease.epoch += 1;
                lease.version = index;
                Applied::Acquired {
                    group: group.clone(),
                    node: node.clone(),
                    epoch: lease.epoch,
                    previous,
                    nonce: *nonce,
                }
            }
            Command::Renew {
                node,
                leases,
                nonce,
            } => {
                let mut groups = Vec::new();
                for (g, epoch) in leases {
                    if let Some(lease) = self.groups.get_mut(g) {
                        if lease.holder.as_deref() == Some(node.as_str())
                            && lease.epoch == *epoch
                            && lease.stop_failed.is_none()
                        {
                            lease.version = index;
                            groups.push(g.clone());
                        }
                    }
                }
                Applied::Renewed {
                    node: node.clone(),
                    groups,
                    nonce: *nonce,
                }
            }
            Command::Release { group, node, epoch } => {
                self.free_if_held(index, group, node, *epoch, "released".into(), &command)
            }
            Command::Fenced {
                group,
                node,
                epoch,
                by,
            } => self.free_if_held(
                index,
                group,
                node,
                *epoch,
                format!("fenced by {by}"),
                &command,
            ),
            Command::StopFailed {
                group,
                node,
                epoch,
                reason,
            } => match self.groups.get_mut(group) {
                Some(l) if l.holder.as_deref() == Some(node.as_str()) && l.epoch == *epoch => {
                    l.stop_failed = Some(reason.clone());
                    l.version = index;
                    Applied::StopFailed {
                        group: group.clone(),
                        node: node.clone(),
                        reason: reason.clone(),
                    }
                }
                _ => reject(command.clone(), "not the holder at that epoch".into()),
            },
            Command::Cleanup { group } => match self.groups.get_mut(group) {
                Some(l) if l.holder.is_some() => {
                    let node = l.holder.take().unwrap_or_default();
                    l.stop_failed = None;
                    l.version = index;
                    Applied::Freed {
                        group: group.clone(),
                        node,
                        how: "cleaned up by the operator".into(),
                    }
                }
                _ => reject(command.clone(), "nobody holds it".into()),
            },
        }
    }

    fn free_if_held(
        &mut self,
        index: u64,
        group: &str,
        node: &str,
        epoch: u64,
        how: String,
        command: &Command,
    ) -> Applied {
        match self.groups.get_mut(group) {
            Some(l) if l.holder.as_deref() == Some(node) && l.epoch == epoch => {
                l.holder = None;
                l.stop_failed = None;
                l.version = index;
                Applied::Freed {
                    group: group.to_string(),
                    node: node.to_string(),
                    how,
                }
            }
            _ => Applied::Rejected {
                command: command.clone(),
                why: "not the holder at that epoch".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn acquire(node: &str, v: u64) -> Command {
        Command::Acquire {
            group: "g".into(),
            node: node.into(),
            expect_version: v,
            nonce: 0,
        }
    }

    #[test]
    fn acquire_renew_release_table() {
        let mut t = LeaseTable::default();
        // (command, expected: accepted?, holder after, epoch after)
        let steps: Vec<(Command, bool, Option<&str>, u64)> = vec![
            (acquire("a", 0), true, Some("a"), 1),
            (acquire("b", 0), false, Some("a"), 1), // stale view
            (
                Command::Renew {
                    node: "a".into(),
                    leases: vec![("g".into(), 1)],
                    nonce: 1,
                },
                true,
                Some("a"),
                1,
            ),
            (acquire("b", 1), false, Some("a"), 1), // renewed since version 1
            (acquire("b", 3), true, Some("b"), 2),  // expired lease taken over
            (
                Command::Renew {
                    node: "a".into(),
                    leases: vec![("g".into(), 1)],
                    nonce: 2,
                },
                false,
                Some("b"),
                2,
            ),
            (
                Command::Release {
                    group: "g".into(),
                    node: "a".into(),
                    epoch: 1,
                },
                false,
                Some("b"),
                2,
            ),
            (
                Command::StopFailed {
                    group: "g".into(),
                    node: "b".into(),
                    epoch: 2,
                    reason: "stop timed out".into(),
                },
                true,
                Some("b"),
                2,
            ),
            (acquire("a", 8), false, Some("b"), 2), // stuck: stop failed
            (Command::Cleanup { group: "g".into() }, true, None, 2),
            (acquire("a", 10), true, Some("a"), 3),
        ];
        for (i, (cmd, ok, holder, epoch)) in steps.into_iter().enumerate() {
            let index = i as u64 + 1;
            let out = t.apply(index, cmd.clone());
            let accepted = !matches!(out, Applied::Rejected { .. })
                && !matches!(&out, Applied::Renewed { groups, .. } if groups.is_empty());
            assert_eq!(accepted, ok, "step {index}: {cmd:?} -> {out:?}");
            let l = t.lease("g");
            assert_eq!(l.holder.as_deref(), holder, "step {index}");
            assert_eq!(l.epoch, epoch, "step {index}");
            if ok {
                assert_eq!(l.version, index, "an accepted change bumps the version");
            }
        }
    }

    fn any_command() -> impl Strategy<Value = Command> {
        let node = prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(String::from);
        prop_oneof![
            (node.clone(), 0u64..12).prop_map(|(n, v)| acquire(&n, v)),
            (node.clone(), 0u64..6).prop_map(|(n, e)| Command::Renew {
                node: n,
                leases: vec![("g".into(), e)],
                nonce: 0
            }),
            (node.clone(), 0u64..6).prop_map(|(n, e)| Command::Release {
                group: "g".into(),
                node: n,
                epoch: e
            }),
            (node.clone(), 0u64..6).prop_map(|(n, e)| Command::StopFailed {
                group: "g".into(),
                node: n,
                epoch: e,
                reason: "x".into()
            }),
            (node, 0u64..6).prop_map(|(n, e)| Command::Fenced {
                group: "g".into(),
                node: n,
                epoch: e,
                by: "c".into()
            }),
            Just(Command::Cleanup { group: "g".into() }),
        ]
    }

    proptest! {
        /// Whatever is committed, epochs only grow, each acquisition gets a
        /// new one, and a group stuck by a failed stop is never acquired.
        #[test]
        fn epochs_strictly_increase_and_stuck_groups_stay(cmds in proptest::collection::vec(any_command(), 0..60)) {
            let mut t = LeaseTable::default();
            let mut last_epoch = 0;
            for (i, c) in cmds.into_iter().enumerate() {
                let before = t.lease("g");
                let out = t.apply(i as u64 + 1, c);
                let after = t.lease("g");
                prop_assert!(after.epoch >= before.epoch);
                if let Applied::Acquired { epoch, .. } = out {
                    prop_assert!(epoch > last_epoch);
                    prop_assert!(before.stop_failed.is_none());
                    last_epoch = epoch;
                }
                if matches!(out, Applied::Rejected { .. }) {
                    prop_assert_eq!(&before, &after);
                }
            }
        }

        /// Two replicas applying the same log end with the same table.
        #[test]
        fn apply_is_deterministic(cmds in proptest::collection::vec(any_command(), 0..40)) {
            let (mut a, mut b) = (LeaseTable::default(), LeaseTable::default());
            for (i, c) in cmds.into_iter().enumerate() {
                let x = a.apply(i as u64 + 1, c.clone());
                let y = b.apply(i as u64 + 1, c);
                prop_assert_eq!(x, y);
            }
            prop_assert_eq!(a, b);
        }
    }
}
