//! Pure decisions, no I/O: GTID positions, the promotion planner, errant
//! transaction detection and master-master settings. Everything here is unit
//! tested without a server.
//!
//! A MariaDB GTID is `domain-server_id-seq_no`; a position such as
//! `@@gtid_slave_pos` lists the last GTID of each replication domain, e.g.
//! `0-1-120,1-2-7` (<https://mariadb.com/kb/en/gtid/>). Within one domain
//! sequence numbers only grow, so "who has more" is a per-domain comparison.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// One GTID `domain-server-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gtid {
    /// Replication domain (`gtid_domain_id` of the writer).
    pub domain: u32,
    /// `server_id` of the server that wrote the transaction.
    pub server_id: u32,
    /// Sequence number inside the domain.
    pub seq: u64,
}

/// A GTID position: the last GTID of every domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct GtidPos(pub BTreeMap<u32, Gtid>);

impl From<GtidPos> for String {
    fn from(p: GtidPos) -> String {
        p.to_string()
    }
}

impl fmt::Display for GtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for g in self.0.values() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{}-{}-{}", g.domain, g.server_id, g.seq)?;
        }
        Ok(())
    }
}

impl GtidPos {
    /// Parses `0-1-5,1-2-7` (empty string: empty position).
    pub fn parse(s: &str) -> Result<GtidPos, String> {
        let mut map = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut it = part.split('-');
            let (Some(d), Some(sv), Some(q), None) = (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(format!("{part:?} is not a GTID (domain-server-seq)"));
            };
            let bad = |_| format!("{part:?} is not a GTID (domain-server-seq)");
            let g = Gtid {
                domain: d.parse().map_err(bad)?,
                server_id: sv.parse().map_err(bad)?,
                seq: q.parse().map_err(bad)?,
            };
            map.insert(g.domain, g);
        }
        Ok(GtidPos(map))
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Does `self` include everything `other` has, domain by domain?
    pub fn covers(&self, other: &GtidPos) -> bool {
        other.0.values().all(|o| {
            self.0
                .get(&o.domain)
                .is_some_and(|m| m.seq > o.seq || (m.seq == o.seq && m.server_id == o.server_id))
        })
    }

    /// Domain-wise maximum of two positions (by sequence number).
    pub fn merge(&self, other: &GtidPos) -> GtidPos {
        let mut out = self.0.clone();
        for g in other.0.values() {
            match out.get(&g.domain) {
                Some(m) if m.seq >= g.seq => {}
                _ => {
                    out.insert(g.domain, *g);
                }
            }
        }
        GtidPos(out)
    }

    /// Sum of sequence numbers: a total order used only to break ties.
    pub fn weight(&self) -> u128 {
        self.0.values().map(|g| g.seq as u128).sum()
    }

    /// GTIDs of `self` that `other` does not cover (one per domain).
    pub fn missing_from(&self, other: &GtidPos) -> Vec<Gtid> {
        self.0
            .values()
            .filter(|g| !other.covers(&GtidPos(BTreeMap::from([(g.domain, **g)]))))
            .copied()
            .collect()
    }
}

/// What the planner knows about one surviving server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Server name.
    pub name: String,
    /// Everything it has received: applied (`gtid_slave_pos`/binlog) merged
    /// with what sits in its relay log (`Gtid_IO_Pos`).
    pub received: GtidPos,
    /// Its own binlog contains writes that did not come from the primary.
    pub errant: bool,
    /// `no_promote = true` in the config.
    pub no_promote: bool,
    /// Its SQL thread stopped on an error (it may not be able to apply its relay log).
    pub sql_error: bool,
    /// Position in the config's preference order (lower is preferred).
    pub preference: usize,
}

/// The planner's answer for a failover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionPlan {
    /// The server to promote.
    pub winner: String,
    /// Servers holding transactions the winner lacks: the winner must catch
    /// up from them (in this order) before it opens for writes.
    pub catch_up_from: Vec<String>,
    /// Servers left out and why.
    pub excluded: Vec<(String, String)>,
}

/// Chooses the server to promote after the primary died: the most advanced
/// eligible replica (the one whose received position covers the others'),
/// preferring by config order on ties. Servers with errant transactions, a
/// stopped SQL thread or `no_promote` are never chosen. If no single server
/// covers all others (possible with several domains), the one with the
/// highest total is chosen and told to catch up from the others.
pub fn plan_promotion(cands: &[Candidate]) -> Result<PromotionPlan, String> {
    plan_promotion_onto(cands, None)
}

/// [`plan_promotion`], but when `here` (the server on the node that holds
/// the primary role) is eligible it is the winner, told to catch up from
/// every server holding more (as MHA applies the latest replica's relay
/// log to the chosen one). So a failover does not promote a server on
/// another node, which would make this node's start fail and move the role
/// again, waiting out that node's back-off if it failed recently.
pub fn plan_promotion_onto(
    cands: &[Candidate],
    here: Option<&str>,
) -> Result<PromotionPlan, String> {
    let mut excluded = Vec::new();
    let mut eligible: Vec<&Candidate> = Vec::new();
    for c in cands {
        if c.errant {
            excluded.push((c.name.clone(), "has errant transactions".to_string()));
        } else if c.sql_error {
            excluded.push((
                c.name.clone(),
                "its SQL thread stopped on an error".to_string(),
            ));
        } else if c.no_promote {
            excluded.push((c.name.clone(), "no_promote = true".to_string()));
        } else {
            eligible.push(c);
        }
    }
    if eligible.is_empty() {
        return Err(format!(
            "no replica can be promoted ({})",
            excluded
                .iter()
                .map(|(n, r)| format!("{n}: {r}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if let Some(w) = here.and_then(|h| eligible.iter().find(|c| c.name == h)) {
        let catch_up_from = catch_up_sources(cands, w);
        return Ok(PromotionPlan {
            winner: w.name.clone(),
            catch_up_from,
            excluded,
        });
    }
    // A server that covers everyone wins outright; among those, config order.
    let covering = eligible
        .iter()
        .filter(|c| {
            cands
                .iter()
                .all(|o| c.received.covers(&o.received) || o.errant)
        })
        .min_by_key(|c| c.preference);
    let winner = match covering {
        Some(w) => *w,
        None => eligible
            .iter()
            .max_by(|a, b| {
                a.received
                    .weight()
                    .cmp(&b.received.weight())
                    .then(b.preference.cmp(&a.preference))
            })
            .copied()
            .ok_or("no eligible replica")?,
    };
    Ok(PromotionPlan {
        winner: winner.name.clone(),
        catch_up_from: catch_up_sources(cands, winner),
        excluded,
    })
}

/// Servers holding transactions `winner` lacks (errant ones never count),
/// most advanced first: catching up from the first usually covers the rest.
fn catch_up_sources(cands: &[Candidate], winner: &Candidate) -> Vec<String> {
    let mut from: Vec<&Candidate> = cands
        .iter()
        .filter(|o| o.name != winner.name && !o.errant && !winner.received.covers(&o.received))
        .collect();
    from.sort_by_key(|c| std::cmp::Reverse(c.received.weight()));
    from.into_iter().map(|o| o.name.clone()).collect()
}

/// Transactions a replica wrote itself: GTIDs in its binlog that it did not
/// receive from its primary. `binlog` is `@@gtid_binlog_pos`, `slave` is
/// `@@gtid_slave_pos`, `own_server_id` its `@@server_id`. With
/// `log_slave_updates` every replicated transaction appears in both, so a
/// GTID of its own server_id that the slave position does not cover is
/// local. GTIDs of other servers are not counted: under writes the binlog
/// position moves a moment before the slave position (the two variables
/// cannot be read atomically), which is replication in flight, not an error.
pub fn errant_gtids(binlog: &GtidPos, slave: &GtidPos, own_server_id: u32) -> Vec<Gtid> {
    binlog
        .missing_from(slave)
        .into_iter()
        .filter(|g| g.server_id == own_server_id)
        .collect()
}

/// How many transactions of `wanted` `have` lacks: per domain, the
/// sequence numbers it is behind (a domain it lacks counts whole; the same
/// sequence number from another server counts one, a diverged history).
pub fn transactions_missing(have: &GtidPos, wanted: &GtidPos) -> u64 {
    wanted
        .0
        .values()
        .map(|w| match have.0.get(&w.domain) {
            None => w.seq,
            Some(h) if h.seq < w.seq => w.seq - h.seq,
            Some(h) if h.seq == w.seq && h.server_id != w.server_id => 1,
            Some(_) => 0,
        })
        .sum()
}

/// Is it safe to let a returning old primary replicate from the new one?
/// `returning` is its `@@gtid_binlog_pos`; `recorded` is what the new primary
/// had applied from it when it was promoted. Safe only if the old primary
/// wrote nothing the new one never received.
pub fn safe_to_rejoin(returning: &GtidPos, recorded: &GtidPos) -> bool {
    recorded.covers(returning)
}

/// master-master settings for the server at `index` (0 or 1) of `count`:
/// `(auto_increment_increment, auto_increment_offset, gtid_domain_id)`.
pub fn master_master_settings(index: usize, count: usize) -> (u64, u64, u32) {
    (count as u64, index as u64 + 1, index as u32 + 1)
}

/// Median of a non-empty sample (lower middle for even counts).
pub fn median(sorted: &[f64]) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(sorted.len() - 1) / 2]
}

/// What a `db-primary` start on `me`'s node must do, from one observation
/// (the agent holds the group's lease when it asks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPlan {
    /// `me` is the writable primary already: nothing to do.
    AlreadyPrimary,
    /// `me` is the primary that a stop made read-only (or the one both
    /// masters follow): catch up, then open it again.
    Reopen,
    /// Another server is the live primary: planned switchover to `me`.
    Switchover {
        /// The current primary.
        from: String,
    },
    /// The primary `dead` does not answer: promote the most advanced replica.
    Promote {
        /// The dead primary.
        dead: String,
    },
    /// Nothing may be done; the start fails with this reason.
    Refuse(String),
}

/// Decides a `db-primary` start: table-tested here, performed by the agent.
pub fn plan_db_start(st: &crate::DbStatus, me: &str) -> StartPlan {
    let Some(mine) = st.server(me) else {
        return StartPlan::Refuse(format!("server {me} is missing from the observation"));
    };
    if !mine.up {
        return StartPlan::Refuse(format!(
            "this node's server is down: {}",
            mine.error.clone().unwrap_or_default()
        ));
    }
    let up = |n: &str| st.server(n).is_some_and(|s| s.up);
    match st.primary.as_deref() {
        Some(p) if p == me => {
            if mine.read_only {
                StartPlan::Reopen
            } else {
                StartPlan::AlreadyPrimary
            }
        }
        Some(p) if up(p) => StartPlan::Switchover {
            from: p.to_string(),
        },
        Some(p) => StartPlan::Promote {
            dead: p.to_string(),
        },
        None => {
            // Nobody is writable. The server the replicas follow is the
            // primary that a stop (or an agent's boot clean-up) made
            // read-only: if it is ours, open it again; alive elsewhere, its
            // node should hold the group; dead, promote. In master-master
            // both servers are sources: ours reopens.
            let sources: Vec<&str> = st
                .servers
                .iter()
                .filter_map(|s| {
                    s.replication
                        .as_ref()
                        .and_then(|r| r.source_server.as_deref())
                })
                .collect();
            let source = if sources.contains(&me) || st.servers.len() == 1 {
                Some(me)
            } else {
                sources.first().copied()
            };
            match source {
                Some(p) if p == me => StartPlan::Reopen,
                Some(p) if up(p) => StartPlan::Refuse(format!(
                    "{p} is the primary (read-only for now); its node should hold this group"
                )),
                Some(p) => StartPlan::Promote {
                    dead: p.to_string(),
                },
                None => match st.servers.iter().find(|s| !s.up && s.name != me) {
                    Some(d) => StartPlan::Promote {
                        dead: d.name.clone(),
                    },
                    None => {
                        StartPlan::Refuse("no primary is known: run `keepup db setup` first".into())
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> GtidPos {
        GtidPos::parse(s).expect("test position")
    }
    fn cand(name: &str, pos: &str, pref: usize) -> Candidate {
        Candidate {
            name: name.into(),
            received: p(pos),
            errant: false,
            no_promote: false,
            sql_error: false,
            preference: pref,
        }
    }

    #[test]
    fn parse_and_display_round_trip() {
        assert_eq!(p("0-1-5,1-2-7").to_string(), "0-1-5,1-2-7");
        assert!(p("").is_empty());
        assert!(GtidPos::parse("0-1").is_err());
        assert!(GtidPos::parse("a-b-c").is_err());
    }

    #[test]
    fn covers_is_per_domain() {
        assert!(p("0-1-10").covers(&p("0-1-9")));
        assert!(p("0-1-10").covers(&p("0-1-10")));
        assert!(!p("0-1-9").covers(&p("0-1-10")));
        assert!(!p("0-1-10").covers(&p("1-2-1")));
        assert!(p("0-1-10,1-2-3").covers(&p("1-2-3")));
        // Same seq from another server: diverged histories.
        assert!(!p("0-2-10").covers(&p("0-1-10")));
        assert!(p("0-1-1").covers(&p("")));
    }

    #[test]
    fn transactions_missing_counts_per_domain() {
        let cases = [
            ("0-1-10", "0-1-10", 0),
            ("0-1-12", "0-1-10", 0),
            ("0-1-7", "0-1-10", 3),
            ("", "0-1-10,1-2-5", 15),
            ("0-1-10", "0-1-10,1-2-5", 5),
            ("0-2-10", "0-1-10", 1),
            ("0-1-3", "", 0),
        ];
        for (have, wanted, n) in cases {
            assert_eq!(
                transactions_missing(&p(have), &p(wanted)),
                n,
                "{have} vs {wanted}"
            );
        }
    }

    #[test]
    fn promotes_the_holders_server_after_catching_up() {
        let c = || {
            [
                cand("b", "0-1-100", 0),
                cand("c", "0-1-105", 1),
                cand("d", "0-1-103", 2),
            ]
        };
        // The holder's server lags: it wins and catches up from the most
        // advanced first.
        let plan = plan_promotion_onto(&c(), Some("b")).expect("plan");
        assert_eq!(plan.winner, "b");
        assert_eq!(plan.catch_up_from, vec!["c".to_string(), "d".to_string()]);
        // Already the most advanced: nothing to catch up.
        let plan = plan_promotion_onto(&c(), Some("c")).expect("plan");
        assert_eq!((plan.winner.as_str(), plan.catch_up_from.len()), ("c", 0));
        // Not eligible (errant, no_promote, stopped SQL thread) or unknown:
        // the usual choice.
        let mut list = c();
        list[0].no_promote = true;
        assert_eq!(
            plan_promotion_onto(&list, Some("b")).expect("plan").winner,
            "c"
        );
        list[0].no_promote = false;
        list[0].errant = true;
        assert_eq!(
            plan_promotion_onto(&list, Some("b")).expect("plan").winner,
            "c"
        );
        assert_eq!(
            plan_promotion_onto(&c(), Some("zz")).expect("plan").winner,
            "c"
        );
        assert_eq!(plan_promotion_onto(&c(), None), plan_promotion(&c()));
    }

    #[test]
    fn promotes_most_advanced() {
        let plan =
            plan_promotion(&[cand("b", "0-1-100", 0), cand("c", "0-1-105", 1)]).expect("plan");
        assert_eq!(plan.winner, "c");
        assert!(plan.catch_up_from.is_empty());
    }

    #[test]
    fn ties_go_to_preference() {
        let plan = plan_promotion(&[cand("c", "0-1-7", 1), cand("b", "0-1-7", 0)]).expect("plan");
        assert_eq!(plan.winner, "b");
    }

    #[test]
    fn errant_and_no_promote_are_skipped() {
        let mut c = cand("c", "0-1-200", 1);
        c.errant = true;
        let mut d = cand("d", "0-1-300", 2);
        d.no_promote = true;
        let plan = plan_promotion(&[cand("b", "0-1-100", 0), c, d]).expect("plan");
        assert_eq!(plan.winner, "b");
        // d has more than b: b must catch up from d first (no_promote still serves).
        assert_eq!(plan.catch_up_from, vec!["d".to_string()]);
        assert_eq!(plan.excluded.len(), 2);
    }

    #[test]
    fn incomparable_domains_need_catch_up() {
        let plan = plan_promotion(&[cand("b", "1-1-10,2-2-5", 0), cand("c", "1-1-8,2-2-9", 1)])
            .expect("plan");
        assert_eq!(plan.winner, "c");
        assert_eq!(plan.catch_up_from, vec!["b".to_string()]);
    }

    #[test]
    fn nobody_eligible() {
        let mut c = cand("c", "0-1-1", 0);
        c.sql_error = true;
        assert!(plan_promotion(&[c]).is_err());
    }

    #[test]
    fn errant_detection() {
        assert!(errant_gtids(&p("0-1-10"), &p("0-1-10"), 2).is_empty());
        assert_eq!(errant_gtids(&p("0-2-11"), &p("0-1-10"), 2).len(), 1);
        assert_eq!(errant_gtids(&p("0-1-10,5-2-1"), &p("0-1-10"), 2).len(), 1);
        // The primary's transaction is in the binlog a moment before the
        // slave position moves: in flight, not errant.
        assert!(errant_gtids(&p("0-1-11"), &p("0-1-10"), 2).is_empty());
    }

    #[test]
    fn rejoin_safety() {
        assert!(safe_to_rejoin(&p("0-1-50"), &p("0-1-50")));
        assert!(!safe_to_rejoin(&p("0-1-52"), &p("0-1-50")));
    }

    #[test]
    fn master_master_offsets_and_domains_differ() {
        let a = master_master_settings(0, 2);
        let b = master_master_settings(1, 2);
        assert_eq!((a.0, b.0), (2, 2));
        assert_ne!(a.1, b.1);
        assert_ne!(a.2, b.2);
    }

    fn srv(name: &str, up: bool, read_only: bool, source: Option<&str>) -> crate::ServerStatus {
        let mut s = crate::ServerStatus::blank(name);
        s.up = up;
        s.refused = !up;
        s.error = (!up).then(|| "refused".to_string());
        s.read_only = read_only;
        s.replication = source.map(|src| crate::ReplicationThreads {
            source_server: Some(src.to_string()),
            ..Default::default()
        });
        s
    }

    fn status(primary: Option<&str>, servers: Vec<crate::ServerStatus>) -> crate::DbStatus {
        crate::DbStatus::for_test(primary, servers, 0)
    }

    #[test]
    fn db_start_plans() {
        use StartPlan::*;
        let refuse = |s: &str| Refuse(s.to_string());
        // (case, primary, servers (name, up, read_only, replicates from), expected)
        type Srv = (&'static str, bool, bool, Option<&'static str>);
        let table: Vec<(&str, Option<&str>, Vec<Srv>, StartPlan)> = vec![
            (
                "already writable",
                Some("a"),
                vec![("a", true, false, None), ("b", true, true, Some("a"))],
                AlreadyPrimary,
            ),
            (
                "primary made read-only by a stop",
                Some("a"),
                vec![("a", true, true, None), ("b", true, true, Some("a"))],
                Reopen,
            ),
            (
                "live primary elsewhere",
                Some("b"),
                vec![("a", true, true, Some("b")), ("b", true, false, None)],
                Switchover { from: "b".into() },
            ),
            (
                "dead primary",
                Some("b"),
                vec![("a", true, true, Some("b")), ("b", false, false, None)],
                Promote { dead: "b".into() },
            ),
            (
                "mine is down",
                Some("b"),
                vec![("a", false, false, None), ("b", true, false, None)],
                refuse("this node's server is down: refused"),
            ),
            (
                "nobody writable, replicas follow me",
                None,
                vec![("a", true, true, None), ("b", true, true, Some("a"))],
                Reopen,
            ),
            (
                "master-master, both sources",
                None,
                vec![("a", true, true, Some("b")), ("b", true, true, Some("a"))],
                Reopen,
            ),
            (
                "nobody writable, source alive elsewhere",
                None,
                vec![
                    ("a", true, true, Some("b")),
                    ("b", true, true, None),
                    ("c", true, true, Some("b")),
                ],
                refuse("b is the primary (read-only for now); its node should hold this group"),
            ),
            (
                "nobody writable, source dead",
                None,
                vec![("a", true, true, Some("b")), ("b", false, false, None)],
                Promote { dead: "b".into() },
            ),
            (
                "nobody writable, no source, one dead",
                None,
                vec![("a", true, true, None), ("b", false, false, None)],
                Promote { dead: "b".into() },
            ),
            ("single server", None, vec![("a", true, true, None)], Reopen),
            (
                "nothing known",
                None,
                vec![("a", true, true, None), ("b", true, true, None)],
                refuse("no primary is known: run `keepup db setup` first"),
            ),
        ];
        for (case, primary, servers, want) in table {
            let st = status(
                primary,
                servers
                    .into_iter()
                    .map(|(n, u, r, s)| srv(n, u, r, s))
                    .collect(),
            );
            assert_eq!(plan_db_start(&st, "a"), want, "{case}");
        }
    }
}
