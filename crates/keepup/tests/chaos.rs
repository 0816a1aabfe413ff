//! The safety promise for real: `keepup run` agents in network namespaces
//! (two nodes and a witness), an exec resource that records every holding
//! interval with CLOCK_MONOTONIC (one clock for every namespace), and a
//! schedule of faults: the n1<->n2 path cut while both hear the witness,
//! one-way loss, the holder cut off from everybody, SIGSTOP/SIGCONT of the
//! holder, a stop that fails, kill -9 and a restart with the wall clock an
//! hour behind (libfaketime). The checker (`keepup_testkit::history`)
//! asserts no two holders at once and no epoch going back. A longer,
//! randomized run with keepalived as the peer is `bench/chaos.sh`.

#![allow(clippy::unwrap_used)]

mod lab;

use keepup_testkit::history;
use lab::{can_run, Builder, Cluster};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Appends a fault mark to the history, stamped like the resource's lines.
fn mark(log: &Path, what: &str, node: &str) {
    let out = std::process::Command::new(lab::keepup())
        .args(["internal", "hold", what])
        .arg(log)
        .env("KEEPUP_NODE", node)
        .env("KEEPUP_EPOCH", "0")
        .status()
        .unwrap();
    assert!(out.success());
}

fn read(log: &Path) -> Vec<history::Record> {
    history::parse(&std::fs::read_to_string(log).unwrap_or_default()).unwrap()
}

/// The node whose resource runs now, by the history.
fn holder(log: &Path) -> Option<String> {
    let recs = read(log);
    let r = history::check(&recs, u128::MAX, 0);
    let open: Vec<_> = r.intervals.iter().filter(|i| i.end.is_none()).collect();
    (open.len() == 1).then(|| open[0].node.clone())
}

fn wait_holder(c: &Cluster, log: &Path, not: Option<&str>, max: Duration) -> String {
    let t0 = Instant::now();
    loop {
        if let Some(h) = holder(log) {
            if Some(h.as_str()) != not {
                return h;
            }
        }
        assert!(
            t0.elapsed() < max,
            "no new holder after {max:?}\n{}\n{}",
            std::fs::read_to_string(log).unwrap_or_default(),
            c.all_logs()
        );
        std::thread::sleep(ms(20));
    }
}

/// Waits until `node`'s resource runs (whoever else may still hold it).
fn wait_started(c: &Cluster, log: &Path, node: &str, max: Duration) {
    let t0 = Instant::now();
    loop {
        let r = history::check(&read(log), u128::MAX, 0);
        if r.intervals
            .iter()
            .any(|i| i.node == node && i.end.is_none())
        {
            return;
        }
        assert!(t0.elapsed() < max, "{node} never started\n{}", c.all_logs());
        std::thread::sleep(ms(20));
    }
}

fn other(n: &str) -> &'static str {
    if n == "n1" {
        "n2"
    } else {
        "n1"
    }
}

struct Run {
    c: Cluster,
    log: PathBuf,
    dir: PathBuf,
}

impl Run {
    fn new(test: &str) -> Run {
        let dir = std::env::temp_dir().join(format!("keepup-chaos-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("history");
        let d = dir.display();
        let hold = format!("{} internal hold", lab::keepup());
        let resource = format!(
            "type = \"exec\"\nname = \"recorder\"\n\
             start = \"{hold} start {log}\"\n\
             stop = \"test ! -e {d}/failstop-$KEEPUP_NODE && {hold} stop {log}\"\n\
             status = \"test ! -e {d}/failmon-$KEEPUP_NODE\"\n\
             timeout_ms = 2000\nmonitor_interval_ms = 100\n",
            log = log.display()
        );
        let c = Builder::new(&[("n1", 200), ("n2", 100)])
            .witness("w")
            .resource(&resource)
            .group("failure_backoff_ms = 1000\n")
            .build(test);
        Run { c, log, dir }
    }

    fn check(&self) -> history::Report {
        let end = read(&self.log).last().map(|r| r.at).unwrap_or(0) + 1;
        // A resumed holder must let go within 1 s (its first tick stops it;
        // the stop script itself takes a few ms).
        history::check(&read(&self.log), end, 1_000_000_000)
    }

    fn assert_safe(&self, what: &str) {
        let r = self.check();
        assert!(
            r.violations.is_empty(),
            "{what}: {:?}\n{}\n{}",
            r.violations,
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            self.c.all_logs()
        );
    }

    fn cut_pair(&self, a: &str, b: &str) {
        self.c.lab.block(a, b, true, true).unwrap();
        self.c.lab.block(b, a, true, true).unwrap();
    }

    fn heal(&self) {
        for n in ["n1", "n2", "w"] {
            self.c.lab.unblock(n).unwrap();
        }
    }
}

#[test]
fn chaos_schedule_never_shows_two_holders() {
    if !can_run("chaos_schedule_never_shows_two_holders")
        || !keepup_testkit::require::has_program(
            "chaos_schedule_never_shows_two_holders",
            "faketime",
        )
    {
        return;
    }
    let mut r = Run::new("chaos");
    r.c.start_all();
    let first = wait_holder(&r.c, &r.log, None, ms(10_000));
    r.c.wait_api("w");

    // 1. The path between the two nodes cut; both still hear the witness.
    r.cut_pair("n1", "n2");
    std::thread::sleep(ms(3000));
    r.assert_safe("asymmetric cut");
    assert!(
        holder(&r.log).is_some(),
        "somebody holds it through the cut"
    );
    r.heal();
    std::thread::sleep(ms(1000));

    // 2. One-way loss: the holder hears nothing from the other node.
    let h = wait_holder(&r.c, &r.log, None, ms(5000));
    r.c.lab.block(&h, other(&h), true, false).unwrap();
    std::thread::sleep(ms(2000));
    r.heal();
    std::thread::sleep(ms(1000));
    r.assert_safe("one-way loss");

    // 3. The holder cut off from everybody: it lets go, the other takes over.
    let h = wait_holder(&r.c, &r.log, None, ms(5000));
    r.c.lab.partition(&h, true).unwrap();
    let next = wait_holder(&r.c, &r.log, Some(&h), ms(5000));
    assert_eq!(next, other(&h));
    r.c.lab.partition(&h, false).unwrap();
    std::thread::sleep(ms(1500));
    r.assert_safe("holder isolated");

    // 4. SIGSTOP of the holder: the other takes over once the lease is
    //    over; after SIGCONT the old holder lets go first thing.
    let h = wait_holder(&r.c, &r.log, None, ms(5000));
    mark(&r.log, "pause", &h);
    r.c.signal(&h, "-STOP");
    wait_started(&r.c, &r.log, other(&h), ms(5000));
    std::thread::sleep(ms(500));
    mark(&r.log, "resume", &h);
    r.c.signal(&h, "-CONT");
    std::thread::sleep(ms(1500));
    r.assert_safe("SIGSTOP/SIGCONT");

    // 5. A stop that fails: the group stays put (nobody else starts it)
    //    until the stop works again.
    let h = wait_holder(&r.c, &r.log, None, ms(5000));
    std::fs::write(r.dir.join(format!("failstop-{h}")), "").unwrap();
    std::fs::write(r.dir.join(format!("failmon-{h}")), "").unwrap();
    std::thread::sleep(ms(2500));
    assert_eq!(
        holder(&r.log).as_deref(),
        Some(h.as_str()),
        "stuck where it failed\n{}\n{}",
        std::fs::read_to_string(&r.log).unwrap_or_default(),
        r.c.all_logs()
    );
    let st = r.c.status(other(&h));
    assert!(
        st["cluster"]["groups"][0]["stop_failed"].is_string(),
        "status shows the failed stop: {st}"
    );
    std::fs::remove_file(r.dir.join(format!("failstop-{h}"))).unwrap();
    let next = wait_holder(&r.c, &r.log, Some(&h), ms(5000));
    assert_eq!(next, other(&h));
    std::fs::remove_file(r.dir.join(format!("failmon-{h}"))).unwrap();
    r.assert_safe("failed stop");

    // 6. kill -9 of the holder (counted as its host dying), then a restart
    //    with the wall clock an hour behind: it rejoins and is heard.
    let h = wait_holder(&r.c, &r.log, None, ms(5000));
    mark(&r.log, "crash", &h);
    r.c.kill9(&h);
    let next = wait_holder(&r.c, &r.log, Some(&h), ms(5000));
    assert_eq!(next, other(&h));
    r.c.start_with_faketime(&h, "-1h");
    r.c.wait_api(&h);
    let t0 = Instant::now();
    loop {
        let st = r.c.status(&next);
        if Cluster::node_in(&st, &h)["alive"] == true {
            break;
        }
        assert!(
            t0.elapsed() < ms(5000),
            "{h} restarted an hour behind is never heard\n{}",
            r.c.all_logs()
        );
        std::thread::sleep(ms(50));
    }
    std::thread::sleep(ms(1000));
    r.assert_safe("kill -9 and a restart with the clock an hour behind");

    let report = r.check();
    eprintln!(
        "chaos: {} holding intervals, first holder {first}, longest time without a holder {:.0} ms",
        report.intervals.len(),
        report.longest_gap as f64 / 1e6
    );
    assert!(report.intervals.len() >= 5, "{:?}", report.intervals);
}
