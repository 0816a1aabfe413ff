//! Election, failure detection and failback under a simulated clock and
//! network. Each test cites the clause of the cluster-agent issue it covers.

#![allow(clippy::unwrap_used)]

use keepup_cluster::sim::Sim;
use keepup_cluster::{Event, Spec};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::time::Duration;

const G: &str = "g";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn two() -> Spec {
    Sim::spec(&[("a", 200), ("b", 100)], 1, Sim::timing())
}

fn boot_all(sim: &mut Sim, names: &[&str]) {
    for n in names {
        sim.boot(n);
    }
}

fn max_simultaneous_owners(sim: &Sim) -> usize {
    sim.ownership
        .iter()
        .filter(|(_, g, _)| g == G)
        .map(|(_, _, o)| o.len())
        .max()
        .unwrap_or(0)
}

// Issue: "Two nodes starting together end with exactly one owner."
#[test]
fn two_nodes_starting_together_elect_exactly_one_owner() {
    for seed in 1..50 {
        let mut sim = Sim::new(two(), seed);
        sim.jitter = ms(3);
        boot_all(&mut sim, &["a", "b"]);
        sim.run_for(ms(3000));
        assert_eq!(sim.owners(G), set(&["a"]), "seed {seed}");
        assert_eq!(max_simultaneous_owners(&sim), 1, "seed {seed}");
    }
}

// Issue: "the highest-priority live node owns each resource group (ties by name)"
#[test]
fn ties_go_to_the_lower_name() {
    let mut sim = Sim::new(
        Sim::spec(&[("b", 100), ("a", 100), ("c", 100)], 1, Sim::timing()),
        7,
    );
    boot_all(&mut sim, &["c", "b", "a"]);
    sim.run_for(ms(2000));
    assert_eq!(sim.owners(G), set(&["a"]));
}

// Issue: "kill -9 the owner" — the survivor takes over after the dead time.
#[test]
fn crashed_owner_is_replaced_after_the_dead_time() {
    let mut sim = Sim::new(two(), 3);
    boot_all(&mut sim, &["a", "b"]);
    sim.run_for(ms(2000));
    let t0 = sim.now();
    sim.crash("a");
    assert!(sim.run_until(ms(2000), |s| s.owners(G) == set(&["b"])));
    let took = sim.now() - t0;
    // dead time (300 ms) after the last beat, plus the start itself.
    assert!(took <= ms(320), "took {took:?}");
    assert!(
        took >= ms(190),
        "took {took:?}: faster than the dead time allows"
    );
    assert!(sim
        .log
        .iter()
        .any(|(_, n, e)| n == "b" && matches!(e, Event::PeerDead { node, .. } if node == "a")));
}

// Issue: "A node that stops cleanly (SIGTERM) releases its resources and
// tells its peers, so the handover takes one round trip, not a dead time."
#[test]
fn clean_stop_hands_over_in_one_round_trip() {
    let mut sim = Sim::new(two(), 4);
    boot_all(&mut sim, &["a", "b"]);
    sim.run_for(ms(2000));
    let t0 = sim.now();
    sim.stop("a");
    assert!(sim.run_until(ms(2000), |s| s.owners(G) == set(&["b"])));
    let took = sim.now() - t0;
    // a's stop (5 ms) + one packet (0.2 ms) + b's start (5 ms).
    assert!(took <= ms(11), "took {took:?}");
    assert!(sim.core("a").is_none(), "a exits after telling its peers");
    assert_eq!(max_simultaneous_owners(&sim), 1);
}

// Issue: "auto_failback off keeps the current owner when a better node returns"
#[test]
fn failback_off_keeps_the_current_owner() {
    let mut sim = Sim::new(two(), 5);
    boot_all(&mut sim, &["a", "b"]);
    sim.run_for(ms(2000));
    sim.crash("a");
    sim.run_for(ms(1000));
    sim.boot("a");
    sim.run_for(ms(10_000));
    assert_eq!(sim.owners(G), set(&["b"]));
    assert_eq!(max_simultaneous_owners(&sim), 1);
}

// Issue: "on moves the group back only after the returning node has been
// stable for the delay" — and the handover gap is one round trip.
#[test]
fn failback_on_waits_for_the_delay_then_moves_back_quickly() {
    let mut spec = two();
    spec.auto_failback = true;
    spec.failback_delay = ms(2000);
    let mut sim = Sim::new(spec, 6);
    boot_all(&mut sim, &["a", "b"]);
    sim.run_for(ms(2000));
    sim.crash("a");
    sim.run_for(ms(1000));
    assert_eq!(sim.owners(G), set(&["b"]));
    sim.boot("a");
    sim.run_for(ms(1500));
    assert_eq!(sim.owners(G), set(&["b"]), "moved back before the delay");
    assert!(sim.run_until(ms(2000), |s| s.owners(G) == set(&["a"])));
    // The gap with no owner: b's stop + packet + a's start.
    let gaps: Vec<Duration> = sim
        .ownership
        .windows(2)
        .filter(|w| w[0].2.is_empty() && !w[1].2.is_empty())
        .map(|w| w[1].0 - w[0].0)
        .collect();
    let last_gap = *gaps.last().expect("a gap");
    assert!(last_gap <= ms(11), "failback gap {last_gap:?}");
    assert_eq!(max_simultaneous_owners(&sim), 1);
}

// Issue: "a node is dead only when it is silent on all links"
#[test]
fn one_cut_link_of_two_is_not_a_failover() {
    let mut sim = Sim::new(Sim::spec(&[("a", 200), ("b", 100)], 2, Sim::timing()), 8);
    boot_all(&mut sim, &["a", "b"]);
    sim.run_for(ms(2000));
    sim.cut_link("a", "b", 0);
    sim.run_for(ms(5000));
    assert_eq!(sim.owners(G), set(&["a"]));
    assert!(sim
        .log
        .iter()
        .any(|(_, n, e)| n == "b" && matches!(e, Event::LinkDown { link: 0, .. })));
    assert!(!sim
        .log
        .iter()
        .any(|(_, _, e)| matches!(e, Event::PeerDead { .. })));
}

// Issue: split-brain protection with ping targets.
#[test]
fn node_that_loses_its_ping_targets_gives_up_the_group() {
    let mut sim = Sim::new(two(), 9);
    boot_all(&mut sim, &["a", "b"]);
    sim.run_for(ms(2000));
    sim.set_connected("a", false);
    assert!(sim.run_until(ms(100), |s| s.owners(G) == set(&["b"])));
    assert_eq!(max_simultaneous_owners(&sim), 1);
    sim.set_connected("a", true);
    sim.run_for(ms(5000));
    assert_eq!(sim.owners(G), set(&["b"]), "failback is off");
}

// README: "two-node partition" — with quorum "none" both sides take the
// group; when the partition heals the better-ranked holder keeps it.
#[test]
fn two_node_partition_without_quorum_heals_to_one_owner() {
    let mut sim = Sim::new(two(), 10);
    boot_all(&mut sim, &["a", "b"]);
    sim.run_for(ms(2000));
    sim.isolate("a");
    sim.run_for(ms(1000));
    assert_eq!(
        sim.owners(G),
        set(&["a", "b"]),
        "documented: both sides hold"
    );
    sim.heal();
    assert!(sim.run_until(ms(500), |s| s.owners(G) == set(&["a"])));
    // a kept the group all along; clients last heard b's announcement, so a
    // must announce again once b gave up.
    sim.run_for(ms(50));
    assert!(
        sim.log
            .iter()
            .any(|(_, n, e)| n == "a"
                && matches!(e, Event::Reasserted { other, .. } if other == "b")),
        "{:?}",
        sim.log
    );
}

// With three nodes, majority quorum: the isolated owner releases, the
// majority side elects a new owner.
#[test]
fn three_node_partition_majority_side_wins() {
    let mut spec = Sim::spec(&[("a", 300), ("b", 200), ("c", 100)], 1, Sim::timing());
    spec.ownership = keepup_cluster::Ownership::Consensus;
    let mut sim = Sim::new(spec, 11);
    boot_all(&mut sim, &["a", "b", "c"]);
    sim.run_for(ms(2000));
    assert_eq!(sim.owners(G), set(&["a"]));
    sim.isolate("a");
    sim.run_for(ms(1000));
    assert_eq!(sim.owners(G), set(&["b"]));
    sim.heal();
    sim.run_for(ms(3000));
    assert_eq!(sim.owners(G), set(&["b"]));
    // The cut-off owner fences itself a heartbeat before the majority acts,
    // and the rejoining node listens before it acts: never two owners.
    assert_eq!(max_simultaneous_owners(&sim), 1, "{:?}", sim.ownership);
}

// Majority quorum at boot: peers say "no quorum" until they hear each
// other; that must not let a worse node grab the group.
#[test]
fn three_nodes_starting_together_with_majority_quorum_elect_one() {
    for seed in 1..50 {
        let mut spec = Sim::spec(&[("a", 300), ("b", 200), ("c", 100)], 1, Sim::timing());
        spec.ownership = keepup_cluster::Ownership::Consensus;
        let mut sim = Sim::new(spec, seed);
        sim.jitter = ms(3);
        boot_all(&mut sim, &["c", "b", "a"]);
        sim.run_for(ms(3000));
        assert_eq!(sim.owners(G), set(&["a"]), "seed {seed}");
        assert_eq!(
            max_simultaneous_owners(&sim),
            1,
            "seed {seed}: {:?}",
            sim.ownership
        );
    }
}

// Issue: "a resource that fails to start releases the group so the next
// node can try, with backoff so the cluster never flaps."
#[test]
fn failed_start_moves_on_without_flapping() {
    let mut sim = Sim::new(two(), 12);
    sim.failing_starts.insert(("a".into(), G.into()));
    boot_all(&mut sim, &["a", "b"]);
    sim.run_for(ms(60_000));
    assert_eq!(sim.owners(G), set(&["b"]));
    let acquisitions = sim
        .log
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::Acquired { .. }))
        .count();
    assert_eq!(acquisitions, 1, "b acquired once and kept it");
}

// Heartbeats lost at random must not cause false failovers when the dead
// time covers several beats, and must never produce two owners.
#[test]
fn lossy_reordering_network_keeps_one_owner() {
    let mut spec = two();
    spec.timing.dead = ms(600);
    spec.links = 2;
    let mut sim = Sim::new(spec, 13);
    sim.loss = 0.2;
    sim.jitter = ms(30);
    boot_all(&mut sim, &["a", "b"]);
    sim.run_for(ms(120_000));
    assert_eq!(sim.owners(G), set(&["a"]));
    assert_eq!(max_simultaneous_owners(&sim), 1);
    assert!(!sim
        .log
        .iter()
        .any(|(_, _, e)| matches!(e, Event::PeerDead { .. })));
}

#[derive(Debug, Clone)]
enum Op {
    Crash(usize),
    Boot(usize),
    Stop(usize),
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..3).prop_map(Op::Crash),
        (0usize..3).prop_map(Op::Boot),
        (0usize..3).prop_map(Op::Stop),
        (1u64..2000).prop_map(Op::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    // Safety: on a network where everybody hears everybody (with jitter and
    // reordering), no sequence of crashes, reboots and clean stops ever
    // makes two nodes own the group at once; liveness: once things calm
    // down, a running majority owns it.
    #[test]
    fn never_two_owners_on_a_connected_network(seed in 1u64..1000, ops in proptest::collection::vec(op(), 1..25)) {
        let names = ["a", "b", "c"];
        let mut sim = Sim::new(Sim::spec(&[("a", 300), ("b", 200), ("c", 200)], 2, Sim::timing()), seed);
        sim.jitter = ms(2);
        boot_all(&mut sim, &names);
        for op in ops {
            match op {
                Op::Crash(i) => sim.crash(names[i]),
                Op::Boot(i) => if sim.core(names[i]).is_none() { sim.boot(names[i]) },
                Op::Stop(i) => sim.stop(names[i]),
                Op::Wait(t) => sim.run_for(ms(t)),
            }
            sim.run_for(ms(1));
        }
        sim.run_for(ms(3000));
        prop_assert!(max_simultaneous_owners(&sim) <= 1, "ownership: {:?}", sim.ownership);
        // Three nodes decide by consensus: a majority running holds the
        // group, a lone node cannot (its lease runs out).
        let running = names.iter().filter(|n| sim.core(n).is_some()).count();
        let expected = usize::from(running >= 2);
        prop_assert_eq!(sim.owners(G).len(), expected, "ownership: {:?}", sim.ownership);
        prop_assert!(sim.check().is_empty(), "{:?}", sim.check());
    }
}

// Operator surface: "keepup move GROUP NODE ... refusing with a clear
// message when it would break the cluster".
#[test]
fn operator_move_goes_to_the_next_in_line_only_and_sticks() {
    let mut sim = Sim::new(
        Sim::spec(&[("a", 300), ("b", 200), ("c", 100)], 1, Sim::timing()),
        21,
    );
    boot_all(&mut sim, &["a", "b", "c"]);
    sim.run_for(ms(2000));
    assert_eq!(sim.owners(G), set(&["a"]));
    let e = sim.move_group("a", G, "c", ms(5000)).unwrap_err();
    assert!(e.contains("c is not next in line for g (b is)"), "{e}");
    let e = sim.move_group("b", G, "c", ms(5000)).unwrap_err();
    assert!(e.contains("held by a, not by this node"), "{e}");
    sim.move_group("a", G, "b", ms(5000)).unwrap();
    assert!(sim.run_until(ms(100), |s| s.owners(G) == set(&["b"])));
    sim.run_for(ms(10_000));
    assert_eq!(
        sim.owners(G),
        set(&["b"]),
        "failback off: b keeps it after the hold"
    );
    assert_eq!(max_simultaneous_owners(&sim), 1);
    assert!(
        !sim.log
            .iter()
            .any(|(_, _, e)| matches!(e, Event::GroupFailed { .. })),
        "a move is not a failure"
    );
}

// A monitor that cannot repair a resource releases the group, and the next
// node takes it at once — not after this node's back-off (found through the
// database lab test: a killed mariadbd took 5 s, the back-off, to fail over).
#[test]
fn monitor_failure_hands_over_at_once() {
    let mut sim = Sim::new(two(), 22);
    boot_all(&mut sim, &["a", "b"]);
    sim.run_for(ms(2000));
    assert_eq!(sim.owners(G), set(&["a"]));
    let t0 = sim.now();
    sim.monitor_failure("a", G);
    assert!(sim.run_until(ms(3000), |s| s.owners(G) == set(&["b"])));
    let took = sim.now() - t0;
    assert!(took <= ms(20), "took {took:?}");
    sim.run_for(ms(20_000));
    assert_eq!(sim.owners(G), set(&["b"]), "no flapping back");
    assert_eq!(max_simultaneous_owners(&sim), 1);
}

// After a failover the new holder asks for the consensus leadership, so a
// cut between it and one other node (which may have led before) moves
// nothing. (The fault test once saw the request fail in the lab, the
// leader staying elsewhere; asking again on every new leader made the two
// nodes trade leadership for ever, so that is not done. Not reproduced
// here.)
#[test]
fn a_holder_gets_the_leadership_back_and_a_cut_to_the_old_leader_moves_nothing() {
    for seed in 1..12 {
        let mut spec = Sim::spec(&[("a", 300), ("b", 200), ("c", 100)], 1, Sim::timing());
        spec.ownership = keepup_cluster::Ownership::Consensus;
        let mut sim = Sim::new(spec, seed);
        boot_all(&mut sim, &["a", "b", "c"]);
        sim.run_for(ms(2000));
        assert_eq!(sim.owners(G), set(&["a"]), "seed {seed}");
        // The holder (and, usually, leader) dies: b takes over while the
        // survivors elect a leader.
        sim.crash("a");
        sim.run_for(ms(3000));
        assert_eq!(sim.owners(G), set(&["b"]), "seed {seed}");
        let leader = sim.core("b").and_then(|c| c.leader());
        assert_eq!(
            leader.as_deref(),
            Some("b"),
            "seed {seed}: holder and leader on one node"
        );
        // Cut b (holder) from c only: b keeps its majority through a.
        sim.boot("a");
        sim.run_for(ms(2000));
        sim.cut_pair("b", "c");
        sim.run_for(ms(3000));
        assert_eq!(
            sim.owners(G),
            set(&["b"]),
            "seed {seed}: {:?}",
            sim.ownership
        );
        assert_eq!(max_simultaneous_owners(&sim), 1, "seed {seed}");
    }
}
