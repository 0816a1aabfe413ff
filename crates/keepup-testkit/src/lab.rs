//! A network lab made of real Linux network namespaces: each host is a
//! namespace, each heartbeat link a bridge in a private "switch" namespace,
//! joined to the hosts by veth pairs. Nothing touches the root namespace, so
//! every lab can use the same addresses (10.77.L.H/24 on link L for host H)
//! and labs of parallel tests never see each other.
//!
//! Cleanup happens on drop (also after a failed test), and a new lab removes
//! namespaces left behind by test processes that no longer exist.

use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);
const PREFIX: &str = "kuL";

/// One host of the lab.
#[derive(Debug, Clone)]
pub struct Host {
    /// Short name given by the test ("lb1").
    pub name: String,
    /// Namespace name (`ip netns exec <ns> ...`).
    pub ns: String,
    /// Host number H: its address on link L is 10.77.L.H.
    pub index: u8,
}

impl Host {
    /// This host's address on link `link`.
    pub fn addr(&self, link: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, link, self.index)
    }
}

/// A lab: a switch namespace with one bridge per link, plus hosts.
pub struct Lab {
    id: String,
    switch: String,
    links: u8,
    hosts: Vec<Host>,
    children: Vec<Child>,
    root_link: Option<String>,
}

/// Where lab agents keep their state directories: on tmpfs (`/dev/shm`)
/// when there is one, so that a disk stall caused by other tests (the
/// agent fsyncs its consensus log on the heartbeat thread) cannot make the
/// lab's timing flaky; production uses `/var/lib/keepup`. Callers remove it.
pub fn state_root(tag: &str) -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("keepup-state-{tag}-{}", std::process::id()))
}

/// Runs a command, failing with its stderr when it fails.
pub fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Lab {
    /// Creates a lab with `links` heartbeat links (bridges), no hosts yet.
    pub fn new(links: u8) -> Result<Lab> {
        reap_stale();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{PREFIX}{}x{n}", std::process::id());
        let switch = format!("{id}-sw");
        sh("ip", &["netns", "add", &switch])?;
        let lab = Lab {
            id,
            switch,
            links,
            hosts: Vec::new(),
            children: Vec::new(),
            root_link: None,
        };
        for l in 0..links {
            lab.ip_in(
                &lab.switch,
                &["link", "add", &format!("br{l}"), "type", "bridge"],
            )?;
            lab.ip_in(&lab.switch, &["link", "set", &format!("br{l}"), "up"])?;
        }
        lab.ip_in(&lab.switch, &["link", "set", "lo", "up"])?;
        Ok(lab)
    }

    fn ip_in(&self, ns: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// Adds host number `index` (1..=254) called `name`, connected to every link.
    pub fn add_host(&mut self, name: &str, index: u8) -> Result<Host> {
        let ns = format!("{}-{name}", self.id);
        sh("ip", &["netns", "add", &ns])?;
        self.ip_in(&ns, &["link", "set", "lo", "up"])?;
        for l in 0..self.links {
            // veth names are limited to 15 bytes: keep them short and unique per lab.
            let outer = format!(
                "v{}h{index}l{l}",
                self.hosts.len() + 1000 * (self.id.len() % 7)
            );
            let outer: String = outer.chars().take(15).collect();
            sh(
                "ip",
                &[
                    "-n",
                    &self.switch,
                    "link",
                    "add",
                    &outer,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &format!("eth{l}"),
                    "netns",
                    &ns,
                ],
            )?;
            self.ip_in(
                &self.switch,
                &["link", "set", &outer, "master", &format!("br{l}"), "up"],
            )?;
            self.ip_in(
                &ns,
                &[
                    "addr",
                    "add",
                    &format!("10.77.{l}.{index}/24"),
                    "dev",
                    &format!("eth{l}"),
                ],
            )?;
            self.ip_in(&ns, &["link", "set", &format!("eth{l}"), "up"])?;
        }
        let host = Host {
            name: name.to_string(),
            ns,
            index,
        };
        self.hosts.push(host.clone());
        Ok(host)
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .with_context(|| format!("no host {name} in lab"))
    }

    /// A `Command` that runs `program` inside host `name`'s namespace.
    pub fn command(&self, name: &str, program: &str) -> Result<Command> {
        let h = self.host(name)?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &h.ns, program]);
        Ok(c)
    }

    /// Runs `program args` in host `name` and returns its stdout (error on failure).
    pub fn run(&self, name: &str, program: &str, args: &[&str]) -> Result<String> {
        let h = self.host(name)?;
        let mut all = vec!["netns", "exec", h.ns.as_str(), program];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// Spawns `cmd` and kills it when the lab is dropped; returns its index.
    pub fn spawn(&mut self, mut cmd: Command) -> Result<usize> {
        let child = cmd.spawn().context("cannot spawn lab process")?;
        self.children.push(child);
        Ok(self.children.len() - 1)
    }

    /// The spawned child at `idx`.
    pub fn child(&mut self, idx: usize) -> &mut Child {
        &mut self.children[idx]
    }

    /// Runs SQL with the `mariadb` client from host `from` against `host`
    /// (port 3306) as `user`/`password`: tab-separated rows, no header, a
    /// 1 s connect limit.
    pub fn sql(
        &self,
        from: &str,
        host: &str,
        user: &str,
        password: &str,
        q: &str,
    ) -> Result<String> {
        let password = format!("-p{password}");
        self.run(
            from,
            "mariadb",
            &[
                "-h",
                host,
                "-P",
                "3306",
                "-u",
                user,
                &password,
                "--connect-timeout=1",
                "-N",
                "-B",
                "-e",
                q,
            ],
        )
    }

    /// Sets host `name`'s interface on `link` up or down (a cable pulled).
    pub fn set_link(&self, name: &str, link: u8, up: bool) -> Result<()> {
        let h = self.host(name)?;
        self.ip_in(
            &h.ns,
            &[
                "link",
                "set",
                &format!("eth{link}"),
                if up { "up" } else { "down" },
            ],
        )?;
        Ok(())
    }

    /// Drops every packet in and out of host `name` with nftables (a partition
    /// the host does not notice: links stay up), or removes that rule.
    pub fn partition(&self, name: &str, cut: bool) -> Result<()> {
        let h = self.host(name)?;
        let nft = |args: &[&str]| -> Result<String> {
            let mut all = vec!["netns", "exec", h.ns.as_str(), "nft"];
            all.extend_from_slice(args);
            sh("ip", &all)
        };
        if cut {
            nft(&["add", "table", "inet", "kulab"])?;
            for hook in ["input", "output"] {
                nft(&[
                    "add", "chain", "inet", "kulab", hook, "{", "type", "filter", "hook", hook,
                    "priority", "0", ";", "policy", "accept", ";", "}",
                ])?;
                // Loopback stays open: the agent's own API must keep answering.
                let iif = if hook == "input" {
                    "iifname"
                } else {
                    "oifname"
                };
                nft(&[
                    "add", "rule", "inet", "kulab", hook, iif, "!=", "lo", "drop",
                ])?;
            }
        } else {
            nft(&["delete", "table", "inet", "kulab"])?;
        }
        Ok(())
    }

    /// Drops, on host `on`, what it exchanges with host `peer` on every
    /// link: packets from `peer` (`inbound`) and to it (`outbound`). Both
    /// directions on both hosts make a symmetric cut of that one path; one
    /// direction on one host makes one-way loss. Other paths stay open.
    pub fn block(&self, on: &str, peer: &str, inbound: bool, outbound: bool) -> Result<()> {
        self.block_rules(on, peer, inbound, outbound, &[])
    }

    /// Like [`Lab::block`] both ways, for UDP port `port` only (keepup's
    /// heartbeat port: the database and everything else stay reachable).
    pub fn block_udp_port(&self, on: &str, peer: &str, port: u16) -> Result<()> {
        let port = port.to_string();
        self.block_rules(on, peer, true, true, &["udp", "dport", &port])
    }

    /// Like [`Lab::block`] both ways, for TCP port `port` in either role
    /// (a database-only cut: `port` 3306 drops the replication and client
    /// connections between the two hosts, heartbeats still pass).
    pub fn block_tcp_port(&self, on: &str, peer: &str, port: u16) -> Result<()> {
        let port = port.to_string();
        self.block_rules(on, peer, true, true, &["tcp", "dport", &port])?;
        self.block_rules(on, peer, true, true, &["tcp", "sport", &port])
    }

    /// Adds drop rules for `peer`'s addresses, narrowed by `matching`
    /// (nft match words), to the `kublock` table on host `on`.
    fn block_rules(
        &self,
        on: &str,
        peer: &str,
        inbound: bool,
        outbound: bool,
        matching: &[&str],
    ) -> Result<()> {
        let h = self.host(on)?;
        let p = self.host(peer)?;
        let nft = |args: &[&str]| -> Result<String> {
            let mut all = vec!["netns", "exec", h.ns.as_str(), "nft"];
            all.extend_from_slice(args);
            sh("ip", &all)
        };
        nft(&["add", "table", "inet", "kublock"])?;
        for hook in ["input", "output"] {
            nft(&[
                "add", "chain", "inet", "kublock", hook, "{", "type", "filter", "hook", hook,
                "priority", "0", ";", "policy", "accept", ";", "}",
            ])?;
        }
        for l in 0..self.links {
            let a = p.addr(l).to_string();
            for (on_hook, chain, dir) in
                [(inbound, "input", "saddr"), (outbound, "output", "daddr")]
            {
                if on_hook {
                    let mut rule = vec!["add", "rule", "inet", "kublock", chain, "ip", dir, &a];
                    rule.extend_from_slice(matching);
                    rule.push("drop");
                    nft(&rule)?;
                }
            }
        }
        Ok(())
    }

    /// Removes every [`Lab::block`] on host `on`.
    pub fn unblock(&self, on: &str) -> Result<()> {
        let h = self.host(on)?;
        let _ = sh(
            "ip",
            &[
                "netns",
                "exec",
                h.ns.as_str(),
                "nft",
                "delete",
                "table",
                "inet",
                "kublock",
            ],
        );
        Ok(())
    }

    /// Connects this machine's own (root) namespace to link 0 with address
    /// 10.77.0.`index`, so a browser here can reach the lab (the demo's
    /// dashboard). Removed when the lab is dropped.
    pub fn attach_root(&mut self, index: u8) -> Result<()> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name: String = format!("kuR{}x{n}", std::process::id())
            .chars()
            .take(15)
            .collect();
        sh(
            "ip",
            &[
                "link",
                "add",
                &name,
                "type",
                "veth",
                "peer",
                "name",
                "r0",
                "netns",
                &self.switch,
            ],
        )?;
        self.root_link = Some(name.clone());
        self.ip_in(&self.switch, &["link", "set", "r0", "master", "br0", "up"])?;
        sh(
            "ip",
            &["addr", "add", &format!("10.77.0.{index}/24"), "dev", &name],
        )?;
        sh("ip", &["link", "set", &name, "up"])?;
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for h in &self.hosts {
            kill_namespace_processes(&h.ns);
            let _ = sh("ip", &["netns", "del", &h.ns]);
        }
        if let Some(l) = &self.root_link {
            let _ = sh("ip", &["link", "del", l]);
        }
        let _ = sh("ip", &["netns", "del", &self.switch]);
    }
}

/// Kills processes still running inside namespace `ns` (started through it).
fn kill_namespace_processes(ns: &str) {
    if let Ok(pids) = sh("ip", &["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = sh("kill", &["-9", pid]);
        }
    }
}

/// Removes namespaces (and root-namespace links) of labs whose creating process is gone.
fn reap_stale() {
    if let Ok(links) = sh("ip", &["-o", "link", "show"]) {
        for l in links.lines() {
            let Some(name) = l
                .split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n))
            else {
                continue;
            };
            let Some(pid) = name
                .strip_prefix("kuR")
                .and_then(|r| r.split('x').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = sh("ip", &["link", "del", name]);
            }
        }
    }
    let Ok(list) = sh("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            kill_namespace_processes(name);
            let _ = sh("ip", &["netns", "del", name]);
        }
    }
}
