//! Rolling upgrade (issue #11): the previous release's agent (the commit in
//! packaging/previous-release, built by scripts/build-previous.sh) and this
//! one in one cluster, upgraded one node at a time as the documented
//! procedure says, with a client requesting the site through the floating
//! IP every 10 ms the whole time.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::{can_run, keepup, Builder, Cluster};
use std::time::{Duration, Instant};

/// The previous release's binary, or why there is none.
fn previous() -> Result<String, String> {
    let p = std::env::var("KEEPUP_PREVIOUS_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/previous/keepup").to_string()
    });
    if std::path::Path::new(&p).is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{p} is missing: run scripts/build-previous.sh (scripts/test.sh does)"
        ))
    }
}

/// Waits until every node's agent sees every other up and `a` group holder exists.
fn wait_converged(c: &Cluster, names: &[&str], what: &str) {
    let t0 = Instant::now();
    loop {
        let ok = names.iter().all(|n| {
            let st = c.status(n);
            st["cluster"]["groups"][0]["owner"].is_string()
                && names
                    .iter()
                    .all(|m| Cluster::node_in(&st, m)["alive"] == true)
        });
        if ok {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{what}: never converged\n{}",
            c.all_logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Probe lines after `mark` that report a failed request.
fn failures_since(c: &Cluster, mark: usize) -> Vec<serde_json::Value> {
    c.probe_lines()
        .into_iter()
        .skip(mark)
        .filter(|l| l["ok"] == false)
        .collect()
}

#[test]
fn a_rolling_upgrade_from_the_previous_release_keeps_the_site_up() {
    let test = "a_rolling_upgrade_from_the_previous_release_keeps_the_site_up";
    if !can_run(test) {
        return;
    }
    let old = match previous() {
        Ok(p) => p,
        Err(why) => {
            assert!(std::env::var("CI").is_err(), "{test}: {why}");
            eprintln!("SKIPPED {test}: {why}");
            return;
        }
    };
    let names = ["a", "b", "c"];
    let mut c = Builder::new(&[("a", 300), ("b", 200), ("c", 100)]).build("upgrade");
    for n in names {
        c.start_program(n, &old, &[], &[]);
    }
    c.wait_vip_on("a", Duration::from_secs(10));
    for n in names {
        c.wait_api(n);
    }
    wait_converged(&c, &names, "all on the previous release");
    c.start_probe();
    c.wait_served_by("a", 0, Duration::from_secs(5));

    // The procedure (README "Rolling upgrade"): one node at a time, the
    // holders last; stop it (SIGTERM: it releases and tells its peers),
    // start the new binary, wait until the cluster sees it again.
    let mark = c.probe_lines().len();
    for n in ["c", "b"] {
        let st = c.term(n);
        assert!(
            st.success(),
            "{n} (previous release) stops cleanly: {st:?}\n{}",
            c.log(n)
        );
        c.start(n);
        c.wait_api(n);
        wait_converged(&c, &names, &format!("{n} upgraded"));
        assert_eq!(
            c.vip_holders(),
            vec!["a".to_string()],
            "the holder did not move"
        );
    }
    let mixed = failures_since(&c, mark);
    assert!(
        mixed.is_empty(),
        "requests failed while non-holders were upgraded: {mixed:?}"
    );

    // The holder last: first a planned move to an upgraded node (`keepup
    // move`, run on the holder), then it is upgraded like the others; the
    // client sees at most that one handover.
    let mark = c.probe_lines().len();
    let t0 = Instant::now();
    let out = c
        .lab
        .run(
            "a",
            keepup(),
            &[
                "-c",
                c.config.to_str().unwrap(),
                "--node",
                "a",
                "move",
                "site",
                "b",
            ],
        )
        .unwrap();
    assert!(
        out.contains("moving") || out.contains("move") || !out.is_empty(),
        "{out}"
    );
    c.wait_vip_on("b", Duration::from_secs(5));
    let line = c.wait_served_by("b", mark, Duration::from_secs(5));
    let handover = t0.elapsed();
    let st = c.term("a");
    assert!(st.success(), "a stops cleanly: {st:?}\n{}", c.log("a"));
    c.start("a");
    c.wait_api("a");
    wait_converged(&c, &names, "a upgraded");
    let failed = failures_since(&c, mark);
    eprintln!(
        "rolling upgrade: handover of the holder {handover:?}, client gap {} ms, {} failed probe reports",
        line["gap_ms"],
        failed.len()
    );
    let gap = line["gap_ms"].as_u64().unwrap_or(0);
    assert!(
        gap < 2_000,
        "the holder's upgrade cost the client {gap} ms: {failed:?}"
    );

    // Every agent now runs this build, and they agree.
    for n in names {
        let pid = c.pid(n).unwrap();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(
            exe,
            std::fs::canonicalize(keepup()).unwrap(),
            "{n} runs {exe:?}"
        );
    }
    let st = c.status("c");
    assert_eq!(
        st["cluster"]["groups"][0]["owner"].as_str().map(|_| ()),
        Some(())
    );
}
