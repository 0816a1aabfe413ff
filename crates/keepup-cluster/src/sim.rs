//! A simulated network and clock for the core: whole clusters run in
//! milliseconds, deterministically from a seed, with loss, latency jitter,
//! reordering, cut links, crashes and clean stops. Packets go through the
//! real codec and replay guard, so the simulation covers them too.
//!
//! *No actual network calls are made.*

use crate::{Action, Core, GroupSpec, NodeSpec, ResourceOutcome, Spec, Time, Timing};
use keepup_wire::{decode, encode, GroupState, Key, Packet, ReplayGuard};
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

/// A small deterministic PRNG (xorshift64*), so every run can be replayed from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (seed 0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Node {
    name: String,
    core: Option<Core>,
    generation: u64,
    seq: u64,
    guard: ReplayGuard,
}

struct InFlight {
    at: Time,
    to: usize,
    link: usize,
    bytes: Vec<u8>,
}

struct PendingOp {
    at: Time,
    node: usize,
    generation: u64,
    group: String,
    outcome: ResourceOutcome,
}

/// A whole simulated cluster.
pub struct Sim {
    spec: Spec,
    key: Key,
    nodes: Vec<Node>,
    now: Time,
    rng: Rng,
    in_flight: Vec<InFlight>,
    ops: Vec<PendingOp>,
    cut: HashSet<(usize, usize, usize)>,
    /// Probability that any one packet is lost.
    pub loss: f64,
    /// Base one-way latency.
    pub latency: Duration,
    /// Extra random latency (0..jitter), which also reorders packets.
    pub jitter: Duration,
    /// How long a group start or stop takes.
    pub resource_time: Duration,
    /// (node, group) pairs whose start fails.
    pub failing_starts: HashSet<(String, String)>,
    /// Every event each node emitted, with its time.
    pub log: Vec<(Time, String, crate::Event)>,
    /// Times at which the owner set of each group changed, with the new set.
    pub ownership: Vec<(Time, String, BTreeSet<String>)>,
}

impl Sim {
    /// Spec helper: nodes `(name, priority)`, one group "g" allowed everywhere.
    pub fn spec(nodes: &[(&str, u32)], links: usize, timing: Timing) -> Spec {
        Spec {
            cluster: "sim".into(),
            me: String::new(),
            nodes: nodes
                .iter()
                .map(|(n, p)| NodeSpec {
                    name: n.to_string(),
                    priority: *p,
                })
                .collect(),
            links,
            groups: vec![GroupSpec {
                name: "g".into(),
                allowed: vec![],
                failure_backoff: Duration::from_secs(5),
            }],
            timing,
            auto_failback: false,
            failback_delay: Duration::ZERO,
            majority_quorum: false,
        }
    }

    /// Default timing: 100 ms heartbeats, 300 ms dead time.
    pub fn timing() -> Timing {
        Timing {
            heartbeat: Duration::from_millis(100),
            dead: Duration::from_millis(300),
            warn: Duration::from_millis(200),
            initial_dead: Duration::from_millis(1000),
        }
    }

    /// A cluster whose nodes are all down; start them with [`Sim::boot`].
    pub fn new(spec: Spec, seed: u64) -> Sim {
        let nodes = spec
            .nodes
            .iter()
            .map(|n| Node {
                name: n.name.clone(),
                core: None,
                generation: 0,
                seq: 0,
                guard: ReplayGuard::default(),
            })
            .collect();
        Sim {
            spec,
            key: Key::new(b"simulation key 0123456789".to_vec()),
            nodes,
            now: Duration::from_secs(1),
            rng: Rng::new(seed),
            in_flight: Vec::new(),
            ops: Vec::new(),
            cut: HashSet::new(),
            loss: 0.0,
            latency: Duration::from_micros(200),
            jitter: Duration::ZERO,
            resource_time: Duration::from_millis(5),
            failing_starts: HashSet::new(),
            log: Vec::new(),
            ownership: Vec::new(),
        }
    }

    fn idx(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in simulation"))
    }

    /// Current simulated time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Boots (or reboots) node `name` with a fresh state.
    pub fn boot(&mut self, name: &str) {
        let i = self.idx(name);
        let mut spec = self.spec.clone();
        spec.me = name.to_string();
        self.nodes[i].generation = self.now.as_micros() as u64 + 1;
        self.nodes[i].seq = 0;
        self.nodes[i].guard = ReplayGuard::default();
        self.nodes[i].core = Some(Core::new(spec, self.now));
        self.drain(i);
    }

    /// kill -9: the node stops at once, telling nobody.
    pub fn crash(&mut self, name: &str) {
        let i = self.idx(name);
        self.nodes[i].core = None;
        self.record_ownership();
    }

    /// SIGTERM: the node releases everything and tells its peers.
    pub fn stop(&mut self, name: &str) {
        let i = self.idx(name);
        let now = self.now;
        if let Some(c) = self.nodes[i].core.as_mut() {
            c.begin_shutdown(now);
        }
        self.drain(i);
    }

    /// Drops all packets between `a` and `b` on `link` (both directions).
    pub fn cut_link(&mut self, a: &str, b: &str, link: usize) {
        let (a, b) = (self.idx(a), self.idx(b));
        self.cut.insert((a, b, link));
        self.cut.insert((b, a, link));
    }

    /// Cuts `a` off from everybody on every link.
    pub fn isolate(&mut self, a: &str) {
        let ai = self.idx(a);
        for b in 0..self.nodes.len() {
            for l in 0..self.spec.links {
                if b != ai {
                    self.cut.insert((ai, b, l));
                    self.cut.insert((b, ai, l));
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// An operator move of `group` from `name` (its owner) to `target`.
    pub fn move_group(
        &mut self,
        name: &str,
        group: &str,
        target: &str,
        hold: Duration,
    ) -> Result<(), String> {
        let i = self.idx(name);
        let now = self.now;
        let r = match self.nodes[i].core.as_mut() {
            Some(c) => c.move_group(now, group, target, hold),
            None => Err(format!("{name} is not running")),
        };
        self.drain(i);
        r
    }

    /// A monitor on `name` found `group` dead and could not repair it.
    pub fn monitor_failure(&mut self, name: &str, group: &str) {
        let i = self.idx(name);
        let now = self.now;
        if let Some(c) = self.nodes[i].core.as_mut() {
            c.on_resource(
                now,
                group,
                ResourceOutcome::MonitorFailed("simulated".into()),
            );
        }
        self.drain(i);
    }

    /// Sets a node's ping connectivity.
    pub fn set_connected(&mut self, name: &str, connected: bool) {
        let i = self.idx(name);
        let now = self.now;
        if let Some(c) = self.nodes[i].core.as_mut() {
            c.set_connected(now, connected);
        }
        self.drain(i);
    }

    /// The core of a running node.
    pub fn core(&self, name: &str) -> Option<&Core> {
        self.nodes[self.idx(name)].core.as_ref()
    }

    /// Running nodes whose state for `group` means resources are (or may be) active.
    pub fn holders(&self, group: &str) -> BTreeSet<String> {
        self.nodes
            .iter()
            .filter(|n| {
                n.core
                    .as_ref()
                    .and_then(|c| c.group_state(group))
                    .is_some_and(|s| s.holds())
            })
            .map(|n| n.name.clone())
            .collect()
    }

    /// Running nodes that own `group` (started and running).
    pub fn owners(&self, group: &str) -> BTreeSet<String> {
        self.nodes
            .iter()
            .filter(|n| {
                n.core.as_ref().and_then(|c| c.group_state(group)) == Some(GroupState::Owned)
            })
            .map(|n| n.name.clone())
            .collect()
    }

    fn record_ownership(&mut self) {
        for g in self.spec.groups.clone() {
            let owners = self.owners(&g.name);
            let changed = self
                .ownership
                .iter()
                .rev()
                .find(|(_, n, _)| *n == g.name)
                .is_none_or(|(_, _, o)| *o != owners);
            if changed {
                self.ownership.push((self.now, g.name.clone(), owners));
            }
        }
    }

    fn drain(&mut self, i: usize) {
        while let Some(action) = self.nodes[i].core.as_mut().and_then(|c| c.poll_action()) {
            match action {
                Action::Send(advert) => {
                    for link in 0..self.spec.links {
                        self.nodes[i].seq += 1;
                        let p = Packet {
                            generation: self.nodes[i].generation,
                            seq: self.nodes[i].seq,
                            link: link as u8,
                            advert: advert.clone(),
                        };
                        let mut bytes = Vec::new();
                        encode(&p, &self.key, &mut bytes);
                        for to in 0..self.nodes.len() {
                            if to == i || self.cut.contains(&(i, to, link)) {
                                continue;
                            }
                            if self.loss > 0.0 && self.rng.unit() < self.loss {
                                continue;
                            }
                            let j = if self.jitter.is_zero() {
                                Duration::ZERO
                            } else {
                                Duration::from_nanos(
                                    self.rng.next_u64() % self.jitter.as_nanos() as u64,
                                )
                            };
                            self.in_flight.push(InFlight {
                                at: self.now + self.latency + j,
                                to,
                                link,
                                bytes: bytes.clone(),
                            });
                        }
                    }
                }
                Action::Start(group) => {
                    let fail = self
                        .failing_starts
                        .contains(&(self.nodes[i].name.clone(), group.clone()));
                    self.ops.push(PendingOp {
                        at: self.now + self.resource_time,
                        node: i,
                        generation: self.nodes[i].generation,
                        group,
                        outcome: if fail {
                            ResourceOutcome::StartFailed("simulated failure".into())
                        } else {
                            ResourceOutcome::Started
                        },
                    });
                }
                Action::Stop(group) => self.ops.push(PendingOp {
                    at: self.now + self.resource_time,
                    node: i,
                    generation: self.nodes[i].generation,
                    group,
                    outcome: ResourceOutcome::Stopped,
                }),
                Action::Reassert(_) => {}
                Action::Event(e) => {
                    let name = self.nodes[i].name.clone();
                    self.log.push((self.now, name, e));
                }
                Action::Left => {
                    self.nodes[i].core = None;
                }
            }
        }
        self.record_ownership();
    }

    /// Runs the simulation for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until_time(end, &mut |_| false);
    }

    /// Runs until `pred` holds (checked after every step) or `max` passes; returns whether it held.
    pub fn run_until(&mut self, max: Duration, mut pred: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + max;
        self.run_until_time(end, &mut pred)
    }

    fn run_until_time(&mut self, end: Time, pred: &mut dyn FnMut(&Sim) -> bool) -> bool {
        loop {
            if pred(self) {
                return true;
            }
            let mut next = end;
            for f in &self.in_flight {
                next = next.min(f.at);
            }
            for o in &self.ops {
                next = next.min(o.at);
            }
            for n in &self.nodes {
                if let Some(c) = &n.core {
                    next = next.min(c.next_deadline(self.now));
                }
            }
            if next > end {
                self.now = end;
                return pred(self);
            }
            self.now = next.max(self.now);
            let now = self.now;
            // Deliver due packets.
            let mut due = Vec::new();
            self.in_flight.retain(|f| {
                if f.at <= now {
                    due.push((f.to, f.link, f.bytes.clone()));
                    false
                } else {
                    true
                }
            });
            for (to, link, bytes) in due {
                let node = &mut self.nodes[to];
                let Some(core) = node.core.as_mut() else {
                    continue;
                };
                let Ok(p) = decode(&bytes, &self.key) else {
                    continue;
                };
                if node.guard.check(&p, link as u8).is_err() {
                    continue;
                }
                core.on_packet(now, link, &p);
                self.drain(to);
            }
            // Complete due resource operations.
            let mut done = Vec::new();
            self.ops.retain(|o| {
                if o.at <= now {
                    done.push((o.node, o.generation, o.group.clone(), o.outcome.clone()));
                    false
                } else {
                    true
                }
            });
            for (i, generation, group, outcome) in done {
                if self.nodes[i].generation != generation {
                    continue;
                }
                if let Some(c) = self.nodes[i].core.as_mut() {
                    c.on_resource(now, &group, outcome);
                }
                self.drain(i);
            }
            // Timers.
            for i in 0..self.nodes.len() {
                if let Some(c) = self.nodes[i].core.as_mut() {
                    c.tick(now);
                }
                self.drain(i);
            }
            if self.now >= end {
                return pred(self);
            }
        }
    }
}
