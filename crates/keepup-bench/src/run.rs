//! Running the scenarios: one fresh lab per run, the tool's daemons, the
//! probe, the failure, the failback, and the summary tables.

use crate::probe::Reader;
use crate::tools::{self, Tool, NODES, VIP};
use crate::Cli;
use anyhow::{bail, Context, Result};
use keepup_testkit::lab::{sh, Lab};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Paths and settings shared by every run.
pub struct Ctx {
    /// This executable (for the probe).
    pub me: PathBuf,
    /// The keepup binary.
    pub keepup: PathBuf,
    /// This invocation's output directory.
    pub out: PathBuf,
    /// Probe interval.
    pub interval_ms: u64,
}

/// One tool's daemons in one fresh lab.
pub(crate) struct Bench<'a> {
    ctx: &'a Ctx,
    tool: Tool,
    pub(crate) lab: Lab,
    dir: PathBuf,
    daemons: HashMap<String, Child>,
    probe: Option<Reader>,
    probe_child: Option<Child>,
    starts: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl<'a> Bench<'a> {
    pub(crate) fn new(ctx: &'a Ctx, tool: Tool, tag: &str) -> Result<Bench<'a>> {
        let dir = ctx.out.join(tag);
        std::fs::create_dir_all(&dir)?;
        let mut lab = Lab::new(1)?;
        for (name, idx, _) in NODES {
            lab.add_host(name, idx)?;
        }
        let keepup = matches!(tool, Tool::Keepup { .. });
        if keepup {
            // keepup runs as a site should: two nodes and a witness (the
            // third vote), so ownership is decided by consensus leases.
            lab.add_host(tools::WITNESS.0, tools::WITNESS.1)?;
        }
        lab.add_host("client", 200)?;
        for (name, _, _) in NODES {
            let mut web = lab.command(name, &ctx.keepup.to_string_lossy())?;
            web.args(["internal", "web", "--name", name, "--listen", "0.0.0.0:80"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            lab.spawn(web)?;
        }
        match &tool {
            Tool::Keepup {
                heartbeat_ms,
                dead_ms,
                ..
            } => {
                use std::os::unix::fs::PermissionsExt;
                let key = dir.join("key");
                std::fs::write(&key, b"failover bench key, 32 bytes!!!!")?;
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
                std::fs::write(
                    dir.join("keepup.toml"),
                    tools::keepup_toml(&dir, *heartbeat_ms, *dead_ms),
                )?;
            }
            Tool::Keepalived { version, advert_s } => {
                for (name, _, _) in NODES {
                    std::fs::write(
                        dir.join(format!("keepalived-{name}.conf")),
                        tools::keepalived_conf(name, *version, *advert_s),
                    )?;
                }
            }
            Tool::Heartbeat {
                keepalive_ms,
                deadtime_ms,
            } => {
                crate::heartbeat::prepare(&dir, *keepalive_ms, *deadtime_ms)?;
            }
        }
        let mut b = Bench {
            ctx,
            tool,
            lab,
            dir,
            daemons: HashMap::new(),
            probe: None,
            probe_child: None,
            starts: 0,
        };
        if keepup {
            b.start(tools::WITNESS.0)?;
        }
        Ok(b)
    }

    /// Starts the daemon on `node` (its log is appended to `DIR/NODE.log`).
    pub(crate) fn start(&mut self, node: &str) -> Result<()> {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{node}.log")))?;
        let err = log.try_clone()?;
        let mut cmd = match &self.tool {
            Tool::Keepup { .. } => {
                let mut c = self.lab.command(node, &self.ctx.keepup.to_string_lossy())?;
                c.arg("-c")
                    .arg(self.dir.join("keepup.toml"))
                    .args(["--node", node, "run", "--state-dir"])
                    .arg(self.dir.join(format!("state-{node}")))
                    .env("RUST_LOG", "info");
                c
            }
            Tool::Keepalived { .. } => {
                let mut c = self.lab.command(node, "keepalived")?;
                let d = &self.dir;
                c.args(["--dont-fork", "--log-console", "--vrrp", "--use-file"])
                    .arg(d.join(format!("keepalived-{node}.conf")))
                    // Fresh pid files per start: after kill -9 the orphaned VRRP
                    // child can stay a zombie for a while (until init reaps it),
                    // and keepalived then refuses to start ("daemon is already running").
                    .arg("--pid")
                    .arg(d.join(format!("{node}-{}-keepalived.pid", self.starts)))
                    .arg("--vrrp_pid")
                    .arg(d.join(format!("{node}-{}-vrrp.pid", self.starts)));
                c
            }
            Tool::Heartbeat { .. } => crate::heartbeat::command(&self.lab, &self.dir, node)?,
        };
        cmd.stdin(Stdio::null()).stdout(log).stderr(err);
        let child = cmd.spawn().context("cannot start the daemon")?;
        self.daemons.insert(node.to_string(), child);
        Ok(())
    }

    fn start_probe(&mut self, interval_ms: u64) -> Result<()> {
        let mut cmd = self.lab.command("client", &self.ctx.me.to_string_lossy())?;
        cmd.args([
            "probe",
            "--target",
            &format!("{VIP}:80"),
            "--interval-ms",
            &interval_ms.to_string(),
            "--timeout-ms",
            "1000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        let mut child = cmd.spawn()?;
        let reader = Reader::attach(&mut child)?;
        self.probe_child = Some(child);
        self.probe = Some(reader);
        Ok(())
    }

    fn probe(&self) -> Result<&Reader> {
        self.probe.as_ref().context("no probe")
    }

    /// Every PID of the daemon on `node`: the process we started plus, for
    /// multi-process daemons, every process of that name in the namespace.
    pub(crate) fn daemon_pids(&self, node: &str) -> Result<Vec<String>> {
        if self.tool.is_keepup() {
            return Ok(self
                .daemons
                .get(node)
                .map(|c| vec![c.id().to_string()])
                .unwrap_or_default());
        }
        let mut pids = Vec::new();
        let ns = &self.lab.host(node)?.ns;
        for pid in sh("ip", &["netns", "pids", ns])?.split_whitespace() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                == Some("Z");
            if comm.trim().starts_with(self.tool.comm()) && !zombie {
                pids.push(pid.to_string());
            }
        }
        Ok(pids)
    }

    /// The daemon's main process on `node` (the one SIGTERM goes to): the
    /// process we started, or for a daemon that forked away, the one of its
    /// processes whose parent is not one of them.
    fn master_pid(&self, node: &str) -> Result<String> {
        if self.tool.is_keepup() {
            return self
                .daemons
                .get(node)
                .map(|c| c.id().to_string())
                .context("daemon not running");
        }
        let pids = self.daemon_pids(node)?;
        let ppid = |pid: &str| -> String {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .unwrap_or("")
                .to_string()
        };
        pids.iter()
            .find(|p| !pids.contains(&ppid(p)) && Path::new(&format!("/proc/{p}")).exists())
            .cloned()
            .context("daemon not running")
    }

    /// Fails `node` as `scenario` says; returns the instant the failure was in effect.
    pub(crate) fn fail(&mut self, node: &str, scenario: &str) -> Result<Instant> {
        match scenario {
            "kill" => {
                let pids = self.daemon_pids(node)?;
                let mut args = vec!["-9".to_string()];
                args.extend(pids);
                let st = Command::new("kill").args(&args).status()?;
                let t0 = Instant::now();
                anyhow::ensure!(st.success(), "kill -9 failed");
                if let Some(mut c) = self.daemons.remove(node) {
                    let _ = c.wait();
                }
                Ok(t0)
            }
            "stop" => {
                let pid = self.master_pid(node)?;
                let st = Command::new("kill").args(["-TERM", &pid]).status()?;
                let t0 = Instant::now();
                anyhow::ensure!(st.success(), "kill -TERM failed");
                Ok(t0)
            }
            "cut" => {
                let ns = self.lab.host(node)?.ns.clone();
                let rules = "table inet kulab {\n\
                     chain input { type filter hook input priority 0; policy accept; iifname != \"lo\" drop; }\n\
                     chain output { type filter hook output priority 0; policy accept; oifname != \"lo\" drop; }\n}\n";
                let mut c = Command::new("ip")
                    .args(["netns", "exec", &ns, "nft", "-f", "-"])
                    .stdin(Stdio::piped())
                    .spawn()?;
                c.stdin
                    .take()
                    .context("nft stdin")?
                    .write_all(rules.as_bytes())?;
                let st = c.wait()?;
                let t0 = Instant::now();
                anyhow::ensure!(st.success(), "nft failed");
                Ok(t0)
            }
            other => bail!("unknown scenario {other}"),
        }
    }

    /// Brings `node` back after `scenario`; returns when that took effect.
    fn restore(&mut self, node: &str, scenario: &str) -> Result<Instant> {
        match scenario {
            "cut" => {
                self.lab.partition(node, false)?;
                Ok(Instant::now())
            }
            _ => {
                // A clean stop must have finished before the daemon restarts.
                if let Some(mut c) = self.daemons.remove(node) {
                    let t = Instant::now();
                    while c.try_wait()?.is_none() {
                        if t.elapsed() > Duration::from_secs(10) {
                            let _ = c.kill();
                            let _ = c.wait();
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                // Leftover processes of the daemon (keepalived's VRRP child).
                let t = Instant::now();
                while !self.daemon_pids(node)?.is_empty() && t.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let t1 = Instant::now();
                self.start(node)?;
                Ok(t1)
            }
        }
    }

    /// Fetches a node's keepup `/metrics` (inside its namespace) as name → value.
    fn metrics(&self, node: &str) -> HashMap<String, f64> {
        let out = self
            .lab
            .run(
                node,
                "curl",
                &["-s", "--max-time", "3", "http://127.0.0.1:7947/metrics"],
            )
            .unwrap_or_default();
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Bench<'_> {
    fn drop(&mut self) {
        for (_, mut c) in self.daemons.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Multi-process daemons (Heartbeat forks helpers while it works) can
        // fork between the lab's one sweep of a namespace and its deletion:
        // kill them by name a few times first.
        if !self.tool.is_keepup() {
            for _ in 0..3 {
                for (node, _, _) in NODES {
                    let pids = self.daemon_pids(node).unwrap_or_default();
                    if !pids.is_empty() {
                        let _ = Command::new("kill").arg("-9").args(&pids).status();
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if let Some(mut c) = self.probe_child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The lab then kills everything else started in its namespaces.
    }
}

/// One run's result.
#[derive(Debug, Clone)]
struct RunResult {
    tool: String,
    scenario: String,
    failover_ms: f64,
    failback_gap_ms: f64,
    raw: Value,
}

fn one_run(ctx: &Ctx, tool: &Tool, scenario: &str, i: usize) -> Result<RunResult> {
    let tag = format!("{}-{scenario}-{i}", tool.label());
    let mut b = Bench::new(ctx, tool.clone(), &tag)?;
    let load = loadavg();
    b.start("a")?;
    b.start("b")?;
    b.start_probe(ctx.interval_ms)?;
    anyhow::ensure!(
        b.probe()?
            .wait_stable("a", Duration::from_secs(1), Duration::from_secs(30)),
        "a never became the stable owner"
    );
    // Let b settle as a backup (keepup: past initial_dead; keepalived: adverts heard).
    std::thread::sleep(tool.settle());

    let t0 = b.fail("a", scenario)?;
    let tb = b
        .probe()?
        .first_from("b", t0, Duration::from_secs(30))
        .context("b never served after the failure")?;
    let failover = ms(tb - t0);
    let (fo_gap, fo_failed) = b.probe()?.gap(t0, tb);

    let stable_b = b
        .probe()?
        .wait_stable("b", Duration::from_secs(1), Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));

    let t1 = b.restore("a", scenario)?;
    let ta = b
        .probe()?
        .first_from("a", t1, Duration::from_secs(120))
        .context("a never served again after the restore")?;
    std::thread::sleep(
        (ta + Duration::from_millis(1500)).saturating_duration_since(Instant::now()),
    );
    let (gap, fb_failed) = b.probe()?.gap(t1, ta + Duration::from_millis(1500));
    let failback_gap = if fb_failed == 0 { 0.0 } else { gap };
    let (oks, fails, by) = b.probe()?.totals();
    let raw = json!({
        "tool": tool.label(), "setting": tool.setting(), "scenario": scenario, "run": i,
        "failover_ms": failover, "failover_client_gap_ms": fo_gap, "failover_failed_requests": fo_failed,
        "b_stable_after_failover": stable_b,
        "failback_first_reply_from_a_ms": ms(ta - t1), "failback_gap_ms": failback_gap,
        "failback_longest_silence_ms": gap, "failback_failed_requests": fb_failed,
        "requests_ok": oks, "requests_failed": fails,
        "served_by": by.iter().map(|(n, c)| json!({"node": n, "count": c})).collect::<Vec<_>>(),
        "loadavg": load,
    });
    Ok(RunResult {
        tool: tool.label(),
        scenario: scenario.to_string(),
        failover_ms: failover,
        failback_gap_ms: failback_gap,
        raw,
    })
}

/// min, median, max.
fn stats(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some((s[0], med, s[n - 1]))
}

fn tools_from(cli: &Cli) -> Vec<Tool> {
    let all = vec![
        Tool::Keepup {
            label: "keepup-default".into(),
            heartbeat_ms: 100,
            dead_ms: 300,
        },
        Tool::Keepup {
            label: "keepup-fast".into(),
            heartbeat_ms: cli.fast_heartbeat_ms,
            dead_ms: cli.fast_dead_ms,
        },
        Tool::Keepalived {
            version: 2,
            advert_s: 1.0,
        },
        Tool::Keepalived {
            version: 3,
            advert_s: 0.1,
        },
        Tool::Heartbeat {
            keepalive_ms: 50,
            deadtime_ms: 150,
        },
    ];
    all.into_iter()
        .filter(|t| cli.only.is_empty() || cli.only.iter().any(|o| *o == t.label()))
        .collect()
}

fn fmt(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// Runs everything the command line asks for and writes the results.
pub fn main(cli: &Cli, me: &Path, keepup: &Path) -> Result<()> {
    let stamp = sh("date", &["-u", "+%Y%m%dT%H%M%SZ"])?.trim().to_string();
    let out = cli.out.join(format!("failover-{stamp}"));
    std::fs::create_dir_all(&out)?;
    let out = out.canonicalize()?;
    let ctx = Ctx {
        me: me.to_path_buf(),
        keepup: keepup.to_path_buf(),
        out: out.clone(),
        interval_ms: cli.interval_ms,
    };
    let machine = json!({
        "date": sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default().trim(),
        "cpus": sh("nproc", &[]).unwrap_or_default().trim(),
        "cpu": std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default().lines()
            .find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).unwrap_or("").trim(),
        "kernel": sh("uname", &["-r"]).unwrap_or_default().trim(),
        "keepalived": Command::new("keepalived").arg("--version").output().ok()
            .map(|o| String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or("").to_string()),
        "loadavg_start": loadavg(),
    });
    eprintln!("failover bench: output in {}", out.display());
    let mut jsonl = std::fs::File::create(out.join("runs.jsonl"))?;
    let mut results: Vec<RunResult> = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    let tools = tools_from(cli);
    for tool in &tools {
        if let Err(why) = available(tool) {
            eprintln!("SKIPPED {}: {why}", tool.label());
            skipped.push((tool.label(), why));
            continue;
        }
        for scenario in &cli.scenarios {
            for i in 1..=cli.runs {
                let r = one_run(&ctx, tool, scenario, i);
                match r {
                    Ok(r) => {
                        eprintln!(
                            "{:<15} {:<5} run {i}: failover {:>7.1} ms, failback gap {:>7.1} ms  (load {})",
                            r.tool, r.scenario, r.failover_ms, r.failback_gap_ms,
                            r.raw["loadavg"].as_str().unwrap_or("")
                        );
                        writeln!(jsonl, "{}", r.raw)?;
                        results.push(r);
                    }
                    Err(e) => {
                        eprintln!("{:<15} {scenario:<5} run {i}: FAILED: {e:#}", tool.label());
                        writeln!(
                            jsonl,
                            "{}",
                            json!({"tool": tool.label(), "scenario": scenario, "run": i, "error": format!("{e:#}")})
                        )?;
                    }
                }
            }
        }
    }

    let partitions = if cli.partitions > 0 {
        let usable: Vec<Tool> = tools
            .iter()
            .filter(|t| available(t).is_ok())
            .cloned()
            .collect();
        let runs = crate::partition::all(
            &ctx,
            &usable,
            cli.partitions,
            Duration::from_secs(cli.partition_seconds),
        )?;
        for r in &runs {
            writeln!(jsonl, "{r}")?;
        }
        Some(runs)
    } else {
        None
    };

    let soak =
        if cli.soak_seconds > 0 && (cli.only.is_empty() || cli.only.iter().any(|o| o == "soak")) {
            Some(soak(&ctx, cli)?)
        } else {
            None
        };

    let mut report = summary(cli, &tools, &results, &skipped, soak.as_ref(), &machine);
    if let Some(p) = &partitions {
        report.push_str(&format!(
            "\n### Partitions ({} s each; time the IP was on both nodes)\n\n{}",
            cli.partition_seconds,
            crate::partition::table(p)
        ));
    }
    println!("{report}");
    std::fs::write(out.join("summary.md"), &report)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&json!({
            "machine": machine, "runs": results.iter().map(|r| r.raw.clone()).collect::<Vec<_>>(),
            "soak": soak, "skipped": skipped, "partitions": partitions,
        }))?,
    )?;
    eprintln!("raw results: {}", out.display());
    Ok(())
}

fn available(tool: &Tool) -> std::result::Result<(), String> {
    let need = |p: &str| {
        keepup_testkit::require::program(p)
            .map(|_| ())
            .ok_or_else(|| format!("needs {p}"))
    };
    need("ip")?;
    need("nft")?;
    match tool {
        Tool::Keepup { .. } => Ok(()),
        Tool::Keepalived { .. } => need("keepalived"),
        Tool::Heartbeat { .. } => crate::heartbeat::available(),
    }
}

fn summary(
    cli: &Cli,
    tools: &[Tool],
    results: &[RunResult],
    skipped: &[(String, String)],
    soak: Option<&Value>,
    machine: &Value,
) -> String {
    let mut s = String::new();
    let cmd = std::env::args().collect::<Vec<_>>().join(" ");
    s.push_str(&format!(
        "Command: `{cmd}`\nDate: {}; machine: {} CPUs ({}), kernel {}; {}; load average at start {}\n\
         N = {} runs per tool and scenario, fresh lab per run; probe interval {} ms.\n\n",
        machine["date"].as_str().unwrap_or(""),
        machine["cpus"].as_str().unwrap_or(""),
        machine["cpu"].as_str().unwrap_or(""),
        machine["kernel"].as_str().unwrap_or(""),
        machine["keepalived"].as_str().unwrap_or("keepalived ?"),
        machine["loadavg_start"].as_str().unwrap_or(""),
        cli.runs,
        cli.interval_ms,
    ));
    s.push_str("| tool | setting | scenario | n | failover min (ms) | median | max | spread max−min | failback gap median (ms) | failback gap max |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let mut medians: HashMap<(String, String), f64> = HashMap::new();
    for tool in tools {
        for sc in &cli.scenarios {
            let fo: Vec<f64> = results
                .iter()
                .filter(|r| r.tool == tool.label() && &r.scenario == sc)
                .map(|r| r.failover_ms)
                .collect();
            let fb: Vec<f64> = results
                .iter()
                .filter(|r| r.tool == tool.label() && &r.scenario == sc)
                .map(|r| r.failback_gap_ms)
                .collect();
            let Some((mn, med, mx)) = stats(&fo) else {
                continue;
            };
            let (_, fbmed, fbmax) = stats(&fb).unwrap_or_default();
            medians.insert((tool.label(), sc.clone()), med);
            s.push_str(&format!(
                "| {} | {} | {sc} | {} | {} | **{}** | {} | {} | {} | {} |\n",
                tool.label(),
                tool.setting(),
                fo.len(),
                fmt(mn),
                fmt(med),
                fmt(mx),
                fmt(mx - mn),
                fmt(fbmed),
                fmt(fbmax)
            ));
        }
    }
    for (t, why) in skipped {
        s.push_str(&format!("\n{t}: skipped ({why})\n"));
    }
    s.push_str(
        "\nRatios (peer median failover / keepup median failover; > 1 means keepup is faster):\n\n",
    );
    s.push_str("| keepup setting | peer | scenario | ratio |\n|---|---|---|---|\n");
    for k in tools.iter().filter(|t| t.is_keepup()) {
        for p in tools.iter().filter(|t| !t.is_keepup()) {
            for sc in &cli.scenarios {
                if let (Some(km), Some(pm)) = (
                    medians.get(&(k.label(), sc.clone())),
                    medians.get(&(p.label(), sc.clone())),
                ) {
                    s.push_str(&format!(
                        "| {} | {} | {sc} | {:.1}× |\n",
                        k.label(),
                        p.label(),
                        pm / km.max(0.001)
                    ));
                }
            }
        }
    }
    if let Some(v) = soak {
        s.push_str(&format!("\nSoak: {}\n", soak_text(v)));
    }
    s
}

fn soak_text(v: &Value) -> String {
    format!(
        "keepup {} for {} s with `{}` saturating both cores: false failovers {} \
         (peers declared dead: a {}, b {}; group acquisitions by b {}), late heartbeats a {} b {}, \
         heartbeat-loop overruns a {} b {}, realtime a {} b {}; client requests ok {}, failed {}, served by b {}; \
         holder let its lease go {} times; consensus persists a {} b {} w {}, longest write+fsync a {} b {} w {} s; \
         load average samples {}",
        v["setting"].as_str().unwrap_or(""),
        v["seconds"],
        v["load_generator"].as_str().unwrap_or(""),
        v["false_failovers"],
        v["a"]["declared_dead"],
        v["b"]["declared_dead"],
        v["b"]["acquisitions"],
        v["a"]["late"],
        v["b"]["late"],
        v["a"]["overruns"],
        v["b"]["overruns"],
        v["a"]["realtime"],
        v["b"]["realtime"],
        v["client_ok"],
        v["client_failed"],
        v["client_served_by_b"],
        v["holder_lease_stops"],
        v["a"]["persists"],
        v["b"]["persists"],
        v["w"]["persists"],
        v["a"]["persist_max_s"],
        v["b"]["persist_max_s"],
        v["w"]["persist_max_s"],
        v["loadavg"],
    )
}

fn soak(ctx: &Ctx, cli: &Cli) -> Result<Value> {
    let tool = Tool::Keepup {
        label: "keepup-fast".into(),
        heartbeat_ms: cli.fast_heartbeat_ms,
        dead_ms: cli.fast_dead_ms,
    };
    eprintln!(
        "soak: {} for {} s with both cores saturated",
        tool.setting(),
        cli.soak_seconds
    );
    let mut b = Bench::new(ctx, tool.clone(), "soak")?;
    b.start("a")?;
    b.start("b")?;
    b.start_probe(50)?;
    anyhow::ensure!(
        b.probe()?
            .wait_stable("a", Duration::from_secs(1), Duration::from_secs(30)),
        "a never became the stable owner"
    );
    std::thread::sleep(Duration::from_millis(1000));
    let nodes = ["a", "b", tools::WITNESS.0];
    let before: Vec<HashMap<String, f64>> = nodes.iter().map(|n| b.metrics(n)).collect();
    let (ok0, fail0, by0) = b.probe()?.totals();
    let by_b0 = by0.iter().find(|(n, _)| n == "b").map(|x| x.1).unwrap_or(0);

    let secs = cli.soak_seconds.to_string();
    let generator = if keepup_testkit::require::program("stress-ng").is_some() {
        let mut c = b.lab.command("client", "stress-ng")?;
        c.args(["--cpu", "2", "--timeout", &format!("{secs}s"), "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        b.lab.spawn(c)?;
        format!("stress-ng --cpu 2 --timeout {secs}s")
    } else {
        for _ in 0..2 {
            let mut c = b.lab.command("client", "timeout")?;
            c.args([&secs, "sh", "-c", "while :; do :; done"]);
            b.lab.spawn(c)?;
        }
        "2 shell busy loops".to_string()
    };
    let mut loads = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(cli.soak_seconds) {
        std::thread::sleep(Duration::from_secs(10).min(
            Duration::from_secs(cli.soak_seconds).saturating_sub(t0.elapsed())
                + Duration::from_millis(10),
        ));
        let l = loadavg();
        eprintln!("soak {:>4} s: load {l}", t0.elapsed().as_secs());
        loads.push(l);
    }
    let after: Vec<HashMap<String, f64>> = nodes.iter().map(|n| b.metrics(n)).collect();
    let (ok1, fail1, by1) = b.probe()?.totals();
    let by_b1 = by1.iter().find(|(n, _)| n == "b").map(|x| x.1).unwrap_or(0);
    let delta = |i: usize, k: &str| -> f64 {
        after[i].get(k).copied().unwrap_or(f64::NAN) - before[i].get(k).copied().unwrap_or(0.0)
    };
    let node = |i: usize| {
        json!({
            "declared_dead": delta(i, "keepup_peers_declared_dead_total"),
            "late": delta(i, "keepup_heartbeats_late_total"),
            "overruns": delta(i, "keepup_heartbeat_loop_overruns_total"),
            "acquisitions": delta(i, "keepup_group_acquisitions_total"),
            "received": delta(i, "keepup_heartbeats_received_total"),
            "realtime": after[i].get("keepup_realtime").copied(),
            "persists": delta(i, "keepup_consensus_persists_total"),
            "persist_max_s": after[i].get("keepup_consensus_persist_seconds_max").copied(),
        })
    };
    // The holder letting go by itself (its renewals did not commit in time).
    let lease_stops = std::fs::read_to_string(ctx.out.join("soak").join("a.log"))
        .unwrap_or_default()
        .matches("about to expire without a committed renewal")
        .count();
    let dead_logged = nodes
        .iter()
        .map(|n| {
            std::fs::read_to_string(ctx.out.join("soak").join(format!("{n}.log")))
                .unwrap_or_default()
                .matches(" is dead")
                .count()
        })
        .sum::<usize>();
    let false_failovers =
        delta(0, "keepup_peers_declared_dead_total") + delta(1, "keepup_peers_declared_dead_total");
    Ok(json!({
        "setting": tool.setting(), "seconds": cli.soak_seconds, "load_generator": generator,
        "false_failovers": false_failovers, "dead_lines_in_logs": dead_logged,
        "a": node(0), "b": node(1), "w": node(2), "holder_lease_stops": lease_stops,
        "client_ok": ok1 - ok0, "client_failed": fail1 - fail0, "client_served_by_b": by_b1 - by_b0,
        "loadavg": loads,
    }))
}
