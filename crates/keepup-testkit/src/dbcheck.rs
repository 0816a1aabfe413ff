//! A checker over a database fault-injection run (Jepsen-style): clients
//! record which inserts the writer endpoint acknowledged, a sampler records
//! each server's `read_only` over time, and at the end the final primary's
//! rows and every server's checksum are read. The checker says whether an
//! acknowledged row was lost, a client's rows were committed out of order,
//! the servers diverged, or two servers accepted writes at once.
//!
//! Times are CLOCK_MONOTONIC ns (one clock for every namespace).

use std::collections::{BTreeMap, BTreeSet};

/// One insert a client sent: `(client, seq)` is the row's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Client number.
    pub client: u32,
    /// The client's sequence number (one per insert, never reused).
    pub seq: u64,
    /// Sent, ns.
    pub sent: u128,
    /// Answered (acknowledged or failed), ns.
    pub answered: u128,
    /// True: the server acknowledged the commit. False: it failed or timed
    /// out, so the row may or may not exist (indeterminate).
    pub acked: bool,
}

/// One `SELECT @@read_only` answer from one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Server name.
    pub server: String,
    /// Sent, ns.
    pub sent: u128,
    /// Answered, ns.
    pub answered: u128,
    /// Some(true): the server was writable (read_only = OFF) at some
    /// instant between sent and answered; Some(false): read-only; None: no
    /// answer (a gap in what is known, which ends a writable stretch).
    pub writable: Option<bool>,
}

/// A row on the final primary: `(client, seq)` and its commit order
/// (the auto-increment id the primary assigned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Client number.
    pub client: u32,
    /// Sequence number.
    pub seq: u64,
    /// Auto-increment id (commit order on one primary).
    pub id: u64,
}

/// What [`check`] found; [`Verdict::ok`] is the test's assertion.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Acknowledged inserts.
    pub acked: usize,
    /// Failed or timed-out inserts (may exist or not).
    pub indeterminate: usize,
    /// Acknowledged `(client, seq)` missing on the final primary.
    pub lost: Vec<(u32, u64)>,
    /// `(client, seq)` present more than once.
    pub duplicated: Vec<(u32, u64)>,
    /// Pairs of one client's acknowledged rows, `(earlier seq, later seq)`,
    /// whose ids are in the opposite order.
    pub reordered: Vec<(u32, u64, u64)>,
    /// Servers whose checksum differs from the final primary's.
    pub diverged: Vec<String>,
    /// Stretches during which two servers were both known writable:
    /// `(server, server, from ns, to ns)`.
    pub two_writable: Vec<(String, String, u128, u128)>,
    /// Samples taken (all servers).
    pub samples: usize,
}

impl Verdict {
    /// True when nothing was lost, reordered, duplicated, diverged, and no
    /// two servers were writable at once.
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.reordered.is_empty()
            && self.diverged.is_empty()
            && self.two_writable.is_empty()
    }
}

/// Checks a run. `checksums` maps every server to its table checksum at the
/// end (after the servers were healed and caught up); `primary` names the
/// final primary.
pub fn check(
    writes: &[Write],
    rows: &[Row],
    samples: &[Sample],
    checksums: &BTreeMap<String, String>,
    primary: &str,
) -> Verdict {
    let mut v = Verdict {
        acked: writes.iter().filter(|w| w.acked).count(),
        indeterminate: writes.iter().filter(|w| !w.acked).count(),
        samples: samples.len(),
        ..Verdict::default()
    };
    let mut ids: BTreeMap<(u32, u64), u64> = BTreeMap::new();
    for r in rows {
        if ids.insert((r.client, r.seq), r.id).is_some() {
            v.duplicated.push((r.client, r.seq));
        }
    }
    // Per client, acknowledged rows in seq order must have increasing ids.
    let mut by_client: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for w in writes.iter().filter(|w| w.acked) {
        match ids.get(&(w.client, w.seq)) {
            Some(id) => by_client.entry(w.client).or_default().push((w.seq, *id)),
            None => v.lost.push((w.client, w.seq)),
        }
    }
    for (client, mut list) in by_client {
        list.sort_unstable();
        for pair in list.windows(2) {
            if pair[1].1 < pair[0].1 {
                v.reordered.push((client, pair[0].0, pair[1].0));
            }
        }
    }
    if let Some(want) = checksums.get(primary) {
        v.diverged = checksums
            .iter()
            .filter(|(_, c)| *c != want)
            .map(|(s, _)| s.clone())
            .collect();
    } else {
        v.diverged.push(format!("{primary} (no checksum)"));
    }
    v.two_writable = overlaps(samples);
    v
}

/// Stretches during which each server was *known* writable: between the
/// answer of one writable sample and the sending of the next one, when
/// that one was writable too (assumes a server does not flip twice within
/// one sampling gap, ~20 ms). Returns pairs of servers whose stretches
/// overlap.
pub fn overlaps(samples: &[Sample]) -> Vec<(String, String, u128, u128)> {
    let mut per: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        per.entry(s.server.as_str()).or_default().push(s);
    }
    let mut stretches: Vec<(&str, u128, u128)> = Vec::new();
    for (server, mut list) in per {
        list.sort_by_key(|s| s.sent);
        for pair in list.windows(2) {
            let w = |s: &Sample| s.writable == Some(true);
            if w(pair[0]) && w(pair[1]) && pair[0].answered < pair[1].sent {
                stretches.push((server, pair[0].answered, pair[1].sent));
            }
        }
    }
    let mut out = Vec::new();
    let names: BTreeSet<&str> = stretches.iter().map(|s| s.0).collect();
    for a in &names {
        for b in names.iter().filter(|b| *b > a) {
            for x in stretches.iter().filter(|s| s.0 == *a) {
                for y in stretches.iter().filter(|s| s.0 == *b) {
                    let from = x.1.max(y.1);
                    let to = x.2.min(y.2);
                    if from < to {
                        out.push((a.to_string(), b.to_string(), from, to));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(client: u32, seq: u64, acked: bool) -> Write {
        Write {
            client,
            seq,
            sent: seq as u128,
            answered: seq as u128 + 1,
            acked,
        }
    }
    fn r(client: u32, seq: u64, id: u64) -> Row {
        Row { client, seq, id }
    }
    fn s(server: &str, sent: u128, writable: bool) -> Sample {
        Sample {
            server: server.into(),
            sent,
            answered: sent + 1,
            writable: Some(writable),
        }
    }
    fn sums(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_clean_run_passes_and_unacked_rows_may_be_missing_or_present() {
        let writes = [w(1, 1, true), w(1, 2, false), w(1, 3, false), w(1, 4, true)];
        let rows = [r(1, 1, 10), r(1, 3, 12), r(1, 4, 20)];
        let v = check(&writes, &rows, &[], &sums(&[("a", "x"), ("b", "x")]), "a");
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.acked, v.indeterminate), (2, 2));
    }

    #[test]
    fn a_lost_acknowledged_row_fails() {
        let v = check(&[w(1, 1, true)], &[], &[], &sums(&[("a", "x")]), "a");
        assert_eq!(v.lost, vec![(1, 1)]);
        assert!(!v.ok());
    }

    #[test]
    fn rows_out_of_commit_order_fail() {
        let v = check(
            &[w(1, 1, true), w(1, 2, true)],
            &[r(1, 1, 9), r(1, 2, 5)],
            &[],
            &sums(&[("a", "x")]),
            "a",
        );
        assert_eq!(v.reordered, vec![(1, 1, 2)]);
    }

    #[test]
    fn duplicates_and_divergence_fail() {
        let v = check(
            &[],
            &[r(1, 1, 1), r(1, 1, 2)],
            &[],
            &sums(&[("a", "x"), ("b", "y")]),
            "a",
        );
        assert_eq!(v.duplicated, vec![(1, 1)]);
        assert_eq!(v.diverged, vec!["b".to_string()]);
        let v = check(&[], &[], &[], &sums(&[("b", "y")]), "a");
        assert!(!v.ok(), "no checksum of the primary is a failure");
    }

    #[test]
    fn two_known_writable_stretches_that_overlap_fail() {
        // a writable 0..100, b writable 50..150: overlap 51..100.
        let samples = [
            s("a", 0, true),
            s("a", 100, true),
            s("a", 200, false),
            s("b", 50, true),
            s("b", 150, true),
        ];
        let o = overlaps(&samples);
        assert_eq!(o, vec![("a".into(), "b".into(), 51, 100)]);
    }

    #[test]
    fn a_hand_over_between_samples_is_not_an_overlap() {
        // a's last writable sample answered at 101, then read-only; b's first
        // writable sample sent at 90 but b is known writable only from its
        // answer onwards, and only until its next sample.
        let samples = [
            s("a", 0, true),
            s("a", 100, true),
            s("a", 120, false),
            s("b", 90, false),
            s("b", 110, true),
            s("b", 130, true),
        ];
        assert!(overlaps(&samples).is_empty());
        // One writable sample alone proves no stretch.
        assert!(overlaps(&[s("a", 0, true), s("b", 0, true)]).is_empty());
        // A failed sample between two writable ones ends the stretch: b is
        // known writable 1..200, a only 101..150 (not across the gap).
        let mut gap = s("a", 50, true);
        gap.writable = None;
        let samples = [
            s("a", 0, true),
            gap,
            s("a", 100, true),
            s("a", 150, true),
            s("b", 0, true),
            s("b", 200, true),
        ];
        assert_eq!(overlaps(&samples), vec![("a".into(), "b".into(), 101, 150)]);
    }
}
