//! Heartbeat packets on the wire: a compact, versioned binary format signed
//! with HMAC-SHA256 over a shared key, plus the replay guard that rejects
//! old or repeated packets. Pure functions over byte slices: no sockets, no
//! clocks, so the codec is fuzzed and property-tested in isolation.
//!
//! Layout (version 2, big-endian):
//!
//! ```text
//! magic "KU" | version u8 | kind u8 | generation u64 | seq u64 | link u8 | cluster: len u8 + bytes
//! kind 1, heartbeat: node: len u8 + bytes | priority u32 | flags u8
//!   | groups: count u8, then per group: len u8 + name, state u8
//!   | echoes: count u8, then per peer: len u8 + name, generation u64
//! kind 2, raft:      from: len u8 + bytes | to: len u8 + bytes | payload: len u16 + bytes
//! | HMAC-SHA256 over everything before it (32 bytes)
//! ```
//!
//! The generation is the sender's boot counter (persisted and fsync'd by
//! the agent, never the wall clock) and the sequence number counts packets
//! within it, so a captured packet replayed later is older than what the
//! receiver has already seen on that link. A heartbeat echoes the
//! generation it last heard from each peer: a receiver trusts a peer only
//! once it has echoed the receiver's *current* generation, which a
//! recording made before the receiver restarted cannot do. The link index
//! is signed too, so a packet captured on one link cannot be replayed on
//! another. Verification runs before any field is trusted; the MAC check is
//! constant-time (the `hmac` crate's `verify_slice`), never hand-rolled.

#![forbid(unsafe_code)]

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;

type HmacSha256 = Hmac<Sha256>;

/// Protocol version written in every packet.
pub const VERSION: u8 = 2;
/// Largest heartbeat we send or accept; anything bigger is dropped unread.
pub const MAX_PACKET: usize = 1200;
/// Largest raft frame (a snapshot of the lease table fits well inside).
pub const MAX_RAFT_PACKET: usize = 16 * 1024;
/// Most peers one heartbeat can echo.
pub const MAX_ECHOES: usize = 32;
const MAGIC: [u8; 2] = *b"KU";
const MAC_LEN: usize = 32;
const HEADER_LEN: usize = 2 + 1 + 1 + 8 + 8 + 1;
/// Most groups one packet can describe.
pub const MAX_GROUPS: usize = 32;

/// The shared secret, read from `cluster.key_file`.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl Key {
    /// Wraps key bytes (the config check demands at least 16).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Key {
        Key(bytes.into())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "Key({} bytes)", self.0.len())
    }
}

/// What a node says about one resource group it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// Not held here.
    Released,
    /// Resources being started here.
    Starting,
    /// Held and running here.
    Owned,
    /// Resources being stopped here.
    Stopping,
    /// Failed to start here recently; do not expect this node to take it.
    Failed,
    /// A stop failed here: the resources may still run, so nobody else may start them.
    StopFailed,
}

impl GroupState {
    fn to_byte(self) -> u8 {
        match self {
            GroupState::Released => 0,
            GroupState::Starting => 1,
            GroupState::Owned => 2,
            GroupState::Stopping => 3,
            GroupState::Failed => 4,
            GroupState::StopFailed => 5,
        }
    }
    fn from_byte(b: u8) -> Option<GroupState> {
        Some(match b {
            0 => GroupState::Released,
            1 => GroupState::Starting,
            2 => GroupState::Owned,
            3 => GroupState::Stopping,
            4 => GroupState::Failed,
            5 => GroupState::StopFailed,
            _ => return None,
        })
    }
    /// True when the node holds (or is taking or giving up) the group.
    pub fn holds(self) -> bool {
        matches!(
            self,
            GroupState::Starting
                | GroupState::Owned
                | GroupState::Stopping
                | GroupState::StopFailed
        )
    }
}

/// Node-wide flags carried in every heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    /// Put in standby by the operator: holds nothing.
    pub standby: bool,
    /// Reaches its ping targets (or has none configured).
    pub connected: bool,
    /// Stopping cleanly: treat as gone now, not after the dead time.
    pub leaving: bool,
    /// Sees enough nodes to satisfy the quorum policy.
    pub quorum: bool,
}

impl Flags {
    fn to_byte(self) -> u8 {
        (self.standby as u8)
            | (self.connected as u8) << 1
            | (self.leaving as u8) << 2
            | (self.quorum as u8) << 3
    }
    fn from_byte(b: u8) -> Flags {
        Flags {
            standby: b & 1 != 0,
            connected: b & 2 != 0,
            leaving: b & 4 != 0,
            quorum: b & 8 != 0,
        }
    }
}

/// What a node announces about itself: the protocol's content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Advert {
    /// Cluster name (packets for another cluster are dropped).
    pub cluster: String,
    /// Sender's node name.
    pub node: String,
    /// Sender's election priority.
    pub priority: u32,
    /// Sender's flags.
    pub flags: Flags,
    /// Sender's state for each group, by group name.
    pub groups: Vec<(String, GroupState)>,
    /// The generation the sender last heard from each peer (the freshness challenge).
    pub echo: Vec<(String, u64)>,
}

/// An advert as sent on one link at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Sender's boot generation (boot time in microseconds).
    pub generation: u64,
    /// Per-generation sequence number, increasing with every packet.
    pub seq: u64,
    /// Index of the link the packet was sent on.
    pub link: u8,
    /// The content.
    pub advert: Advert,
}

/// A raft message between two nodes, signed like a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftPacket {
    /// Sender's boot generation.
    pub generation: u64,
    /// Per-generation sequence number (shared with the sender's heartbeats).
    pub seq: u64,
    /// Index of the link the packet was sent on.
    pub link: u8,
    /// Cluster name.
    pub cluster: String,
    /// Sender's node name.
    pub from: String,
    /// Receiver's node name.
    pub to: String,
    /// The encoded raft message (protobuf, from raft-rs).
    pub payload: Vec<u8>,
}

/// Any verified packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A heartbeat advert.
    Heartbeat(Packet),
    /// A raft message.
    Raft(RaftPacket),
}

impl Frame {
    /// (sender, generation, seq, signed link) of either kind.
    pub fn origin(&self) -> (&str, u64, u64, u8) {
        match self {
            Frame::Heartbeat(p) => (&p.advert.node, p.generation, p.seq, p.link),
            Frame::Raft(r) => (&r.from, r.generation, r.seq, r.link),
        }
    }

    /// The cluster name it was signed for.
    pub fn cluster(&self) -> &str {
        match self {
            Frame::Heartbeat(p) => &p.advert.cluster,
            Frame::Raft(r) => &r.cluster,
        }
    }
}

/// Why a packet was dropped. Each kind has its own counter in status and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Shorter than the smallest valid packet.
    #[error("truncated packet ({len} bytes)")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// Larger than [`MAX_PACKET`].
    #[error("oversized packet ({len} bytes)")]
    Oversized {
        /// Bytes received.
        len: usize,
    },
    /// Does not start with the magic bytes: not a keepup packet.
    #[error("not a keepup packet (bad magic)")]
    BadMagic,
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {version}")]
    BadVersion {
        /// Version in the packet.
        version: u8,
    },
    /// Signature does not match: wrong key or forged/corrupted packet.
    #[error("bad signature (wrong key, forged or corrupted)")]
    BadSignature,
    /// Signed correctly but not decodable (a bug or an incompatible sender).
    #[error("malformed packet: {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
    },
    /// Signed for another cluster name.
    #[error("packet for cluster {cluster:?}")]
    WrongCluster {
        /// The cluster it names.
        cluster: String,
    },
    /// From a node not in the config.
    #[error("packet from unknown node {node:?}")]
    UnknownNode {
        /// The node it names.
        node: String,
    },
    /// Arrived on a different link than it was signed for.
    #[error("packet signed for link {signed} arrived on link {arrived}")]
    WrongLink {
        /// Link in the packet.
        signed: u8,
        /// Link it came in on.
        arrived: u8,
    },
    /// From a generation older than one already seen from that node on any link.
    #[error("packet from {node}'s old generation {generation} (it has restarted since)")]
    StaleGeneration {
        /// Sender.
        node: String,
        /// Its generation.
        generation: u64,
    },
    /// The sender has not yet echoed this node's current generation, so the
    /// packet may be a recording made before this node restarted.
    #[error("packet from {node} not yet proven fresh (it has not echoed our generation)")]
    Unverified {
        /// Sender.
        node: String,
    },
    /// A raft message raft-rs could not use.
    #[error("raft message from {node} refused: {why}")]
    RaftRejected {
        /// Sender.
        node: String,
        /// Why.
        why: String,
    },
    /// Not newer than what was already accepted from that node on that link.
    #[error("replayed or stale packet from {node} (generation {generation}, seq {seq})")]
    Replayed {
        /// Sender.
        node: String,
        /// Its generation.
        generation: u64,
        /// Its sequence number.
        seq: u64,
    },
}

impl DropReason {
    /// A stable short name for counters (`bad_signature`, `replayed`, ...).
    pub fn counter_name(&self) -> &'static str {
        match self {
            DropReason::Truncated { .. } => "truncated",
            DropReason::Oversized { .. } => "oversized",
            DropReason::BadMagic => "bad_magic",
            DropReason::BadVersion { .. } => "bad_version",
            DropReason::BadSignature => "bad_signature",
            DropReason::Malformed { .. } => "malformed",
            DropReason::WrongCluster { .. } => "wrong_cluster",
            DropReason::UnknownNode { .. } => "unknown_node",
            DropReason::WrongLink { .. } => "wrong_link",
            DropReason::Replayed { .. } => "replayed",
            DropReason::StaleGeneration { .. } => "stale_generation",
            DropReason::Unverified { .. } => "unverified",
            DropReason::RaftRejected { .. } => "raft_rejected",
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names are limited by the config check (cluster 32, node 63 bytes);
    // group names are truncated defensively rather than corrupting the frame.
    let b = &s.as_bytes()[..s.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

/// Encodes and signs `packet` into `out` (cleared first).
pub fn encode(packet: &Packet, key: &Key, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(1); // kind: heartbeat (the only kind in version 1)
    out.extend_from_slice(&packet.generation.to_be_bytes());
    out.extend_from_slice(&packet.seq.to_be_bytes());
    out.push(packet.link);
    let a = &packet.advert;
    put_str(out, &a.cluster);
    put_str(out, &a.node);
    out.extend_from_slice(&a.priority.to_be_bytes());
    out.push(a.flags.to_byte());
    let n = a.groups.len().min(MAX_GROUPS);
    out.push(n as u8);
    for (name, state) in &a.groups[..n] {
        put_str(out, name);
        out.push(state.to_byte());
    }
    let n = a.echo.len().min(MAX_ECHOES);
    out.push(n as u8);
    for (name, generation) in &a.echo[..n] {
        put_str(out, name);
        out.extend_from_slice(&generation.to_be_bytes());
    }
    sign(key, out);
}

fn sign(key: &Key, out: &mut Vec<u8>) {
    let mut mac = mac_for(key);
    mac.update(out);
    out.extend_from_slice(&mac.finalize().into_bytes());
}

/// Encodes and signs a raft frame into `out` (cleared first). A payload
/// longer than fits in [`MAX_RAFT_PACKET`] is not sent (raft resends).
pub fn encode_raft(packet: &RaftPacket, key: &Key, out: &mut Vec<u8>) -> bool {
    out.clear();
    if packet.payload.len() > MAX_RAFT_PACKET - 400 {
        return false;
    }
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(2);
    out.extend_from_slice(&packet.generation.to_be_bytes());
    out.extend_from_slice(&packet.seq.to_be_bytes());
    out.push(packet.link);
    put_str(out, &packet.cluster);
    put_str(out, &packet.from);
    put_str(out, &packet.to);
    out.extend_from_slice(&(packet.payload.len() as u16).to_be_bytes());
    out.extend_from_slice(&packet.payload);
    sign(key, out);
    true
}

fn mac_for(key: &Key) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    match HmacSha256::new_from_slice(&key.0) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DropReason> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(DropReason::Malformed {
                what: "field runs past the end",
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DropReason> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DropReason> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DropReason> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn string(&mut self) -> Result<String, DropReason> {
        let n = self.u8()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DropReason::Malformed {
            what: "name is not UTF-8",
        })
    }
}

/// Verifies and decodes one heartbeat (a raft frame is `Malformed` here).
pub fn decode(buf: &[u8], key: &Key) -> Result<Packet, DropReason> {
    match decode_frame(buf, key)? {
        Frame::Heartbeat(p) => Ok(p),
        Frame::Raft(_) => Err(DropReason::Malformed {
            what: "a raft frame where a heartbeat was expected",
        }),
    }
}

/// Verifies and decodes one datagram of either kind. Never panics, whatever the input.
pub fn decode_frame(buf: &[u8], key: &Key) -> Result<Frame, DropReason> {
    if buf.len() > MAX_RAFT_PACKET || (buf.len() > MAX_PACKET && buf.get(3) != Some(&2)) {
        return Err(DropReason::Oversized { len: buf.len() });
    }
    if buf.len() < HEADER_LEN + MAC_LEN {
        return Err(DropReason::Truncated { len: buf.len() });
    }
    if buf[..2] != MAGIC {
        return Err(DropReason::BadMagic);
    }
    if buf[2] != VERSION {
        return Err(DropReason::BadVersion { version: buf[2] });
    }
    let (body, tag) = buf.split_at(buf.len() - MAC_LEN);
    let mut mac = mac_for(key);
    mac.update(body);
    mac.verify_slice(tag)
        .map_err(|_| DropReason::BadSignature)?;
    let mut r = Reader { buf: body, pos: 3 };
    let kind = r.u8()?;
    if kind != 1 && kind != 2 {
        return Err(DropReason::Malformed {
            what: "unknown packet kind",
        });
    }
    let generation = r.u64()?;
    let seq = r.u64()?;
    let link = r.u8()?;
    let cluster = r.string()?;
    if kind == 2 {
        let from = r.string()?;
        let to = r.string()?;
        let b = r.take(2)?;
        let n = u16::from_be_bytes([b[0], b[1]]) as usize;
        let payload = r.take(n)?.to_vec();
        if r.pos != body.len() {
            return Err(DropReason::Malformed {
                what: "trailing bytes",
            });
        }
        return Ok(Frame::Raft(RaftPacket {
            generation,
            seq,
            link,
            cluster,
            from,
            to,
            payload,
        }));
    }
    let node = r.string()?;
    let priority = r.u32()?;
    let flags = Flags::from_byte(r.u8()?);
    let n = r.u8()? as usize;
    if n > MAX_GROUPS {
        return Err(DropReason::Malformed {
            what: "too many groups",
        });
    }
    let mut groups = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.string()?;
        let state = GroupState::from_byte(r.u8()?).ok_or(DropReason::Malformed {
            what: "unknown group state",
        })?;
        groups.push((name, state));
    }
    let n = r.u8()? as usize;
    if n > MAX_ECHOES {
        return Err(DropReason::Malformed {
            what: "too many echoes",
        });
    }
    let mut echo = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.string()?;
        echo.push((name, r.u64()?));
    }
    if r.pos != body.len() {
        return Err(DropReason::Malformed {
            what: "trailing bytes",
        });
    }
    Ok(Frame::Heartbeat(Packet {
        generation,
        seq,
        link,
        advert: Advert {
            cluster,
            node,
            priority,
            flags,
            groups,
            echo,
        },
    }))
}

/// Rejects replayed and stale packets, per sender and link. Heartbeats must
/// be strictly newer than the last heartbeat accepted (an older advert must
/// never overwrite a newer one). Raft frames use an anti-replay window like
/// IPsec's (RFC 4303, 3.4.3): newer than the highest seen, or one of the
/// last 64 sequence numbers not seen yet, so a frame overtaken by a later
/// one on the wire is still taken (raft does not resend a proposal).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    heartbeats: HashMap<(String, u8), (u64, u64)>,
    raft: HashMap<(String, u8), (u64, u64, u64)>,
}

/// How many sequence numbers below the highest a raft frame may be.
pub const REPLAY_WINDOW: u64 = 64;

impl ReplayGuard {
    /// Accepts heartbeat `p` (arrived on `link`) if it is fresh, remembering it.
    pub fn check(&mut self, p: &Packet, link: u8) -> Result<(), DropReason> {
        self.check_frame(&Frame::Heartbeat(p.clone()), link)
    }

    /// Accepts a frame of either kind (arrived on `link`) if it is fresh, remembering it.
    pub fn check_frame(&mut self, f: &Frame, link: u8) -> Result<(), DropReason> {
        let (node, generation, seq, signed) = f.origin();
        if signed != link {
            return Err(DropReason::WrongLink {
                signed,
                arrived: link,
            });
        }
        let replayed = || DropReason::Replayed {
            node: node.to_string(),
            generation,
            seq,
        };
        let key = (node.to_string(), link);
        match f {
            Frame::Heartbeat(_) => {
                if let Some(&(g, s)) = self.heartbeats.get(&key) {
                    if (generation, seq) <= (g, s) {
                        return Err(replayed());
                    }
                }
                self.heartbeats.insert(key, (generation, seq));
            }
            Frame::Raft(_) => {
                let (g, high, seen) = self.raft.get(&key).copied().unwrap_or((0, 0, 0));
                let next = if generation > g {
                    (generation, seq, 1)
                } else if generation < g {
                    return Err(replayed());
                } else if seq > high {
                    let shift = seq - high;
                    let seen = if shift >= 64 { 0 } else { seen << shift };
                    (g, seq, seen | 1)
                } else {
                    let back = high - seq;
                    if back >= REPLAY_WINDOW || seen & (1 << back) != 0 {
                        return Err(replayed());
                    }
                    (g, high, seen | (1 << back))
                };
                self.raft.insert(key, next);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> Key {
        Key::new(b"0123456789abcdef0123456789abcdef".to_vec())
    }

    fn sample() -> Packet {
        Packet {
            generation: 1_700_000_000_000_000,
            seq: 42,
            link: 1,
            advert: Advert {
                cluster: "web".into(),
                node: "lb-1".into(),
                priority: 200,
                flags: Flags {
                    standby: false,
                    connected: true,
                    leaving: false,
                    quorum: true,
                },
                groups: vec![
                    ("site".into(), GroupState::Owned),
                    ("db".into(), GroupState::Released),
                ],
                echo: vec![("lb-2".into(), 7)],
            },
        }
    }

    #[test]
    fn round_trip_is_compact() {
        let mut buf = Vec::new();
        encode(&sample(), &key(), &mut buf);
        assert!(buf.len() < 100, "{} bytes", buf.len());
        assert_eq!(decode(&buf, &key()), Ok(sample()));
    }

    #[test]
    fn wrong_key_and_any_flipped_bit_are_bad_signatures() {
        let mut buf = Vec::new();
        encode(&sample(), &key(), &mut buf);
        assert_eq!(
            decode(&buf, &Key::new(b"another key entirely".to_vec())),
            Err(DropReason::BadSignature)
        );
        for i in 4..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x10;
            assert_eq!(
                decode(&b, &key()),
                Err(DropReason::BadSignature),
                "bit in byte {i}"
            );
        }
    }

    #[test]
    fn header_problems_are_named() {
        let mut buf = Vec::new();
        encode(&sample(), &key(), &mut buf);
        assert_eq!(
            decode(&buf[..10], &key()),
            Err(DropReason::Truncated { len: 10 })
        );
        assert_eq!(
            decode(&vec![0u8; MAX_PACKET + 1], &key()),
            Err(DropReason::Oversized {
                len: MAX_PACKET + 1
            })
        );
        let mut b = buf.clone();
        b[0] = b'X';
        assert_eq!(decode(&b, &key()), Err(DropReason::BadMagic));
        let mut b = buf.clone();
        b[2] = 9;
        assert_eq!(
            decode(&b, &key()),
            Err(DropReason::BadVersion { version: 9 })
        );
    }

    #[test]
    fn raft_frames_may_arrive_out_of_order_but_never_twice() {
        let mut g = ReplayGuard::default();
        let f = |generation: u64, seq: u64| {
            Frame::Raft(RaftPacket {
                generation,
                seq,
                link: 0,
                cluster: "web".into(),
                from: "a".into(),
                to: "b".into(),
                payload: vec![],
            })
        };
        // (generation, seq, accepted?)
        let steps = [
            (5, 10, true),
            (5, 12, true),
            (5, 11, true), // overtaken on the wire: still taken
            (5, 11, false),
            (5, 12, false),
            (5, 100, true),
            (5, 37, true),
            (5, 36, false), // 64 below the highest: outside the window
            (4, 1000, false),
            (6, 1, true),
            (5, 101, false),
        ];
        for (generation, seq, ok) in steps {
            assert_eq!(
                g.check_frame(&f(generation, seq), 0).is_ok(),
                ok,
                "{generation}/{seq}"
            );
        }
    }

    #[test]
    fn replay_guard_rejects_old_and_duplicate_accepts_new_generation() {
        let mut g = ReplayGuard::default();
        let p = sample();
        assert!(g.check(&p, 1).is_ok());
        assert!(matches!(g.check(&p, 1), Err(DropReason::Replayed { .. })));
        let mut older = p.clone();
        older.seq = 41;
        assert!(matches!(
            g.check(&older, 1),
            Err(DropReason::Replayed { .. })
        ));
        assert!(matches!(
            g.check(&p, 0),
            Err(DropReason::WrongLink {
                signed: 1,
                arrived: 0
            })
        ));
        let mut reboot = p.clone();
        reboot.generation += 1;
        reboot.seq = 0;
        assert!(g.check(&reboot, 1).is_ok());
        // After the reboot, the old generation's packets are stale forever.
        let mut old_gen = p.clone();
        old_gen.seq = 1_000_000;
        assert!(matches!(
            g.check(&old_gen, 1),
            Err(DropReason::Replayed { .. })
        ));
    }

    fn arb_packet() -> impl Strategy<Value = Packet> {
        let state = prop_oneof![
            Just(GroupState::Released),
            Just(GroupState::Starting),
            Just(GroupState::Owned),
            Just(GroupState::Stopping),
            Just(GroupState::Failed),
            Just(GroupState::StopFailed)
        ];
        (
            any::<u64>(),
            any::<u64>(),
            any::<u8>(),
            "[a-z0-9-]{1,32}",
            "[a-z0-9-]{1,63}",
            any::<u32>(),
            any::<u8>(),
            proptest::collection::vec(("[a-z0-9-]{1,40}", state), 0..MAX_GROUPS),
            proptest::collection::vec(("[a-z0-9-]{1,12}", any::<u64>()), 0..5),
        )
            .prop_map(
                |(generation, seq, link, cluster, node, priority, f, groups, echo)| Packet {
                    generation,
                    seq,
                    link,
                    advert: Advert {
                        cluster,
                        node,
                        priority,
                        flags: Flags::from_byte(f & 0x0f),
                        groups,
                        echo,
                    },
                },
            )
    }

    proptest! {
        #[test]
        fn any_packet_round_trips(p in arb_packet()) {
            let mut buf = Vec::new();
            encode(&p, &key(), &mut buf);
            prop_assert!(buf.len() <= MAX_PACKET);
            prop_assert_eq!(decode(&buf, &key()), Ok(p));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let _ = decode(&bytes, &key());
            let _ = decode_frame(&bytes, &key());
        }

        #[test]
        fn any_raft_frame_round_trips(g in any::<u64>(), s in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..9000)) {
            let p = RaftPacket { generation: g, seq: s, link: 0, cluster: "web".into(), from: "a".into(), to: "b".into(), payload };
            let mut buf = Vec::new();
            prop_assert!(encode_raft(&p, &key(), &mut buf));
            prop_assert!(buf.len() <= MAX_RAFT_PACKET);
            prop_assert_eq!(decode_frame(&buf, &key()), Ok(Frame::Raft(p)));
            for cut in [1usize, 5, 40] {
                prop_assert!(decode_frame(&buf[..buf.len() - cut.min(buf.len())], &key()).is_err());
            }
        }

        #[test]
        fn truncations_never_decode(p in arb_packet(), cut in 1usize..64) {
            let mut buf = Vec::new();
            encode(&p, &key(), &mut buf);
            let cut = cut.min(buf.len());
            prop_assert!(decode(&buf[..buf.len() - cut], &key()).is_err());
        }
    }
}
