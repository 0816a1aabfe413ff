//! `keepup demo`: the whole site of the README's picture, in network
//! namespaces on this machine, with a client that keeps requesting it and a
//! narrated walk through failures, each with the gap the client saw.
//!
//! ```text
//!  client ──> 10.77.0.100 ──> [lb-1] [lb-2]      keepup agents + load balancer
//!                               │
//!                 [web-1] [web-2] [web-3]        small web servers answering their name
//!                               │ writer IP 10.77.0.101
//!                     [db-1] <──> [db-2]         MariaDB master-master, keepup agents
//! ```

use anyhow::{bail, Context};
use clap::Args;
use keepup_testkit::lab::Lab;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `keepup demo`.
#[derive(Debug, Args)]
#[command(
    long_about = "Builds the whole site in network namespaces on this machine (root \
needed): two keepup nodes sharing a floating IP and load-balancing over three web \
servers, and a client that keeps requesting the site. Then it fails things one by one \
and narrates each failover with the gap the client saw.\n\n--once runs the walk-through \
and exits (0 when the client saw service restored after every failure). --keep leaves \
the site running afterwards until Ctrl-C. Everything is removed on exit."
)]
pub struct DemoArgs {
    /// Run the scripted failovers once and exit (for CI).
    #[arg(long)]
    pub once: bool,
    /// Leave the site running after the walk-through, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
}

const VIP: &str = "10.77.0.100";
const LBS: [(&str, u8, u32); 2] = [("lb-1", 1, 200), ("lb-2", 2, 100)];
const WEBS: [(&str, u8); 3] = [("web-1", 11), ("web-2", 12), ("web-3", 13)];
const DBS: [(&str, u8, u32); 2] = [("db-1", 21, 200), ("db-2", 22, 100)];
const WRITER: &str = "10.77.0.101";
/// The third vote: in a real site the backup server or a small VM.
const WITNESS: (&str, u8) = ("witness", 9);

/// One line of the client probe, stamped when it arrived.
#[derive(Clone)]
struct Seen {
    at: Instant,
    ok: bool,
    detail: String,
    gap_ms: Option<u64>,
}

struct Site {
    lab: Lab,
    exe: String,
    dir: PathBuf,
    config: PathBuf,
    agents: Vec<(String, Child)>,
    webs: Vec<(String, usize)>,
    probe: Option<keepup_testkit::probe::ProbeProcess>,
    dbs: Vec<keepup_db::local_server::LocalServer>,
    t0: Instant,
}

fn say(t0: Instant, msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[{:>7.3}s] {msg}", t0.elapsed().as_secs_f64());
    let _ = out.flush();
}

fn site_config(key: &std::path::Path, db: Option<&std::path::Path>) -> String {
    let mut t = format!(
        "[cluster]\nname = \"demo\"\nkey_file = \"{}\"\n\n[timing]\nheartbeat_ms = 50\ndead_ms = 200\nwarn_ms = 100\ninitial_dead_ms = 1000\n\n\
         [api]\nlisten = \"0.0.0.0:7947\"\n\n",
        key.display(),
    );
    let db_nodes: &[(&str, u8, u32)] = if db.is_some() { &DBS } else { &[] };
    for (name, idx, prio) in LBS.iter().chain(db_nodes) {
        t.push_str(&format!(
            "[[node]]\nname = \"{name}\"\naddresses = [\"10.77.0.{idx}\"]\npriority = {prio}\n\n"
        ));
    }
    t.push_str(&format!(
        "[[node]]\nname = \"{}\"\naddresses = [\"10.77.0.{}\"]\nrole = \"witness\"\n\n",
        WITNESS.0, WITNESS.1
    ));
    t.push_str(&format!(
        "[[group]]\nname = \"site\"\nnodes = [\"lb-1\", \"lb-2\"]\n\n[[group.resource]]\ntype = \"vip\"\naddress = \"{VIP}/24\"\ninterface = \"eth0\"\n\n"
    ));
    if let Some(dir) = db {
        t.push_str(&format!(
            "[[group]]\nname = \"db\"\nnodes = [\"db-1\", \"db-2\"]\n\n\
             [[group.resource]]\ntype = \"db-primary\"\nmonitor_interval_ms = 300\n\n\
             [[group.resource]]\ntype = \"vip\"\naddress = \"{WRITER}/24\"\ninterface = \"eth0\"\n\n\
             [database]\ntopology = \"master-master\"\npreferred_primary = \"db-1\"\nsemi_sync = true\n\
             admin_credentials_file = \"{}\"\nreplication_password_file = \"{}\"\nconnect_timeout_ms = 500\n\n\
             [[database.server]]\nname = \"db-1\"\naddress = \"10.77.0.21:3306\"\n\n\
             [[database.server]]\nname = \"db-2\"\naddress = \"10.77.0.22:3306\"\n\n",
            dir.join("db-admin.cnf").display(),
            dir.join("db-replication.password").display()
        ));
    }
    t.push_str(&format!(
        "[lb]\nworkers = 1\nnodes = [\"lb-1\", \"lb-2\"]\n\n[[lb.frontend]]\nname = \"www\"\nbind = \"{VIP}:80\"\npool = \"web\"\nconnect_timeout_ms = 200\nretries = 2\n\n\
         [[lb.pool]]\nname = \"web\"\nalgorithm = \"round-robin\"\npassive_fall = 2\nslow_start_ms = 0\n\n\
         [lb.pool.health]\ntype = \"http\"\npath = \"/\"\ninterval_ms = 300\ntimeout_ms = 200\nrise = 2\nfall = 2\n\n"
    ));
    for (name, idx) in WEBS {
        t.push_str(&format!(
            "[[lb.pool.backend]]\nname = \"{name}\"\naddress = \"10.77.0.{idx}:8080\"\n\n"
        ));
    }
    t
}

impl Site {
    fn build(t0: Instant) -> anyhow::Result<Site> {
        let exe = std::env::current_exe()
            .context("cannot find the keepup executable")?
            .to_string_lossy()
            .to_string();
        let dir = std::env::temp_dir().join(format!("keepup-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let key = dir.join("key");
        std::fs::write(&key, demo_key())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        // The dashboard's read-only token (the agents derive it from the key).
        let token = keepup_api::tokens::derive(&demo_key(), "read");
        let with_db = keepup_db::local_server::available()
            && keepup_testkit::require::program("mariadb").is_some();
        if with_db {
            keepup_db::local_server::write_credentials_file(&dir.join("db-admin.cnf"))?;
        } else {
            say(t0, "MariaDB is not installed (apt-get install mariadb-server mariadb-client): the demo runs without the database part");
        }
        let config = dir.join("keepup.toml");
        std::fs::write(&config, site_config(&key, with_db.then_some(dir.as_path())))?;

        let mut lab = Lab::new(1)?;
        for (name, idx, _) in LBS {
            lab.add_host(name, idx)?;
        }
        for (name, idx) in WEBS {
            lab.add_host(name, idx)?;
        }
        if with_db {
            for (name, idx, _) in DBS {
                lab.add_host(name, idx)?;
            }
        }
        lab.add_host(WITNESS.0, WITNESS.1)?;
        lab.add_host("client", 200)?;
        // This machine joins the lab as 10.77.0.254 so a browser here can open the dashboard.
        let dashboard = match lab.attach_root(254) {
            Ok(()) => Some(format!("http://10.77.0.1:7947/#token={token}")),
            Err(e) => {
                say(t0, &format!("(no dashboard from this machine: {e})"));
                None
            }
        };
        say(t0, &format!(
            "built the site in network namespaces: lb-1 10.77.0.1, lb-2 10.77.0.2 (keepup), a witness 10.77.0.9 (keepup, votes only), web-1..3 10.77.0.11-13, client 10.77.0.200; floating IP {VIP}"
        ));
        let mut site = Site {
            lab,
            exe,
            dir,
            config,
            agents: Vec::new(),
            webs: Vec::new(),
            probe: None,
            dbs: Vec::new(),
            t0,
        };
        if with_db {
            site.start_databases()?;
        }
        for (name, _) in WEBS {
            site.start_web(name)?;
        }
        let db_nodes: &[(&str, u8, u32)] = if with_db { &DBS } else { &[] };
        for (name, _, _) in LBS.iter().chain(db_nodes) {
            site.start_agent(name)?;
        }
        site.start_agent(WITNESS.0)?;
        site.wait_owner("lb-1", Duration::from_secs(10))?;
        say(t0, "lb-1 (priority 200) holds the floating IP under a lease the majority of voters committed (raft), and load-balances over web-1..3");
        if let Some(url) = dashboard {
            say(
                t0,
                &format!("live dashboard of lb-1: {url}   (lb-2: the same with 10.77.0.2)"),
            );
        }
        site.start_probe()?;
        Ok(site)
    }

    /// Two mariadbd, one in each database node's namespace, joined into a
    /// semi-sync master-master pair by `keepup db setup`.
    fn start_databases(&mut self) -> anyhow::Result<()> {
        for (i, (name, idx, _)) in DBS.iter().enumerate() {
            let mut o = keepup_db::local_server::LocalServerOptions::new(i as u32 + 1);
            // Master-master: each writable master has its own GTID domain.
            o.gtid_domain_id = i as u32 + 1;
            o.netns = Some(self.lab.host(name)?.ns.clone());
            o.bind_address = format!("10.77.0.{idx}");
            o.admin_host = "10.77.0.%".into();
            o.listen_all = true;
            o.base_dir = Some(self.dir.clone());
            self.dbs
                .push(keepup_db::local_server::LocalServer::start(name, 3306, o)?);
        }
        let cfg = self.config.to_string_lossy().to_string();
        self.lab
            .run("db-1", &self.exe, &["-c", &cfg, "db", "setup"])
            .context("keepup db setup")?;
        say(self.t0, "MariaDB on db-1 and db-2: `keepup db setup` built a semi-sync master-master pair; db-1 is the writable primary");
        Ok(())
    }

    /// Runs one SQL statement through the writer VIP from the client.
    fn sql(&self, q: &str) -> anyhow::Result<String> {
        self.lab.sql(
            "client",
            WRITER,
            keepup_db::local_server::ADMIN_USER,
            keepup_db::local_server::ADMIN_PASSWORD,
            q,
        )
    }

    fn start_web(&mut self, name: &str) -> anyhow::Result<()> {
        let mut web = self.lab.command(name, &self.exe)?;
        web.args([
            "internal",
            "web",
            "--name",
            name,
            "--listen",
            "0.0.0.0:8080",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let idx = self.lab.spawn(web)?;
        self.webs.retain(|(n, _)| n != name);
        self.webs.push((name.to_string(), idx));
        Ok(())
    }

    fn kill_web(&mut self, name: &str) -> anyhow::Result<()> {
        let idx = self
            .webs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, i)| *i)
            .context("no such web server")?;
        let child = self.lab.child(idx);
        let _ = child.kill();
        let _ = child.wait();
        Ok(())
    }

    fn start_agent(&mut self, name: &str) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let mut cmd = self.lab.command(name, &self.exe)?;
        cmd.arg("-c")
            .arg(&self.config)
            .args(["--node", name, "run", "--state-dir"])
            .arg(self.dir.join("state").join(name))
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn()?;
        self.agents.push((name.to_string(), child));
        Ok(())
    }

    fn start_probe(&mut self) -> anyhow::Result<()> {
        self.probe = Some(keepup_testkit::probe::ProbeProcess::spawn(
            &self.lab,
            "client",
            &self.exe,
            &format!("{VIP}:80"),
            10,
        )?);
        Ok(())
    }

    fn seen_since(&self, t: Instant) -> Vec<Seen> {
        let Some(p) = &self.probe else {
            return Vec::new();
        };
        p.lines()
            .into_iter()
            .filter(|(at, _)| *at >= t)
            .map(|(at, v)| Seen {
                at,
                ok: v["ok"] == true,
                detail: v["detail"].as_str().unwrap_or("").to_string(),
                gap_ms: v["gap_ms"].as_u64(),
            })
            .collect()
    }

    /// A power failure: every process of the node killed, its link down.
    fn power_off(&mut self, name: &str) -> anyhow::Result<()> {
        let ns = self.lab.host(name)?.ns.clone();
        self.lab.set_link(name, 0, false)?;
        if let Ok(pids) = keepup_testkit::lab::sh("ip", &["netns", "pids", &ns]) {
            for pid in pids.split_whitespace() {
                let _ = std::process::Command::new("kill")
                    .args(["-9", pid])
                    .status();
            }
        }
        if let Some(i) = self.agents.iter().position(|(n, _)| n == name) {
            let (_, mut c) = self.agents.remove(i);
            let _ = c.wait();
        }
        Ok(())
    }

    /// Power back on: link up, agent started again.
    fn power_on(&mut self, name: &str) -> anyhow::Result<()> {
        self.lab.set_link(name, 0, true)?;
        self.start_agent(name)
    }

    fn stop_agent(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self
            .agents
            .iter()
            .position(|(n, _)| n == name)
            .context("agent not running")?;
        let pid = self.agents[i].1.id();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        let (_, mut c) = self.agents.remove(i);
        let _ = c.wait();
        Ok(())
    }

    fn holds_vip(&self, name: &str) -> bool {
        self.holds(name, VIP)
    }

    fn holds(&self, name: &str, addr: &str) -> bool {
        self.lab
            .run(name, "ip", &["-4", "-o", "addr", "show", "dev", "eth0"])
            .map(|o| o.contains(&format!("{addr}/")))
            .unwrap_or(false)
    }

    fn wait_owner(&self, name: &str, max: Duration) -> anyhow::Result<Duration> {
        let addr = if name.starts_with("db-") { WRITER } else { VIP };
        let t = Instant::now();
        while t.elapsed() < max {
            if self.holds(name, addr) {
                return Ok(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let logs: Vec<String> = ["lb-1", "lb-2", "db-1", "db-2"]
            .iter()
            .filter_map(|n| {
                let text = std::fs::read_to_string(self.dir.join(format!("{n}.log"))).ok()?;
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(8)..].join("\n");
                Some(format!("--- {n} ---\n{tail}"))
            })
            .collect();
        bail!(
            "{name} did not take its floating IP within {max:?}\n{}",
            logs.join("\n")
        )
    }

    /// Waits for the first successful reply after `since`; returns (time to it, gap the client saw).
    fn wait_service(
        &self,
        since: Instant,
        max: Duration,
    ) -> anyhow::Result<(Duration, Option<u64>)> {
        let deadline = Instant::now() + max;
        while Instant::now() < deadline {
            if let Some(s) = self
                .seen_since(since)
                .iter()
                .find(|s| s.ok && s.gap_ms.is_some())
            {
                return Ok((s.at.duration_since(since), s.gap_ms));
            }
            // Still served and never failed since: no gap at all.
            let recent = self.seen_since(since);
            if !recent.is_empty()
                && recent.iter().all(|s| s.ok)
                && since.elapsed() > Duration::from_millis(300)
            {
                return Ok((Duration::ZERO, None));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!("the client got no successful reply within {max:?} of the failure")
    }

    fn failures_since(&self, t: Instant) -> usize {
        self.seen_since(t).iter().filter(|s| !s.ok).count()
    }

    fn served_by_since(&self, t: Instant) -> Vec<String> {
        let mut names: Vec<String> = self
            .seen_since(t)
            .iter()
            .filter(|s| s.ok)
            .map(|s| s.detail.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.probe = None;
        for (_, c) in &mut self.agents {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn demo_key() -> Vec<u8> {
    let mut k = Vec::with_capacity(32);
    if let Ok(bytes) = std::fs::read("/proc/sys/kernel/random/uuid") {
        k.extend_from_slice(&bytes);
    }
    k.resize(32, b'k');
    k
}

fn gap_text(gap: Option<u64>) -> String {
    match gap {
        Some(g) => format!("{g} ms"),
        None => "none (no request failed)".to_string(),
    }
}

struct Outcome {
    what: String,
    gap: Option<u64>,
    failed_requests: usize,
}

fn walk(site: &mut Site, once: bool) -> anyhow::Result<Vec<Outcome>> {
    let t0 = site.t0;
    let pause = if once {
        Duration::from_millis(700)
    } else {
        Duration::from_secs(2)
    };
    let start = Instant::now();
    site.wait_service(start, Duration::from_secs(10))?;
    std::thread::sleep(pause);
    say(
        t0,
        &format!(
            "client requests http://{VIP}/ every 10 ms on a new connection; answered by {:?}",
            site.served_by_since(start)
        ),
    );
    let mut results = Vec::new();

    say(t0, "FAILURE 1: power failure of lb-1, the active node (every process killed, link down; no goodbye)");
    let t = Instant::now();
    site.power_off("lb-1")?;
    let took = site.wait_owner("lb-2", Duration::from_secs(10))?;
    say(t0, &format!("  lb-2 noticed the silence and took the floating IP after {} ms (dead time 200 ms), sent gratuitous ARPs", took.as_millis()));
    let (_, gap) = site.wait_service(t, Duration::from_secs(10))?;
    say(
        t0,
        &format!(
            "  client served through lb-2 again; longest gap it saw: {}",
            gap_text(gap)
        ),
    );
    results.push(Outcome {
        what: "power failure of the active LB node".into(),
        gap,
        failed_requests: site.failures_since(t),
    });
    std::thread::sleep(pause);

    say(t0, "FAILURE 2: web-2 dies (its web server killed)");
    let t = Instant::now();
    site.kill_web("web-2")?;
    std::thread::sleep(Duration::from_millis(1500));
    let failed = site.failures_since(t);
    let after = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    say(t0, &format!(
        "  the load balancer retried on another backend and marked web-2 down; failed client requests: {failed}; now answered by {:?}",
        site.served_by_since(after)
    ));
    results.push(Outcome {
        what: "web server death".into(),
        gap: None,
        failed_requests: failed,
    });
    site.start_web("web-2")?;
    say(
        t0,
        "  web-2 restarted: health checks bring it back after 2 good checks",
    );

    say(
        t0,
        "lb-1 powers back on; failback is off, so lb-2 keeps the floating IP",
    );
    site.power_on("lb-1")?;
    std::thread::sleep(Duration::from_millis(1500));
    say(
        t0,
        &format!(
            "  floating IP on {}",
            if site.holds_vip("lb-2") {
                "lb-2"
            } else {
                "lb-1"
            }
        ),
    );

    say(
        t0,
        "FAILURE 3: clean stop (SIGTERM) of lb-2: it releases the IP and tells lb-1 at once",
    );
    let t = Instant::now();
    site.stop_agent("lb-2")?;
    let took = site.wait_owner("lb-1", Duration::from_secs(10))?;
    say(
        t0,
        &format!(
            "  lb-1 took the floating IP {} ms after the signal",
            took.as_millis()
        ),
    );
    let (_, gap) = site.wait_service(t, Duration::from_secs(10))?;
    say(
        t0,
        &format!(
            "  client served through lb-1; longest gap it saw: {}",
            gap_text(gap)
        ),
    );
    results.push(Outcome {
        what: "clean stop of the active LB node".into(),
        gap,
        failed_requests: site.failures_since(t),
    });
    site.start_agent("lb-2")?;
    std::thread::sleep(pause.max(Duration::from_millis(1500)));

    say(
        t0,
        "FAILURE 4: asymmetric partition: lb-1 and lb-2 can no longer hear each other, but both still hear the witness",
    );
    let t = Instant::now();
    site.lab.block("lb-1", "lb-2", true, true)?;
    site.lab.block("lb-2", "lb-1", true, true)?;
    let mut most = 0;
    let mut holders = std::collections::BTreeSet::new();
    while t.elapsed() < Duration::from_secs(3) {
        let now: Vec<&str> = ["lb-1", "lb-2"]
            .into_iter()
            .filter(|n| site.holds_vip(n))
            .collect();
        most = most.max(now.len());
        holders.extend(now);
        std::thread::sleep(Duration::from_millis(20));
    }
    site.lab.unblock("lb-1")?;
    site.lab.unblock("lb-2")?;
    say(
        t0,
        &format!(
            "  for 3 s each saw the other as dead; at most {most} node held the floating IP at once ({}): the witness kept seeing the holder renew its lease, so the other could not take it (keepalived and Heartbeat would both hold it)",
            holders.into_iter().collect::<Vec<_>>().join(", ")
        ),
    );
    let (_, gap) = site.wait_service(t, Duration::from_secs(10))?;
    results.push(Outcome {
        what: "asymmetric partition between the LB nodes".into(),
        gap,
        failed_requests: site.failures_since(t),
    });
    if most > 1 {
        anyhow::bail!("two nodes held the floating IP during the asymmetric partition");
    }
    std::thread::sleep(pause);

    if !site.dbs.is_empty() {
        site.wait_owner("db-1", Duration::from_secs(20))?;
        site.sql("CREATE DATABASE IF NOT EXISTS shop; CREATE TABLE IF NOT EXISTS shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, item VARCHAR(20))")?;
        let mut acked = 0;
        for i in 0..20 {
            if site
                .sql(&format!(
                    "INSERT INTO shop.orders (item) VALUES ('order-{i}')"
                ))
                .is_ok()
            {
                acked += 1;
            }
        }
        say(
            t0,
            &format!("application wrote {acked} orders through the writer IP {WRITER} (on db-1)"),
        );
        say(t0, "FAILURE 5: power failure of db-1, the database primary");
        let t = Instant::now();
        site.power_off("db-1")?;
        let took = site.wait_owner("db-2", Duration::from_secs(20))?;
        let mut first = None;
        while t.elapsed() < Duration::from_secs(20) {
            if site
                .sql("INSERT INTO shop.orders (item) VALUES ('after-failover')")
                .is_ok()
            {
                first = Some(t.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let first = first.context("no write accepted through the writer IP after the failover")?;
        let kept = site.sql("SELECT COUNT(*) FROM shop.orders WHERE item LIKE 'order-%'")?;
        say(t0, &format!(
            "  db-2's agent promoted db-2 and took the writer IP after {} ms; first write accepted after {} ms; orders kept: {} of {acked}",
            took.as_millis(),
            first.as_millis(),
            kept.trim()
        ));
        if kept.trim() != acked.to_string() {
            bail!(
                "acknowledged orders were lost: {} of {acked} kept",
                kept.trim()
            );
        }
        results.push(Outcome {
            what: "power failure of the database primary".into(),
            gap: Some(first.as_millis() as u64),
            failed_requests: 0,
        });
    }
    let end = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    say(
        t0,
        &format!("site healthy: answered by {:?}", site.served_by_since(end)),
    );
    Ok(results)
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if !keepup_testkit::require::is_root() {
        bail!("keepup demo builds network namespaces and moves IP addresses, which needs root: run it as root (sudo keepup demo)");
    }
    if keepup_testkit::require::program("ip").is_none() {
        bail!("keepup demo needs the `ip` command (Debian package iproute2)");
    }
    let t0 = Instant::now();
    let mut site = Site::build(t0)?;
    let results = walk(&mut site, args.once);
    match &results {
        Ok(r) => {
            say(t0, "SUMMARY (gap = longest time the client got no answer)");
            for o in r {
                say(
                    t0,
                    &format!(
                        "  {:<36} service restored, gap {}, failed requests {}",
                        o.what,
                        gap_text(o.gap),
                        o.failed_requests
                    ),
                );
            }
        }
        Err(e) => say(
            t0,
            &format!("DEMO FAILED: {e:#} (agent logs in {})", site.dir.display()),
        ),
    }
    if args.keep && results.is_ok() {
        say(t0, "the site keeps running; press Ctrl-C to remove it");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(crate::cmd::run::shutdown_signal());
    }
    if results.is_err() || std::env::var_os("KEEPUP_DEMO_KEEP_LOGS").is_some() {
        // Keep the logs for a post-mortem.
        let keep = std::env::temp_dir().join("keepup-demo-failed-logs");
        let _ = std::fs::remove_dir_all(&keep);
        let _ = std::fs::rename(&site.dir, &keep);
        say(t0, &format!("agent logs kept in {}", keep.display()));
    }
    drop(site);
    say(t0, "removed every namespace and process the demo created");
    results.map(|_| ExitCode::SUCCESS)
}
