//! Raft membership follows the config's `[[node]]` list (README, "adding
//! and removing a voter"): the leader adds a configured voter the log does
//! not have and removes one the config dropped, one change at a time, and
//! the smaller majority then works.

use keepup_consensus::{Command, Consensus, Voter};
use std::collections::{BTreeMap, BTreeSet};

fn voters(names: &[&str]) -> Vec<Voter> {
    names
        .iter()
        .map(|n| Voter {
            name: n.to_string(),
            priority: 0,
        })
        .collect()
}

/// Nodes on a lossless in-memory network; `images` survive restarts.
struct Net {
    nodes: BTreeMap<String, Consensus>,
    images: BTreeMap<String, Vec<u8>>,
}

impl Net {
    fn new() -> Net {
        Net {
            nodes: BTreeMap::new(),
            images: BTreeMap::new(),
        }
    }

    /// (Re)starts `name` from its saved image, configured with `config`.
    fn start(&mut self, name: &str, config: &[&str], seed: u64) {
        let saved = self.images.get(name).cloned();
        let c = Consensus::new(name, &voters(config), saved.as_deref(), 10, seed)
            .expect("starts from its image");
        self.nodes.insert(name.to_string(), c);
    }

    fn stop(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    /// `rounds` of: tick, reconcile, deliver everything until quiet.
    fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            for c in self.nodes.values_mut() {
                c.tick();
                c.reconcile_voters();
            }
            self.deliver();
        }
    }

    fn deliver(&mut self) {
        for _ in 0..50 {
            let mut mail = Vec::new();
            for (name, c) in self.nodes.iter_mut() {
                let out = c.poll();
                for (to, bytes) in out.messages {
                    mail.push((name.clone(), to, bytes));
                }
                // Written at once here; the agent writes off its thread.
                if let Some(p) = out.persist {
                    if let Some(img) = p.image {
                        self.images.insert(name.clone(), img);
                    }
                    for (to, bytes) in p.then_send {
                        mail.push((name.clone(), to, bytes));
                    }
                    if let Some(n) = p.number {
                        c.persisted(n);
                    }
                }
            }
            if mail.is_empty() {
                return;
            }
            for (from, to, bytes) in mail {
                if let Some(c) = self.nodes.get_mut(&to) {
                    let _ = c.step(&from, &bytes);
                }
            }
        }
    }

    fn leader(&self) -> Option<String> {
        self.nodes
            .iter()
            .find(|(_, c)| c.is_leader())
            .map(|(n, _)| n.clone())
    }

    fn voters_seen(&self) -> BTreeSet<Vec<String>> {
        self.nodes
            .values()
            .map(|c| {
                let mut v = c.voters();
                v.sort();
                v
            })
            .collect()
    }

    /// Proposes an acquisition of `group` on the leader and runs until it
    /// is applied there; false when it never commits.
    fn commits(&mut self, group: &str) -> bool {
        let Some(l) = self.leader() else {
            return false;
        };
        let cmd = Command::Acquire {
            group: group.into(),
            node: l.clone(),
            expect_version: 0,
            nonce: 1,
        };
        if !self.nodes.get_mut(&l).is_some_and(|c| c.propose(&cmd)) {
            return false;
        }
        for _ in 0..50 {
            self.run(1);
            if self
                .nodes
                .get(&l)
                .is_some_and(|c| c.table().lease(group).holder.is_some())
            {
                return true;
            }
        }
        false
    }
}

#[test]
fn voters_follow_the_config_one_change_at_a_time() {
    let mut net = Net::new();
    let three = ["a", "b", "w"];
    for (i, n) in three.iter().enumerate() {
        net.start(n, &three, i as u64 + 1);
    }
    net.run(60);
    assert!(net.leader().is_some(), "a leader among a, b, w");
    assert!(net.commits("g1"));

    // A fourth node in the config: everyone restarted with it, c fresh.
    let four = ["a", "b", "c", "w"];
    for (i, n) in four.iter().enumerate() {
        net.start(n, &four, i as u64 + 10);
    }
    net.run(200);
    assert_eq!(
        net.voters_seen(),
        BTreeSet::from([four.iter().map(|s| s.to_string()).collect::<Vec<_>>()]),
        "every node knows c as a voter"
    );
    assert!(net.commits("g2"));
    assert!(
        net.nodes["c"].table().lease("g1").holder.is_some(),
        "c received the log (or a snapshot) from before it joined"
    );

    // b is gone for good: removed from the config, and stopped.
    net.stop("b");
    let without_b = ["a", "c", "w"];
    for (i, n) in without_b.iter().enumerate() {
        net.start(n, &without_b, i as u64 + 20);
    }
    net.run(200);
    // With 4 voters, 2 nodes are no majority; with 3 they are: stop c too
    // and the remaining pair still commits, so b really left the voters.
    net.stop("c");
    net.run(100);
    assert!(
        net.commits("g3"),
        "a and w commit alone: the membership is a, c, w"
    );
}
