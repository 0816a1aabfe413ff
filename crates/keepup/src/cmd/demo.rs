//! `keepup demo`: the whole site of the README's picture, in network
//! namespaces on this machine, with a client that keeps requesting it and a
//! narrated walk through failures, each with the gap the client saw.

use anyhow::{bail, Context};
use clap::Args;
use keepup_testkit::lab::Lab;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Arguments of `keepup demo`.
#[derive(Debug, Args)]
#[command(long_about = "Builds the whole site in network namespaces on this machine (root \
needed): two keepup nodes sharing a floating IP, web servers, and a client that keeps \
requesting the site. Then it fails things and narrates each failover with the gap the \
client saw.\n\n--once runs the walk-through and exits (0 when the client saw service \
restored after every failure). --keep leaves the site running afterwards until Ctrl-C. \
Everything is removed on exit.")]
pub struct DemoArgs {
    /// Run the scripted failovers once and exit (for CI).
    #[arg(long)]
    pub once: bool,
    /// Leave the site running after the walk-through, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
}

const VIP: &str = "10.77.0.100";
const NODES: [(&str, u8, u32); 2] = [("lb-1", 1, 200), ("lb-2", 2, 100)];

struct Site {
    lab: Lab,
    dir: PathBuf,
    config: PathBuf,
    agents: Vec<(String, Child)>,
    probe_rx: mpsc::Receiver<Value>,
    probe: Child,
    t0: Instant,
}

fn say(t0: Instant, msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[{:>7.3}s] {msg}", t0.elapsed().as_secs_f64());
    let _ = out.flush();
}

impl Site {
    fn build(t0: Instant) -> anyhow::Result<Site> {
        let exe = std::env::current_exe().context("cannot find the keepup executable")?;
        let exe = exe.to_string_lossy().to_string();
        let dir = std::env::temp_dir().join(format!("keepup-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let key = dir.join("key");
        std::fs::write(&key, demo_key())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        let mut lab = Lab::new(1)?;
        let mut toml = format!(
            "[cluster]\nname = \"demo\"\nkey_file = \"{}\"\n\n[timing]\nheartbeat_ms = 50\ndead_ms = 200\nwarn_ms = 100\ninitial_dead_ms = 1000\n\n",
            key.display()
        );
        for (name, idx, prio) in NODES {
            lab.add_host(name, idx)?;
            toml.push_str(&format!(
                "[[node]]\nname = \"{name}\"\naddresses = [\"10.77.0.{idx}\"]\npriority = {prio}\n\n"
            ));
        }
        toml.push_str(&format!(
            "[[group]]\nname = \"site\"\n\n[[group.resource]]\ntype = \"vip\"\naddress = \"{VIP}/24\"\ninterface = \"eth0\"\n"
        ));
        let config = dir.join("keepup.toml");
        std::fs::write(&config, &toml)?;
        lab.add_host("client", 200)?;
        say(t0, &format!("built the lab: namespaces lb-1 (10.77.0.1), lb-2 (10.77.0.2), client (10.77.0.200); floating IP {VIP}"));

        for (name, _, _) in NODES {
            let mut web = lab.command(name, &exe)?;
            web.args(["internal", "web", "--name", name, "--listen", "0.0.0.0:80"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            lab.spawn(web)?;
        }
        let mut site = Site {
            lab,
            dir,
            config,
            agents: Vec::new(),
            probe_rx: mpsc::channel().1,
            probe: std::process::Command::new("true").spawn()?,
            t0,
        };
        for (name, _, _) in NODES {
            site.start_agent(name)?;
        }
        site.wait_owner("lb-1", Duration::from_secs(10))?;
        say(t0, "lb-1 (priority 200) won the election and holds the floating IP");

        let mut probe = site.lab.command("client", &exe)?;
        probe
            .args(["internal", "probe", "--target", &format!("{VIP}:80"), "--interval-ms", "10"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = probe.spawn()?;
        let stdout = child.stdout.take().context("probe has no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        site.probe = child;
        site.probe_rx = rx;
        Ok(site)
    }

    fn start_agent(&mut self, name: &str) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let mut cmd = self.lab.command(name, &exe.to_string_lossy())?;
        cmd.arg("-c")
            .arg(&self.config)
            .args(["--node", name, "run"])
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn()?;
        self.agents.push((name.to_string(), child));
        Ok(())
    }

    /// A power failure: every process of the node killed, its link down.
    fn power_off(&mut self, name: &str) -> anyhow::Result<()> {
        let ns = self.lab.host(name)?.ns.clone();
        self.lab.set_link(name, 0, false)?;
        if let Ok(pids) = keepup_testkit::lab::sh("ip", &["netns", "pids", &ns]) {
            for pid in pids.split_whitespace() {
                let _ = std::process::Command::new("kill").args(["-9", pid]).status();
            }
        }
        if let Some(i) = self.agents.iter().position(|(n, _)| n == name) {
            let (_, mut c) = self.agents.remove(i);
            let _ = c.wait();
        }
        Ok(())
    }

    /// Power back on: link up, web server and agent started again.
    fn power_on(&mut self, name: &str) -> anyhow::Result<()> {
        self.lab.set_link(name, 0, true)?;
        let exe = std::env::current_exe()?;
        let mut web = self.lab.command(name, &exe.to_string_lossy())?;
        web.args(["internal", "web", "--name", name, "--listen", "0.0.0.0:80"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.lab.spawn(web)?;
        self.start_agent(name)
    }

    fn agent_pid(&self, name: &str) -> Option<u32> {
        self.agents.iter().find(|(n, _)| n == name).map(|(_, c)| c.id())
    }

    fn signal(&mut self, name: &str, sig: &str) -> anyhow::Result<()> {
        let pid = self.agent_pid(name).context("agent not running")?;
        std::process::Command::new("kill").args([sig, &pid.to_string()]).status()?;
        if let Some(i) = self.agents.iter().position(|(n, _)| n == name) {
            let (_, mut c) = self.agents.remove(i);
            let _ = c.wait();
        }
        Ok(())
    }

    fn holds_vip(&self, name: &str) -> bool {
        self.lab
            .run(name, "ip", &["-4", "-o", "addr", "show", "dev", "eth0"])
            .map(|o| o.contains(&format!("{VIP}/")))
            .unwrap_or(false)
    }

    fn wait_owner(&self, name: &str, max: Duration) -> anyhow::Result<Duration> {
        let t = Instant::now();
        while t.elapsed() < max {
            if self.holds_vip(name) {
                return Ok(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        bail!("{name} did not take the floating IP within {max:?}; logs in {}", self.dir.display())
    }

    /// Waits until the client is served by `name`; returns the gap it saw (ms), if any.
    fn wait_served_by(&self, name: &str, max: Duration) -> anyhow::Result<Option<u64>> {
        let deadline = Instant::now() + max;
        let mut gap = None;
        while Instant::now() < deadline {
            match self.probe_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(v) => {
                    if let Some(g) = v["gap_ms"].as_u64() {
                        gap = Some(g);
                    }
                    if v["ok"] == true && v["detail"] == name {
                        return Ok(gap);
                    }
                    if v["ok"] == false {
                        say(self.t0, &format!("  client: request failed ({})", v["detail"].as_str().unwrap_or("?")));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the client probe stopped"),
            }
        }
        bail!("the client was not served by {name} within {max:?}")
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.probe.kill();
        let _ = self.probe.wait();
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

fn walk(site: &mut Site, once: bool) -> anyhow::Result<Vec<(String, Option<u64>)>> {
    let t0 = site.t0;
    let mut results = Vec::new();
    site.wait_served_by("lb-1", Duration::from_secs(10))?;
    say(t0, &format!("client is requesting http://{VIP}/ every 10 ms, served by lb-1"));
    let pause = if once { Duration::from_millis(500) } else { Duration::from_secs(2) };
    std::thread::sleep(pause);

    say(t0, "FAILURE 1: power failure of lb-1 (every process killed, link down; no goodbye)");
    site.power_off("lb-1")?;
    let took = site.wait_owner("lb-2", Duration::from_secs(10))?;
    say(t0, &format!("  lb-2 took the floating IP {} ms after the failure (dead time 200 ms) and sent gratuitous ARPs", took.as_millis()));
    let gap = site.wait_served_by("lb-2", Duration::from_secs(10))?;
    say(t0, &format!("  client served by lb-2 again; longest gap it saw: {}", gap_text(gap)));
    results.push(("power failure of the active node".to_string(), gap));
    std::thread::sleep(pause);

    say(t0, "lb-1 powers back on; failback is off, so lb-2 keeps the floating IP");
    site.power_on("lb-1")?;
    std::thread::sleep(Duration::from_millis(1500));
    say(t0, &format!("  floating IP on {}", if site.holds_vip("lb-2") { "lb-2" } else { "lb-1" }));

    say(t0, "FAILURE 2: clean stop (SIGTERM) of lb-2: it releases the IP and tells lb-1 at once");
    site.signal("lb-2", "-TERM")?;
    let took = site.wait_owner("lb-1", Duration::from_secs(10))?;
    say(t0, &format!("  lb-1 took the floating IP {} ms after the signal", took.as_millis()));
    let gap = site.wait_served_by("lb-1", Duration::from_secs(10))?;
    say(t0, &format!("  client served by lb-1 again; longest gap it saw: {}", gap_text(gap)));
    results.push(("clean stop of the active node".to_string(), gap));
    site.start_agent("lb-2")?;
    Ok(results)
}

fn gap_text(gap: Option<u64>) -> String {
    match gap {
        Some(g) => format!("{g} ms"),
        None => "none (no request failed)".to_string(),
    }
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
            for (what, gap) in r {
                say(t0, &format!("  {what:<32} service restored, gap {}", gap_text(*gap)));
            }
        }
        Err(e) => say(t0, &format!("DEMO FAILED: {e:#}")),
    }
    if args.keep && results.is_ok() {
        say(t0, "the site keeps running; press Ctrl-C to remove it");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(crate::cmd::run::shutdown_signal());
    }
    drop(site);
    say(t0, "removed every namespace and process the demo created");
    results.map(|_| ExitCode::SUCCESS)
}
