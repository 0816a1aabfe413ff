//! The raw schema: one struct per table of keepup.toml.
//!
//! Every struct denies unknown keys so a typo is an error, not a silently
//! ignored setting. Values that later checks must point at carry a
//! `Spanned` wrapper so the error can name their line.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Cluster-wide identity and security.
    pub cluster: ClusterSection,
    /// Heartbeat timing.
    #[serde(default)]
    pub timing: TimingSection,
    /// What happens when a better node comes back.
    #[serde(default)]
    pub failback: FailbackSection,
    /// Split-brain protection.
    #[serde(default)]
    pub split_brain: SplitBrainSection,
    /// The agent's HTTP API (status, control, metrics, dashboard).
    #[serde(default)]
    pub api: ApiSection,
    /// Every node of the cluster.
    #[serde(default)]
    pub node: Vec<NodeConfig>,
    /// Resource groups: resources that always live together on one node.
    #[serde(default)]
    pub group: Vec<GroupConfig>,
    /// The load balancer (optional).
    pub lb: Option<crate::LbSection>,
    /// MariaDB replication management (optional).
    pub database: Option<crate::DatabaseSection>,
}

/// `[cluster]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Cluster name; packets from another cluster are dropped.
    pub name: Spanned<String>,
    /// File holding the shared secret (at least 16 bytes, mode 0600).
    pub key_file: Spanned<PathBuf>,
    /// UDP port the heartbeats use on every link.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Run the heartbeat thread at real-time priority with memory locked.
    #[serde(default = "yes")]
    pub realtime: bool,
    /// Quorum policy: "auto" (majority with 3+ nodes, none with 2), "majority", "none".
    #[serde(default)]
    pub quorum: QuorumPolicy,
    /// Where the node keeps its boot counter and consensus log (fsync'd).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/keepup")
}

fn default_port() -> u16 {
    7946
}
fn yes() -> bool {
    true
}

/// When a node may hold resources although it cannot see every peer.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum QuorumPolicy {
    /// Majority with three or more nodes; none with two.
    #[default]
    Auto,
    /// Hold resources only while a strict majority of nodes (self included) is alive.
    Majority,
    /// Any live, eligible node may hold resources.
    None,
}

/// `[timing]`, all in milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimingSection {
    /// Interval between heartbeats on each link.
    pub heartbeat_ms: Millis,
    /// Silence on every link after which a peer is dead.
    pub dead_ms: Millis,
    /// Gap after which a late heartbeat is logged and counted.
    pub warn_ms: Millis,
    /// After boot, how long to wait for peers before acting on their absence.
    pub initial_dead_ms: Millis,
    /// Consensus mode: how long a committed renewal keeps a group (default: dead_ms).
    pub lease_ms: Option<Millis>,
    /// Consensus mode: the longest a group's stop may take; the holder starts
    /// stopping this long before its lease ends (default: dead_ms / 4).
    pub stop_bound_ms: Option<Millis>,
}

/// `[timing]` as plain numbers of milliseconds, for checks that do arithmetic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimingMs {
    pub heartbeat_ms: u64,
    pub dead_ms: u64,
    pub warn_ms: u64,
    pub lease_ms: Option<u64>,
    pub stop_bound_ms: Option<u64>,
}

impl TimingSection {
    pub(crate) fn in_ms(&self) -> TimingMs {
        TimingMs {
            heartbeat_ms: self.heartbeat_ms.ms(),
            dead_ms: self.dead_ms.ms(),
            warn_ms: self.warn_ms.ms(),
            lease_ms: self.lease_ms.map(Millis::ms),
            stop_bound_ms: self.stop_bound_ms.map(Millis::ms),
        }
    }

    /// The lease a committed renewal gives (default: `dead_ms`).
    pub fn lease(&self) -> std::time::Duration {
        self.lease_ms.unwrap_or(self.dead_ms).duration()
    }

    /// The longest a stop may take before the lease ends (default: `dead_ms` / 4).
    pub fn stop_bound(&self) -> std::time::Duration {
        self.stop_bound_ms
            .map(Millis::duration)
            .unwrap_or(self.dead_ms.duration() / 4)
    }
}

impl Default for TimingSection {
    fn default() -> Self {
        TimingSection {
            heartbeat_ms: Millis(100),
            dead_ms: Millis(300),
            warn_ms: Millis(200),
            initial_dead_ms: Millis(1000),
            lease_ms: None,
            stop_bound_ms: None,
        }
    }
}

/// `[failback]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailbackSection {
    /// Move groups back to a better node when it returns.
    pub auto: bool,
    /// How long the returning node must stay up before groups move back.
    pub delay_ms: Millis,
}

/// `[split_brain]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitBrainSection {
    /// Addresses to ping (ICMP echo); a node reaching none of them may not hold resources.
    pub ping_targets: Vec<Spanned<String>>,
    /// Interval between pings.
    pub ping_interval_ms: Millis,
    /// Consecutive failed rounds before the node counts as cut off.
    pub ping_fail_count: u32,
}

impl Default for SplitBrainSection {
    fn default() -> Self {
        SplitBrainSection {
            ping_targets: Vec::new(),
            ping_interval_ms: Millis(200),
            ping_fail_count: 3,
        }
    }
}

/// `[api]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Address of the HTTP API, metrics and dashboard.
    pub listen: Spanned<String>,
    /// File holding the control token (default: derived from the cluster key,
    /// so every node accepts the same token).
    pub token_file: Option<Spanned<PathBuf>>,
    /// File holding a read-only token for status and the dashboard from
    /// other hosts (default: derived from the cluster key).
    pub read_token_file: Option<Spanned<PathBuf>>,
    /// Host names (besides IP addresses and localhost) that requests may
    /// name in `Host:`, e.g. the name you open the dashboard under.
    pub hosts: Vec<Spanned<String>>,
    /// Open API connections at most; more are closed at once.
    pub max_connections: Spanned<u32>,
    /// Serve the API over HTTPS with this certificate and key (PEM), so
    /// tokens and status never cross the network in clear. The certificate
    /// must name every address the API is reached by (each node's first
    /// address and 127.0.0.1); the `keepup` commands trust it.
    pub tls: Option<crate::LbTlsCert>,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: Spanned::new(0..0, "127.0.0.1:7947".to_string()),
            token_file: None,
            read_token_file: None,
            hosts: Vec::new(),
            max_connections: Spanned::new(0..0, 256),
            tls: None,
        }
    }
}

impl ApiSection {
    /// The listening address (validated: the fallback is never used on a
    /// loaded config).
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.listen
            .get_ref()
            .parse()
            .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 7947)))
    }

    /// The address to dial for this host's own agent: `listen`, a wildcard
    /// meaning loopback.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let mut addr = self.listen_addr();
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        addr
    }

    /// Where node `n`'s agent answers from another host: its first address
    /// on this port (every node shares the one keepup.toml, so one `[api]`),
    /// or why it cannot be reached.
    pub fn remote_addr(&self, n: &NodeConfig) -> Result<std::net::SocketAddr, String> {
        let listen = self.listen_addr();
        if listen.ip().is_loopback() {
            return Err(format!(
                "node {:?} is another host and api.listen ({listen}) is loopback-only: set api.listen = \"0.0.0.0:{}\"",
                n.name.get_ref(),
                listen.port()
            ));
        }
        let ip = n
            .addresses
            .first()
            .ok_or_else(|| format!("node {:?} has no address", n.name.get_ref()))?
            .get_ref()
            .parse::<std::net::IpAddr>()
            .map_err(|e| e.to_string())?;
        Ok(std::net::SocketAddr::new(ip, listen.port()))
    }
}

/// `[[node]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique node name (matched against the host name).
    pub name: Spanned<String>,
    /// One address per heartbeat link; the i-th address of every node forms link i.
    pub addresses: Vec<Spanned<String>>,
    /// Higher wins the election; ties go to the lower name.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// "node" (default) or "witness": a witness votes and never holds a group.
    #[serde(default)]
    pub role: NodeRole,
}

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Votes and may hold groups.
    #[default]
    Node,
    /// Votes, holds nothing: the third vote of a two-node site.
    Witness,
}

impl NodeConfig {
    /// A witness: votes, holds no resources.
    pub fn is_witness(&self) -> bool {
        self.role == NodeRole::Witness
    }
}

fn default_priority() -> u32 {
    100
}

/// `[[group]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Unique group name.
    pub name: Spanned<String>,
    /// Nodes allowed to hold the group (all when empty).
    #[serde(default)]
    pub nodes: Vec<Spanned<String>>,
    /// Resources, started in this order and stopped in reverse.
    #[serde(default)]
    pub resource: Vec<ResourceConfig>,
    /// After a failed start, the first back-off before this node tries again.
    #[serde(default = "default_backoff")]
    pub failure_backoff_ms: Millis,
    /// Run against a holder that may still run the group (its lease expired
    /// without a release, or its stop failed) before the group starts elsewhere.
    pub fence: Option<FenceConfig>,
}

/// How to fence a node, as Pacemaker's STONITH does.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum FenceConfig {
    /// A command; `KEEPUP_FENCE_NODE`, `KEEPUP_GROUP` and `KEEPUP_EPOCH` are set. Exit 0 = fenced.
    Exec {
        /// Shell command.
        command: String,
        /// Longest it may run.
        #[serde(default = "default_exec_timeout")]
        timeout_ms: Millis,
    },
    /// Power the node's droplet off through the DigitalOcean API (a hard
    /// power-off, the documented `power_off` droplet action), then confirm
    /// the droplet reports `off`.
    Digitalocean {
        /// File holding the API token (never logged).
        token_file: PathBuf,
        /// API base URL.
        #[serde(default = "default_do_api")]
        api_url: String,
        /// Each holding node's droplet id: `{ "lb-1" = 3164444, ... }`.
        droplets: BTreeMap<String, u64>,
        /// Overall limit: the action and the confirmation.
        #[serde(default = "default_do_fence_timeout")]
        timeout_ms: Millis,
    },
}

fn default_do_fence_timeout() -> Millis {
    Millis(60_000)
}

fn default_backoff() -> Millis {
    Millis(5000)
}

/// `[[group.resource]]`, selected by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ResourceConfig {
    /// A LAN virtual IP added through netlink, announced by gratuitous ARP / NA.
    Vip(VipResource),
    /// A DigitalOcean reserved (floating) IP assigned through the provider's API.
    Digitalocean(DigitalOceanResource),
    /// Operator scripts, like Heartbeat resource scripts and keepalived notify scripts.
    Exec(ExecResource),
    /// The MariaDB primary role: the `[database]` server on this node becomes
    /// the writable primary while the group is held here, read-only otherwise.
    #[serde(rename = "db-primary")]
    DbPrimary(DbPrimaryResource),
}

impl ResourceConfig {
    /// A short human name for logs and status (`vip 10.77.0.100/24`).
    pub fn describe(&self) -> String {
        match self {
            ResourceConfig::Vip(v) => format!("vip {}", v.address),
            ResourceConfig::Digitalocean(d) => format!("digitalocean {}", d.reserved_ip),
            ResourceConfig::Exec(e) => format!("exec {}", e.name),
            ResourceConfig::DbPrimary(d) => match &d.server {
                Some(s) => format!("db-primary {s}"),
                None => "db-primary (this node's server)".to_string(),
            },
        }
    }
}

/// `type = "vip"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipResource {
    /// Address with prefix length, e.g. `10.77.0.100/24` or `fd00::100/64`.
    /// (Plain types inside resources: serde's tagged enums cannot carry spans.)
    pub address: String,
    /// Interface to add it to.
    pub interface: String,
    /// Gratuitous ARPs / unsolicited NAs sent on takeover.
    #[serde(default = "default_garp_count")]
    pub garp_count: u32,
    /// Interval between them.
    #[serde(default = "default_garp_interval")]
    pub garp_interval_ms: Millis,
    /// How often to check the address is still there (and restore it).
    #[serde(default = "default_monitor")]
    pub monitor_interval_ms: Millis,
}

fn default_garp_count() -> u32 {
    3
}
fn default_garp_interval() -> Millis {
    Millis(100)
}
fn default_monitor() -> Millis {
    Millis(1000)
}

/// `type = "digitalocean"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigitalOceanResource {
    /// The reserved IP to assign to this droplet.
    pub reserved_ip: String,
    /// File holding the API token (never logged).
    pub token_file: PathBuf,
    /// API base URL.
    #[serde(default = "default_do_api")]
    pub api_url: String,
    /// Metadata service URL (gives this droplet's id).
    #[serde(default = "default_do_metadata")]
    pub metadata_url: String,
    /// Overall time limit for one assignment (including polling the action).
    #[serde(default = "default_do_timeout")]
    pub timeout_ms: Millis,
    /// How often to check the IP is still ours.
    #[serde(default = "default_do_monitor")]
    pub monitor_interval_ms: Millis,
}

fn default_do_api() -> String {
    "https://api.digitalocean.com".to_string()
}
fn default_do_metadata() -> String {
    "http://169.254.169.254/metadata/v1".to_string()
}
fn default_do_timeout() -> Millis {
    Millis(30_000)
}
fn default_do_monitor() -> Millis {
    Millis(10_000)
}

/// `type = "exec"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecResource {
    /// Name used in logs and in the scripts' environment.
    pub name: String,
    /// Command run (via `/bin/sh -c`) to start the resource.
    pub start: String,
    /// Command run to stop it.
    pub stop: String,
    /// Optional command whose exit status 0 means "running".
    #[serde(default)]
    pub status: Option<String>,
    /// Limit for each command.
    #[serde(default = "default_exec_timeout")]
    pub timeout_ms: Millis,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How often to run `status`.
    #[serde(default = "default_monitor")]
    pub monitor_interval_ms: Millis,
}

/// `type = "db-primary"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbPrimaryResource {
    /// The `[[database.server]]` to make primary (default: the one whose `node` is this node).
    #[serde(default)]
    pub server: Option<String>,
    /// How often to check that the server is up and still the primary.
    #[serde(default = "default_db_monitor")]
    pub monitor_interval_ms: Millis,
    /// Limit for one promotion, switchover or demotion.
    #[serde(default = "default_db_timeout")]
    pub timeout_ms: Millis,
}

fn default_db_monitor() -> Millis {
    Millis(500)
}
fn default_db_timeout() -> Millis {
    Millis(30_000)
}

fn default_exec_timeout() -> Millis {
    Millis(10_000)
}

/// A duration written in milliseconds in keepup.toml (every `*_ms` key):
/// read as a number once, used as a [`Duration`](std::time::Duration)
/// everywhere, so no code converts `*_ms` integers itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// As a duration.
    pub const fn duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
    /// As a duration of at least 1 ms (a timer that must not fire at once).
    pub fn nonzero(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.max(1))
    }
    /// The number written in the file.
    pub const fn ms(self) -> u64 {
        self.0
    }
}

impl From<u64> for Millis {
    fn from(ms: u64) -> Millis {
        Millis(ms)
    }
}

impl std::fmt::Display for Millis {
    /// The number as written (messages add " ms" themselves).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
