//! One node's raft-rs instance with the lease table applied on top.

use crate::store::{ImageError, LogStore};
use crate::table::{Applied, Command, LeaseTable};
use raft::prelude::*;
use raft::StateRole;

/// Raft's id for a node: a stable hash of its configured name (never 0),
/// defined once in keepup-config, whose check refuses colliding names.
pub use keepup_config::consensus_id as node_id;

/// A voter as configured.
#[derive(Debug, Clone)]
pub struct Voter {
    /// Node name.
    pub name: String,
    /// Raft election priority (better-ranked nodes win elections, so the
    /// node that usually holds the groups is usually the leader too).
    pub priority: i64,
}

/// What [`Consensus::poll`] produced. `messages` may go out at once;
/// `persist` is written durably (off the caller's thread if it likes),
/// then its `then_send` messages go out, then [`Consensus::persisted`] is
/// called with its number.
#[derive(Debug, Default)]
pub struct Output {
    /// State to make durable, and what waits for it.
    pub persist: Option<Persist>,
    /// Raft messages that need nothing durable first (a leader's appends
    /// and heartbeats): (destination node, encoded message).
    pub messages: Vec<(String, Vec<u8>)>,
    /// Commands applied, in log order.
    pub applied: Vec<Applied>,
    /// A snapshot from the leader replaced the table.
    pub snapshot_installed: bool,
}

/// One durable write raft waits for (raft-rs's asynchronous ready): the
/// image, the messages that may leave only once it is on disk (votes,
/// append acknowledgements), and the ready number to acknowledge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Persist {
    /// The ready number for [`Consensus::persisted`] (None: nothing for
    /// raft to hear back, e.g. a fresh node's first image).
    pub number: Option<u64>,
    /// The new durable image (None: unchanged, only ordering matters).
    pub image: Option<Vec<u8>>,
    /// Send these after the image is durable.
    pub then_send: Vec<(String, Vec<u8>)>,
}

/// Why a raft message from a peer was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// Not a decodable raft message.
    Undecodable(String),
    /// Its from/to fields do not match the authenticated sender and this node.
    Misaddressed,
    /// raft-rs refused it.
    Refused(String),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Undecodable(e) => write!(f, "undecodable raft message: {e}"),
            StepError::Misaddressed => f.write_str("raft message names another sender or receiver"),
            StepError::Refused(e) => write!(f, "raft refused the message: {e}"),
        }
    }
}

/// Entries kept after the snapshot before the log is compacted.
const COMPACT_AFTER: usize = 64;
/// Largest batch of entries in one append message (keeps a datagram small).
const MAX_MSG_BYTES: u64 = 4096;

/// raft-rs plus the lease table: tick it, step it with peers' messages,
/// propose commands, and [`Consensus::poll`] for what to persist, send and
/// apply. No I/O and no clock of its own.
pub struct Consensus {
    raw: RawNode<LogStore>,
    table: LeaseTable,
    names: Vec<(u64, String)>,
    applied: u64,
    rng: u64,
    role_seen: (u64, StateRole, u64),
    election: (usize, usize),
    persisted_vote: (u64, u64),
    dirty: bool,
    /// The highest ready number handed out in a [`Persist`] and not yet
    /// acknowledged: while one is out, later readies queue behind it.
    in_flight: Option<u64>,
}

impl std::fmt::Debug for Consensus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consensus")
            .field("term", &self.raw.raft.term)
            .field("leader", &self.raw.raft.leader_id)
            .field("applied", &self.applied)
            .finish()
    }
}

impl Consensus {
    /// Starts `me` with membership `voters` (used only when `saved` is
    /// empty: a saved image keeps the membership it recorded), electing
    /// after `election_ticks` to twice that many silent ticks. `seed` makes
    /// the randomized election timeouts replayable.
    pub fn new(
        me: &str,
        voters: &[Voter],
        saved: Option<&[u8]>,
        election_ticks: usize,
        seed: u64,
    ) -> Result<Consensus, ImageError> {
        let ids: Vec<u64> = voters.iter().map(|v| node_id(&v.name)).collect();
        let (store, fresh) = match saved {
            Some(b) if !b.is_empty() => (LogStore::from_image(b)?, false),
            _ => (LogStore::new(ids), true),
        };
        let table = if store.snapshot_data().is_empty() {
            LeaseTable::default()
        } else {
            serde_json::from_slice(store.snapshot_data())
                .map_err(|e| ImageError(format!("lease table in the snapshot: {e}")))?
        };
        let applied = raft::Storage::first_index(&store).unwrap_or(1) - 1;
        let election_ticks = election_ticks.max(2);
        let cfg = Config {
            id: node_id(me),
            election_tick: election_ticks,
            heartbeat_tick: 1,
            applied,
            max_size_per_msg: MAX_MSG_BYTES,
            max_inflight_msgs: 64,
            check_quorum: true,
            pre_vote: true,
            priority: voters
                .iter()
                .find(|v| v.name == me)
                .map(|v| v.priority)
                .unwrap_or(0),
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&cfg, store, &logger)
            .map_err(|e| ImageError(format!("raft refused its state: {e}")))?;
        let mut c = Consensus {
            raw,
            table,
            names: voters
                .iter()
                .map(|v| (node_id(&v.name), v.name.clone()))
                .collect(),
            applied,
            rng: seed.max(1),
            role_seen: (u64::MAX, StateRole::Follower, u64::MAX),
            election: (election_ticks, election_ticks * 2),
            persisted_vote: (0, 0),
            dirty: fresh,
            in_flight: None,
        };
        let hs = c.raw.store().hard_state().clone();
        c.persisted_vote = (hs.term, hs.vote);
        c.rerandomize();
        Ok(c)
    }

    fn name_of(&self, id: u64) -> Option<&str> {
        self.names
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, n)| n.as_str())
    }

    /// raft-rs draws election timeouts from the thread's RNG; replace each
    /// fresh draw with one from our seeded generator, so a simulation
    /// replays exactly from its seed.
    fn rerandomize(&mut self) {
        let r = &self.raw.raft;
        let now = (r.term, r.state, r.leader_id);
        if now != self.role_seen {
            self.role_seen = now;
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let (lo, hi) = self.election;
            let t = lo + (self.rng % (hi - lo) as u64) as usize;
            self.raw.raft.set_randomized_election_timeout(t);
        }
    }

    /// Advances raft's logical clock by one tick.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.rerandomize();
    }

    /// Feeds a message that arrived, authenticated, from node `from`.
    pub fn step(&mut self, from: &str, bytes: &[u8]) -> Result<(), StepError> {
        use protobuf::Message as _;
        let m =
            Message::parse_from_bytes(bytes).map_err(|e| StepError::Undecodable(e.to_string()))?;
        if m.from != node_id(from)
            || m.to != self.raw.raft.id
            || raft::raw_node::is_local_msg(m.get_msg_type())
        {
            return Err(StepError::Misaddressed);
        }
        let r = self
            .raw
            .step(m)
            .map_err(|e| StepError::Refused(e.to_string()));
        self.rerandomize();
        r
    }

    /// Proposes a command; false when there is no leader to take it now.
    pub fn propose(&mut self, command: &Command) -> bool {
        let Ok(data) = serde_json::to_vec(command) else {
            return false;
        };
        self.raw.propose(Vec::new(), data).is_ok()
    }

    /// On the leader: a heartbeat to every follower now (a returning node
    /// learns the leader and catches up without waiting for a tick).
    pub fn ping(&mut self) {
        self.raw.ping();
    }

    /// Asks the leader to hand leadership to `to` (used before a clean stop,
    /// and by a new holder so that holder and leader are one node).
    pub fn transfer_leader(&mut self, to: &str) {
        if self.raw.raft.state == StateRole::Leader {
            self.raw.transfer_leader(node_id(to));
        } else {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgTransferLeader);
            m.from = node_id(to);
            let _ = self.raw.step(m);
        }
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<&str> {
        self.name_of(self.raw.raft.leader_id)
    }

    /// Whether this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// The voters in force (names; ids without a configured name are skipped).
    pub fn voters(&self) -> Vec<String> {
        let cs = self.raw.store().conf_state();
        cs.voters
            .iter()
            .filter_map(|id| self.name_of(*id).map(str::to_string))
            .collect()
    }

    /// The lease table as applied here.
    pub fn table(&self) -> &LeaseTable {
        &self.table
    }

    /// On the leader: moves the membership one step towards the configured
    /// voters (the ones given to [`Consensus::new`]), one voter added or
    /// removed at a time. Allocates nothing while they agree.
    pub fn reconcile_voters(&mut self) {
        if !self.is_leader() || self.raw.raft.has_pending_conf() {
            return;
        }
        let have = &self.raw.store().conf_state().voters;
        let change = if let Some((add, _)) = self.names.iter().find(|(id, _)| !have.contains(id)) {
            Some((ConfChangeType::AddNode, *add))
        } else {
            have.iter()
                .find(|id| !self.names.iter().any(|(n, _)| n == *id))
                .map(|rm| (ConfChangeType::RemoveNode, *rm))
        };
        if let Some((t, id)) = change {
            let mut cc = ConfChange::default();
            cc.set_change_type(t);
            cc.node_id = id;
            let _ = self.raw.propose_conf_change(Vec::new(), cc);
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>, out: &mut Output) {
        use protobuf::Message as _;
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            self.applied = e.index;
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    if e.get_data().is_empty() {
                        continue; // a new leader's empty entry
                    }
                    match serde_json::from_slice::<Command>(e.get_data()) {
                        Ok(cmd) => out.applied.push(self.table.apply(e.index, cmd)),
                        Err(_) => continue, // written by a newer version: skip, deterministically
                    }
                }
                EntryType::EntryConfChange => {
                    if let Ok(cc) = ConfChange::parse_from_bytes(e.get_data()) {
                        if let Ok(cs) = self.raw.apply_conf_change(&cc) {
                            self.raw.mut_store().set_conf_state(cs);
                            self.dirty = true;
                        }
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    if let Ok(cc) = ConfChangeV2::parse_from_bytes(e.get_data()) {
                        if let Ok(cs) = self.raw.apply_conf_change(&cc) {
                            self.raw.mut_store().set_conf_state(cs);
                            self.dirty = true;
                        }
                    }
                }
            }
        }
    }

    fn take_messages(&self, msgs: Vec<Message>, out: &mut Vec<(String, Vec<u8>)>) {
        use protobuf::Message as _;
        for m in msgs {
            if let (Some(to), Ok(bytes)) = (self.name_of(m.to), m.write_to_bytes()) {
                out.push((to.to_string(), bytes));
            }
        }
    }

    /// The image of [`Persist`] number `number` (and all before it) is durable.
    pub fn persisted(&mut self, number: u64) {
        self.raw.on_persist_ready(number);
        if self.in_flight.is_some_and(|n| n <= number) {
            self.in_flight = None;
        }
        self.advance_apply();
    }

    /// Tells raft what is applied, never beyond what is on disk here (an
    /// installed snapshot counts once its image is written).
    fn advance_apply(&mut self) {
        let log = &self.raw.raft.raft_log;
        let to = self.applied.min(log.persisted).min(log.committed);
        if to > log.applied {
            self.raw.advance_apply_to(to);
        }
    }

    /// Collects everything raft has ready: what to send now, what to make
    /// durable (and send after), and what was applied. Entries are applied
    /// once committed (raft-rs hands out only committed entries that a
    /// majority has on disk).
    pub fn poll(&mut self) -> Output {
        let mut out = Output::default();
        let mut then_send = Vec::new();
        let mut number = None;
        loop {
            while self.raw.has_ready() {
                let mut rd = self.raw.ready();
                number = Some(rd.number());
                self.take_messages(rd.take_messages(), &mut out.messages);
                if !rd.snapshot().is_empty() {
                    let snap = rd.snapshot().clone();
                    let index = snap.get_metadata().index;
                    self.table = serde_json::from_slice(snap.get_data()).unwrap_or_default();
                    self.raw.mut_store().apply_snapshot(snap);
                    self.applied = self.applied.max(index);
                    out.snapshot_installed = true;
                    self.dirty = true;
                }
                let committed = rd.take_committed_entries();
                self.apply_entries(committed, &mut out);
                if !rd.entries().is_empty() {
                    self.raw.mut_store().append(rd.entries());
                    self.dirty = true;
                }
                if let Some(hs) = rd.hs() {
                    if (hs.term, hs.vote) != self.persisted_vote {
                        self.dirty = true;
                    }
                    self.raw.mut_store().set_hard_state(hs.clone());
                }
                self.take_messages(rd.take_persisted_messages(), &mut then_send);
                self.raw.advance_append_async(rd);
                self.advance_apply();
            }
            // Nothing new to write and nothing written still pending: the
            // ready is durable as it is; acknowledge it here and look again
            // (acknowledging can make more ready, e.g. a leader's commit).
            match number {
                Some(n) if !self.dirty && self.in_flight.is_none() => {
                    self.raw.on_persist_ready(n);
                    self.advance_apply();
                    out.messages.append(&mut then_send);
                    number = None;
                }
                _ => break,
            }
        }
        if self.raw.store().entry_count() > COMPACT_AFTER {
            let data = serde_json::to_vec(&self.table).unwrap_or_default();
            self.raw.mut_store().compact(self.applied, data);
            self.dirty = true;
        }
        let image = self.dirty.then(|| {
            self.dirty = false;
            let hs = self.raw.store().hard_state();
            self.persisted_vote = (hs.term, hs.vote);
            self.raw.store().image()
        });
        if image.is_some() || number.is_some() {
            if let Some(n) = number {
                self.in_flight = Some(n);
            }
            out.persist = Some(Persist {
                number,
                image,
                then_send,
            });
        } else {
            out.messages.append(&mut then_send);
        }
        self.rerandomize();
        out
    }
}
