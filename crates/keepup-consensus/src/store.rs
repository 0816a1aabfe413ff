//! The raft log and its durable image.
//!
//! [`LogStore`] implements raft-rs's `Storage` over entries kept in memory,
//! like raft-rs's own `MemStorage`, plus a snapshot that carries the lease
//! table, and can be written out as one image (hard state, membership,
//! snapshot, entries) and read back. The caller writes the image durably
//! (fsync'd, atomically replaced) before sending the messages that depend on
//! it: a vote or an acknowledged entry must survive a crash.

use raft::prelude::*;
use raft::{GetEntriesContext, RaftState, StorageError};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"KUraft01";

/// Why a saved image could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError(pub String);

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The raft log of one node.
#[derive(Debug, Clone, Default)]
pub struct LogStore {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// Entries after the snapshot, contiguous.
    entries: Vec<Entry>,
}

impl LogStore {
    /// A fresh log whose membership is `voters`.
    pub fn new(voters: Vec<u64>) -> LogStore {
        let mut s = LogStore::default();
        // Term 1, not 0: raft-rs 0.7 panics when it rejects a pre-vote by
        // priority while its own term is still 0 (it answers with term 0).
        s.hard_state.term = 1;
        s.conf_state.voters = voters.clone();
        s.snapshot.mut_metadata().mut_conf_state().voters = voters;
        s
    }

    fn snap_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first(&self) -> u64 {
        self.snap_index() + 1
    }

    fn last(&self) -> u64 {
        self.entries
            .last()
            .map(|e| e.index)
            .unwrap_or_else(|| self.snap_index())
    }

    /// The membership in force.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Sets the membership (after a committed change).
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Records the hard state from a `Ready`.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Records a new commit index.
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    /// The hard state (term, vote, commit).
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Appends entries from a `Ready`, replacing any conflicting suffix.
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        if first.index < self.first() {
            // Already covered by the snapshot: keep only what is new.
            let skip = (self.first() - first.index) as usize;
            if skip >= ents.len() {
                return;
            }
            return self.append(&ents[skip..]);
        }
        let keep = (first.index - self.first()) as usize;
        self.entries.truncate(keep.min(self.entries.len()));
        self.entries.extend_from_slice(ents);
    }

    /// Installs a snapshot (from the leader, or made here by [`LogStore::compact`]).
    pub fn apply_snapshot(&mut self, snap: Snapshot) {
        let meta = snap.get_metadata();
        let index = meta.index;
        if index <= self.snap_index() {
            return;
        }
        self.entries.retain(|e| e.index > index);
        if self.entries.first().is_some_and(|e| e.index != index + 1) {
            self.entries.clear();
        }
        if self.hard_state.term < meta.term {
            self.hard_state.term = meta.term;
        }
        if self.hard_state.commit < index {
            self.hard_state.commit = index;
        }
        self.conf_state = meta.get_conf_state().clone();
        self.snapshot = snap;
    }

    /// Replaces the log up to `index` (applied here) by a snapshot holding `data`.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) {
        if index <= self.snap_index() || index > self.last() {
            return;
        }
        let term = raft::Storage::term(self, index).unwrap_or(0);
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        self.entries.retain(|e| e.index > index);
        self.snapshot = snap;
    }

    /// The data of the latest snapshot (the lease table as of its index).
    pub fn snapshot_data(&self) -> &[u8] {
        self.snapshot.get_data()
    }

    /// Number of entries after the snapshot.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Everything that must survive a crash, as bytes.
    pub fn image(&self) -> Vec<u8> {
        use protobuf::Message as _;
        let mut body = Vec::new();
        let mut put = |b: Vec<u8>| {
            body.extend_from_slice(&(b.len() as u32).to_be_bytes());
            body.extend_from_slice(&b);
        };
        put(self.hard_state.write_to_bytes().unwrap_or_default());
        put(self.conf_state.write_to_bytes().unwrap_or_default());
        put(self.snapshot.write_to_bytes().unwrap_or_default());
        for e in &self.entries {
            put(e.write_to_bytes().unwrap_or_default());
        }
        let mut out = Vec::with_capacity(body.len() + 48);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&Sha256::digest(&body));
        out.extend_from_slice(&body);
        out
    }

    /// Reads back an [`LogStore::image`]; a damaged image is an error, never a panic.
    pub fn from_image(bytes: &[u8]) -> Result<LogStore, ImageError> {
        use protobuf::Message as _;
        let bad = |what: &str| ImageError(what.to_string());
        if bytes.len() < 40 || &bytes[..8] != MAGIC {
            return Err(bad("not a keepup raft state file (bad header)"));
        }
        let (digest, body) = bytes[8..].split_at(32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(bad("checksum mismatch (file damaged or cut short)"));
        }
        let mut parts = Vec::new();
        let mut pos = 0;
        while pos < body.len() {
            let len_end = pos + 4;
            let Some(len) = body.get(pos..len_end) else {
                return Err(bad("record length runs past the end"));
            };
            let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let Some(rec) = body.get(len_end..len_end + n) else {
                return Err(bad("record runs past the end"));
            };
            parts.push(rec);
            pos = len_end + n;
        }
        if parts.len() < 3 {
            return Err(bad("missing records"));
        }
        let err = |e: protobuf::ProtobufError| ImageError(format!("undecodable record: {e}"));
        let mut s = LogStore {
            hard_state: HardState::parse_from_bytes(parts[0]).map_err(err)?,
            conf_state: ConfState::parse_from_bytes(parts[1]).map_err(err)?,
            snapshot: Snapshot::parse_from_bytes(parts[2]).map_err(err)?,
            entries: Vec::new(),
        };
        for p in &parts[3..] {
            s.entries.push(Entry::parse_from_bytes(p).map_err(err)?);
        }
        let contiguous = s
            .entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == s.snap_index() + 1 + i as u64);
        if !contiguous {
            return Err(bad("log entries are not contiguous"));
        }
        Ok(s)
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - self.first()) as usize;
        let hi = (high - self.first()) as usize;
        let mut ents = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snap_index() {
            return Ok(self.snapshot.get_metadata().term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry {
            index,
            term,
            ..Default::default()
        };
        e.set_data(vec![index as u8; 3].into());
        e
    }

    #[test]
    fn image_round_trips_and_damage_is_an_error() {
        let mut s = LogStore::new(vec![1, 2, 3]);
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 2)]);
        s.set_hard_state(HardState {
            term: 2,
            vote: 3,
            commit: 2,
            ..Default::default()
        });
        s.compact(2, b"table".to_vec());
        let img = s.image();
        let back = LogStore::from_image(&img).expect("round trip");
        assert_eq!(back.hard_state, s.hard_state);
        assert_eq!(back.snapshot_data(), b"table");
        assert_eq!(raft::Storage::last_index(&back).ok(), Some(3));
        assert_eq!(raft::Storage::term(&back, 2).ok(), Some(1));
        for cut in [0, 10, img.len() - 1] {
            assert!(LogStore::from_image(&img[..cut]).is_err());
        }
        let mut flipped = img.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(LogStore::from_image(&flipped).is_err());
    }

    #[test]
    fn append_replaces_a_conflicting_suffix() {
        let mut s = LogStore::new(vec![1]);
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        s.append(&[entry(2, 2)]);
        assert_eq!(raft::Storage::last_index(&s).ok(), Some(2));
        assert_eq!(raft::Storage::term(&s, 2).ok(), Some(2));
    }
}
