//! Issue #10's Jepsen-style test: real mariadbd servers and real agents in
//! lab namespaces (three database nodes a, b, c; three voters), clients in
//! the client namespace inserting `(client, seq)` rows through the writer
//! VIP and recording which commits were acknowledged, a sampler recording
//! every server's `read_only`, and a scheduler injecting one fault after
//! another: kill -9 of the primary's mariadbd, kill -9 and SIGSTOP of the
//! primary's agent, a full partition of the primary's node, heartbeat-only
//! and database-only cuts, a replica cut off before the primary fails, and a
//! power failure. After each fault it heals the lab the way an operator
//! would (restart what died, `keepup db setup` to rejoin a returned server,
//! `--reseed` when setup says its history diverged).
//!
//! The checker (`keepup_testkit::dbcheck`): every acknowledged row is on the
//! final primary, each client's rows in commit order, the servers converge
//! (same checksum), and at no sampled stretch were two servers writable.
//!
//! One round of every fault is the short run in `cargo test` (~1 minute).
//! `bench/db.sh` runs the long one through the same code:
//! `KEEPUP_DB_FAULT_ROUNDS=N` repeats the list, `KEEPUP_DB_FAULTS=A,B` picks
//! faults, `KEEPUP_DB_SEMI_SYNC=relaxed` runs relaxed semi-sync (500 ms
//! timeout; lost writes are then counted, not failed), and
//! `KEEPUP_DB_FAULT_REPORT=FILE` writes per-fault write gaps and the
//! checker's totals as JSON lines.

#![allow(clippy::unwrap_used)]

mod lab;

use keepup_db::local_server::{self, LocalServer, LocalServerOptions};
use keepup_testkit::{dbcheck, dbclient};
use lab::{can_run_mariadb, Builder};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

const WRITER: &str = "10.77.0.101";
const APP_USER: &str = "app";
const APP_PASSWORD: &str = "app-pw";
const HEARTBEAT_PORT: u16 = 7946;
const NODES: [(&str, &str, &str); 3] = [
    ("a", "db-a", "10.77.0.1"),
    ("b", "db-b", "10.77.0.2"),
    ("c", "db-c", "10.77.0.3"),
];

/// One fault the scheduler injects (the primary is found when it starts).
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// kill -9 of the primary's mariadbd.
    KillPrimaryServer,
    /// kill -9 of the primary node's agent.
    KillPrimaryAgent,
    /// SIGSTOP of the primary node's agent for 3 s, then SIGCONT.
    PausePrimaryAgent,
    /// Every packet in and out of the primary's node dropped for 4 s.
    PartitionPrimary,
    /// Only the heartbeat port cut between the primary and another node.
    HeartbeatOnlyCut,
    /// Only MariaDB's port cut between the primary and one replica.
    DatabaseOnlyCut,
    /// One replica cut from the primary's database, then the primary's
    /// mariadbd killed: the other replica (which has every acknowledged
    /// row) must become primary.
    CutReplicaThenKillPrimary,
    /// The primary's node loses power: link down, agent and mariadbd dead.
    PowerOffPrimary,
    /// Every replica cut from the primary's database for 3 s (longer than
    /// the relaxed mode's semi-sync timeout), then the primary's mariadbd
    /// killed. Strict mode: writes block, none acknowledged is lost.
    /// Relaxed: writes acknowledged after the timeout are lost (counted).
    CutAllReplicasThenKillPrimary,
}

const FAULTS: [Fault; 9] = [
    Fault::HeartbeatOnlyCut,
    Fault::KillPrimaryServer,
    Fault::DatabaseOnlyCut,
    Fault::PausePrimaryAgent,
    Fault::CutReplicaThenKillPrimary,
    Fault::KillPrimaryAgent,
    Fault::PartitionPrimary,
    Fault::CutAllReplicasThenKillPrimary,
    Fault::PowerOffPrimary,
];

/// The faults to run: `KEEPUP_DB_FAULTS=KillPrimaryServer,PowerOffPrimary`
/// (names as in [`Fault`]) or all of them.
fn faults_wanted() -> Vec<Fault> {
    match std::env::var("KEEPUP_DB_FAULTS") {
        Ok(list) if !list.trim().is_empty() => {
            let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
            for w in &wanted {
                assert!(
                    FAULTS.iter().any(|f| format!("{f:?}") == *w),
                    "KEEPUP_DB_FAULTS: unknown fault {w:?}; known: {FAULTS:?}"
                );
            }
            FAULTS
                .into_iter()
                .filter(|f| wanted.contains(&format!("{f:?}").as_str()))
                .collect()
        }
        _ => FAULTS.to_vec(),
    }
}

/// Relaxed semi-sync (`KEEPUP_DB_SEMI_SYNC=relaxed`, 500 ms timeout): the
/// benchmark's comparison run, where acknowledged writes may be lost.
fn relaxed() -> bool {
    std::env::var("KEEPUP_DB_SEMI_SYNC").is_ok_and(|v| v == "relaxed")
}

struct Site {
    c: lab::Cluster,
    servers: BTreeMap<String, LocalServer>,
    dir: std::path::PathBuf,
    log: Vec<String>,
    reseeds: usize,
    /// Nodes "powered off" by the current fault.
    powered_off: Vec<&'static str>,
}

fn server_of(node: &str) -> &'static str {
    NODES.iter().find(|n| n.0 == node).map(|n| n.1).unwrap()
}
fn ip_of(node: &str) -> &'static str {
    NODES.iter().find(|n| n.0 == node).map(|n| n.2).unwrap()
}

fn start_server(c: &lab::Cluster, node: &str, id: u32) -> LocalServer {
    let mut o = LocalServerOptions::new(id);
    o.netns = Some(c.lab.host(node).unwrap().ns.clone());
    o.bind_address = ip_of(node).to_string();
    o.admin_host = "10.77.0.%".into();
    o.listen_all = true;
    // What `keepup db setup` tells the operator to keep in my.cnf.
    o.read_only = true;
    o.extra_args = vec![
        "--skip-slave-start".into(),
        "--rpl-semi-sync-slave-enabled=ON".into(),
        "--rpl-semi-sync-master-wait-point=AFTER_SYNC".into(),
        format!(
            "--rpl-semi-sync-master-timeout={}",
            keepup_config::STRICT_SEMI_SYNC_TIMEOUT_MS
        ),
    ];
    LocalServer::start(server_of(node), 3306, o).unwrap()
}

fn site(test: &str) -> Option<Site> {
    if !can_run_mariadb(test) {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("keepup-dbfaults-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let creds = dir.join("admin.cnf");
    local_server::write_credentials_file(&creds).unwrap();
    let mut database = format!(
        "[database]\ntopology = \"master-slave\"\npreferred_primary = \"db-a\"\nsemi_sync = true\n{}\
         admin_credentials_file = \"{}\"\nreplication_password_file = \"{}\"\nconnect_timeout_ms = 500\n\n",
        if relaxed() {
            "semi_sync_relaxed = true\nsemi_sync_timeout_ms = 500\n"
        } else {
            ""
        },
        creds.display(),
        dir.join("repl.password").display()
    );
    for (node, server, ip) in NODES {
        database.push_str(&format!(
            "[[database.server]]\nname = \"{server}\"\naddress = \"{ip}:3306\"\nnode = \"{node}\"\n\n"
        ));
    }
    let mut c = Builder::new(&[("a", 300), ("b", 200), ("c", 100)])
        .resource(&format!(
            "type = \"db-primary\"\nmonitor_interval_ms = 300\n\n[[group.resource]]\ntype = \"vip\"\naddress = \"{WRITER}/24\"\ninterface = \"eth0\"\n"
        ))
        .extra(&database)
        .build(test);
    let mut servers = BTreeMap::new();
    for (i, (node, server, _)) in NODES.iter().enumerate() {
        servers.insert(server.to_string(), start_server(&c, node, i as u32 + 1));
    }
    // The preferred primary starts writable (a fresh install).
    c.sql("10.77.0.1", "SET GLOBAL read_only = OFF").unwrap();
    c.sql("10.77.0.1",
        &format!(
            "CREATE DATABASE jepsen; \
             CREATE TABLE {} (id BIGINT AUTO_INCREMENT PRIMARY KEY, client INT NOT NULL, seq BIGINT NOT NULL, KEY (client, seq)) ENGINE=InnoDB; \
             CREATE USER '{APP_USER}'@'10.77.0.%' IDENTIFIED BY '{APP_PASSWORD}'; \
             GRANT SELECT, INSERT ON jepsen.* TO '{APP_USER}'@'10.77.0.%'",
            dbclient::TABLE
        ),
    )
    .unwrap();
    let cfg = c.config.to_str().unwrap().to_string();
    let setup = c.lab.run("a", lab::keepup(), &["-c", &cfg, "db", "setup"]);
    assert!(setup.is_ok(), "keepup db setup: {setup:?}");
    c.start_all();
    c.wait_acquired("a", Duration::from_secs(20));
    Some(Site {
        c,
        servers,
        dir,
        log: Vec::new(),
        reseeds: 0,
        powered_off: Vec::new(),
    })
}

impl Site {
    /// The node whose server is writable (admin check); None while none is.
    fn primary_node(&self) -> Option<&'static str> {
        NODES
            .iter()
            .find(|(_, _, ip)| {
                self.c
                    .sql(ip, "SELECT @@GLOBAL.read_only")
                    .map(|o| o.trim() == "0")
                    .unwrap_or(false)
            })
            .map(|n| n.0)
    }

    fn note(&mut self, what: String) {
        eprintln!("db-faults: {what}");
        self.log.push(what);
    }

    /// Injects one fault; returns when its damage is done (the heal comes after).
    fn inject(&mut self, fault: Fault) {
        // Never skipped: a fault that silently did nothing would prove nothing.
        let t0 = Instant::now();
        let p = loop {
            if let Some(p) = self.primary_node() {
                break p;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{fault:?}: no writable primary to inject it on\n{}",
                self.c.all_logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let others: Vec<&str> = NODES.iter().map(|n| n.0).filter(|n| *n != p).collect();
        self.note(format!("{fault:?} (primary on {p})"));
        match fault {
            Fault::KillPrimaryServer => {
                self.servers.get_mut(server_of(p)).unwrap().kill9();
                std::thread::sleep(Duration::from_secs(3));
            }
            Fault::KillPrimaryAgent => {
                self.c.kill9(p);
                std::thread::sleep(Duration::from_secs(3));
            }
            Fault::PausePrimaryAgent => {
                self.c.signal(p, "-STOP");
                std::thread::sleep(Duration::from_secs(3));
                self.c.signal(p, "-CONT");
                std::thread::sleep(Duration::from_secs(1));
            }
            Fault::PartitionPrimary => {
                self.c.lab.partition(p, true).unwrap();
                std::thread::sleep(Duration::from_secs(4));
                self.c.lab.partition(p, false).unwrap();
            }
            Fault::HeartbeatOnlyCut => {
                let o = others[0];
                self.c.lab.block_udp_port(p, o, HEARTBEAT_PORT).unwrap();
                self.c.lab.block_udp_port(o, p, HEARTBEAT_PORT).unwrap();
                std::thread::sleep(Duration::from_secs(3));
            }
            Fault::DatabaseOnlyCut => {
                let o = others[1];
                self.c.lab.block_tcp_port(p, o, 3306).unwrap();
                self.c.lab.block_tcp_port(o, p, 3306).unwrap();
                std::thread::sleep(Duration::from_millis(1500));
                // Issue #10, "a replica that receives nothing shown healthy":
                // its IO thread still says Yes (no timeout yet), but status
                // seen from the third node says what it has not received.
                let st = self.db_status(others[0]);
                let cut = st["servers"]
                    .as_array()
                    .and_then(|l| l.iter().find(|x| x["name"] == server_of(o)))
                    .cloned()
                    .unwrap_or_default();
                let flagged = st["problems"].as_array().is_some_and(|l| {
                    l.iter()
                        .any(|x| x["kind"] == "not_receiving" && x["server"] == server_of(o))
                });
                assert!(
                    cut["not_received"].as_u64().unwrap_or(0) > 0 && flagged,
                    "a replica cut from the primary must show what it lacks: {st}"
                );
                self.note(format!(
                    "{} cut: not_received {} and a not_receiving problem",
                    server_of(o),
                    cut["not_received"]
                ));
                std::thread::sleep(Duration::from_millis(1500));
            }
            Fault::CutReplicaThenKillPrimary => {
                // Cut the replica on the next-best node, so the agents' choice
                // of node and the choice of server differ.
                let o = others[0];
                self.c.lab.block_tcp_port(p, o, 3306).unwrap();
                self.c.lab.block_tcp_port(o, p, 3306).unwrap();
                std::thread::sleep(Duration::from_secs(2));
                self.servers.get_mut(server_of(p)).unwrap().kill9();
                std::thread::sleep(Duration::from_secs(4));
            }
            Fault::CutAllReplicasThenKillPrimary => {
                for o in &others {
                    self.c.lab.block_tcp_port(p, o, 3306).unwrap();
                    self.c.lab.block_tcp_port(o, p, 3306).unwrap();
                }
                std::thread::sleep(Duration::from_secs(3));
                self.servers.get_mut(server_of(p)).unwrap().kill9();
                for o in &others {
                    self.c.lab.unblock(o).unwrap();
                }
                std::thread::sleep(Duration::from_secs(4));
            }
            Fault::PowerOffPrimary => {
                self.powered_off.push(p);
                self.c.lab.set_link(p, 0, false).unwrap();
                self.c.kill9(p);
                self.servers.get_mut(server_of(p)).unwrap().kill9();
                std::thread::sleep(Duration::from_secs(3));
            }
        }
    }

    /// `keepup db status --json` run on `node` (exit 2 on problems is fine).
    fn db_status(&self, node: &str) -> serde_json::Value {
        let out = self
            .c
            .lab
            .command(node, lab::keepup())
            .unwrap()
            .args([
                "-c",
                self.c.config.to_str().unwrap(),
                "db",
                "status",
                "--json",
            ])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "db status on {node}: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Heals the lab as an operator would, until a writable primary takes
    /// writes through the VIP and every server replicates again.
    fn heal(&mut self) {
        for (node, server, _) in NODES {
            self.c.lab.unblock(node).unwrap();
            let _ = self.c.lab.partition(node, false);
            if self.powered_off.contains(&node) {
                // A power cycle loses the addresses set at run time: the
                // returning node must not answer ARP for the writer IP with
                // its own MAC (seen: clients then reached nobody for ~28 s,
                // until their ARP entry expired). Before its link comes up.
                let _ = self.c.lab.run(
                    node,
                    "ip",
                    &["addr", "del", &format!("{WRITER}/24"), "dev", "eth0"],
                );
            }
            self.c.lab.set_link(node, 0, true).unwrap();
            self.powered_off.retain(|n| *n != node);
            let s = self.servers.get_mut(server).unwrap();
            if !s.running() {
                s.restart().unwrap();
            }
            if !self.c.is_running(node) {
                self.c.start(node);
            }
        }
        if std::env::var_os("KEEPUP_SHOW_LOGS").is_some() {
            let out = self
                .c
                .lab
                .command("client", lab::keepup())
                .unwrap()
                .args(["-c", self.c.config.to_str().unwrap(), "db", "status"])
                .output()
                .unwrap();
            eprintln!(
                "db-faults: status at heal (mono {} ms):\n{}",
                keepup_testkit::monotonic_ns() / 1_000_000,
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let t0 = Instant::now();
        loop {
            let through_vip = self
                .c
                .sql(WRITER, "SELECT @@GLOBAL.read_only")
                .map(|o| o.trim() == "0")
                .unwrap_or(false);
            if through_vip {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(40),
                "no writable primary behind {WRITER} 40 s after healing\n{}",
                self.c.all_logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Rejoin returned servers (and re-seed one whose history diverged:
        // its transactions were never acknowledged, semi-sync AFTER_SYNC).
        let cfg = self.c.config.to_str().unwrap().to_string();
        let mut reseed: Vec<String> = Vec::new();
        for attempt in 0..6 {
            let p = self.primary_node().unwrap_or("a");
            let mut args = vec!["-c", cfg.as_str(), "db", "setup"];
            for r in &reseed {
                args.push("--reseed");
                args.push(r);
            }
            match self.c.lab.run(p, lab::keepup(), &args) {
                Ok(_) => {
                    if !reseed.is_empty() {
                        self.reseeds += reseed.len();
                        self.note(format!("re-seeded {reseed:?}"));
                    }
                    return;
                }
                Err(e) => {
                    let text = e.to_string();
                    let named: Vec<String> = text
                        .split("--reseed ")
                        .skip(1)
                        .filter_map(|t| {
                            t.split(|ch: char| !(ch.is_alphanumeric() || ch == '-'))
                                .next()
                                .map(str::to_string)
                        })
                        .filter(|n| NODES.iter().any(|x| x.1 == n))
                        .collect();
                    let diverged = text.contains("diverged") || text.contains("cannot_rejoin");
                    if diverged {
                        for n in named {
                            if !reseed.contains(&n) {
                                reseed.push(n);
                            }
                        }
                    }
                    if attempt == 5 {
                        panic!(
                            "keepup db setup keeps failing: {text}\n{}",
                            self.c.all_logs()
                        );
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Waits until every server applied the primary's position.
    fn converge(&self, primary: &str) {
        let pos = self
            .c
            .sql(ip_of(primary), "SELECT @@GLOBAL.gtid_binlog_pos")
            .unwrap();
        for (node, _, ip) in NODES {
            if node == primary {
                continue;
            }
            let r = self
                .c
                .sql(
                    ip,
                    &format!("SELECT MASTER_GTID_WAIT('{}', 30)", pos.trim()),
                )
                .unwrap();
            assert_eq!(r.trim(), "0", "{node} did not reach {pos} within 30 s");
        }
    }
}

fn spawn_recorder(
    c: &mut lab::Cluster,
    host: &str,
    args: &[String],
    out: &std::path::Path,
) -> usize {
    let mut cmd = c.lab.command(host, lab::keepup()).unwrap();
    cmd.args(args)
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::null());
    c.lab.spawn(cmd).unwrap()
}

#[test]
fn no_acknowledged_write_lost_and_never_two_writable_primaries_under_faults() {
    let Some(mut s) = site("dbfaults") else {
        return;
    };
    let rounds: usize = std::env::var("KEEPUP_DB_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let writes_file = s.dir.join("writes.jsonl");
    let hours = "86400".to_string();
    let s_args: Vec<String> = ["internal", "db-clients", "--target"]
        .iter()
        .map(|x| x.to_string())
        .chain([
            format!("{WRITER}:3306"),
            "--user".into(),
            APP_USER.into(),
            "--password".into(),
            APP_PASSWORD.into(),
            "--clients".into(),
            "3".into(),
            "--duration-s".into(),
            hours.clone(),
        ])
        .collect();
    let writers = spawn_recorder(&mut s.c, "client", &s_args, &writes_file);
    // One sampler inside each node's namespace, on its own server: it keeps
    // answering while the node is partitioned (its own address goes over
    // loopback), which is when a second writable server matters most.
    let mut samplers = Vec::new();
    for (node, server, ip) in NODES {
        let args: Vec<String> = [
            "internal",
            "db-sample",
            "--server",
            &format!("{server}={ip}:3306"),
            "--user",
            APP_USER,
            "--password",
            APP_PASSWORD,
            "--duration-s",
            &hours,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        let file = s.dir.join(format!("samples-{node}.jsonl"));
        samplers.push((spawn_recorder(&mut s.c, node, &args, &file), file));
    }
    let t_run = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let faults = faults_wanted();
    let mut windows: Vec<(Fault, u128, u128)> = Vec::new();
    for round in 0..rounds {
        for &f in &faults {
            let t0 = Instant::now();
            let start = keepup_testkit::monotonic_ns();
            s.inject(f);
            s.heal();
            windows.push((f, start, keepup_testkit::monotonic_ns()));
            s.note(format!(
                "round {round}: {f:?} healed after {:?}",
                t0.elapsed()
            ));
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let _ = s.c.lab.child(writers).kill();
    let _ = s.c.lab.child(writers).wait();
    for (sampler, _) in &samplers {
        let _ = s.c.lab.child(*sampler).kill();
        let _ = s.c.lab.child(*sampler).wait();
    }

    let primary = s.primary_node().expect("a primary at the end");
    s.converge(primary);
    let writes = dbclient::parse_writes(&std::fs::read_to_string(&writes_file).unwrap()).unwrap();
    let mut samples = Vec::new();
    for (_, file) in &samplers {
        samples.extend(dbclient::parse_samples(&std::fs::read_to_string(file).unwrap()).unwrap());
    }
    // The sampler must have seen something, or "never two writable" is empty.
    for (_, server, _) in NODES {
        let answered = samples
            .iter()
            .filter(|x| x.server == server && x.writable.is_some())
            .count();
        assert!(
            answered > 100,
            "{server}: only {answered} read_only samples answered"
        );
    }
    let writable_servers: std::collections::BTreeSet<&str> = samples
        .iter()
        .filter(|x| x.writable == Some(true))
        .map(|x| x.server.as_str())
        .collect();
    assert!(
        writable_servers.len() >= 2 || faults.len() < 2,
        "the sampler saw only {writable_servers:?} writable: no fault moved the primary?"
    );
    let rows: Vec<dbcheck::Row> =
        s.c.sql(
            ip_of(primary),
            &format!("SELECT client, seq, id FROM {}", dbclient::TABLE),
        )
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some(dbcheck::Row {
                client: f.first()?.parse().ok()?,
                seq: f.get(1)?.parse().ok()?,
                id: f.get(2)?.parse().ok()?,
            })
        })
        .collect();
    let mut sums = BTreeMap::new();
    for (_, server, ip) in NODES {
        let out =
            s.c.sql(ip, &format!("CHECKSUM TABLE {} EXTENDED", dbclient::TABLE))
                .unwrap();
        let sum = out.split('\t').nth(1).unwrap_or("").trim().to_string();
        sums.insert(server.to_string(), sum);
    }
    let v = dbcheck::check(&writes, &rows, &samples, &sums, server_of(primary));
    let summary = format!(
        "db-faults ({} semi-sync): {} rounds of {} faults in {:.0} s: {} acknowledged, {} indeterminate, {} rows on {}, {} samples, {} re-seeds; lost {}, reordered {}, duplicated {}, diverged {:?}, two writable {:?}",
        if relaxed() { "relaxed" } else { "strict" },
        rounds,
        faults.len(),
        t_run.elapsed().as_secs_f64(),
        v.acked,
        v.indeterminate,
        rows.len(),
        server_of(primary),
        v.samples,
        s.reseeds,
        v.lost.len(),
        v.reordered.len(),
        v.duplicated.len(),
        v.diverged,
        v.two_writable,
    );
    eprintln!("{summary}");
    if std::env::var_os("KEEPUP_SHOW_LOGS").is_some() {
        eprintln!("{}", s.c.all_logs());
    }
    // Per fault: the longest stretch without an acknowledged write that
    // overlaps the fault (as the clients saw it), and writes lost whose
    // insert was sent during it.
    let mut acks: Vec<u128> = writes
        .iter()
        .filter(|w| w.acked)
        .map(|w| w.answered)
        .collect();
    acks.sort_unstable();
    let lost: std::collections::BTreeSet<(u32, u64)> = v.lost.iter().copied().collect();
    let mut report = Vec::new();
    for (f, from, to) in &windows {
        let gap = acks
            .windows(2)
            .filter(|p| p[1] > *from && p[0] < *to)
            .map(|p| p[1] - p[0])
            .max()
            .unwrap_or(to - from);
        let lost_here = writes
            .iter()
            .filter(|w| w.sent >= *from && w.sent < *to && lost.contains(&(w.client, w.seq)))
            .count();
        let line = serde_json::json!({
            "fault": format!("{f:?}"),
            "semi_sync": if relaxed() { "relaxed" } else { "strict" },
            "write_gap_ms": gap as f64 / 1e6,
            "lost": lost_here,
        });
        eprintln!("db-faults: {line}");
        report.push(line.to_string());
    }
    // Writes went through again after every fault (else later faults
    // proved nothing): an acknowledged write between its heal and the next
    // fault.
    for (k, (f, _, healed)) in windows.iter().enumerate() {
        let next = windows.get(k + 1).map(|w| w.1).unwrap_or(u128::MAX);
        assert!(
            acks.iter().any(|a| a > healed && *a < next),
            "no acknowledged write after {f:?} was healed: {summary}"
        );
    }
    if let Ok(path) = std::env::var("KEEPUP_DB_FAULT_REPORT") {
        let total = serde_json::json!({
            "summary": summary,
            "semi_sync": if relaxed() { "relaxed" } else { "strict" },
            "acked": v.acked, "indeterminate": v.indeterminate, "lost": v.lost.len(),
            "reordered": v.reordered.len(), "duplicated": v.duplicated.len(),
            "diverged": v.diverged.len(), "two_writable": v.two_writable.len(),
            "samples": v.samples, "reseeds": s.reseeds, "seconds": t_run.elapsed().as_secs_f64(),
        });
        report.push(total.to_string());
        std::fs::write(&path, report.join("\n") + "\n").unwrap();
    }
    // Relaxed mode may lose acknowledged writes (that is its documented
    // cost, counted above); everything else holds in both modes.
    let mut must = v.clone();
    if relaxed() {
        must.lost.clear();
    }
    assert!(
        must.ok(),
        "{summary}\nlost (first 20): {:?}\nreordered (first 20): {:?}\n{}\n{}",
        &v.lost[..v.lost.len().min(20)],
        &v.reordered[..v.reordered.len().min(20)],
        s.log.join("\n"),
        s.c.all_logs()
    );
    assert!(
        v.acked > 100,
        "the clients got too few writes through to prove anything: {summary}"
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}
