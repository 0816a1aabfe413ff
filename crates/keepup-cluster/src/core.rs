//! The state machine. See the crate docs for the rules it implements.

use keepup_config::{FileConfig, QuorumPolicy};
use keepup_wire::{Advert, Flags, GroupState, Packet};
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// Monotonic time since an arbitrary epoch chosen by the caller.
pub type Time = Duration;

/// A node as configured.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Unique name.
    pub name: String,
    /// Election priority (higher wins).
    pub priority: u32,
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
}

/// Heartbeat timing.
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
}

/// Everything the core needs to know, taken from the config.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Cluster name.
    pub cluster: String,
    /// This node's name.
    pub me: String,
    /// All nodes, this one included.
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
    /// Require a strict majority of nodes alive to hold resources.
    pub majority_quorum: bool,
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
            })
            .collect();
        let majority_quorum = match cfg.cluster.quorum {
            QuorumPolicy::Majority => true,
            QuorumPolicy::None => false,
            QuorumPolicy::Auto => nodes.len() >= 3,
        };
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
                    failure_backoff: Duration::from_millis(g.failure_backoff_ms),
                })
                .collect(),
            timing: Timing {
                heartbeat: Duration::from_millis(cfg.timing.heartbeat_ms),
                dead: Duration::from_millis(cfg.timing.dead_ms),
                warn: Duration::from_millis(cfg.timing.warn_ms),
                initial_dead: Duration::from_millis(cfg.timing.initial_dead_ms),
            },
            auto_failback: cfg.failback.auto,
            failback_delay: Duration::from_millis(cfg.failback.delay_ms),
            majority_quorum,
        }
    }
}

/// The result of a start/stop/monitor the agent performed for a group.
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
}

/// Something the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this advert on every link to every peer, now.
    Send(Advert),
    /// Start the group's resources in order, then report with [`Core::on_resource`].
    Start(String),
    /// Stop the group's resources in reverse order, then report.
    Stop(String),
    /// Run the (idempotent) starts of a group held here again, to announce it
    /// afresh: another node held it too (a healed partition) and clients may
    /// still be sent to that node. No outcome is reported.
    Reassert(String),
    /// Something worth logging and showing in status.
    Event(Event),
    /// Shutdown finished: everything released and the peers told. Exit now.
    Left,
}

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
            Event::Quorum { has: true } => write!(f, "quorum regained"),
            Event::Quorum { has: false } => write!(f, "quorum lost: releasing everything"),
            Event::Connectivity { connected: true } => write!(f, "ping targets reachable again"),
            Event::Connectivity { connected: false } => {
                write!(f, "ping targets unreachable: releasing everything")
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Peer {
    name: String,
    priority: u32,
    links: Vec<Option<Time>>,
    link_up: Vec<bool>,
    last_heard: Option<Time>,
    alive: bool,
    alive_since: Time,
    generation: u64,
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
    state: GroupState,
    /// A start or stop is running; its outcome is awaited.
    busy: bool,
    failed_until: Option<Time>,
    failures: u32,
    owned_since: Option<Time>,
    /// The last peer seen holding the group (to explain a takeover).
    last_holder: Option<String>,
    /// After an operator move: stay out of the way (advertised as Failed) until then.
    declined_until: Option<Time>,
    /// Another live node also held the group while it was owned here.
    contested_by: Option<String>,
}

/// Counters kept by the core (drops are counted by the agent, before the core).
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
}

/// The protocol state machine of one node.
#[derive(Debug)]
pub struct Core {
    spec: Spec,
    boot: Time,
    peers: Vec<Peer>,
    groups: Vec<LocalGroup>,
    standby: bool,
    connected: bool,
    had_quorum: bool,
    leaving: bool,
    left_emitted: bool,
    settled: bool,
    /// Since when this node waits to hear every peer before acting on absences.
    unsettled_at: Time,
    /// When it stops waiting regardless.
    settle_deadline: Time,
    next_send: Time,
    last_sent: Option<Advert>,
    actions: VecDeque<Action>,
    counters: CoreCounters,
}

fn rank_key(priority: u32, name: &str) -> (std::cmp::Reverse<u32>, &str) {
    (std::cmp::Reverse(priority), name)
}

impl Core {
    /// A node that just booted at `now`, holding nothing.
    pub fn new(spec: Spec, now: Time) -> Core {
        let peers = spec
            .nodes
            .iter()
            .filter(|n| n.name != spec.me)
            .map(|n| Peer {
                name: n.name.clone(),
                priority: n.priority,
                links: vec![None; spec.links],
                link_up: vec![false; spec.links],
                last_heard: None,
                alive: false,
                alive_since: now,
                generation: 0,
                left: false,
                advert: None,
            })
            .collect::<Vec<_>>();
        let groups = spec
            .groups
            .iter()
            .map(|g| LocalGroup {
                spec: g.clone(),
                state: GroupState::Released,
                busy: false,
                failed_until: None,
                failures: 0,
                owned_since: None,
                last_holder: None,
                declined_until: None,
                contested_by: None,
            })
            .collect();
        let settled = peers.is_empty();
        let spec_initial_dead = spec.timing.initial_dead;
        let mut core = Core {
            spec,
            boot: now,
            peers,
            groups,
            standby: false,
            connected: true,
            had_quorum: false,
            leaving: false,
            left_emitted: false,
            settled,
            unsettled_at: now,
            settle_deadline: now + spec_initial_dead,
            next_send: now,
            last_sent: None,
            actions: VecDeque::new(),
            counters: CoreCounters::default(),
        };
        core.had_quorum = core.has_quorum(now);
        core.step(now);
        core
    }

    /// The spec this core runs with.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Takes the next action to perform, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Feeds a verified, fresh packet that arrived on `link`.
    pub fn on_packet(&mut self, now: Time, link: usize, packet: &Packet) {
        let a = &packet.advert;
        if a.cluster != self.spec.cluster || a.node == self.spec.me || link >= self.spec.links {
            return;
        }
        let Some(idx) = self.peers.iter().position(|p| p.name == a.node) else {
            return;
        };
        self.counters.adverts_received += 1;
        let warn = self.spec.timing.warn;
        let mut events = Vec::new();
        let p = &mut self.peers[idx];
        if packet.generation > p.generation {
            if p.generation != 0 {
                events.push(Event::PeerRestarted {
                    node: p.name.clone(),
                });
            }
            p.generation = packet.generation;
            p.left = false;
        }
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
        for (g, st) in &a.groups {
            if st.holds() {
                if let Some(lg) = self.groups.iter_mut().find(|lg| &lg.spec.name == g) {
                    lg.last_holder = Some(a.node.clone());
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
        }
        for e in events {
            self.event(e);
        }
        self.step(now);
    }

    /// Reports the outcome of an action the caller performed for `group`.
    pub fn on_resource(&mut self, now: Time, group: &str, outcome: ResourceOutcome) {
        let Some(gi) = self.groups.iter().position(|g| g.spec.name == group) else {
            return;
        };
        let mut events = Vec::new();
        {
            let g = &mut self.groups[gi];
            g.busy = false;
            match outcome {
                ResourceOutcome::Started => {
                    if g.state == GroupState::Starting {
                        g.state = GroupState::Owned;
                        g.owned_since = Some(now);
                        self.counters.acquisitions += 1;
                        events.push(Event::Acquired {
                            group: group.to_string(),
                        });
                    }
                }
                ResourceOutcome::Stopped => {
                    if let (GroupState::Stopping, Some(until)) = (g.state, g.declined_until.take())
                    {
                        // An operator move: step aside, without counting a failure.
                        g.state = GroupState::Failed;
                        g.failed_until = Some(until);
                        g.owned_since = None;
                        self.counters.releases += 1;
                        events.push(Event::Released {
                            group: group.to_string(),
                        });
                    } else if g.state == GroupState::Stopping {
                        // Stopped after a monitor failure: stay advertised as
                        // failed for the back-off, so peers take over now
                        // instead of waiting for this node.
                        g.state = if g.failed_until.is_some_and(|t| t > now) {
                            GroupState::Failed
                        } else {
                            GroupState::Released
                        };
                        g.owned_since = None;
                        self.counters.releases += 1;
                        events.push(Event::Released {
                            group: group.to_string(),
                        });
                    }
                }
                ResourceOutcome::StartFailed(reason)
                | ResourceOutcome::StopFailed(reason)
                | ResourceOutcome::MonitorFailed(reason) => {
                    // Doubling back-off, capped at 16 times the configured one,
                    // forgotten after the group stayed up for a while.
                    if let Some(since) = g.owned_since {
                        if now.saturating_sub(since) > g.spec.failure_backoff * 16 {
                            g.failures = 0;
                        }
                    }
                    let backoff = g.spec.failure_backoff * (1u32 << g.failures.min(4));
                    g.failures += 1;
                    g.failed_until = Some(now + backoff);
                    g.owned_since = None;
                    events.push(Event::GroupFailed {
                        group: group.to_string(),
                        reason,
                        backoff_ms: backoff.as_millis() as u64,
                    });
                    if g.state == GroupState::Owned {
                        // A monitor failure: stop what is left, then back off.
                        g.state = GroupState::Stopping;
                        g.busy = true;
                        self.actions.push_back(Action::Stop(group.to_string()));
                    } else {
                        // The agent cleans up after a failed start itself; a
                        // failed stop leaves nothing more we can do but step aside.
                        g.state = GroupState::Failed;
                    }
                }
            }
        }
        for e in events {
            self.event(e);
        }
        self.step(now);
    }

    /// Tells the core whether this node reaches its ping targets.
    pub fn set_connected(&mut self, now: Time, connected: bool) {
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

    /// Puts this node in or out of standby (holds nothing while in standby).
    pub fn set_standby(&mut self, now: Time, standby: bool) {
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
        if self.groups[gi].state != GroupState::Owned || self.groups[gi].busy {
            let owner = self.view(now).groups[gi].owner.clone();
            return Err(match owner {
                Some(o) => format!("{group} is held by {o}, not by this node: run the move there"),
                None => format!("{group} is not running anywhere right now"),
            });
        }
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
        let name = group.to_string();
        let g = &mut self.groups[gi];
        g.state = GroupState::Stopping;
        g.busy = true;
        g.declined_until = Some(now + hold);
        self.event(Event::Releasing {
            group: name.clone(),
            reason: format!("moved to {target} by the operator"),
        });
        self.actions.push_back(Action::Stop(name));
        self.step(now);
        Ok(())
    }

    /// Starts a clean shutdown: release everything, tell the peers, then [`Action::Left`].
    pub fn begin_shutdown(&mut self, now: Time) {
        self.leaving = true;
        self.step(now);
    }

    /// Advances time: detects dead peers and links, sends due adverts.
    pub fn tick(&mut self, now: Time) {
        self.step(now);
    }

    /// When the caller must call [`Core::tick`] next at the latest (always after `now`).
    pub fn next_deadline(&self, now: Time) -> Time {
        let dead = self.spec.timing.dead;
        let mut candidates = vec![self.next_send];
        for p in &self.peers {
            if p.alive {
                candidates.extend(p.last_heard.map(|h| h + dead));
                if self.spec.majority_quorum {
                    let fence = dead.saturating_sub(self.spec.timing.heartbeat);
                    candidates.extend(p.last_heard.map(|h| h + fence));
                }
                if self.spec.auto_failback {
                    candidates.push(p.alive_since + self.spec.failback_delay);
                }
            }
            for (l, heard) in p.links.iter().enumerate() {
                if p.link_up[l] {
                    candidates.extend(heard.map(|h| h + dead));
                }
            }
        }
        if !self.settled {
            candidates.push(self.settle_deadline);
        }
        candidates.extend(self.groups.iter().filter_map(|g| g.failed_until));
        candidates
            .into_iter()
            .filter(|t| *t > now)
            .min()
            .unwrap_or(now + self.spec.timing.heartbeat)
    }

    fn unsettle(&mut self, now: Time, wait: Duration) {
        self.settled = false;
        self.unsettled_at = now;
        self.settle_deadline = now + wait;
    }

    fn event(&mut self, e: Event) {
        self.actions.push_back(Action::Event(e));
    }

    /// Majority check. A peer counts only if heard within one heartbeat less
    /// than the dead time: a node cut off from the majority gives up its
    /// groups a heartbeat *before* the majority declares it dead and takes
    /// them, so the two sides never hold a group at the same time.
    fn has_quorum(&self, now: Time) -> bool {
        if !self.spec.majority_quorum {
            return true;
        }
        let fence = self
            .spec
            .timing
            .dead
            .saturating_sub(self.spec.timing.heartbeat);
        let alive = 1 + self
            .peers
            .iter()
            .filter(|p| p.alive && p.last_heard.is_some_and(|h| now.saturating_sub(h) < fence))
            .count();
        alive * 2 > self.spec.nodes.len()
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
                leaving: self.leaving && self.all_released(),
                quorum: self.had_quorum,
            },
            groups: self
                .groups
                .iter()
                .map(|g| (g.spec.name.clone(), g.state))
                .collect(),
        }
    }

    fn all_released(&self) -> bool {
        self.groups.iter().all(|g| !g.state.holds() && !g.busy)
    }

    /// Candidates for group `gi`: (name, priority, alive_since, state) of every
    /// live node that may hold it, this node included.
    fn candidates(&self, gi: usize, now: Time) -> Vec<(String, u32, Time, GroupState)> {
        let g = &self.groups[gi];
        let allowed = |n: &str| g.spec.allowed.is_empty() || g.spec.allowed.iter().any(|a| a == n);
        let mut out = Vec::new();
        let me_ok = allowed(&self.spec.me)
            && !self.standby
            && self.connected
            && !self.leaving
            && self.had_quorum
            && g.state != GroupState::Failed
            && g.failed_until.is_none_or(|t| now >= t);
        if me_ok {
            out.push((self.spec.me.clone(), self.my_priority(), self.boot, g.state));
        }
        for p in &self.peers {
            let Some(a) = &p.advert else { continue };
            let st = p.state_of(&g.spec.name);
            if p.alive
                && allowed(&p.name)
                && !a.flags.standby
                && a.flags.connected
                // A peer's quorum flag is not used here: a booting peer says
                // "no quorum" until it has heard us, and skipping it would let a
                // worse node grab the group. A peer without quorum never
                // acquires by its own check, so this only costs liveness.
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
        let holder = cands
            .iter()
            .find(|c| matches!(c.3, GroupState::Starting | GroupState::Owned));
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

    /// Whether a live peer holds group `gi` in any state (starting, owned, stopping).
    fn other_holds(&self, gi: usize) -> Option<&str> {
        let name = &self.groups[gi].spec.name;
        self.peers
            .iter()
            .find(|p| p.alive && p.state_of(name).holds())
            .map(|p| p.name.as_str())
    }

    fn step(&mut self, now: Time) {
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
        let q = self.has_quorum(now);
        if q != self.had_quorum {
            self.had_quorum = q;
            self.event(Event::Quorum { has: q });
            if q {
                // Back from a partition: peers we cannot hear yet may hold
                // groups. Wait one dead time (or until all are heard) first.
                self.unsettle(now, self.spec.timing.dead);
            }
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
            if g.state == GroupState::Failed && g.failed_until.is_some_and(|t| now >= t) {
                g.state = GroupState::Released;
            }
        }

        // 3. Election, group by group.
        for gi in 0..self.groups.len() {
            if self.groups[gi].busy {
                continue;
            }
            let desired = if self.leaving {
                None
            } else {
                self.desired_owner(gi, now)
            };
            let me = desired.as_deref() == Some(self.spec.me.as_str());
            let state = self.groups[gi].state;
            let name = self.groups[gi].spec.name.clone();
            // A healed partition: both sides held the group. When the other
            // gives it up, clients may still be sent its way (its gratuitous
            // ARP was the last they heard), so announce ours again.
            if state == GroupState::Owned {
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
            }
            match state {
                GroupState::Released if me && self.settled && self.other_holds(gi).is_none() => {
                    let reason = self.why_acquire(gi);
                    let g = &mut self.groups[gi];
                    g.state = GroupState::Starting;
                    g.busy = true;
                    self.event(Event::Acquiring {
                        group: name.clone(),
                        reason,
                    });
                    self.actions.push_back(Action::Start(name));
                }
                GroupState::Owned | GroupState::Starting if !me => {
                    let reason = match (&desired, self.leaving) {
                        (_, true) => "this node is stopping".to_string(),
                        (Some(d), _) => format!("{d} should hold it"),
                        (None, _) => {
                            "this node may not hold it (standby, no quorum or cut off)".to_string()
                        }
                    };
                    let g = &mut self.groups[gi];
                    g.state = GroupState::Stopping;
                    g.busy = true;
                    self.event(Event::Releasing {
                        group: name.clone(),
                        reason,
                    });
                    self.actions.push_back(Action::Stop(name));
                }
                _ => {}
            }
        }

        // 4. Adverts: on schedule, and at once when what we say has changed.
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
            alive: !self.leaving,
            last_heard_ms: Some(0),
            links: vec![true; self.spec.links],
            standby: self.standby,
            connected: self.connected,
            quorum: self.had_quorum,
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
            });
        }
        let groups = self
            .groups
            .iter()
            .enumerate()
            .map(|(gi, g)| {
                let owner = if g.state == GroupState::Owned {
                    Some(self.spec.me.clone())
                } else {
                    self.peers
                        .iter()
                        .find(|p| p.alive && p.state_of(&g.spec.name) == GroupState::Owned)
                        .map(|p| p.name.clone())
                };
                GroupView {
                    name: g.spec.name.clone(),
                    owner,
                    local_state: format!("{:?}", g.state).to_lowercase(),
                    desired: self.desired_owner(gi, now),
                    backoff_ms: g
                        .failed_until
                        .filter(|t| *t > now)
                        .map(|t| (t - now).as_millis() as u64),
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
        }
    }

    /// The local state of `group` (for tests and the agent).
    pub fn group_state(&self, group: &str) -> Option<GroupState> {
        self.groups
            .iter()
            .find(|g| g.spec.name == group)
            .map(|g| g.state)
    }
}

/// What `keepup status` shows about the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// Cluster name.
    pub cluster: String,
    /// This node.
    pub me: String,
    /// Whether the initial dead time is over (or every peer was heard).
    pub settled: bool,
    /// Every node, this one first.
    pub nodes: Vec<NodeView>,
    /// Every group.
    pub groups: Vec<GroupView>,
    /// Protocol counters.
    pub counters: CoreCounters,
}

/// One node in a [`ClusterView`].
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Name.
    pub name: String,
    /// Is this the local node?
    pub me: bool,
    /// Election priority.
    pub priority: u32,
    /// Alive (heard within the dead time on some link).
    pub alive: bool,
    /// Milliseconds since last heard (None: never).
    pub last_heard_ms: Option<u64>,
    /// Per link: heard within the dead time.
    pub links: Vec<bool>,
    /// In standby.
    pub standby: bool,
    /// Reaches its ping targets.
    pub connected: bool,
    /// Has quorum.
    pub quorum: bool,
}

/// One group in a [`ClusterView`].
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    /// Name.
    pub name: String,
    /// The node that owns it (started and running), if any.
    pub owner: Option<String>,
    /// This node's state for it.
    pub local_state: String,
    /// The node that should hold it by the election rules.
    pub desired: Option<String>,
    /// Remaining failure back-off on this node, in ms.
    pub backoff_ms: Option<u64>,
}
