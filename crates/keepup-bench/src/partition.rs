//! Partitions: keepup and its peers through the same faults, counting the
//! time the floating IP is configured on both nodes at once (split brain)
//! and the longest time it is on neither.
//!
//! Shapes, each held `--partition-seconds` on the holder `a` (priority
//! 200) and its backup `b`:
//! - `pair-cut`: a and b cannot reach each other; both still reach the
//!   client and (keepup) the witness. keepalived has no third vote, so this
//!   is also its view of an asymmetric partition;
//! - `one-way`: b hears nothing from a, a still hears b;
//! - `pause`: a's daemon is SIGSTOPped, then SIGCONTed. While it is stopped
//!   its address cannot be withdrawn, so only the overlap after SIGCONT
//!   counts (the chaos checker's rule).
//!
//! The IP's presence is read with `ip -n NS addr` every 10 ms. Reported per
//! tool and shape: runs, total overlap, the longest overlap of one run, the
//! longest time with no holder, and whether a held the IP at the end.

use crate::run::{loadavg, Bench, Ctx};
use crate::tools::{Tool, VIP};
use anyhow::{Context, Result};
use keepup_testkit::lab::sh;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// The fault shapes, in report order.
pub const SHAPES: [&str; 3] = ["pair-cut", "one-way", "pause"];

fn holds(b: &Bench<'_>, node: &str) -> bool {
    let Ok(h) = b.lab.host(node) else {
        return false;
    };
    sh(
        "ip",
        &["-n", &h.ns, "-o", "-4", "addr", "show", "dev", "eth0"],
    )
    .map(|out| out.contains(&format!("{VIP}/")))
    .unwrap_or(false)
}

fn signal(pids: &[String], sig: &str) -> Result<()> {
    let st = Command::new("kill").arg(sig).args(pids).status()?;
    anyhow::ensure!(st.success(), "kill {sig} failed");
    Ok(())
}

/// Samples both nodes until `until`, adding to the overlap (when `count`
/// says so for that instant) and tracking the longest no-holder stretch.
struct Sampler {
    overlap: Duration,
    none_since: Option<Instant>,
    none_max: Duration,
    last: Instant,
}

impl Sampler {
    fn new() -> Sampler {
        Sampler {
            overlap: Duration::ZERO,
            none_since: None,
            none_max: Duration::ZERO,
            last: Instant::now(),
        }
    }

    fn run(&mut self, b: &Bench<'_>, until: Instant, count_overlap: bool) -> (bool, bool) {
        loop {
            let now = Instant::now();
            let (a, bb) = (holds(b, "a"), holds(b, "b"));
            let dt = now - self.last;
            self.last = now;
            if a && bb && count_overlap {
                self.overlap += dt;
            }
            if !a && !bb {
                let since = *self.none_since.get_or_insert(now);
                self.none_max = self.none_max.max(now - since);
            } else {
                self.none_since = None;
            }
            if now >= until {
                return (a, bb);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One fault of `shape` on a fresh lab.
pub fn one(ctx: &Ctx, tool: &Tool, shape: &str, i: usize, hold: Duration) -> Result<Value> {
    let tag = format!("{}-{shape}-{i}", tool.label());
    let mut b = Bench::new(ctx, tool.clone(), &tag)?;
    let load = loadavg();
    b.start("a")?;
    b.start("b")?;
    let t = Instant::now();
    while !holds(&b, "a") || holds(&b, "b") {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(30),
            "a never held the IP alone"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(tool.settle());
    let mut s = Sampler::new();
    let mut pids = Vec::new();
    match shape {
        "pair-cut" => b.lab.block("a", "b", true, true)?,
        "one-way" => b.lab.block("b", "a", true, false)?,
        "pause" => {
            pids = b.daemon_pids("a")?;
            signal(&pids, "-STOP")?;
        }
        other => anyhow::bail!("unknown shape {other}"),
    }
    // While a is stopped its address cannot go: not counted (see above).
    s.run(&b, Instant::now() + hold, shape != "pause");
    match shape {
        "pause" => signal(&pids, "-CONT")?,
        _ => b.lab.unblock(if shape == "pair-cut" { "a" } else { "b" })?,
    }
    let end = s.run(&b, Instant::now() + Duration::from_secs(5), true);
    Ok(json!({
        "tool": tool.label(), "setting": tool.setting(), "shape": shape, "run": i,
        "hold_ms": hold.as_millis() as u64,
        "overlap_ms": s.overlap.as_secs_f64() * 1000.0,
        "longest_without_holder_ms": s.none_max.as_secs_f64() * 1000.0,
        "held_at_end": match end { (true, false) => "a", (false, true) => "b", (true, true) => "both", _ => "none" },
        "loadavg": load,
    }))
}

/// Every tool through every shape, `runs` times; returns the raw runs.
pub fn all(ctx: &Ctx, tools: &[Tool], runs: usize, hold: Duration) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for tool in tools {
        for shape in SHAPES {
            for i in 1..=runs {
                let v = one(ctx, tool, shape, i, hold)
                    .with_context(|| format!("{} {shape} run {i}", tool.label()))?;
                eprintln!(
                    "{:<15} {shape:<8} run {i}: both held {:>7.1} ms, none {:>7.1} ms, at the end {}",
                    tool.label(),
                    v["overlap_ms"].as_f64().unwrap_or(0.0),
                    v["longest_without_holder_ms"].as_f64().unwrap_or(0.0),
                    v["held_at_end"].as_str().unwrap_or("?"),
                );
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// The markdown table of [`all`]'s runs.
pub fn table(runs: &[Value]) -> String {
    let mut t = String::from(
        "| tool | shape | runs | both held, total (ms) | both held, worst run (ms) | longest with no holder (ms) |\n|---|---|---|---|---|---|\n",
    );
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in runs {
        let k = (
            r["tool"].as_str().unwrap_or("").to_string(),
            r["shape"].as_str().unwrap_or("").to_string(),
        );
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (tool, shape) in keys {
        let mine: Vec<&Value> = runs
            .iter()
            .filter(|r| r["tool"] == tool.as_str() && r["shape"] == shape.as_str())
            .collect();
        let f = |k: &'static str| mine.iter().filter_map(move |r| r[k].as_f64());
        t.push_str(&format!(
            "| {tool} | {shape} | {} | {:.0} | {:.0} | {:.0} |\n",
            mine.len(),
            f("overlap_ms").sum::<f64>(),
            f("overlap_ms").fold(0.0, f64::max),
            f("longest_without_holder_ms").fold(0.0, f64::max),
        ));
    }
    t
}
