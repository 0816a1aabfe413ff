//! `failover`: how long a website behind a floating IP is unreachable when
//! its owner fails, for keepup and for the tools it replaces, measured in the
//! same network-namespace lab on the same machine.
//!
//! # What is measured
//!
//! Each run builds a fresh lab (`keepup_testkit::lab::Lab`): nodes `a`
//! (10.77.0.1, priority 200) and `b` (10.77.0.2, priority 100) and a `client`
//! (10.77.0.200) on one bridge. Each node runs `keepup internal web` on port
//! 80 answering with its name; the tool under test moves the floating IP
//! 10.77.0.100 between them. In the client namespace a probe (this binary's
//! hidden `probe` mode) starts a new HTTP request on a fresh connection every
//! 5 ms without waiting for earlier ones (1 s timeout each), and prints each
//! reply; the runner stamps every line on receipt with its own monotonic
//! clock, so all times below come from one clock.
//!
//! Once `a` owns the IP, the client has been served only by `a` for 1 s, and
//! a settle time has passed (10 heartbeats and at least 1 s for keepup, 4
//! advert intervals for keepalived, 3 s for Heartbeat), the runner fails `a` in one of three ways and takes the time `t0` right
//! after the failure is in effect (the `kill` or `nft` command returned):
//!
//! - `kill`: `kill -9` of every process of the daemon on `a` (keepalived's
//!   parent and VRRP child together). The address and web server stay on `a`,
//!   as on a host whose daemon crashed.
//! - `cut`: one atomic nftables ruleset in `a`'s namespace drops all
//!   non-loopback traffic (the same table `Lab::partition` uses).
//! - `stop`: SIGTERM to the daemon (a clean stop).
//!
//! **failover** = `t0` → the first successful reply served by `b`.
//!
//! Then `a` is restored (daemon restarted, or partition healed); every tool
//! preempts (keepup `[failback] auto = true, delay_ms = 0`, keepalived's
//! default preemption, Heartbeat `auto_failback on`).
//! **failback gap** = the longest time the client went without a successful
//! reply from the restore until 1.5 s after `a` served again (0 when no
//! request failed in that window).
//!
//! A soak runs keepup's fast setting for `--soak-seconds` with `stress-ng
//! --cpu 2` saturating both cores and counts false failovers
//! (`keepup_peers_declared_dead_total`, group acquisitions by `b`) and late
//! heartbeats from the agents' `/metrics`.
//!
//! Needs root, iproute2, nftables, keepalived, stress-ng; `bench/failover.sh`
//! installs them and builds this. Raw results go to `bench/out/`.

mod heartbeat;
mod partition;
mod probe;
mod run;
mod tools;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The failover benchmark.
#[derive(Debug, Parser)]
#[command(
    name = "failover",
    about = "Failover benchmark: keepup vs keepalived (and Heartbeat) in a namespace lab"
)]
pub struct Cli {
    /// Runs per tool and scenario.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Runs per tool and partition shape (pair-cut, one-way, pause) counting
    /// the time the IP is on both nodes; 0 skips them.
    #[arg(long, default_value_t = 0)]
    pub partitions: usize,
    /// How long each partition shape is held (s).
    #[arg(long, default_value_t = 3)]
    pub partition_seconds: u64,
    /// Soak duration in seconds (keepup fast setting, both cores saturated); 0 skips it.
    #[arg(long, default_value_t = 300)]
    pub soak_seconds: u64,
    /// Only these tools, comma-separated: keepup-default, keepup-fast,
    /// keepalived-v2, keepalived-v3, heartbeat, soak.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Scenarios to run, comma-separated: kill, cut, stop.
    #[arg(long, value_delimiter = ',', default_value = "kill,cut,stop")]
    pub scenarios: Vec<String>,
    /// keepup's fast setting: heartbeat interval (ms).
    #[arg(long, default_value_t = 20)]
    pub fast_heartbeat_ms: u64,
    /// keepup's fast setting: dead time (ms).
    #[arg(long, default_value_t = 60)]
    pub fast_dead_ms: u64,
    /// Probe interval (ms).
    #[arg(long, default_value_t = 5)]
    pub interval_ms: u64,
    /// The keepup binary (default: next to this one).
    #[arg(long)]
    pub keepup: Option<PathBuf>,
    /// Where raw results and logs go.
    #[arg(long, default_value = "bench/out")]
    pub out: PathBuf,
    /// Hidden helper modes.
    #[command(subcommand)]
    pub mode: Option<Mode>,
}

/// Helper modes run inside lab namespaces.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// The client probe (runs in the client namespace).
    #[command(hide = true)]
    Probe {
        /// Address to request.
        #[arg(long)]
        target: SocketAddr,
        /// Interval between request starts (ms).
        #[arg(long, default_value_t = 5)]
        interval_ms: u64,
        /// Per-request timeout (ms).
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Mode::Probe {
        target,
        interval_ms,
        timeout_ms,
    }) = cli.mode
    {
        return probe::run_probe(
            target,
            Duration::from_millis(interval_ms),
            Duration::from_millis(timeout_ms),
        );
    }
    if !keepup_testkit::require::is_root() {
        anyhow::bail!("the failover benchmark needs root (network namespaces)");
    }
    let me = std::env::current_exe().context("cannot find this executable")?;
    let keepup = match &cli.keepup {
        Some(p) => p.clone(),
        None => me
            .parent()
            .map(|d| d.join("keepup"))
            .context("no directory for keepup")?,
    };
    anyhow::ensure!(
        keepup.exists(),
        "keepup binary not found at {} (build it or pass --keepup)",
        keepup.display()
    );
    run::main(&cli, &me, &keepup)
}
