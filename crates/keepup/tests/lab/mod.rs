//! A small DSL over the namespace lab for agent scenarios: a cluster of
//! `keepup run` agents, each in its own namespace with a web server that
//! answers with its node name, a client namespace, and a VIP.

#![allow(dead_code, clippy::unwrap_used)]

use keepup_testkit::lab::Lab;
use keepup_testkit::require;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const VIP: &str = "10.77.0.100";
pub const KEY: &[u8] = b"lab test key, 32 bytes long!!!!!";

pub fn keepup() -> &'static str {
    env!("CARGO_BIN_EXE_keepup")
}

/// Skips (or fails under CI) unless root with ip and nft available.
pub fn can_run(test: &str) -> bool {
    require::root(test) && require::has_program(test, "ip") && require::has_program(test, "nft")
}

/// [`can_run`], plus mariadbd and the mariadb client (database lab tests).
pub fn can_run_mariadb(test: &str) -> bool {
    can_run(test)
        && require::available(
            test,
            "mariadbd (Debian package mariadb-server)",
            keepup_db::local_server::available(),
        )
        && require::has_program(test, "mariadb")
}

pub struct Cluster {
    pub lab: Lab,
    pub dir: PathBuf,
    /// Agents' state directories (tmpfs).
    pub state: PathBuf,
    pub config: PathBuf,
    agents: HashMap<String, Child>,
    names: Vec<String>,
    probe: Option<keepup_testkit::probe::ProbeProcess>,
}

pub struct Builder {
    group_extra: String,
    nodes: Vec<(String, u32)>,
    witnesses: Vec<String>,
    links: u8,
    extra: String,
    timing: String,
    ping: bool,
    resource: Option<String>,
}

impl Builder {
    pub fn new(nodes: &[(&str, u32)]) -> Builder {
        Builder {
            nodes: nodes.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            witnesses: Vec::new(),
            group_extra: String::new(),
            links: 1,
            extra: String::new(),
            timing: "heartbeat_ms = 50\ndead_ms = 200\nwarn_ms = 100\ninitial_dead_ms = 1000\n"
                .into(),
            ping: false,
            resource: None,
        }
    }
    /// Replaces the group's VIP resource with this `[[group.resource]]` body.
    pub fn resource(mut self, toml: &str) -> Self {
        self.resource = Some(toml.to_string());
        self
    }
    /// Adds keys to the `[[group]]` table (before its resources).
    pub fn group(mut self, toml: &str) -> Self {
        self.group_extra.push_str(toml);
        self
    }
    /// Adds a witness node `name` (votes, holds nothing).
    pub fn witness(mut self, name: &str) -> Self {
        self.nodes.push((name.to_string(), 0));
        self.witnesses.push(name.to_string());
        self
    }
    pub fn links(mut self, n: u8) -> Self {
        self.links = n;
        self
    }
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self
    }
    /// Each node pings the client host (10.77.0.200) as its "gateway".
    pub fn ping_client(mut self) -> Self {
        self.ping = true;
        self
    }
    pub fn build(self, test: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("keepup-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, KEY).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut toml = format!(
            "[cluster]\nname = \"lab\"\nkey_file = \"{}\"\n\n[timing]\n{}\n",
            key.display(),
            self.timing
        );
        if self.ping {
            toml.push_str("[split_brain]\nping_targets = [\"10.77.0.200\"]\nping_interval_ms = 50\nping_fail_count = 3\n\n");
        }
        let mut lab = Lab::new(self.links).unwrap();
        for (i, (name, prio)) in self.nodes.iter().enumerate() {
            let h = lab.add_host(name, i as u8 + 1).unwrap();
            let addrs: Vec<String> = (0..self.links)
                .map(|l| format!("\"{}\"", h.addr(l)))
                .collect();
            let role = if self.witnesses.contains(name) {
                "role = \"witness\"\n"
            } else {
                ""
            };
            toml.push_str(&format!(
                "[[node]]\nname = \"{name}\"\naddresses = [{}]\npriority = {prio}\n{role}\n",
                addrs.join(", ")
            ));
        }
        lab.add_host("client", 200).unwrap();
        let resource = self.resource.clone().unwrap_or_else(|| format!(
            "type = \"vip\"\naddress = \"{VIP}/24\"\ninterface = \"eth0\"\ngarp_count = 2\ngarp_interval_ms = 50\nmonitor_interval_ms = 200\n"
        ));
        toml.push_str(&format!(
            "[[group]]\nname = \"site\"\n{}\n[[group.resource]]\n{resource}\n{}",
            self.group_extra, self.extra
        ));
        let config = dir.join("keepup.toml");
        std::fs::write(&config, toml).unwrap();
        let mut c = Cluster {
            lab,
            state: keepup_testkit::lab::state_root(test),
            dir,
            config,
            agents: HashMap::new(),
            names: self.nodes.iter().map(|(n, _)| n.clone()).collect(),
            probe: None,
        };
        for n in c.names.clone() {
            let mut cmd = c.lab.command(&n, keepup()).unwrap();
            cmd.args(["internal", "web", "--name", &n, "--listen", "0.0.0.0:80"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c.lab.spawn(cmd).unwrap();
        }
        c
    }
}

impl Cluster {
    pub fn start(&mut self, name: &str) {
        self.start_custom(name, &[], &[]);
    }

    /// Starts node `name`'s agent with its wall clock shifted by `offset`
    /// (libfaketime, e.g. "-1h"); CLOCK_MONOTONIC is left alone.
    pub fn start_with_faketime(&mut self, name: &str, offset: &str) {
        let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
        assert!(
            std::path::Path::new(lib).exists(),
            "{lib} missing (apt-get install faketime)"
        );
        self.start_custom(
            name,
            &[],
            &[
                ("LD_PRELOAD", lib),
                ("FAKETIME", offset),
                ("DONT_FAKE_MONOTONIC", "1"),
            ],
        );
    }

    /// Starts node `name`'s agent through `wrapper` (a command that execs
    /// its arguments, e.g. setpriv; empty: none) with extra `env`.
    pub fn start_custom(&mut self, name: &str, wrapper: &[&str], env: &[(&str, &str)]) {
        self.start_program(name, keepup(), wrapper, env);
    }

    /// Starts node `name`'s agent from the executable `program` (e.g. an
    /// earlier release, for rolling upgrades), through `wrapper`, with `env`.
    pub fn start_program(
        &mut self,
        name: &str,
        program: &str,
        wrapper: &[&str],
        env: &[(&str, &str)],
    ) {
        // Appended: a restarted agent's log follows its earlier run's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap();
        let mut cmd = match wrapper.split_first() {
            None => self.lab.command(name, program).unwrap(),
            Some((first, args)) => {
                let mut c = self.lab.command(name, first).unwrap();
                c.args(args).arg(program);
                c
            }
        };
        cmd.arg("-c")
            .arg(&self.config)
            .args(["--node", name, "run", "--state-dir"])
            .arg(self.state.join(name))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        self.agents.insert(name.to_string(), child);
    }

    /// The PID of node `name`'s agent.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.agents.get(name).map(|c| c.id())
    }

    pub fn start_all(&mut self) {
        for n in self.names.clone() {
            self.start(&n);
        }
    }

    /// kill -9 (of `ip netns exec`'s exec'd keepup: same PID).
    pub fn kill9(&mut self, name: &str) {
        if let Some(mut c) = self.agents.remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs SQL as the local test servers' admin account from the client
    /// namespace (`mariadb -N -B`: tab-separated rows, no header).
    pub fn sql(&self, host: &str, q: &str) -> anyhow::Result<String> {
        self.lab.sql(
            "client",
            host,
            keepup_db::local_server::ADMIN_USER,
            keepup_db::local_server::ADMIN_PASSWORD,
            q,
        )
    }

    /// True while the test has agent `name` running.
    pub fn is_running(&self, name: &str) -> bool {
        self.agents.contains_key(name)
    }

    /// Sends a signal (`-HUP`, ...) to a running agent.
    pub fn signal(&self, name: &str, sig: &str) {
        let c = self.agents.get(name).expect("agent running");
        let _ = Command::new("kill")
            .args([sig, &c.id().to_string()])
            .status();
    }

    /// SIGTERM, then wait for the agent to exit.
    pub fn term(&mut self, name: &str) -> std::process::ExitStatus {
        let mut c = self.agents.remove(name).expect("agent running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().unwrap()
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Nodes whose namespace has the VIP configured.
    pub fn vip_holders(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|n| {
                self.lab
                    .run(n, "ip", &["-4", "-o", "addr", "show", "dev", "eth0"])
                    .map(|o| o.contains(&format!("{VIP}/")))
                    .unwrap_or(false)
            })
            .cloned()
            .collect()
    }

    /// Nodes with a running agent whose namespace has the VIP. (After kill -9
    /// the dead agent's namespace keeps the address, as a host whose daemon
    /// died would; clients follow the new owner's gratuitous ARP.)
    pub fn live_vip_holders(&self) -> Vec<String> {
        self.vip_holders()
            .into_iter()
            .filter(|n| self.agents.contains_key(n))
            .collect()
    }

    /// Waits until, among running agents, exactly `name` holds the VIP; returns how long it took.
    pub fn wait_vip_on(&self, name: &str, max: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            let h = self.live_vip_holders();
            if h == [name.to_string()] {
                return t0.elapsed();
            }
            if t0.elapsed() > max {
                panic!(
                    "VIP not on {name} after {max:?} (holders {h:?})\n--- logs ---\n{}",
                    self.all_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Node `name`'s entry in a status document's node list.
    pub fn node_in(status: &Value, name: &str) -> Value {
        status["cluster"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no node {name} in status"))
    }

    /// Waits until node `name` reports that it owns group `site`.
    pub fn wait_acquired(&self, name: &str, max: Duration) {
        let t0 = Instant::now();
        loop {
            if let Ok(out) = self.lab.run(
                name,
                keepup(),
                &["-c", self.config.to_str().unwrap(), "status", "--json"],
            ) {
                if let Ok(v) = serde_json::from_str::<Value>(&out) {
                    if v["cluster"]["groups"][0]["owner"] == name {
                        return;
                    }
                }
            }
            assert!(
                t0.elapsed() < max,
                "{name} never acquired the group\n{}",
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn all_logs(&self) -> String {
        self.names
            .iter()
            .map(|n| format!("== {n} ==\n{}", self.log(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `keepup status --json` inside node `name`.
    pub fn status(&self, name: &str) -> Value {
        let out = self
            .lab
            .run(
                name,
                keepup(),
                &["-c", self.config.to_str().unwrap(), "status", "--json"],
            )
            .unwrap();
        serde_json::from_str(&out).unwrap()
    }

    /// Waits until node `name`'s API answers.
    pub fn wait_api(&self, name: &str) {
        let t0 = Instant::now();
        while self
            .lab
            .run(
                name,
                keepup(),
                &["-c", self.config.to_str().unwrap(), "status", "--json"],
            )
            .is_err()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "API of {name} never answered\n{}",
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a client requesting http://VIP/ every 10 ms from the client namespace.
    pub fn start_probe(&mut self) {
        self.probe = Some(
            keepup_testkit::probe::ProbeProcess::spawn(
                &self.lab,
                "client",
                keepup(),
                &format!("{VIP}:80"),
                10,
            )
            .unwrap(),
        );
    }

    /// Everything the probe reported so far.
    pub fn probe_lines(&self) -> Vec<Value> {
        self.probe
            .as_ref()
            .map(|p| p.lines().into_iter().map(|(_, v)| v).collect())
            .unwrap_or_default()
    }

    /// Waits until the probe has been served by `name` after index `after`; returns the line.
    pub fn wait_served_by(&self, name: &str, after: usize, max: Duration) -> Value {
        let t0 = Instant::now();
        loop {
            let lines = self.probe_lines();
            if let Some(v) = lines
                .iter()
                .skip(after)
                .find(|v| v["ok"] == true && v["detail"] == name)
            {
                return v.clone();
            }
            assert!(
                t0.elapsed() < max,
                "client never served by {name}; probe saw {lines:?}\n{}",
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut c) in self.agents.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.probe = None;
        let _ = std::fs::remove_dir_all(&self.state);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
