//! A simulated network and clock for the core: whole clusters run in
//! milliseconds, deterministically from a seed, with loss, latency jitter,
//! reordering, cut links (one-way too), crashes, restarts with a persisted
//! disk, process pauses, per-node clock offsets and rate drift, and
//! failing stops. Heartbeats and raft frames go through the real codec and
//! replay guard, and the real raft-rs engine runs inside every core.
//!
//! It records every interval during which a node's resources for a group
//! may have been active ([`Sim::intervals`]) and checks them with
//! [`Sim::check`]: never two nodes at once, epochs strictly increasing.
//!
//! *No actual network calls are made.*

use crate::{
    Action, Boot, Core, GroupSpec, NodeSpec, Ownership, ResourceOutcome, Spec, Time, Timing,
};
use keepup_wire::{decode_frame, encode, encode_raft, Frame, Key, Packet, RaftPacket, ReplayGuard};
use std::collections::{BTreeSet, HashMap, HashSet};
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
    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// A node's monotonic clock: `offset + sim_time × rate`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Reading at simulated time zero.
    pub offset: Duration,
    /// Rate relative to real (simulated) time.
    pub rate: f64,
}

impl Clock {
    fn local(&self, t: Time) -> Time {
        self.offset + t.mul_f64(self.rate)
    }
    /// Earliest simulated time at which the local clock reads at least `local`.
    fn global(&self, local: Time) -> Time {
        let l = local.saturating_sub(self.offset);
        Duration::from_nanos((l.as_nanos() as f64 / self.rate).ceil() as u64 + 1)
    }
}

struct Node {
    name: String,
    core: Option<Core>,
    /// The persisted boot counter.
    boot_counter: u64,
    generation: u64,
    seq: u64,
    guard: ReplayGuard,
    /// The persisted consensus image.
    disk: Option<Vec<u8>>,
    clock: Clock,
    paused_until: Option<Time>,
    /// Packets that arrived while paused (a socket buffer), delivered on resume.
    queued: Vec<(usize, Vec<u8>)>,
}

struct InFlight {
    at: Time,
    to: usize,
    link: usize,
    bytes: Vec<u8>,
}

/// A consensus write in progress (the agent's persister thread): lost if
/// the node crashes first, finished after a pause.
struct PendingPersist {
    at: Time,
    node: usize,
    generation: u64,
    persist: crate::Persist,
}

struct PendingOp {
    at: Time,
    node: usize,
    generation: u64,
    group: String,
    outcome: ResourceOutcome,
}

/// One stretch of time during which `node` may have run `group`'s resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    /// The group.
    pub group: String,
    /// The node.
    pub node: String,
    /// The fencing epoch it started at.
    pub epoch: u64,
    /// When the start began.
    pub start: Time,
    /// When the stop finished (or the node crashed); None: still running.
    pub end: Option<Time>,
}

/// A whole simulated cluster.
pub struct Sim {
    spec: Spec,
    key: Key,
    nodes: Vec<Node>,
    now: Time,
    rng: Rng,
    seed: u64,
    in_flight: Vec<InFlight>,
    ops: Vec<PendingOp>,
    persists: Vec<PendingPersist>,
    /// (from, to, link) triples whose packets are dropped.
    cut: HashSet<(usize, usize, usize)>,
    /// Probability that any one packet is lost.
    pub loss: f64,
    /// Base one-way latency.
    pub latency: Duration,
    /// Extra random latency (0..jitter), which also reorders packets.
    pub jitter: Duration,
    /// How long a group start or stop takes.
    pub resource_time: Duration,
    /// How long a consensus write (write + fsync) takes.
    pub persist_time: Duration,
    /// (node, group) pairs whose start fails.
    pub failing_starts: HashSet<(String, String)>,
    /// (node, group) → how many more stops fail there.
    pub failing_stops: HashMap<(String, String), u32>,
    /// Every event each node emitted, with its (simulated) time.
    pub log: Vec<(Time, String, crate::Event)>,
    /// Times at which the owner set of each group changed, with the new set.
    pub ownership: Vec<(Time, String, BTreeSet<String>)>,
    /// Every holding interval, in start order.
    pub intervals: Vec<Interval>,
    /// Every pause: (node, from, to).
    pub pauses: Vec<(String, Time, Time)>,
    /// When set, every datagram this node sends is copied to `tape`.
    pub record_from: Option<String>,
    /// Recorded datagrams: (destination, link, bytes), as an attacker on the LAN would capture them.
    pub tape: Vec<(usize, usize, Vec<u8>)>,
}

impl Sim {
    /// Spec helper: nodes `(name, priority)`, one group "g" allowed everywhere,
    /// consensus ownership when there are three nodes or more.
    pub fn spec(nodes: &[(&str, u32)], links: usize, timing: Timing) -> Spec {
        Spec {
            cluster: "sim".into(),
            me: String::new(),
            nodes: nodes
                .iter()
                .map(|(n, p)| NodeSpec {
                    name: n.to_string(),
                    priority: *p,
                    witness: false,
                })
                .collect(),
            links,
            groups: vec![GroupSpec {
                name: "g".into(),
                allowed: vec![],
                failure_backoff: Duration::from_secs(5),
                fence: false,
            }],
            timing,
            auto_failback: false,
            failback_delay: Duration::ZERO,
            ownership: if nodes.len() >= 3 {
                Ownership::Consensus
            } else {
                Ownership::Unguarded
            },
        }
    }

    /// Default timing: 100 ms heartbeats, 300 ms dead time and lease.
    pub fn timing() -> Timing {
        Timing {
            heartbeat: Duration::from_millis(100),
            dead: Duration::from_millis(300),
            warn: Duration::from_millis(200),
            initial_dead: Duration::from_millis(1000),
            lease: Duration::from_millis(300),
            stop_bound: Duration::from_millis(75),
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
                boot_counter: 0,
                generation: 0,
                seq: 0,
                guard: ReplayGuard::default(),
                disk: None,
                clock: Clock {
                    offset: Duration::from_secs(1),
                    rate: 1.0,
                },
                paused_until: None,
                queued: Vec::new(),
            })
            .collect();
        Sim {
            spec,
            key: Key::new(b"simulation key 0123456789".to_vec()),
            nodes,
            now: Duration::from_secs(1),
            rng: Rng::new(seed),
            seed,
            in_flight: Vec::new(),
            ops: Vec::new(),
            persists: Vec::new(),
            cut: HashSet::new(),
            loss: 0.0,
            latency: Duration::from_micros(200),
            jitter: Duration::ZERO,
            resource_time: Duration::from_millis(5),
            persist_time: Duration::from_millis(1),
            failing_starts: HashSet::new(),
            failing_stops: HashMap::new(),
            log: Vec::new(),
            ownership: Vec::new(),
            intervals: Vec::new(),
            pauses: Vec::new(),
            record_from: None,
            tape: Vec::new(),
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

    /// The spec every node runs with (`me` empty).
    pub fn cluster_spec(&self) -> &Spec {
        &self.spec
    }

    /// Sets node `name`'s clock (takes effect now; the node reads
    /// `offset + t × rate` from then on). Use before [`Sim::boot`], or to
    /// model a node restarted with its clock stepped.
    pub fn set_clock(&mut self, name: &str, offset: Duration, rate: f64) {
        let i = self.idx(name);
        self.nodes[i].clock = Clock { offset, rate };
    }

    fn local(&self, i: usize) -> Time {
        self.nodes[i].clock.local(self.now)
    }

    /// Boots (or reboots) node `name`: a new generation from its persisted
    /// boot counter, its consensus state from its disk.
    pub fn boot(&mut self, name: &str) {
        let i = self.idx(name);
        let mut spec = self.spec.clone();
        spec.me = name.to_string();
        let n = &mut self.nodes[i];
        n.boot_counter += 1;
        n.generation = n.boot_counter;
        n.seq = 0;
        n.guard = ReplayGuard::default();
        n.paused_until = None;
        n.queued.clear();
        let boot = Boot {
            generation: n.generation,
            raft_state: n.disk.clone(),
            seed: self.seed.wrapping_mul(31).wrapping_add(i as u64),
        };
        let local = self.nodes[i].clock.local(self.now);
        let core = Core::new(spec, local, boot).unwrap_or_else(|e| panic!("boot {name}: {e}"));
        self.nodes[i].core = Some(core);
        self.drain(i);
    }

    /// kill -9 of the whole host: the node stops at once, telling nobody,
    /// and its resources die with it. Its disk survives.
    pub fn crash(&mut self, name: &str) {
        let i = self.idx(name);
        self.nodes[i].core = None;
        self.nodes[i].paused_until = None;
        let now = self.now;
        for iv in self.intervals.iter_mut() {
            if iv.node == name && iv.end.is_none() {
                iv.end = Some(now);
            }
        }
        self.record_ownership();
    }

    /// SIGSTOP for `d`: the node does nothing (its resources keep running);
    /// packets queue up and are read after the pause.
    pub fn pause(&mut self, name: &str, d: Duration) {
        let i = self.idx(name);
        if self.nodes[i].core.is_none() {
            return;
        }
        let until = self.now + d;
        match self.nodes[i].paused_until {
            // Already stopped: a second SIGSTOP only makes it longer.
            Some(t) => {
                let until = until.max(t);
                self.nodes[i].paused_until = Some(until);
                if let Some(p) = self.pauses.iter_mut().rev().find(|p| p.0 == name) {
                    p.2 = until;
                }
            }
            None => {
                self.nodes[i].paused_until = Some(until);
                self.pauses.push((name.to_string(), self.now, until));
            }
        }
    }

    /// SIGTERM: the node releases everything and tells its peers.
    pub fn stop(&mut self, name: &str) {
        let i = self.idx(name);
        let now = self.local(i);
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

    /// Drops packets from `a` to `b` on every link (one way only).
    pub fn cut_one_way(&mut self, a: &str, b: &str) {
        let (a, b) = (self.idx(a), self.idx(b));
        for l in 0..self.spec.links {
            self.cut.insert((a, b, l));
        }
    }

    /// Cuts `a` and `b` apart on every link, both ways.
    pub fn cut_pair(&mut self, a: &str, b: &str) {
        for l in 0..self.spec.links {
            self.cut_link(a, b, l);
        }
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

    /// Calls into a running node; a paused node does nothing (its monitors
    /// and API are stopped with it).
    fn with_core<R>(&mut self, name: &str, f: impl FnOnce(&mut Core, Time) -> R) -> Option<R> {
        let i = self.idx(name);
        if self.nodes[i].paused_until.is_some() {
            return None;
        }
        let now = self.local(i);
        let r = self.nodes[i].core.as_mut().map(|c| f(c, now));
        self.drain(i);
        r
    }

    /// An operator move of `group` from `name` (its owner) to `target`.
    pub fn move_group(
        &mut self,
        name: &str,
        group: &str,
        target: &str,
        hold: Duration,
    ) -> Result<(), String> {
        self.with_core(name, |c, now| c.move_group(now, group, target, hold))
            .unwrap_or_else(|| Err(format!("{name} is not running")))
    }

    /// `keepup cleanup GROUP` run on `name`.
    pub fn cleanup(&mut self, name: &str, group: &str) -> Result<String, String> {
        self.with_core(name, |c, now| c.cleanup_group(now, group))
            .unwrap_or_else(|| Err(format!("{name} is not running")))
    }

    /// A monitor on `name` found `group` dead and could not repair it.
    pub fn monitor_failure(&mut self, name: &str, group: &str) {
        self.with_core(name, |c, now| {
            c.on_resource(
                now,
                group,
                ResourceOutcome::MonitorFailed("simulated".into()),
            )
        });
    }

    /// A monitor on `name` found `group`'s link without carrier.
    pub fn link_down(&mut self, name: &str, group: &str) {
        self.with_core(name, |c, now| {
            c.on_resource(now, group, ResourceOutcome::LinkDown("no carrier".into()))
        });
    }

    /// The link of `group` on `name` carries again.
    pub fn link_restored(&mut self, name: &str, group: &str) {
        self.with_core(name, |c, now| c.link_restored(now, group));
    }

    /// Sets a node's ping connectivity.
    pub fn set_connected(&mut self, name: &str, connected: bool) {
        self.with_core(name, |c, now| c.set_connected(now, connected));
    }

    /// Puts a node in or out of standby.
    pub fn set_standby(&mut self, name: &str, standby: bool) {
        self.with_core(name, |c, now| c.set_standby(now, standby));
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
                    .and_then(|c| c.phase(group))
                    .is_some_and(|p| p.resources_may_run())
            })
            .map(|n| n.name.clone())
            .collect()
    }

    /// Running nodes that own `group` (started and running).
    pub fn owners(&self, group: &str) -> BTreeSet<String> {
        self.nodes
            .iter()
            .filter(|n| {
                n.core.as_ref().and_then(|c| c.group_state(group))
                    == Some(keepup_wire::GroupState::Owned)
            })
            .map(|n| n.name.clone())
            .collect()
    }

    /// Nodes whose resources for `group` run now, by the recorded intervals.
    pub fn running(&self, group: &str) -> BTreeSet<String> {
        self.intervals
            .iter()
            .filter(|iv| iv.group == group && iv.end.is_none())
            .map(|iv| iv.node.clone())
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

    /// Sends every recorded datagram addressed to `to` again, now.
    pub fn replay_tape(&mut self, to: &str) {
        let j = self.idx(to);
        let tape: Vec<_> = self
            .tape
            .iter()
            .filter(|(t, _, _)| *t == j)
            .cloned()
            .collect();
        for (t, link, bytes) in tape {
            self.in_flight.push(InFlight {
                at: self.now + self.latency,
                to: t,
                link,
                bytes,
            });
        }
    }

    fn transmit(&mut self, from: usize, link: usize, to: usize, bytes: &[u8]) {
        if to == from {
            return;
        }
        if self.record_from.as_deref() == Some(self.nodes[from].name.as_str()) {
            self.tape.push((to, link, bytes.to_vec()));
        }
        if self.cut.contains(&(from, to, link)) {
            return;
        }
        if self.loss > 0.0 && self.rng.unit() < self.loss {
            return;
        }
        let j = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng.below(self.jitter.as_nanos() as u64))
        };
        self.in_flight.push(InFlight {
            at: self.now + self.latency + j,
            to,
            link,
            bytes: bytes.to_vec(),
        });
    }

    /// Reports `outcome` for `group` to node `i` once a resource operation's time has passed.
    fn complete_later(&mut self, i: usize, group: String, outcome: ResourceOutcome) {
        self.ops.push(PendingOp {
            at: self.now + self.resource_time,
            node: i,
            generation: self.nodes[i].generation,
            group,
            outcome,
        });
    }

    /// Ends `node`'s open holding interval of `group` at `at`.
    fn end_interval(&mut self, node: &str, group: &str, at: Time) {
        if let Some(iv) = self
            .intervals
            .iter_mut()
            .rev()
            .find(|iv| iv.node == node && iv.group == group && iv.end.is_none())
        {
            iv.end = Some(at);
        }
    }

    /// Sends a raft message from node `i` to `to` on every link.
    fn send_raft(&mut self, i: usize, to: &str, payload: &[u8]) {
        let Some(j) = self.nodes.iter().position(|n| n.name == to) else {
            return;
        };
        let name = self.nodes[i].name.clone();
        for link in 0..self.spec.links {
            self.nodes[i].seq += 1;
            let p = RaftPacket {
                generation: self.nodes[i].generation,
                seq: self.nodes[i].seq,
                link: link as u8,
                cluster: self.spec.cluster.clone(),
                from: name.clone(),
                to: to.to_string(),
                payload: payload.to_vec(),
            };
            let mut bytes = Vec::new();
            if encode_raft(&p, &self.key, &mut bytes) {
                self.transmit(i, link, j, &bytes);
            }
        }
    }

    fn drain(&mut self, i: usize) {
        while let Some(action) = self.nodes[i].core.as_mut().and_then(|c| c.poll_action()) {
            let name = self.nodes[i].name.clone();
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
                            self.transmit(i, link, to, &bytes);
                        }
                    }
                }
                Action::SendRaft { to, payload } => self.send_raft(i, &to, &payload),
                Action::Persist(persist) => self.persists.push(PendingPersist {
                    at: self.now + self.persist_time,
                    node: i,
                    generation: self.nodes[i].generation,
                    persist,
                }),
                Action::Start { group, epoch } => {
                    self.intervals.push(Interval {
                        group: group.clone(),
                        node: name.clone(),
                        epoch,
                        start: self.now,
                        end: None,
                    });
                    let fail = self.failing_starts.contains(&(name.clone(), group.clone()));
                    let outcome = if fail {
                        // A failed start cleans up after itself.
                        self.end_interval(&name, &group, self.now + self.resource_time);
                        ResourceOutcome::StartFailed("simulated failure".into())
                    } else {
                        ResourceOutcome::Started
                    };
                    self.complete_later(i, group, outcome);
                }
                Action::Stop { group, .. } => {
                    let key = (name.clone(), group.clone());
                    let fail = match self.failing_stops.get_mut(&key) {
                        Some(n) if *n > 0 => {
                            *n -= 1;
                            true
                        }
                        _ => false,
                    };
                    let outcome = if fail {
                        ResourceOutcome::StopFailed("simulated stop failure".into())
                    } else {
                        ResourceOutcome::Stopped
                    };
                    self.complete_later(i, group, outcome);
                }
                Action::Fence { group, node, .. } => {
                    // A fence powers the node off: it and its resources are gone.
                    if self.nodes.iter().any(|n| n.name == node) {
                        self.crash(&node);
                    }
                    self.complete_later(i, group, ResourceOutcome::Fenced);
                }
                Action::Reassert(_) => {}
                Action::Event(e) => {
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

    fn deliver(&mut self, to: usize, link: usize, bytes: &[u8]) {
        let now = self.local(to);
        let node = &mut self.nodes[to];
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let Ok(frame) = decode_frame(bytes, &self.key) else {
            return;
        };
        if node.guard.check_frame(&frame, link as u8).is_err() {
            return;
        }
        let _ = match &frame {
            Frame::Heartbeat(p) => core.on_packet(now, link, p),
            Frame::Raft(r) => core.on_raft(now, r),
        };
        self.drain(to);
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
            for p in &self.persists {
                if self.nodes[p.node].paused_until.is_none() {
                    next = next.min(p.at);
                }
            }
            for o in &self.ops {
                // A paused node sees its outcomes when it resumes (below).
                if self.nodes[o.node].paused_until.is_none() {
                    next = next.min(o.at);
                }
            }
            for n in &self.nodes {
                if let Some(until) = n.paused_until {
                    next = next.min(until);
                } else if let Some(c) = &n.core {
                    let local = n.clock.local(self.now);
                    next = next.min(n.clock.global(c.next_deadline(local)));
                }
            }
            if next > end {
                self.now = end;
                return pred(self);
            }
            self.now = next.max(self.now);
            let now = self.now;
            // Resume paused nodes: time first (leases), then what queued up.
            for i in 0..self.nodes.len() {
                if self.nodes[i].paused_until.is_some_and(|t| t <= now) {
                    self.nodes[i].paused_until = None;
                    let local = self.local(i);
                    if let Some(c) = self.nodes[i].core.as_mut() {
                        c.tick(local);
                    }
                    self.drain(i);
                    let queued = std::mem::take(&mut self.nodes[i].queued);
                    for (link, bytes) in queued {
                        self.deliver(i, link, &bytes);
                    }
                }
            }
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
                if self.nodes[to].paused_until.is_some() {
                    if self.nodes[to].queued.len() < 4096 {
                        self.nodes[to].queued.push((link, bytes));
                    }
                    continue;
                }
                self.deliver(to, link, &bytes);
            }
            // Finish due consensus writes, in order (a paused node's wait;
            // a crashed node's are lost with it).
            let paused: Vec<bool> = self
                .nodes
                .iter()
                .map(|n| n.paused_until.is_some())
                .collect();
            let mut written = Vec::new();
            self.persists.retain(|p| {
                if p.at <= now && !paused[p.node] {
                    written.push((p.node, p.generation, p.persist.clone()));
                    false
                } else {
                    true
                }
            });
            for (i, generation, p) in written {
                if self.nodes[i].generation != generation || self.nodes[i].core.is_none() {
                    continue;
                }
                if let Some(image) = p.image {
                    self.nodes[i].disk = Some(image);
                }
                for (to, payload) in &p.then_send {
                    self.send_raft(i, to, payload);
                }
                let local = self.local(i);
                if let (Some(n), Some(c)) = (p.number, self.nodes[i].core.as_mut()) {
                    c.persisted(local, n);
                }
                self.drain(i);
            }
            // Complete due resource operations (a paused node sees them
            // later; finishing writes above paused nobody).
            let mut done = Vec::new();
            self.ops.retain(|o| {
                if o.at <= now && !paused[o.node] {
                    done.push((o.node, o.generation, o.group.clone(), o.outcome.clone()));
                    false
                } else {
                    true
                }
            });
            for (i, generation, group, outcome) in done {
                if self.nodes[i].generation != generation || self.nodes[i].core.is_none() {
                    continue;
                }
                if outcome == ResourceOutcome::Stopped {
                    let name = self.nodes[i].name.clone();
                    self.end_interval(&name, &group, now);
                }
                let local = self.local(i);
                if let Some(c) = self.nodes[i].core.as_mut() {
                    c.on_resource(local, &group, outcome);
                }
                self.drain(i);
            }
            // Timers.
            for i in 0..self.nodes.len() {
                if self.nodes[i].paused_until.is_some() {
                    continue;
                }
                let local = self.local(i);
                if let Some(c) = self.nodes[i].core.as_mut() {
                    c.tick(local);
                }
                self.drain(i);
            }
            if self.now >= end {
                return pred(self);
            }
        }
    }

    /// Checks the recorded history: for each group, no two nodes' holding
    /// intervals overlap, except while the earlier holder was paused and
    /// only until it let go right after resuming; and epochs of successive
    /// holders strictly increase (consensus mode). Returns the violations.
    pub fn check(&self) -> Vec<String> {
        let mut out = Vec::new();
        let slack = self.resource_time + Duration::from_millis(1);
        for (a_i, a) in self.intervals.iter().enumerate() {
            for b in self.intervals.iter().skip(a_i + 1) {
                if a.group != b.group || a.node == b.node {
                    continue;
                }
                let a_end = a.end.unwrap_or(Time::MAX);
                let b_end = b.end.unwrap_or(Time::MAX);
                let overlap_from = a.start.max(b.start);
                let overlap_to = a_end.min(b_end);
                if overlap_from >= overlap_to {
                    continue;
                }
                // The earlier holder paused through the takeover and let go on resuming?
                let (old, new) = if a.start <= b.start { (a, b) } else { (b, a) };
                // The old holder was paused when (or before) the new one
                // started and let go as soon as it resumed (or has not
                // resumed yet): a stopped process cannot withdraw its
                // resources, and the new holder cannot know it was stopped.
                let excused = self.pauses.iter().any(|(n, from, to)| {
                    *n == old.node
                        && *from <= new.start
                        && old.end.unwrap_or(self.now) <= *to + slack
                });
                if !excused {
                    out.push(format!(
                        "{}: {} (epoch {}, {:?}..{:?}) and {} (epoch {}, {:?}..{:?}) both held it",
                        a.group, a.node, a.epoch, a.start, a.end, b.node, b.epoch, b.start, b.end
                    ));
                }
            }
        }
        if self.spec.ownership == Ownership::Consensus {
            let mut last: HashMap<&str, u64> = HashMap::new();
            for iv in &self.intervals {
                let prev = last.entry(&iv.group).or_insert(0);
                if iv.epoch <= *prev {
                    out.push(format!(
                        "{}: epoch {} started on {} at {:?} after epoch {prev}",
                        iv.group, iv.epoch, iv.node, iv.start
                    ));
                }
                *prev = (*prev).max(iv.epoch);
            }
        }
        out
    }
}
