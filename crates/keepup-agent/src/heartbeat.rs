//! The heartbeat thread: the only place the cluster core runs.
//!
//! One OS thread owns the UDP socket and the [`Core`]. It sleeps in
//! `mio::Poll` until a packet arrives, a command is posted (through a
//! `mio::Waker`), or the core's next deadline, whichever is first. Each wake:
//! read every pending datagram, verify and feed it; apply commands; tick;
//! perform the core's actions. Resource work is handed to the tokio runtime
//! and never runs here, so nothing can hold up a heartbeat.

use crate::shared::Shared;
use anyhow::Context;
use keepup_cluster::{Action, Boot, Core, Grant, ResourceOutcome, Spec};
use keepup_config::Config;
use keepup_wire::{
    decode_frame, encode, encode_raft, DropReason, Frame, Key, Packet, RaftPacket, ReplayGuard,
    MAX_RAFT_PACKET,
};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

/// Something the rest of the agent tells the heartbeat thread.
#[derive(Debug)]
pub enum Command {
    /// The outcome of a start/stop/monitor for a group.
    Resource(String, ResourceOutcome),
    /// Whether the ping targets are reachable.
    Connected(bool),
    /// Enter or leave standby.
    Standby(bool),
    /// Move a group held here to another node (the answer goes back on `reply`).
    Move {
        /// The group.
        group: String,
        /// The node that should take it.
        target: String,
        /// Where to send the result.
        reply: mpsc::Sender<Result<(), String>>,
    },
    /// An operator cleared a failed stop (`keepup cleanup GROUP`).
    Cleanup {
        /// The group.
        group: String,
        /// Where to send the result.
        reply: mpsc::Sender<Result<String, String>>,
    },
    /// The link a group's resources use carries again.
    LinkRestored(String),
    /// The persister made consensus write `number` (and all before) durable.
    Persisted(u64),
    /// The persister could not write the consensus log: stop, loudly.
    PersistFailed(String),
    /// Release everything, tell the peers, exit.
    Shutdown,
}

/// A resource operation the core asked for.
#[derive(Debug, Clone)]
pub enum ResourceRequest {
    /// Start the group's resources in order, at this fencing epoch.
    Start(String, u64),
    /// Stop them in reverse order.
    Stop(String),
    /// Fence a node that may still run the group (its fence command).
    Fence {
        /// The group.
        group: String,
        /// The node to fence.
        node: String,
        /// The epoch it held.
        epoch: u64,
    },
    /// Run the starts again to announce the group afresh (no outcome reported).
    Reassert(String),
}

/// A cloneable handle to post commands to the heartbeat thread.
#[derive(Clone)]
pub struct HeartbeatHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    thread: Arc<Mutex<Option<JoinHandle<anyhow::Result<()>>>>>,
}

impl HeartbeatHandle {
    /// Posts a command and wakes the thread.
    pub fn send(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Waits for the thread to finish (after [`Command::Shutdown`]).
    pub fn join(&self) -> anyhow::Result<()> {
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        match handle {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("heartbeat thread panicked"))?,
            None => Ok(()),
        }
    }
}

#[derive(Clone)]
struct Peer {
    name: String,
    /// Address per link.
    addrs: Vec<SocketAddr>,
}

/// Sends raft messages, signed, on every link to a peer. The heartbeat
/// thread has one for what may leave at once, the persister one for what
/// waits for the disk; they share the sequence counter (the receivers'
/// replay window takes the little reordering between the two).
struct RaftSender {
    socket: std::net::UdpSocket,
    key: Key,
    generation: u64,
    seq: Arc<std::sync::atomic::AtomicU64>,
    peers: Vec<Peer>,
    cluster: String,
    me: String,
    out: Vec<u8>,
}

impl RaftSender {
    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    fn send(&mut self, to: &str, payload: Vec<u8>) {
        let Some(peer) = self.peers.iter().position(|p| p.name == to) else {
            return;
        };
        let mut packet = RaftPacket {
            generation: self.generation,
            seq: 0,
            link: 0,
            cluster: self.cluster.clone(),
            from: self.me.clone(),
            to: to.to_string(),
            payload,
        };
        for link in 0..self.peers[peer].addrs.len() {
            packet.seq = self.next_seq();
            packet.link = link as u8;
            if !encode_raft(&packet, &self.key, &mut self.out) {
                tracing::warn!("raft message to {to} too large for one datagram; dropped");
                return;
            }
            let addr = self.peers[peer].addrs[link];
            if let Err(e) = self.socket.send_to(&self.out, addr) {
                tracing::debug!("raft message to {to} via {addr} failed: {e}");
            }
        }
    }
}

/// The persister thread: writes consensus images in order, off the
/// heartbeat thread (an fsync took up to 120 ms with both cores saturated,
/// which stalled heartbeats), then sends what waited for them and reports
/// back. Several queued writes collapse into the newest image: each image
/// holds the whole state.
fn persister(
    jobs: mpsc::Receiver<keepup_cluster::Persist>,
    state: StateDir,
    mut sender: RaftSender,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while let Ok(more) = jobs.try_recv() {
            batch.push(more);
        }
        if let Some(image) = batch.iter().rev().find_map(|p| p.image.as_ref()) {
            let t0 = Instant::now();
            if let Err(e) = state.write("raft.state", image) {
                let _ = tx.send(Command::PersistFailed(e.to_string()));
                let _ = waker.wake();
                return;
            }
            shared.record_persist(t0.elapsed());
        }
        let mut number = None;
        for p in batch {
            for (to, payload) in p.then_send {
                sender.send(&to, payload);
            }
            number = p.number.or(number);
        }
        if let Some(n) = number {
            let _ = tx.send(Command::Persisted(n));
            let _ = waker.wake();
        }
    }
}

struct Loop {
    core: Core,
    key: Key,
    socket: UdpSocket,
    peers: Vec<Peer>,
    by_source: HashMap<IpAddr, (usize, u8)>,
    guard: ReplayGuard,
    generation: u64,
    seq: Arc<std::sync::atomic::AtomicU64>,
    /// Raft messages that may leave at once.
    raft_out: RaftSender,
    /// Consensus writes for the persister thread (None once it is gone).
    to_persister: Option<mpsc::Sender<keepup_cluster::Persist>>,
    persister: Option<JoinHandle<()>>,
    epoch: Instant,
    shared: Arc<Shared>,
    to_runtime: tokio::sync::mpsc::UnboundedSender<ResourceRequest>,
    /// Per drop reason: when it was last logged (logged at most once per interval).
    last_logged: HashMap<&'static str, Instant>,
    buf: Vec<u8>,
    out: Vec<u8>,
    finished: bool,
    /// Readiness and watchdog pings to systemd.
    systemd: crate::systemd::Systemd,
    /// Per group, in the core's order: the cell its resources read the grant from.
    grants: Vec<keepup_resource::Epoch>,
}

/// The node's state directory: its boot counter and consensus log.
pub(crate) struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating) the directory, mode 0700.
    pub(crate) fn open(dir: &Path) -> anyhow::Result<StateDir> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `name` atomically and durably: temp file, fsync, rename, fsync the directory.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = self.path(&format!(".{name}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, self.path(name))?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// This boot's generation: the persisted counter plus one, written back
    /// (fsync'd) before the first packet goes out. Never the wall clock, so
    /// a clock step changes nothing; only a first boot (no counter yet)
    /// seeds it from the clock, far above any counter a peer has seen.
    pub(crate) fn next_generation(&self) -> anyhow::Result<u64> {
        let file = self.path("generation");
        let previous = match std::fs::read_to_string(&file) {
            Ok(s) => s.trim().parse::<u64>().with_context(|| {
                format!(
                    "{} does not hold a number; remove it only if this node's peers were restarted since",
                    file.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(1),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        let next = previous + 1;
        self.write("generation", format!("{next}\n").as_bytes())
            .with_context(|| format!("cannot write {}", file.display()))?;
        Ok(next)
    }

    /// The consensus log saved by the last run, if any.
    pub(crate) fn raft_state(&self) -> anyhow::Result<Option<Vec<u8>>> {
        let file = self.path("raft.state");
        match std::fs::read(&file) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Starts the heartbeat thread; returns its handle and the stream of
/// resource operations for the runtime to perform.
pub fn start(
    config: &Config,
    me: &str,
    key: Key,
    shared: Arc<Shared>,
    state_dir: &Path,
) -> anyhow::Result<(
    HeartbeatHandle,
    tokio::sync::mpsc::UnboundedReceiver<ResourceRequest>,
)> {
    let cfg = &config.file;
    let port = cfg.cluster.port;
    let any_v6 = cfg
        .node
        .iter()
        .flat_map(|n| n.addresses.iter())
        .any(|a| a.get_ref().parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()));
    let bind: SocketAddr = if any_v6 {
        SocketAddr::from(([0u16; 8], port))
    } else {
        SocketAddr::from(([0u8; 4], port))
    };
    let std_sock = std::net::UdpSocket::bind(bind)
        .with_context(|| format!("cannot bind the heartbeat socket on UDP port {port}"))?;
    std_sock.set_nonblocking(true)?;
    let raft_socket = std_sock
        .try_clone()
        .context("cannot clone the heartbeat socket")?;
    let persister_socket = std_sock
        .try_clone()
        .context("cannot clone the heartbeat socket")?;
    let mut socket = UdpSocket::from_std(std_sock);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut socket, SOCKET, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);

    let mut peers = Vec::new();
    let mut by_source = HashMap::new();
    for n in cfg.node.iter().filter(|n| n.name.get_ref() != me) {
        let addrs: Vec<SocketAddr> = n
            .addresses
            .iter()
            .filter_map(|a| a.get_ref().parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        for (l, a) in addrs.iter().enumerate() {
            by_source.insert(canonical(a.ip()), (peers.len(), l as u8));
        }
        peers.push(Peer {
            name: n.name.get_ref().clone(),
            addrs,
        });
    }

    let (tx, rx) = mpsc::channel();
    let (to_runtime, from_core) = tokio::sync::mpsc::unbounded_channel();
    let state = StateDir::open(state_dir)?;
    let generation = state.next_generation()?;
    let raft_state = state.raft_state()?;
    let spec = Spec::from_config(cfg, me);
    let raft_file = state.path("raft.state");
    let core = Core::new(
        spec,
        Duration::ZERO,
        Boot {
            generation,
            raft_state,
            seed: generation ^ u64::from(std::process::id()),
        },
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}. The file is damaged: move it away and restart; this node then rejoins from the others' log",
            raft_file.display()
        )
    })?;
    let realtime = cfg.cluster.realtime;
    let grants = core.grants().map(|(g, _)| shared.epoch(g)).collect();
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender = |socket| RaftSender {
        socket,
        key: key.clone(),
        generation,
        seq: seq.clone(),
        peers: peers.clone(),
        cluster: cfg.cluster.name.get_ref().clone(),
        me: me.to_string(),
        out: Vec::with_capacity(MAX_RAFT_PACKET),
    };
    let raft_out = sender(raft_socket);
    let persister_out = sender(persister_socket);
    let (to_persister, jobs) = mpsc::channel();
    let persister = {
        let (shared, tx, waker) = (shared.clone(), tx.clone(), waker.clone());
        std::thread::Builder::new()
            .name("keepup-persist".into())
            .spawn(move || {
                if realtime {
                    // Below the heartbeat thread, above everything else: the
                    // messages it sends after a write are votes and acks.
                    if let Err(e) = crate::rt::make_current_thread_realtime(40) {
                        tracing::debug!("persister runs without real-time priority: {e}");
                    }
                }
                persister(jobs, state, persister_out, shared, tx, waker)
            })
            .context("cannot start the persister thread")?
    };
    let epoch = Instant::now();
    let shared2 = shared.clone();
    let thread = std::thread::Builder::new()
        .name("keepup-heartbeat".into())
        .spawn(move || {
            if realtime {
                match crate::rt::make_current_thread_realtime(50) {
                    Ok(()) => shared2.set_realtime(true),
                    Err(e) => {
                        tracing::warn!("heartbeat thread runs without real-time priority: {e}")
                    }
                }
            }
            let mut l = Loop {
                core,
                key,
                socket,
                peers,
                by_source,
                guard: ReplayGuard::default(),
                generation,
                seq,
                raft_out,
                to_persister: Some(to_persister),
                persister: Some(persister),
                epoch,
                shared: shared2,
                to_runtime,
                last_logged: HashMap::new(),
                buf: vec![0u8; MAX_RAFT_PACKET + 1],
                out: Vec::with_capacity(MAX_RAFT_PACKET),
                finished: false,
                grants,
                systemd: crate::systemd::Systemd::new(),
            };
            l.run(poll, rx)
        })
        .context("cannot start the heartbeat thread")?;
    Ok((
        HeartbeatHandle {
            tx,
            waker,
            thread: Arc::new(Mutex::new(Some(thread))),
        },
        from_core,
    ))
}

impl Loop {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn run(&mut self, mut poll: Poll, rx: mpsc::Receiver<Command>) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(64);
        let mut last_publish = Duration::ZERO;
        self.perform_actions();
        loop {
            let now = self.now();
            let deadline = self.core.next_deadline(now);
            let mut wait = deadline.saturating_sub(now);
            if let Some(w) = self.systemd.max_wait() {
                wait = wait.min(w);
            }
            if let Err(e) = poll.poll(&mut events, Some(wait)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e).context("heartbeat poll failed");
                }
            }
            let woke = self.now();
            if woke > deadline + Duration::from_millis(10) {
                self.shared.count_overrun();
            }
            self.read_packets(woke);
            while let Ok(cmd) = rx.try_recv() {
                let now = self.now();
                match cmd {
                    Command::Resource(group, outcome) => {
                        self.core.on_resource(now, &group, outcome)
                    }
                    Command::Connected(c) => self.core.set_connected(now, c),
                    Command::Standby(s) => self.core.set_standby(now, s),
                    Command::Shutdown => {
                        self.systemd.stopping();
                        self.core.begin_shutdown(now)
                    }
                    Command::Cleanup { group, reply } => {
                        let _ = reply.send(self.core.cleanup_group(now, &group));
                    }
                    Command::LinkRestored(group) => self.core.link_restored(now, &group),
                    Command::Persisted(n) => self.core.persisted(now, n),
                    Command::PersistFailed(e) => {
                        // Without a durable log this node must not vote or
                        // acknowledge: stop here, loudly, rather than risk it.
                        tracing::error!("cannot persist the consensus log: {e}; the agent stops");
                        self.finished = true;
                    }
                    Command::Move {
                        group,
                        target,
                        reply,
                    } => {
                        // Step aside long enough for the target to settle in.
                        let hold = (self.core.spec().timing.dead * 10).max(Duration::from_secs(5));
                        let _ = reply.send(self.core.move_group(now, &group, &target, hold));
                    }
                }
            }
            let now = self.now();
            self.core.tick(now);
            let changed = self.perform_actions();
            if changed || now.saturating_sub(last_publish) >= Duration::from_millis(50) {
                self.shared.set_view(self.core.view(now));
                last_publish = now;
            }
            let steady = self.core.is_steady();
            let core = &self.core;
            self.systemd.on_turn(steady, || core.summary(now));
            if self.finished {
                self.stop_persister();
                return Ok(());
            }
        }
    }

    fn drop_packet(&mut self, reason: &DropReason, from: SocketAddr) {
        let name = reason.counter_name();
        let total = self.shared.count_drop(name);
        // Logged at most once per 10 s per reason, so a flood cannot fill the logs.
        let now = Instant::now();
        let due = self
            .last_logged
            .get(name)
            .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(10));
        if due {
            self.last_logged.insert(name, now);
            tracing::warn!(%from, total, "dropped heartbeat packet: {reason}");
        }
    }

    fn read_packets(&mut self, now: Duration) {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("heartbeat socket read failed: {e}");
                    return;
                }
            };
            let frame = match decode_frame(&self.buf[..len], &self.key) {
                Ok(p) => p,
                Err(reason) => {
                    self.drop_packet(&reason, from);
                    continue;
                }
            };
            if let Err(reason) = self.admit(&frame, from) {
                self.drop_packet(&reason, from);
                continue;
            }
            let fed = match &frame {
                Frame::Heartbeat(p) => self.core.on_packet(now, p.link as usize, p),
                Frame::Raft(r) => self.core.on_raft(now, r),
            };
            if let Err(reason) = fed {
                self.drop_packet(&reason, from);
            }
            // Persist and send what the packet caused before reading the
            // next one: a vote must be on disk before it is answered.
            self.perform_actions();
        }
    }

    /// Checks a correctly signed packet: our cluster, a known node, sent from
    /// that node's address on the link it names, and fresh.
    fn admit(&mut self, f: &Frame, from: SocketAddr) -> Result<(), DropReason> {
        if f.cluster() != self.core.spec().cluster {
            return Err(DropReason::WrongCluster {
                cluster: f.cluster().to_string(),
            });
        }
        let node = f.origin().0;
        let Some(&(peer, link)) = self.by_source.get(&canonical(from.ip())) else {
            return Err(DropReason::UnknownNode {
                node: format!("{node} (from unconfigured address {})", from.ip()),
            });
        };
        if self.peers[peer].name != node {
            return Err(DropReason::UnknownNode {
                node: format!("{node} (sent from {}'s address)", self.peers[peer].name),
            });
        }
        self.guard.check_frame(f, link)
    }

    /// Performs queued actions; returns whether anything but a routine advert happened.
    fn perform_actions(&mut self) -> bool {
        let mut changed = false;
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Send(advert) => self.send(&advert),
                Action::SendRaft { to, payload } => self.raft_out.send(&to, payload),
                Action::Persist(p) => {
                    let gone = self
                        .to_persister
                        .as_ref()
                        .is_none_or(|tx| tx.send(p).is_err());
                    if gone {
                        tracing::error!("the persister thread is gone; the agent stops");
                        self.finished = true;
                        return true;
                    }
                }
                Action::Start { group, epoch } => {
                    changed = true;
                    // Granted before the runtime can see the request.
                    self.publish_grants();
                    let _ = self.to_runtime.send(ResourceRequest::Start(group, epoch));
                }
                Action::Stop { group, .. } => {
                    changed = true;
                    // Revoked before the runtime can see the request.
                    self.publish_grants();
                    let _ = self.to_runtime.send(ResourceRequest::Stop(group));
                }
                Action::Fence { group, node, epoch } => {
                    changed = true;
                    let _ = self
                        .to_runtime
                        .send(ResourceRequest::Fence { group, node, epoch });
                }
                Action::Reassert(g) => {
                    let _ = self.to_runtime.send(ResourceRequest::Reassert(g));
                }
                Action::Event(e) => {
                    changed = true;
                    match &e {
                        keepup_cluster::Event::LateHeartbeat { .. } => tracing::warn!("{e}"),
                        _ => tracing::info!("{e}"),
                    }
                    self.shared.push_event(&e);
                }
                Action::Left => {
                    changed = true;
                    // The leaving advert was just sent once; repeat it so a
                    // single lost packet does not cost the peers a dead time.
                    let advert = self.core.advert();
                    self.send(&advert);
                    self.send(&advert);
                    self.finished = true;
                }
            }
        }
        self.publish_grants();
        changed
    }

    /// Lets the persister finish what is queued (the last writes before a
    /// clean exit), then waits for it.
    fn stop_persister(&mut self) {
        self.to_persister = None;
        if let Some(h) = self.persister.take() {
            let _ = h.join();
        }
    }

    /// Hands the core's grants to the resources (see [`keepup_resource::Epoch`]).
    fn publish_grants(&self) {
        for ((_, grant), cell) in self.core.grants().zip(&self.grants) {
            match grant {
                Grant::Revoked => cell.revoke(),
                Grant::Until(t) => cell.grant(Some(self.epoch + t)),
                Grant::Unbounded => cell.grant(None),
            }
        }
    }

    fn send(&mut self, advert: &keepup_wire::Advert) {
        let links = self.peers.first().map(|p| p.addrs.len()).unwrap_or(0);
        for link in 0..links {
            let packet = Packet {
                generation: self.generation,
                seq: self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
                link: link as u8,
                advert: advert.clone(),
            };
            encode(&packet, &self.key, &mut self.out);
            for p in &self.peers {
                if let Some(addr) = p.addrs.get(link) {
                    // A send error on one link (cable out, no route) is
                    // expected during failures; the other links carry on.
                    if let Err(e) = self.socket.send_to(&self.out, *addr) {
                        tracing::debug!("heartbeat to {} via {addr} failed: {e}", p.name);
                    }
                }
            }
        }
    }
}
