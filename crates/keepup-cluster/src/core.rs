//! The state machine. See the crate docs for the rules it implements.

use crate::phase::{AfterStop, Phase};
use crate::view::{ClusterView, ConsensusView, GroupView, NodeView};
use crate::Event;
use keepup_config::{FileConfig, QuorumPolicy};
pub use keepup_consensus::Persist;
use keepup_consensus::{Applied, Command, Consensus, Lease, Voter};
use keepup_wire::{Advert, DropReason, Flags, GroupState, Packet, RaftPacket};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::Duration;

/// Monotonic time since an arbitrary epoch chosen by the caller.
pub type Time = Duration;

/// How long a node may act for a group it runs (see [`Core::grants`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Not held here, or being stopped: no action on its behalf.
    Revoked,
    /// Held under a lease: until this core time.
    Until(Time),
    /// Held without a lease (unguarded ownership).
    Unbounded,
}

/// Largest clock-rate difference between two nodes that the leases allow
/// for (1 %: far above a quartz clock's 0.01 % and NTP's 0.05 % slew).
pub const CLOCK_DRIFT: f64 = 0.01;

/// A node as configured.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Unique name.
    pub name: String,
    /// Election priority (higher wins).
    pub priority: u32,
    /// A witness votes in the consensus and never holds a group.
    pub witness: bool,
}

/// A resource group as configured.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// Unique name.
    pub name: String,
    /// Nodes allowed to hold it (all when empty).
    pub allowed: Vec<String>,
    /// First back-off after a failed start on this node.
    pub failure_backoff: Duration,
    /// A fence command is configured: run it against a holder whose lease
    /// expired (or whose stop failed) before starting the group elsewhere.
    pub fence: bool,
}

/// Heartbeat and lease timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Interval between adverts.
    pub heartbeat: Duration,
    /// Silence after which a peer (or one of its links) is dead.
    pub dead: Duration,
    /// Gap after which a heartbeat counts as late.
    pub warn: Duration,
    /// After boot, how long to wait for peers before acting on their absence.
    pub initial_dead: Duration,
    /// A committed renewal keeps a group for this long (holder's clock).
    pub lease: Duration,
    /// The most a group's stop may take: the holder starts stopping this
    /// long before its lease ends.
    pub stop_bound: Duration,
}

impl Timing {
    /// The consensus engine's tick: a sixth of the dead time (5 ms at least).
    pub fn raft_tick(&self) -> Duration {
        (self.dead / 6).max(Duration::from_millis(5))
    }

    /// How long a node waits, on its own clock, after it last saw a lease
    /// change before it may take the group: the lease stretched by the
    /// worst clock-rate difference, `lease × (1+ρ)/(1−ρ)`.
    pub fn takeover_wait(&self) -> Duration {
        self.lease
            .mul_f64((1.0 + CLOCK_DRIFT) / (1.0 - CLOCK_DRIFT))
    }
}

/// How ownership of a group is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ownership {
    /// Leases in a table replicated by raft (a majority of voters decides).
    Consensus,
    /// `quorum = "none"`: every node decides from the heartbeats it hears;
    /// in a partition both sides may hold a group.
    Unguarded,
}

/// Everything the core needs to know, taken from the config.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Cluster name.
    pub cluster: String,
    /// This node's name.
    pub me: String,
    /// All nodes, this one included (witnesses too).
    pub nodes: Vec<NodeSpec>,
    /// Number of heartbeat links.
    pub links: usize,
    /// Resource groups.
    pub groups: Vec<GroupSpec>,
    /// Timing.
    pub timing: Timing,
    /// Move groups back to a better node when it returns.
    pub auto_failback: bool,
    /// How long a better node must be up before groups move back to it.
    pub failback_delay: Duration,
    /// Consensus leases or unguarded.
    pub ownership: Ownership,
}

impl Spec {
    /// Builds the spec for node `me` from a validated config.
    pub fn from_config(cfg: &FileConfig, me: &str) -> Spec {
        let nodes: Vec<NodeSpec> = cfg
            .node
            .iter()
            .map(|n| NodeSpec {
                name: n.name.get_ref().clone(),
                priority: n.priority,
                witness: n.is_witness(),
            })
            .collect();
        let ownership = match cfg.cluster.quorum {
            QuorumPolicy::Majority => Ownership::Consensus,
            QuorumPolicy::None => Ownership::Unguarded,
            QuorumPolicy::Auto if nodes.len() >= 3 => Ownership::Consensus,
            QuorumPolicy::Auto => Ownership::Unguarded,
        };
        let dead = cfg.timing.dead_ms.duration();
        Spec {
            cluster: cfg.cluster.name.get_ref().clone(),
            me: me.to_string(),
            links: cfg.node.first().map(|n| n.addresses.len()).unwrap_or(1),
            nodes,
            groups: cfg
                .group
                .iter()
                .map(|g| GroupSpec {
                    name: g.name.get_ref().clone(),
                    allowed: g.nodes.iter().map(|n| n.get_ref().clone()).collect(),
                    failure_backoff: g.failure_backoff_ms.duration(),
                    fence: g.fence.is_some(),
                })
                .collect(),
            timing: Timing {
                heartbeat: cfg.timing.heartbeat_ms.duration(),
                dead,
                warn: cfg.timing.warn_ms.duration(),
                initial_dead: cfg.timing.initial_dead_ms.duration(),
                lease: cfg.timing.lease(),
                stop_bound: cfg.timing.stop_bound(),
            },
            auto_failback: cfg.failback.auto,
            failback_delay: cfg.failback.delay_ms.duration(),
            ownership,
        }
    }

    fn is_witness(&self, name: &str) -> bool {
        self.nodes.iter().any(|n| n.name == name && n.witness)
    }
}

/// What a node brings from its previous life: its new boot generation (a
/// persisted counter) and the consensus log it saved.
#[derive(Debug, Clone, Default)]
pub struct Boot {
    /// This boot's generation (strictly greater than any earlier boot's).
    pub generation: u64,
    /// The image of the consensus log saved by the last [`Action::Persist`].
    pub raft_state: Option<Vec<u8>>,
    /// Seed for the consensus engine's randomized election timeouts.
    pub seed: u64,
}

/// The result of a start/stop/monitor/fence the agent performed for a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceOutcome {
    /// Every resource of the group started.
    Started,
    /// A resource failed to start (the agent already stopped the ones it had started).
    StartFailed(String),
    /// Every resource stopped.
    Stopped,
    /// A resource could not be stopped: it may still be active here.
    StopFailed(String),
    /// A monitor found a resource dead and could not repair it.
    MonitorFailed(String),
    /// A monitor failed because this node's own link has no carrier.
    LinkDown(String),
    /// The fence of the other node succeeded.
    Fenced,
    /// The fence failed.
    FenceFailed(String),
}

/// Something the caller must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this advert on every link to every peer, now.
    Send(Advert),
    /// Send this raft message on every link to `to`.
    SendRaft {
        /// Destination node.
        to: String,
        /// The encoded message.
        payload: Vec<u8>,
    },
    /// Write `image` durably (fsync), possibly on another thread; then
    /// send `then_send` (each on every link, like [`Action::SendRaft`]);
    /// then report [`Core::persisted`] with `number`. Persists are done in
    /// the order given; later actions need not wait for them.
    Persist(Persist),
    /// Start the group's resources in order at fencing `epoch`, then report with [`Core::on_resource`].
    Start {
        /// The group.
        group: String,
        /// The fencing epoch to hand to the resources.
        epoch: u64,
    },
    /// Stop the group's resources in reverse order, then report.
    Stop {
        /// The group.
        group: String,
        /// The epoch they ran at.
        epoch: u64,
    },
    /// Run the group's fence against `node`, then report `Fenced` or `FenceFailed`.
    Fence {
        /// The group.
        group: String,
        /// The node to fence.
        node: String,
        /// The epoch that node held.
        epoch: u64,
    },
    /// Run the (idempotent) starts of a group held here again, to announce it
    /// afresh: another node held it too (a healed partition) and clients may
    /// still be sent to that node. No outcome is reported.
    Reassert(String),
    /// Something worth logging and showing in status.
    Event(Event),
    /// Shutdown finished: everything released and the peers told. Exit now.
    Left,
}

#[derive(Debug, Clone)]
struct Peer {
    name: String,
    priority: u32,
    witness: bool,
    links: Vec<Option<Time>>,
    link_up: Vec<bool>,
    last_heard: Option<Time>,
    alive: bool,
    alive_since: Time,
    /// Highest generation seen from it (any link, any kind).
    generation: u64,
    /// It has echoed our current generation at its current generation.
    verified: bool,
    left: bool,
    advert: Option<Advert>,
}

impl Peer {
    fn state_of(&self, group: &str) -> GroupState {
        self.advert
            .as_ref()
            .and_then(|a| a.groups.iter().find(|(g, _)| g == group).map(|(_, s)| *s))
            .unwrap_or(GroupState::Released)
    }
}

#[derive(Debug, Clone)]
struct LocalGroup {
    spec: GroupSpec,
    phase: Phase,
    failures: u32,
    /// The last node seen holding the group (to explain a takeover).
    last_holder: Option<String>,
    /// Unguarded mode: another live node also held the group while it was held here.
    contested_by: Option<String>,
    /// Consensus mode: the lease version last seen here, and when (our clock).
    observed: (u64, Time),
    /// Consensus mode: when this node last proposed a release of a stale lease.
    last_release_proposal: Option<Time>,
    /// Consensus mode: when this node last proposed to acquire (at most one per raft tick).
    last_acquire_proposal: Option<Time>,
    /// Consensus mode: recent acquisition proposals (nonce, when), any of
    /// which may be the one that commits.
    acquire_proposals: VecDeque<(u64, Time)>,
}

/// Counters kept by the core (drops are counted by the agent).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoreCounters {
    /// Adverts accepted.
    pub adverts_received: u64,
    /// Adverts emitted.
    pub adverts_sent: u64,
    /// Heartbeats later than the warn time.
    pub late_heartbeats: u64,
    /// Times a peer was declared dead.
    pub peers_declared_dead: u64,
    /// Groups acquired here.
    pub acquisitions: u64,
    /// Groups released here.
    pub releases: u64,
    /// Raft messages accepted.
    pub raft_received: u64,
    /// Raft messages emitted.
    pub raft_sent: u64,
    /// Consensus images handed out for persisting.
    pub raft_persists: u64,
}

/// The protocol state machine of one node.
pub struct Core {
    spec: Spec,
    generation: u64,
    boot: Time,
    peers: Vec<Peer>,
    groups: Vec<LocalGroup>,
    standby: bool,
    connected: bool,
    had_quorum: bool,
    leaving: Option<Time>,
    transfer_asked: Option<Time>,
    left_emitted: bool,
    settled: bool,
    unsettled_at: Time,
    settle_deadline: Time,
    next_send: Time,
    last_sent: Option<Advert>,
    actions: VecDeque<Action>,
    counters: CoreCounters,
    consensus: Option<Box<Consensus>>,
    next_raft_tick: Time,
    next_renew: Time,
    nonce: u64,
    /// Outstanding renewals: (nonce, when proposed).
    renewals: VecDeque<(u64, Time)>,
    leader_seen: Option<String>,
    /// Unguarded mode: local acquisition counter (epochs are per node there).
    local_epoch: u64,
    /// The latest time the core was called with.
    now_hint: Time,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("me", &self.spec.me)
            .field("consensus", &self.consensus)
            .finish()
    }
}

fn rank_key(priority: u32, name: &str) -> (std::cmp::Reverse<u32>, &str) {
    (std::cmp::Reverse(priority), name)
}

impl Core {
    /// A node that just booted at `now`, holding nothing. Fails only when
    /// the saved consensus image cannot be used (the error says why).
    pub fn new(spec: Spec, now: Time, boot: Boot) -> Result<Core, String> {
        let peers = spec
            .nodes
            .iter()
            .filter(|n| n.name != spec.me)
            .map(|n| Peer {
                name: n.name.clone(),
                priority: n.priority,
                witness: n.witness,
                links: vec![None; spec.links],
                link_up: vec![false; spec.links],
                last_heard: None,
                alive: false,
                alive_since: now,
                generation: 0,
                verified: false,
                left: false,
                advert: None,
            })
            .collect::<Vec<_>>();
        let consensus = match spec.ownership {
            Ownership::Unguarded => None,
            Ownership::Consensus => {
                let voters: Vec<Voter> = spec
                    .nodes
                    .iter()
                    .map(|n| Voter {
                        name: n.name.clone(),
                        priority: if n.witness {
                            0
                        } else {
                            i64::from(n.priority) + 1
                        },
                    })
                    .collect();
                // Elections after half a dead time to a whole one of silence
                // from the leader (raft-rs randomizes in [ticks, 2 × ticks)).
                let ticks = (spec.timing.dead.as_nanos() / 2 / spec.timing.raft_tick().as_nanos())
                    .max(2) as usize;
                let c = Consensus::new(
                    &spec.me,
                    &voters,
                    boot.raft_state.as_deref(),
                    ticks,
                    boot.seed ^ boot.generation,
                )
                .map_err(|e| format!("consensus state: {e}"))?;
                Some(Box::new(c))
            }
        };
        let groups = spec
            .groups
            .iter()
            .map(|g| LocalGroup {
                spec: g.clone(),
                phase: Phase::Released,
                failures: 0,
                last_holder: None,
                contested_by: None,
                observed: (
                    consensus
                        .as_ref()
                        .map(|c| c.table().lease(&g.name).version)
                        .unwrap_or(0),
                    now,
                ),
                last_release_proposal: None,
                last_acquire_proposal: None,
                acquire_proposals: VecDeque::new(),
            })
            .collect();
        let settled = peers.is_empty();
        let initial_dead = spec.timing.initial_dead;
        let mut core = Core {
            spec,
            generation: boot.generation,
            boot: now,
            peers,
            groups,
            standby: false,
            connected: true,
            had_quorum: false,
            leaving: None,
            transfer_asked: None,
            left_emitted: false,
            settled,
            unsettled_at: now,
            settle_deadline: now + initial_dead,
            next_send: now,
            last_sent: None,
            actions: VecDeque::new(),
            counters: CoreCounters::default(),
            consensus,
            next_raft_tick: now,
            next_renew: now,
            nonce: 0,
            renewals: VecDeque::new(),
            leader_seen: None,
            local_epoch: 0,
            now_hint: now,
        };
        core.had_quorum = core.has_quorum();
        core.step(now);
        Ok(core)
    }

    /// The spec this core runs with.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// This boot's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Takes the next action to perform, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn peer_index(&self, name: &str) -> Option<usize> {
        self.peers.iter().position(|p| p.name == name)
    }

    /// The freshness gate shared by both packet kinds: drops an older
    /// generation than one already seen, and anything from a peer that has
    /// not yet echoed our current generation (a recording made before we
    /// restarted cannot). Learning a newer generation changes our advert's
    /// echoes, which goes out at once.
    fn admit(
        &mut self,
        idx: usize,
        generation: u64,
        echo: Option<&[(String, u64)]>,
    ) -> Result<(), DropReason> {
        let me = self.spec.me.clone();
        let mine = self.generation;
        let p = &mut self.peers[idx];
        if generation < p.generation {
            return Err(DropReason::StaleGeneration {
                node: p.name.clone(),
                generation,
            });
        }
        if generation > p.generation {
            let restarted = p.generation != 0;
            p.generation = generation;
            p.verified = false;
            p.left = false;
            if restarted {
                let node = p.name.clone();
                self.event(Event::PeerRestarted { node });
            }
        }
        let p = &mut self.peers[idx];
        if !p.verified {
            let echoed = echo.is_some_and(|e| e.iter().any(|(n, g)| *n == me && *g == mine));
            if echoed {
                p.verified = true;
            } else {
                return Err(DropReason::Unverified {
                    node: p.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Feeds a verified (signature, replay guard) heartbeat that arrived on
    /// `link`; an error says why it was dropped, for the drop counters.
    pub fn on_packet(&mut self, now: Time, link: usize, packet: &Packet) -> Result<(), DropReason> {
        self.expire_leases(now);
        let a = &packet.advert;
        if a.cluster != self.spec.cluster {
            return Err(DropReason::WrongCluster {
                cluster: a.cluster.clone(),
            });
        }
        if link >= self.spec.links {
            return Err(DropReason::Malformed {
                what: "link index beyond the configured links",
            });
        }
        let Some(idx) = self.peer_index(&a.node).filter(|_| a.node != self.spec.me) else {
            return Err(DropReason::UnknownNode {
                node: a.node.clone(),
            });
        };
        if let Err(e) = self.admit(idx, packet.generation, Some(&a.echo)) {
            self.step(now);
            return Err(e);
        }
        self.counters.adverts_received += 1;
        let warn = self.spec.timing.warn;
        let mut events = Vec::new();
        let p = &mut self.peers[idx];
        if let Some(prev) = p.links[link] {
            let gap = now.saturating_sub(prev);
            if gap > warn && p.link_up[link] {
                self.counters.late_heartbeats += 1;
                events.push(Event::LateHeartbeat {
                    node: p.name.clone(),
                    link,
                    gap_ms: gap.as_millis() as u64,
                });
            }
        }
        p.links[link] = Some(now);
        p.last_heard = Some(now);
        p.priority = a.priority;
        p.advert = Some(a.clone());
        if self.consensus.is_none() {
            for (g, st) in &a.groups {
                if st.holds() {
                    if let Some(lg) = self.groups.iter_mut().find(|lg| &lg.spec.name == g) {
                        lg.last_holder = Some(a.node.clone());
                    }
                }
            }
        }
        let p = &mut self.peers[idx];
        if !p.link_up[link] {
            p.link_up[link] = true;
            if p.alive && self.spec.links > 1 {
                events.push(Event::LinkUp {
                    node: p.name.clone(),
                    link,
                });
            }
        }
        if a.flags.leaving {
            if !p.left {
                p.left = true;
                p.alive = false;
                p.link_up.iter_mut().for_each(|u| *u = false);
                events.push(Event::PeerLeft {
                    node: p.name.clone(),
                });
            }
        } else if !p.alive {
            p.alive = true;
            p.alive_since = now;
            events.push(Event::PeerUp {
                node: p.name.clone(),
            });
            // A returning node learns the leader and catches up now, not at
            // the next raft tick (a failback waits for that).
            if let Some(c) = self.consensus.as_mut() {
                c.ping();
            }
        }
        for e in events {
            self.event(e);
        }
        self.step(now);
        Ok(())
    }

    /// Feeds a verified (signature, replay guard) raft frame.
    pub fn on_raft(&mut self, now: Time, packet: &RaftPacket) -> Result<(), DropReason> {
        self.expire_leases(now);
        if packet.cluster != self.spec.cluster {
            return Err(DropReason::WrongCluster {
                cluster: packet.cluster.clone(),
            });
        }
        let Some(idx) = self
            .peer_index(&packet.from)
            .filter(|_| packet.from != self.spec.me)
        else {
            return Err(DropReason::UnknownNode {
                node: packet.from.clone(),
            });
        };
        if packet.to != self.spec.me {
            return Err(DropReason::Malformed {
                what: "raft frame addressed to another node",
            });
        }
        if self.consensus.is_none() {
            return Err(DropReason::Malformed {
                what: "raft frame, but this node runs with quorum = \"none\"",
            });
        }
        if let Err(e) = self.admit(idx, packet.generation, None) {
            self.step(now);
            return Err(e);
        }
        let r = match self.consensus.as_mut() {
            Some(c) => c.step(&packet.from, &packet.payload),
            None => Ok(()),
        };
        self.counters.raft_received += 1;
        self.step(now);
        r.map_err(|e| DropReason::RaftRejected {
            node: packet.from.clone(),
            why: e.to_string(),
        })
    }

    fn charge_failure(&mut self, gi: usize, now: Time) -> Duration {
        let g = &mut self.groups[gi];
        if let Phase::Held { since, .. } = g.phase {
            if now.saturating_sub(since) > g.spec.failure_backoff * 16 {
                g.failures = 0;
            }
        }
        let backoff = g.spec.failure_backoff * (1u32 << g.failures.min(4));
        g.failures += 1;
        backoff
    }

    fn stop(&mut self, gi: usize, epoch: u64, then: AfterStop) {
        let name = self.groups[gi].spec.name.clone();
        self.groups[gi].phase = Phase::Stopping { epoch, then };
        self.actions.push_back(Action::Stop { group: name, epoch });
    }

    fn start(&mut self, gi: usize, epoch: u64, lease_end: Option<Time>) {
        let name = self.groups[gi].spec.name.clone();
        self.groups[gi].phase = Phase::Starting { epoch, lease_end };
        self.actions.push_back(Action::Start { group: name, epoch });
    }

    /// Reports the outcome of an action the caller performed for `group`.
    pub fn on_resource(&mut self, now: Time, group: &str, outcome: ResourceOutcome) {
        self.expire_leases(now);
        let Some(gi) = self.groups.iter().position(|g| g.spec.name == group) else {
            return;
        };
        let name = group.to_string();
        let phase = self.groups[gi].phase.clone();
        match (phase, outcome) {
            (Phase::Starting { epoch, lease_end }, ResourceOutcome::Started) => {
                self.groups[gi].phase = Phase::Held {
                    epoch,
                    since: now,
                    lease_end,
                };
                self.counters.acquisitions += 1;
                self.event(Event::Acquired { group: name });
                // A lease that ran out while starting is stopped at once.
                self.expire_leases(now);
            }
            (Phase::Starting { .. }, ResourceOutcome::StartFailed(reason)) => {
                let backoff = self.charge_failure(gi, now);
                self.groups[gi].phase = Phase::BackedOff {
                    until: now + backoff,
                };
                self.event(Event::GroupFailed {
                    group: name,
                    reason,
                    backoff_ms: backoff.as_millis() as u64,
                });
            }
            (Phase::Held { epoch, .. }, ResourceOutcome::MonitorFailed(reason)) => {
                let backoff = self.charge_failure(gi, now);
                self.event(Event::GroupFailed {
                    group: name,
                    reason,
                    backoff_ms: backoff.as_millis() as u64,
                });
                self.stop(gi, epoch, AfterStop::BackOff(now + backoff));
            }
            (Phase::Held { epoch, .. }, ResourceOutcome::LinkDown(reason)) => {
                self.event(Event::LinkFault {
                    group: name,
                    reason,
                });
                self.stop(gi, epoch, AfterStop::AwaitLink);
            }
            (Phase::Stopping { then, .. }, ResourceOutcome::Stopped) => {
                self.groups[gi].phase = match then {
                    AfterStop::BackOff(until) if until <= now => Phase::Released,
                    other => other.phase(),
                };
                self.counters.releases += 1;
                self.event(Event::Released { group: name });
            }
            (Phase::Stopping { epoch, then }, ResourceOutcome::StopFailed(reason))
            | (Phase::StopFailed { epoch, then, .. }, ResourceOutcome::StopFailed(reason)) => {
                let retry = self.groups[gi].spec.failure_backoff;
                self.groups[gi].phase = Phase::StopFailed {
                    epoch,
                    then,
                    reason: reason.clone(),
                    retry_at: now + retry,
                };
                self.event(Event::StopFailed {
                    group: name.clone(),
                    reason: reason.clone(),
                    retry_ms: retry.as_millis() as u64,
                });
                let me = self.spec.me.clone();
                self.propose(Command::StopFailed {
                    group: name,
                    node: me,
                    epoch,
                    reason,
                });
            }
            (
                Phase::Fencing {
                    epoch,
                    target,
                    lease_end,
                },
                ResourceOutcome::Fenced,
            ) => {
                self.event(Event::FenceDone {
                    group: name,
                    node: target,
                    error: None,
                });
                self.start(gi, epoch, lease_end);
            }
            (Phase::FencingOther { target, epoch }, ResourceOutcome::Fenced) => {
                self.event(Event::FenceDone {
                    group: name.clone(),
                    node: target.clone(),
                    error: None,
                });
                self.groups[gi].phase = Phase::Released;
                let me = self.spec.me.clone();
                self.propose(Command::Fenced {
                    group: name,
                    node: target,
                    epoch,
                    by: me,
                });
            }
            (Phase::Fencing { target, .. }, ResourceOutcome::FenceFailed(error))
            | (Phase::FencingOther { target, .. }, ResourceOutcome::FenceFailed(error)) => {
                let backoff = self.charge_failure(gi, now);
                self.event(Event::FenceDone {
                    group: name,
                    node: target,
                    error: Some(error),
                });
                // Nothing was started here; the stale lease is released by
                // the reconciliation in `step`.
                self.groups[gi].phase = Phase::BackedOff {
                    until: now + backoff,
                };
            }
            _ => {}
        }
        self.step(now);
    }

    /// Tells the core whether this node reaches its ping targets.
    pub fn set_connected(&mut self, now: Time, connected: bool) {
        self.expire_leases(now);
        if connected != self.connected {
            self.connected = connected;
            self.event(Event::Connectivity { connected });
            if connected {
                // Cut off until now: we may have missed who holds what.
                self.unsettle(now, self.spec.timing.dead);
            }
        }
        self.step(now);
    }

    /// This node's link used by `group` carries again: a group stopped for
    /// a link fault may be held here again by the normal rules.
    pub fn link_restored(&mut self, now: Time, group: &str) {
        self.expire_leases(now);
        if let Some(g) = self.groups.iter_mut().find(|g| g.spec.name == group) {
            if g.phase == Phase::AwaitingLink {
                g.phase = Phase::Released;
            }
        }
        self.step(now);
    }

    /// Puts this node in or out of standby (holds nothing while in standby).
    pub fn set_standby(&mut self, now: Time, standby: bool) {
        self.expire_leases(now);
        self.standby = standby;
        self.step(now);
    }

    /// Moves `group`, held here, to `target`: this node stops it and steps
    /// aside for `hold` (advertised as not available), so the next in line
    /// takes it. Refused unless `target` is alive, eligible and next in line.
    pub fn move_group(
        &mut self,
        now: Time,
        group: &str,
        target: &str,
        hold: Duration,
    ) -> Result<(), String> {
        let gi = self
            .groups
            .iter()
            .position(|g| g.spec.name == group)
            .ok_or_else(|| format!("no group {group:?}"))?;
        let Phase::Held { epoch, .. } = self.groups[gi].phase else {
            let owner = self.view(now).groups[gi].owner.clone();
            return Err(match owner {
                Some(o) => format!("{group} is held by {o}, not by this node: run the move there"),
                None => format!("{group} is not running anywhere right now"),
            });
        };
        if target == self.spec.me {
            return Err(format!("{group} already runs on {target}"));
        }
        let next = self
            .candidates(gi, now)
            .into_iter()
            .map(|c| c.0)
            .find(|n| n != &self.spec.me);
        match next {
            Some(n) if n == target => {}
            Some(n) => {
                return Err(format!(
                    "{target} is not next in line for {group} ({n} is): put {n} in standby first, or change priorities"
                ))
            }
            None => return Err(format!("{target} is not alive and eligible for {group}")),
        }
        self.event(Event::Releasing {
            group: group.to_string(),
            reason: format!("moved to {target} by the operator"),
        });
        self.stop(gi, epoch, AfterStop::Decline(now + hold));
        self.step(now);
        Ok(())
    }

    /// An operator says `group`'s resources are stopped everywhere: clears a
    /// failed stop (`keepup cleanup`). Refused when nothing is stuck.
    pub fn cleanup_group(&mut self, now: Time, group: &str) -> Result<String, String> {
        let gi = self
            .groups
            .iter()
            .position(|g| g.spec.name == group)
            .ok_or_else(|| format!("no group {group:?}"))?;
        let local_stuck = matches!(self.groups[gi].phase, Phase::StopFailed { .. });
        if local_stuck {
            self.groups[gi].phase = Phase::Released;
        }
        let msg = match &mut self.consensus {
            Some(c) => {
                let lease = c.table().lease(group);
                if lease.stop_failed.is_none() && !local_stuck {
                    return Err(format!(
                        "{group} is not stuck (holder: {})",
                        lease.holder.as_deref().unwrap_or("nobody")
                    ));
                }
                if !c.propose(&Command::Cleanup {
                    group: group.to_string(),
                }) {
                    return Err(
                        "no consensus leader right now (is a majority of voters up?); try again"
                            .into(),
                    );
                }
                format!("cleanup of {group} proposed: it is free once committed")
            }
            None if local_stuck => format!("{group} cleared on this node"),
            None => return Err(format!("{group} is not stuck on this node")),
        };
        self.step(now);
        Ok(msg)
    }

    /// Starts a clean shutdown: release everything, tell the peers, then [`Action::Left`].
    pub fn begin_shutdown(&mut self, now: Time) {
        if self.leaving.is_none() {
            self.leaving = Some(now);
        }
        self.step(now);
    }

    /// Advances time: detects dead peers and links, expires leases, ticks
    /// the consensus engine, sends due adverts. Feed every packet that has
    /// arrived before calling it.
    pub fn tick(&mut self, now: Time) {
        self.expire_leases(now);
        if let Some(c) = self.consensus.as_mut() {
            let tick = self.spec.timing.raft_tick();
            // After a stall (a paused process), at most two ticks at once.
            let mut ticks = 0;
            while now >= self.next_raft_tick && ticks < 2 {
                c.tick();
                self.next_raft_tick += tick;
                ticks += 1;
            }
            if now >= self.next_raft_tick {
                self.next_raft_tick = now + tick;
            }
        }
        self.step(now);
    }

    /// When the caller must call [`Core::tick`] next at the latest (always after `now`).
    pub fn next_deadline(&self, now: Time) -> Time {
        let t = &self.spec.timing;
        let dead = t.dead;
        let mut c = vec![self.next_send];
        for p in &self.peers {
            if p.alive {
                c.extend(p.last_heard.map(|h| h + dead));
                if self.spec.auto_failback {
                    c.push(p.alive_since + self.spec.failback_delay);
                }
            }
            for (l, heard) in p.links.iter().enumerate() {
                if p.link_up[l] {
                    c.extend(heard.map(|h| h + dead));
                }
            }
        }
        if !self.settled {
            c.push(self.settle_deadline);
        }
        for g in &self.groups {
            match &g.phase {
                Phase::BackedOff { until } | Phase::Declined { until } => c.push(*until),
                Phase::StopFailed { retry_at, .. } => c.push(*retry_at),
                Phase::Acquiring { since, .. } => c.push(*since + self.acquire_timeout()),
                Phase::Held {
                    lease_end: Some(e), ..
                } => c.push(e.saturating_sub(t.stop_bound)),
                _ => {}
            }
            if self.consensus.is_some() {
                c.push(g.observed.1 + t.takeover_wait());
                c.extend(g.last_acquire_proposal.map(|p| p + t.raft_tick()));
            }
        }
        if self.consensus.is_some() {
            c.push(self.next_raft_tick);
            c.push(self.next_renew);
        }
        if let Some(since) = self.leaving {
            c.push(since + self.leave_timeout());
        }
        c.into_iter()
            .filter(|t| *t > now)
            .min()
            .unwrap_or(now + self.spec.timing.heartbeat)
    }

    fn acquire_timeout(&self) -> Duration {
        self.spec.timing.dead.max(self.spec.timing.raft_tick() * 4)
    }

    fn leave_timeout(&self) -> Duration {
        self.spec.timing.dead * 3
    }

    fn unsettle(&mut self, now: Time, wait: Duration) {
        self.settled = false;
        self.unsettled_at = now;
        self.settle_deadline = now + wait;
    }

    fn event(&mut self, e: Event) {
        self.actions.push_back(Action::Event(e));
    }

    fn propose(&mut self, cmd: Command) -> bool {
        self.consensus.as_mut().is_some_and(|c| c.propose(&cmd))
    }

    fn has_quorum(&self) -> bool {
        match &self.consensus {
            None => true,
            Some(c) => c.leader().is_some(),
        }
    }

    fn my_priority(&self) -> u32 {
        self.spec
            .nodes
            .iter()
            .find(|n| n.name == self.spec.me)
            .map(|n| n.priority)
            .unwrap_or(0)
    }

    /// This node's advert as of now.
    pub fn advert(&self) -> Advert {
        Advert {
            cluster: self.spec.cluster.clone(),
            node: self.spec.me.clone(),
            priority: self.my_priority(),
            flags: Flags {
                standby: self.standby,
                connected: self.connected,
                leaving: self.ready_to_leave(),
                quorum: self.had_quorum,
            },
            groups: self
                .groups
                .iter()
                .map(|g| (g.spec.name.clone(), g.phase.wire()))
                .collect(),
            echo: self
                .peers
                .iter()
                .filter(|p| p.generation != 0)
                .map(|p| (p.name.clone(), p.generation))
                .collect(),
        }
    }

    /// Nothing runs here and (with consensus) the table holds nothing of ours.
    fn all_released(&self) -> bool {
        let local = self
            .groups
            .iter()
            .all(|g| !g.phase.resources_may_run() && !g.phase.busy());
        let table = match &self.consensus {
            None => true,
            Some(c) => c
                .table()
                .iter()
                .all(|(_, l)| l.holder.as_deref() != Some(self.spec.me.as_str())),
        };
        local && table
    }

    fn ready_to_leave(&self) -> bool {
        let Some(since) = self.leaving else {
            return false;
        };
        let resources_down = self
            .groups
            .iter()
            .all(|g| !g.phase.resources_may_run() && !g.phase.busy());
        if !resources_down {
            return false;
        }
        let timed_out = self.last_now_hint() >= since + self.leave_timeout();
        let handed_over = match &self.consensus {
            None => true,
            Some(c) => self.all_released() && !c.is_leader(),
        };
        handed_over || timed_out
    }

    fn last_now_hint(&self) -> Time {
        self.now_hint
    }

    /// Candidates for group `gi`: (name, priority, alive_since, state) of every
    /// live node that may hold it, this node included, best first.
    fn candidates(&self, gi: usize, now: Time) -> Vec<(String, u32, Time, GroupState)> {
        let g = &self.groups[gi];
        let allowed = |n: &str| g.spec.allowed.is_empty() || g.spec.allowed.iter().any(|a| a == n);
        let mut out = Vec::new();
        let me_ok = allowed(&self.spec.me)
            && !self.spec.is_witness(&self.spec.me)
            && !self.standby
            && self.connected
            && self.leaving.is_none()
            // Not `had_quorum`: with consensus the lease decides, and a
            // leaderless moment (an election, a leadership transfer) must
            // not make a holder think someone else should hold its group.
            && g.phase.wire() != GroupState::Failed
            && !matches!(g.phase, Phase::BackedOff { until } if now < until);
        if me_ok {
            out.push((
                self.spec.me.clone(),
                self.my_priority(),
                self.boot,
                g.phase.wire(),
            ));
        }
        for p in &self.peers {
            let Some(a) = &p.advert else { continue };
            let st = p.state_of(&g.spec.name);
            if p.alive
                && p.verified
                && !p.witness
                && allowed(&p.name)
                && !a.flags.standby
                && a.flags.connected
                && !a.flags.leaving
                && st != GroupState::Failed
            {
                out.push((p.name.clone(), p.priority, p.alive_since, st));
            }
        }
        out.sort_by(|a, b| rank_key(a.1, &a.0).cmp(&rank_key(b.1, &b.0)));
        out
    }

    /// The node that should hold group `gi` now, by the rules in the crate docs.
    fn desired_owner(&self, gi: usize, now: Time) -> Option<String> {
        let cands = self.candidates(gi, now);
        let best = cands.first()?;
        let holder = match &self.consensus {
            Some(c) => {
                let h = c.table().lease(&self.groups[gi].spec.name).holder;
                cands.iter().find(|x| Some(&x.0) == h.as_ref())
            }
            None => cands
                .iter()
                .find(|c| matches!(c.3, GroupState::Starting | GroupState::Owned)),
        };
        let Some(holder) = holder else {
            return Some(best.0.clone());
        };
        if !self.spec.auto_failback || holder.0 == best.0 {
            return Some(holder.0.clone());
        }
        if now.saturating_sub(best.2) >= self.spec.failback_delay {
            Some(best.0.clone())
        } else {
            Some(holder.0.clone())
        }
    }

    /// Unguarded mode: whether a live peer holds group `gi` in any state.
    fn other_holds(&self, gi: usize) -> Option<&str> {
        let name = &self.groups[gi].spec.name;
        self.peers
            .iter()
            .find(|p| p.alive && p.state_of(name).holds())
            .map(|p| p.name.as_str())
    }

    /// Consensus mode: a holder whose lease is about to run out stops now,
    /// before anything else is done. Called first at every entry point, so
    /// that a node resumed after a pause lets go before it acts.
    fn expire_leases(&mut self, now: Time) {
        self.now_hint = now;
        let bound = self.spec.timing.stop_bound;
        for gi in 0..self.groups.len() {
            if let Phase::Held {
                epoch,
                lease_end: Some(end),
                ..
            } = self.groups[gi].phase
            {
                if now + bound >= end {
                    let group = self.groups[gi].spec.name.clone();
                    self.event(Event::LeaseExpiring { group, epoch });
                    self.stop(gi, epoch, AfterStop::Release);
                }
            }
        }
    }

    /// Drains the consensus engine: persist, send, apply.
    fn pump(&mut self, now: Time) {
        let Some(c) = self.consensus.as_mut() else {
            return;
        };
        let out = c.poll();
        let leader = c.leader().map(str::to_string);
        let term = c.term();
        for (to, payload) in out.messages {
            self.counters.raft_sent += 1;
            self.actions.push_back(Action::SendRaft { to, payload });
        }
        if let Some(p) = out.persist {
            if p.image.is_some() {
                self.counters.raft_persists += 1;
            }
            self.counters.raft_sent += p.then_send.len() as u64;
            self.actions.push_back(Action::Persist(p));
        }
        if leader != self.leader_seen {
            self.leader_seen = leader.clone();
            self.event(Event::Leader { node: leader, term });
            // A proposal sent to the old leader may be lost with it (a
            // leader handing over drops proposals): ask the new one at once.
            for g in &mut self.groups {
                if matches!(g.phase, Phase::Acquiring { .. }) {
                    g.phase = Phase::Released;
                    g.last_acquire_proposal = None;
                }
            }
        }
        for a in out.applied {
            self.on_applied(a);
        }
        // Note when each lease last changed, on our clock: a takeover waits from there.
        let Some(c) = self.consensus.as_ref() else {
            return;
        };
        for g in &mut self.groups {
            let v = c.table().lease(&g.spec.name).version;
            if v != g.observed.0 || out.snapshot_installed {
                g.observed = (v, now);
            }
        }
    }

    fn on_applied(&mut self, a: Applied) {
        let me = self.spec.me.clone();
        let lease = self.spec.timing.lease;
        match a {
            Applied::Acquired {
                group,
                node,
                epoch,
                previous,
                nonce,
            } => {
                let Some(gi) = self.groups.iter().position(|g| g.spec.name == group) else {
                    return;
                };
                self.groups[gi].last_holder = previous.clone();
                let proposed = self.groups[gi]
                    .acquire_proposals
                    .iter()
                    .find(|(n, _)| *n == nonce)
                    .map(|(_, t)| *t);
                match (self.groups[gi].phase.clone(), proposed) {
                    (Phase::Acquiring { .. }, Some(since)) if node == me => {
                        self.groups[gi].acquire_proposals.clear();
                        let lease_end = Some(since + lease);
                        self.event(Event::LeaseGranted {
                            group: group.clone(),
                            epoch,
                            from: previous.clone(),
                        });
                        match previous {
                            Some(prev) if self.groups[gi].spec.fence => {
                                self.groups[gi].phase = Phase::Fencing {
                                    epoch,
                                    target: prev.clone(),
                                    lease_end,
                                };
                                self.event(Event::Fencing {
                                    group: group.clone(),
                                    node: prev.clone(),
                                });
                                self.actions.push_back(Action::Fence {
                                    group,
                                    node: prev,
                                    epoch: epoch - 1,
                                });
                            }
                            _ => self.start(gi, epoch, lease_end),
                        }
                        // Holder and leader on one node: a crash of another
                        // node then costs no renewal.
                        if let Some(c) = self.consensus.as_mut() {
                            if !c.is_leader() {
                                c.transfer_leader(&me);
                            }
                        }
                    }
                    (Phase::Acquiring { .. }, _) if node != me => {
                        self.groups[gi].phase = Phase::Released;
                    }
                    _ => {}
                }
            }
            Applied::Renewed {
                node,
                groups,
                nonce,
            } if node == me => {
                let Some(&(_, proposed)) = self.renewals.iter().find(|(n, _)| *n == nonce) else {
                    return;
                };
                for g in &mut self.groups {
                    if groups.contains(&g.spec.name) {
                        if let Some(end) = g.phase.lease_end_mut() {
                            *end = (*end).max(proposed + lease);
                        }
                    }
                }
            }
            Applied::Rejected {
                command:
                    Command::Acquire {
                        group, nonce, node, ..
                    },
                ..
            } if node == me => {
                if let Some(g) = self.groups.iter_mut().find(|g| g.spec.name == group) {
                    if matches!(g.phase, Phase::Acquiring { nonce: n, .. } if n == nonce) {
                        g.phase = Phase::Released;
                        // The view it was based on was stale; the table is
                        // current now, so decide again at once instead of
                        // after a raft tick (a restarted node's first
                        // proposal, seen to cost 50 ms of failback).
                        g.last_acquire_proposal = None;
                    }
                }
            }
            _ => {}
        }
    }

    fn step(&mut self, now: Time) {
        self.now_hint = now;
        // 1. Failure detection.
        let dead = self.spec.timing.dead;
        let mut events = Vec::new();
        for p in &mut self.peers {
            for l in 0..p.links.len() {
                if p.link_up[l] && p.links[l].is_some_and(|h| now.saturating_sub(h) >= dead) {
                    p.link_up[l] = false;
                    if p.alive && p.links.len() > 1 {
                        events.push(Event::LinkDown {
                            node: p.name.clone(),
                            link: l,
                        });
                    }
                }
            }
            if p.alive && p.last_heard.is_some_and(|h| now.saturating_sub(h) >= dead) {
                p.alive = false;
                self.counters.peers_declared_dead += 1;
                events.push(Event::PeerDead {
                    node: p.name.clone(),
                    silent_ms: p
                        .last_heard
                        .map(|h| now.saturating_sub(h).as_millis() as u64)
                        .unwrap_or(0),
                });
            }
        }
        for e in events {
            self.event(e);
        }
        let since = self.unsettled_at;
        if !self.settled
            && (now >= self.settle_deadline
                || self
                    .peers
                    .iter()
                    .all(|p| p.last_heard.is_some_and(|h| h >= since)))
        {
            self.settled = true;
        }

        // 2. Back-offs that expired.
        for g in &mut self.groups {
            match g.phase {
                Phase::BackedOff { until } | Phase::Declined { until } if now >= until => {
                    g.phase = Phase::Released;
                }
                _ => {}
            }
        }

        // 3. Consensus: apply what is committed, renew our leases. (Raft's
        // clock advances only in `tick`, after the caller has fed every
        // packet that arrived, so a late wake-up never times out an
        // election before the leader's waiting heartbeat is read.)
        if self.consensus.is_some() {
            let tick = self.spec.timing.raft_tick();
            self.pump(now);
            if now >= self.next_renew {
                self.next_renew = now + tick;
                self.renew(now);
            }
        }
        let q = self.has_quorum();
        if q != self.had_quorum {
            self.had_quorum = q;
            // With consensus, the leader events say it (and nothing is
            // released for the lack of a leader: leases decide).
            if self.consensus.is_none() {
                self.event(Event::Quorum { has: q });
                if q {
                    self.unsettle(now, self.spec.timing.dead);
                }
            }
        }

        // 4. Decisions, group by group.
        for gi in 0..self.groups.len() {
            if self.groups[gi].phase.busy() {
                continue;
            }
            if self.retry_failed_stop(gi, now) {
                continue;
            }
            if self.consensus.is_some() {
                self.decide_consensus(gi, now);
            } else {
                self.decide_unguarded(gi, now);
            }
        }

        // 5. The leader moves the raft membership towards the configured
        //    voters, one change at a time (a node added to or removed from
        //    the config everywhere). A no-op while they agree.
        if let Some(c) = self.consensus.as_mut() {
            if c.is_leader() {
                c.reconcile_voters();
            }
        }

        // 6. A clean stop hands consensus leadership over before leaving.
        if self.leaving.is_some() && self.all_released() {
            if let Some(c) = self.consensus.as_mut() {
                if c.is_leader() && self.transfer_asked.is_none_or(|t| now >= t + dead) {
                    self.transfer_asked = Some(now);
                    let next = self
                        .peers
                        .iter()
                        .filter(|p| p.alive)
                        .max_by(|a, b| {
                            rank_key(b.priority, &b.name).cmp(&rank_key(a.priority, &a.name))
                        })
                        .map(|p| p.name.clone());
                    if let Some(n) = next {
                        c.transfer_leader(&n);
                    }
                }
            }
        }
        self.pump(now);

        // 7. Adverts: on schedule, and at once when what we say has changed.
        let advert = self.advert();
        if now >= self.next_send || self.last_sent.as_ref() != Some(&advert) {
            self.next_send = now + self.spec.timing.heartbeat;
            self.last_sent = Some(advert.clone());
            self.counters.adverts_sent += 1;
            let leaving = advert.flags.leaving;
            self.actions.push_back(Action::Send(advert));
            if leaving && !self.left_emitted {
                self.left_emitted = true;
                self.actions.push_back(Action::Left);
            }
        }
    }

    /// Proposes one renewal covering every lease this node counts on.
    fn renew(&mut self, now: Time) {
        let leases: Vec<(String, u64)> = self
            .groups
            .iter_mut()
            .filter_map(|g| {
                let epoch = g.phase.held_epoch()?;
                g.phase
                    .lease_end_mut()
                    .map(|_| (g.spec.name.clone(), epoch))
            })
            .collect();
        if leases.is_empty() {
            return;
        }
        self.nonce += 1;
        let nonce = self.nonce;
        let node = self.spec.me.clone();
        if self.propose(Command::Renew {
            node,
            leases,
            nonce,
        }) {
            self.renewals.push_back((nonce, now));
            let horizon = self.spec.timing.lease;
            while self
                .renewals
                .front()
                .is_some_and(|(_, t)| now.saturating_sub(*t) > horizon)
            {
                self.renewals.pop_front();
            }
        }
    }

    fn decide_consensus(&mut self, gi: usize, now: Time) {
        let Some(c) = self.consensus.as_ref() else {
            return;
        };
        let name = self.groups[gi].spec.name.clone();
        let lease: Lease = c.table().lease(&name);
        let me = self.spec.me.clone();
        let mine = lease.holder.as_deref() == Some(me.as_str());
        let desired = if self.leaving.is_some() {
            None
        } else {
            self.desired_owner(gi, now)
        };
        let me_desired = desired.as_deref() == Some(me.as_str());
        match self.groups[gi].phase.clone() {
            Phase::Released
            | Phase::BackedOff { .. }
            | Phase::Declined { .. }
            | Phase::AwaitingLink
                if mine =>
            {
                // The table says ours, but nothing runs here (a restart, a
                // failed start, a finished stop): give it back.
                let due = self.groups[gi]
                    .last_release_proposal
                    .is_none_or(|t| now >= t + self.spec.timing.raft_tick());
                if due {
                    self.groups[gi].last_release_proposal = Some(now);
                    self.propose(Command::Release {
                        group: name,
                        node: me,
                        epoch: lease.epoch,
                    });
                }
            }
            Phase::Released => {
                let stuck_on = lease.holder.clone().filter(|_| lease.stop_failed.is_some());
                if let Some(holder) = stuck_on {
                    // The best live candidate other than the stuck holder fences it.
                    let fencer = self
                        .candidates(gi, now)
                        .into_iter()
                        .map(|c| c.0)
                        .find(|n| *n != holder);
                    if self.groups[gi].spec.fence && fencer.as_deref() == Some(me.as_str()) {
                        self.groups[gi].phase = Phase::FencingOther {
                            target: holder.clone(),
                            epoch: lease.epoch,
                        };
                        self.event(Event::Fencing {
                            group: name.clone(),
                            node: holder.clone(),
                        });
                        self.actions.push_back(Action::Fence {
                            group: name,
                            node: holder,
                            epoch: lease.epoch,
                        });
                    }
                    return;
                }
                let observed = self.groups[gi].observed;
                let free = lease.holder.is_none()
                    || (observed.0 == lease.version
                        && now >= observed.1 + self.spec.timing.takeover_wait());
                let due = self.groups[gi]
                    .last_acquire_proposal
                    .is_none_or(|t| now >= t + self.spec.timing.raft_tick());
                if me_desired && self.settled && free && due {
                    self.nonce += 1;
                    let nonce = self.nonce;
                    let reason = match &lease.holder {
                        Some(h) => format!("the lease of {h} expired"),
                        None => self.why_acquire(gi),
                    };
                    if self.propose(Command::Acquire {
                        group: name.clone(),
                        node: me,
                        expect_version: lease.version,
                        nonce,
                    }) {
                        // Rate-limited only once a leader took it: a node that
                        // just won an election proposes at once.
                        let g = &mut self.groups[gi];
                        g.last_acquire_proposal = Some(now);
                        g.acquire_proposals.push_back((nonce, now));
                        if g.acquire_proposals.len() > 8 {
                            g.acquire_proposals.pop_front();
                        }
                        g.phase = Phase::Acquiring { nonce, since: now };
                        self.event(Event::Acquiring {
                            group: name,
                            reason,
                        });
                    }
                }
            }
            Phase::Acquiring { since, .. } if now >= since + self.acquire_timeout() => {
                self.groups[gi].phase = Phase::Released;
            }
            Phase::Held { epoch, .. } => {
                if !mine || lease.epoch != epoch {
                    self.event(Event::LeaseLost {
                        group: name,
                        holder: lease.holder.clone(),
                    });
                    self.stop(gi, epoch, AfterStop::Release);
                } else if !me_desired {
                    let reason = self.why_release(desired.as_deref());
                    self.event(Event::Releasing {
                        group: name,
                        reason,
                    });
                    self.stop(gi, epoch, AfterStop::Release);
                }
            }
            _ => {}
        }
    }

    /// Retries a failed stop when its back-off is over (both modes);
    /// returns whether it did.
    fn retry_failed_stop(&mut self, gi: usize, now: Time) -> bool {
        let Phase::StopFailed {
            epoch,
            retry_at,
            then,
            ..
        } = self.groups[gi].phase
        else {
            return false;
        };
        if now < retry_at {
            return false;
        }
        // A back-off counts from the stop that finally works.
        let then = match then {
            AfterStop::BackOff(_) => AfterStop::BackOff(now + self.groups[gi].spec.failure_backoff),
            other => other,
        };
        self.stop(gi, epoch, then);
        true
    }

    fn decide_unguarded(&mut self, gi: usize, now: Time) {
        let desired = if self.leaving.is_some() {
            None
        } else {
            self.desired_owner(gi, now)
        };
        let me = desired.as_deref() == Some(self.spec.me.as_str());
        let name = self.groups[gi].spec.name.clone();
        match self.groups[gi].phase.clone() {
            Phase::Held { epoch, .. } => {
                // A healed partition: both sides held the group. When the other
                // gives it up, clients may still be sent its way (its gratuitous
                // ARP was the last they heard), so announce ours again.
                let other = self.other_holds(gi).map(str::to_string);
                match (other, self.groups[gi].contested_by.take()) {
                    (Some(o), _) => self.groups[gi].contested_by = Some(o),
                    (None, Some(o)) if me => {
                        self.event(Event::Reasserted {
                            group: name.clone(),
                            other: o,
                        });
                        self.actions.push_back(Action::Reassert(name.clone()));
                    }
                    (None, _) => {}
                }
                if !me {
                    let reason = self.why_release(desired.as_deref());
                    self.event(Event::Releasing {
                        group: name,
                        reason,
                    });
                    self.stop(gi, epoch, AfterStop::Release);
                }
            }
            Phase::Released if me && self.settled && self.other_holds(gi).is_none() => {
                let reason = self.why_acquire(gi);
                self.event(Event::Acquiring {
                    group: name,
                    reason,
                });
                self.local_epoch += 1;
                self.start(gi, self.local_epoch, None);
            }
            _ => {}
        }
    }

    fn why_release(&self, desired: Option<&str>) -> String {
        match (desired, self.leaving.is_some()) {
            (_, true) => "this node is stopping".to_string(),
            (Some(d), _) => format!("{d} should hold it"),
            (None, _) => "this node may not hold it (standby, cut off or failed)".to_string(),
        }
    }

    fn why_acquire(&self, gi: usize) -> String {
        let previous = self.groups[gi]
            .last_holder
            .as_ref()
            .and_then(|h| self.peers.iter().find(|p| &p.name == h));
        match previous {
            Some(p) if p.left => format!("{} left cleanly", p.name),
            Some(p) if !p.alive => format!("{} is dead", p.name),
            Some(p) => format!("{} released it", p.name),
            None => "no other node holds it and this node ranks best".to_string(),
        }
    }

    /// A snapshot for status displays.
    pub fn view(&self, now: Time) -> ClusterView {
        let mut nodes = vec![NodeView {
            name: self.spec.me.clone(),
            me: true,
            priority: self.my_priority(),
            alive: self.leaving.is_none(),
            last_heard_ms: Some(0),
            links: vec![true; self.spec.links],
            standby: self.standby,
            connected: self.connected,
            quorum: self.had_quorum,
            witness: self.spec.is_witness(&self.spec.me),
        }];
        for p in &self.peers {
            let flags = p.advert.as_ref().map(|a| a.flags).unwrap_or_default();
            nodes.push(NodeView {
                name: p.name.clone(),
                me: false,
                priority: p.priority,
                alive: p.alive,
                last_heard_ms: p
                    .last_heard
                    .map(|h| now.saturating_sub(h).as_millis() as u64),
                links: p.link_up.clone(),
                standby: flags.standby,
                connected: flags.connected,
                quorum: flags.quorum,
                witness: p.witness,
            });
        }
        let groups = self
            .groups
            .iter()
            .enumerate()
            .map(|(gi, g)| {
                let owner = if matches!(g.phase, Phase::Held { .. }) {
                    Some(self.spec.me.clone())
                } else {
                    self.peers
                        .iter()
                        .find(|p| p.alive && p.state_of(&g.spec.name) == GroupState::Owned)
                        .map(|p| p.name.clone())
                };
                let table = self.consensus.as_ref().map(|c| c.table().lease(&g.spec.name));
                let local_stop_failed = match &g.phase {
                    Phase::StopFailed { reason, .. } => Some(reason.clone()),
                    _ => None,
                };
                let stop_failed = table
                    .as_ref()
                    .and_then(|l| l.stop_failed.clone())
                    .or(local_stop_failed)
                    .map(|r| {
                        format!(
                            "{r} (the group stays put: fix it, configure a fence, or run `keepup cleanup {}` once it is stopped by hand)",
                            g.spec.name
                        )
                    });
                let lease_ms_left = match &g.phase {
                    Phase::Held {
                        lease_end: Some(e), ..
                    }
                    | Phase::Starting {
                        lease_end: Some(e), ..
                    } => Some(e.saturating_sub(now).as_millis() as u64),
                    _ => None,
                };
                GroupView {
                    name: g.spec.name.clone(),
                    owner: owner.clone(),
                    local_state: g.phase.name().to_string(),
                    desired: self.desired_owner(gi, now),
                    backoff_ms: match g.phase {
                        Phase::BackedOff { until } if until > now => {
                            Some((until - now).as_millis() as u64)
                        }
                        _ => None,
                    },
                    epoch: table
                        .as_ref()
                        .map(|l| l.epoch)
                        .or(g.phase.held_epoch())
                        .unwrap_or(0),
                    holder: match &table {
                        Some(l) => l.holder.clone(),
                        None => owner,
                    },
                    stop_failed,
                    lease_ms_left,
                }
            })
            .collect();
        ClusterView {
            cluster: self.spec.cluster.clone(),
            me: self.spec.me.clone(),
            settled: self.settled,
            nodes,
            groups,
            counters: self.counters.clone(),
            ownership: match self.spec.ownership {
                Ownership::Consensus => "consensus".into(),
                Ownership::Unguarded => "unguarded".into(),
            },
            consensus: self.consensus.as_ref().map(|c| ConsensusView {
                leader: c.leader().map(str::to_string),
                term: c.term(),
                voters: c.voters(),
                applied_index: c.applied_index(),
            }),
        }
    }

    /// Startup is over and no group is on its way in or out here: what
    /// the agent waits for before telling systemd it is ready.
    pub fn is_steady(&self) -> bool {
        self.settled
            && self.groups.iter().all(|g| {
                !matches!(
                    g.phase,
                    Phase::Acquiring { .. }
                        | Phase::Fencing { .. }
                        | Phase::FencingOther { .. }
                        | Phase::Starting { .. }
                        | Phase::Stopping { .. }
                )
            })
    }

    /// One line on this node for `systemctl status`: peers up, groups held here.
    pub fn summary(&self, now: Time) -> String {
        let view = self.view(now);
        let up = view.nodes.iter().filter(|n| n.alive).count();
        let held: Vec<&str> = self
            .groups
            .iter()
            .filter(|g| matches!(g.phase, Phase::Held { .. }))
            .map(|g| g.spec.name.as_str())
            .collect();
        format!(
            "{up}/{} nodes up; holding {}",
            view.nodes.len(),
            if held.is_empty() {
                "nothing".to_string()
            } else {
                held.join(", ")
            }
        )
    }

    /// The local state of `group`, as advertised (for tests and the agent).
    pub fn group_state(&self, group: &str) -> Option<GroupState> {
        self.phase(group).map(Phase::wire)
    }

    /// The local phase of `group`.
    pub fn phase(&self, group: &str) -> Option<&Phase> {
        self.groups
            .iter()
            .find(|g| g.spec.name == group)
            .map(|g| &g.phase)
    }

    /// The consensus table's lease for `group` as applied here (None when unguarded).
    pub fn lease(&self, group: &str) -> Option<Lease> {
        self.consensus.as_ref().map(|c| c.table().lease(group))
    }

    /// Per group (in spec order): until when this node may act for it on
    /// its own initiative (a monitor's repair), the moment the core itself
    /// would stop it. `Grant::Revoked` outside `Starting`/`Held`.
    pub fn grants(&self) -> impl Iterator<Item = (&str, Grant)> + '_ {
        let bound = self.spec.timing.stop_bound;
        self.groups.iter().map(move |g| {
            let grant = match &g.phase {
                Phase::Starting { lease_end, .. } | Phase::Held { lease_end, .. } => {
                    match lease_end {
                        Some(end) => Grant::Until(end.saturating_sub(bound)),
                        None => Grant::Unbounded,
                    }
                }
                _ => Grant::Revoked,
            };
            (g.spec.name.as_str(), grant)
        })
    }

    /// The agent made [`Action::Persist`] number `number` (and all before
    /// it) durable and sent what waited for it.
    pub fn persisted(&mut self, now: Time, number: u64) {
        self.expire_leases(now);
        if let Some(c) = self.consensus.as_mut() {
            c.persisted(number);
        }
        self.step(now);
    }

    /// The consensus leader this node knows, if any.
    pub fn leader(&self) -> Option<String> {
        self.consensus
            .as_ref()
            .and_then(|c| c.leader().map(str::to_string))
    }
}
