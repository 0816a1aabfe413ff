//! A checker over recorded holding histories, for chaos runs with real
//! agents: an exec resource appends `<ns> start|stop <node> <epoch>` lines
//! (`keepup internal hold`, stamped with CLOCK_MONOTONIC, which every
//! namespace of the machine shares), and the driver appends
//! `<ns> crash|pause|resume <node>` for the faults it injects.

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// CLOCK_MONOTONIC, ns.
    pub at: u128,
    /// `start`, `stop`, `crash`, `pause` or `resume`.
    pub what: String,
    /// The node.
    pub node: String,
    /// The epoch (start lines).
    pub epoch: u64,
}

/// Reads a history; lines that do not parse are reported, not skipped silently.
pub fn parse(text: &str) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("history line {}: {line:?}", i + 1);
        if f.len() < 3 {
            return Err(bad());
        }
        out.push(Record {
            at: f[0].parse().map_err(|_| bad())?,
            what: f[1].to_string(),
            node: f[2].to_string(),
            epoch: f.get(3).and_then(|e| e.parse().ok()).unwrap_or(0),
        });
    }
    out.sort_by_key(|r| r.at);
    Ok(out)
}

/// One stretch during which a node may have run the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    /// The node.
    pub node: String,
    /// Its epoch.
    pub epoch: u64,
    /// Start, ns.
    pub start: u128,
    /// End (stop done, or the host crashed), ns; None: still running.
    pub end: Option<u128>,
}

/// What [`check`] found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every interval, in start order.
    pub intervals: Vec<Interval>,
    /// Overlaps and epoch regressions, as sentences.
    pub violations: Vec<String>,
    /// Longest time with no holder between the first start and the end, ns.
    pub longest_gap: u128,
}

/// Builds intervals and checks them: no two nodes at once, except that a
/// paused (SIGSTOPped) holder cannot let go until it runs again, so an
/// overlap is excused while the older holder was paused, if it stopped
/// within `grace` ns of resuming; and every start's epoch is above every
/// earlier start's.
pub fn check(records: &[Record], end_of_run: u128, grace: u128) -> Report {
    let mut r = Report::default();
    let mut pauses: Vec<(String, u128, u128)> = Vec::new();
    let mut max_epoch = 0;
    for rec in records {
        match rec.what.as_str() {
            "start" => {
                // A monitor's repair runs the (idempotent) start again: same
                // node, same epoch, still running: one interval.
                let running_already = r
                    .intervals
                    .iter()
                    .any(|i| i.node == rec.node && i.epoch == rec.epoch && i.end.is_none());
                if running_already {
                    continue;
                }
                if rec.epoch <= max_epoch {
                    r.violations.push(format!(
                        "{} started at epoch {} after epoch {max_epoch} had been used",
                        rec.node, rec.epoch
                    ));
                }
                max_epoch = max_epoch.max(rec.epoch);
                r.intervals.push(Interval {
                    node: rec.node.clone(),
                    epoch: rec.epoch,
                    start: rec.at,
                    end: None,
                });
            }
            "stop" | "crash" => {
                for iv in r
                    .intervals
                    .iter_mut()
                    .filter(|i| i.node == rec.node && i.end.is_none())
                {
                    iv.end = Some(rec.at);
                }
            }
            "pause" => pauses.push((rec.node.clone(), rec.at, u128::MAX)),
            "resume" => {
                if let Some(p) = pauses
                    .iter_mut()
                    .rev()
                    .find(|p| p.0 == rec.node && p.2 == u128::MAX)
                {
                    p.2 = rec.at;
                }
            }
            _ => {}
        }
    }
    for (i, a) in r.intervals.iter().enumerate() {
        for b in r.intervals.iter().skip(i + 1) {
            if a.node == b.node {
                continue;
            }
            let (a_end, b_end) = (a.end.unwrap_or(u128::MAX), b.end.unwrap_or(u128::MAX));
            if a.start.max(b.start) >= a_end.min(b_end) {
                continue;
            }
            let (old, new) = if a.start <= b.start { (a, b) } else { (b, a) };
            // Paused when (or before) the new holder started, and let go as
            // soon as it resumed (or has not resumed yet).
            let excused = pauses.iter().any(|(n, from, to)| {
                *n == old.node
                    && *from <= new.start
                    && old.end.unwrap_or(end_of_run) <= to.saturating_add(grace)
            });
            if !excused {
                r.violations.push(format!(
                    "{} (epoch {}) and {} (epoch {}) both held it for {:.1} ms",
                    old.node,
                    old.epoch,
                    new.node,
                    new.epoch,
                    (old.end
                        .unwrap_or(end_of_run)
                        .min(new.end.unwrap_or(end_of_run))
                        - new.start) as f64
                        / 1e6
                ));
            }
        }
    }
    // Gaps: sweep the union of intervals.
    let mut spans: Vec<(u128, u128)> = r
        .intervals
        .iter()
        .map(|i| (i.start, i.end.unwrap_or(end_of_run)))
        .collect();
    spans.sort();
    let mut covered_to = spans.first().map(|s| s.1).unwrap_or(0);
    for (s, e) in spans.iter().skip(1) {
        if *s > covered_to {
            r.longest_gap = r.longest_gap.max(s - covered_to);
        }
        covered_to = covered_to.max(*e);
    }
    if !spans.is_empty() && end_of_run > covered_to {
        r.longest_gap = r.longest_gap.max(end_of_run - covered_to);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(text: &str) -> Report {
        let recs = parse(text).expect("parses");
        check(&recs, 1000, 10)
    }

    #[test]
    fn clean_handover_passes_and_overlaps_are_named() {
        let r = h("1 start a 1\n50 stop a 1\n60 start b 2\n");
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.longest_gap, 10);
        let r = h("1 start a 1\n60 start b 2\n70 stop a 1\n");
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        let r = h("1 start a 2\n50 stop a 2\n60 start b 2\n");
        assert!(r.violations[0].contains("epoch"), "{:?}", r.violations);
    }

    #[test]
    fn a_paused_holder_is_excused_only_if_it_lets_go_at_once() {
        let ok = h("1 start a 1\n10 pause a\n40 start b 2\n90 resume a\n95 stop a 1\n");
        assert!(ok.violations.is_empty(), "{:?}", ok.violations);
        let late = h("1 start a 1\n10 pause a\n40 start b 2\n90 resume a\n300 stop a 1\n");
        assert_eq!(late.violations.len(), 1);
        let crash = h("1 start a 1\n10 crash a\n40 start b 2\n");
        let repair = h("1 start a 1\n20 start a 1\n40 stop a 1\n50 start b 2\n");
        assert!(repair.violations.is_empty(), "{:?}", repair.violations);
        assert_eq!(repair.intervals.len(), 2);
        assert!(crash.violations.is_empty());
        assert!(parse("x start a 1").is_err());
    }
}
