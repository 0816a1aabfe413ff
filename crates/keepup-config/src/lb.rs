//! `[lb]`: the load balancer's schema (owned by the keepup-lb work).
//!
//! ```toml
//! [lb]
//! workers = 1
//!
//! [[lb.frontend]]
//! name = "web"
//! bind = "10.77.0.100:80"
//! pool = "web"
//!
//! [[lb.pool]]
//! name = "web"
//! algorithm = "round-robin"
//! [lb.pool.health]
//! type = "http"
//! path = "/health"
//! [[lb.pool.backend]]
//! name = "web-1"
//! address = "10.77.0.11:8080"
//! ```
//!
//! Plain types only (no `Spanned`): the load balancer compares old and new
//! sections on reload. `problems_at()` gives each problem a path into the
//! file (`lb.frontend[1].bind`), which validation turns into its line.

use crate::Millis;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[lb]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbSection {
    /// Worker threads, each with its own single-threaded runtime and its own
    /// `SO_REUSEPORT` listener per frontend (the kernel spreads connections).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Nodes that run the load balancer (all when empty), e.g. only the
    /// nodes that can hold the floating IP in a cluster with database nodes.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Listeners: where clients connect.
    #[serde(default)]
    pub frontend: Vec<LbFrontend>,
    /// Backend pools the frontends send traffic to.
    #[serde(default)]
    pub pool: Vec<LbPool>,
}

impl Default for LbSection {
    fn default() -> Self {
        LbSection {
            workers: default_workers(),
            nodes: Vec::new(),
            frontend: Vec::new(),
            pool: Vec::new(),
        }
    }
}

fn default_workers() -> usize {
    1
}

/// What a frontend speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbMode {
    /// HTTP/1.1 reverse proxy (HTTP/2 too from clients when TLS is on).
    #[default]
    Http,
    /// Plain TCP (layer 4) proxy: bytes are copied both ways unchanged.
    Tcp,
}

/// PROXY protocol version sent to backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocolVersion {
    /// Send no PROXY header.
    #[default]
    None,
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}

/// `[[lb.frontend]]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbFrontend {
    /// Unique frontend name (stats, logs).
    pub name: String,
    /// Address to listen on, e.g. `10.77.0.100:443`. It may be a floating IP
    /// this node does not own yet: the socket is bound with `IP_FREEBIND`, so a
    /// takeover needs no restart.
    pub bind: String,
    /// `"http"` (default) or `"tcp"`.
    #[serde(default)]
    pub mode: LbMode,
    /// Name of the `[[lb.pool]]` to send traffic to.
    pub pool: String,
    /// TLS certificates (HTTP mode only). The first is the default; the others
    /// are chosen by SNI from the names in each certificate. Empty: no TLS.
    #[serde(default)]
    pub tls: Vec<LbTlsCert>,
    /// PROXY protocol header sent to backends at connection start (TCP mode;
    /// HTTP mode passes the client with `X-Forwarded-For` and `Forwarded`).
    #[serde(default)]
    pub send_proxy_protocol: ProxyProtocolVersion,
    /// Expect a PROXY protocol header (v1 or v2) from these peers, e.g. another
    /// load balancer in front of this one, and use the client address it
    /// carries. CIDRs such as `10.0.0.0/8`. Connections from other peers are
    /// taken as they are.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Most client connections at once; further clients wait in the listen
    /// backlog (the queue) until a slot frees.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Listen backlog: how many connections may queue beyond `max_connections`.
    #[serde(default = "default_backlog")]
    pub backlog: u32,
    /// Largest request head (request line plus headers) in bytes; larger gets 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Most request headers; more gets 431.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Time a client has to send a complete request head (slowloris guard).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_ms: Millis,
    /// A client connection idle this long between requests (HTTP) or without
    /// any byte either way (TCP) is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: Millis,
    /// Time to connect to a backend before trying another.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: Millis,
    /// Time a backend has to answer with response headers (HTTP) before 504.
    #[serde(default = "default_backend_timeout")]
    pub backend_timeout_ms: Millis,
    /// Further backends tried when one fails before the request reached it
    /// (or, for idempotent requests, before it answered).
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_max_connections() -> usize {
    10_000
}
fn default_backlog() -> u32 {
    1024
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_max_headers() -> usize {
    100
}
fn default_header_read_timeout() -> Millis {
    Millis(10_000)
}
fn default_idle_timeout() -> Millis {
    Millis(60_000)
}
fn default_connect_timeout() -> Millis {
    Millis(2_000)
}
fn default_backend_timeout() -> Millis {
    Millis(30_000)
}
fn default_retries() -> u32 {
    2
}

/// `[[lb.frontend.tls]]`: one certificate chain and its key (PEM files).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbTlsCert {
    /// Certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How a pool picks a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LbAlgorithm {
    /// Smooth weighted round-robin (nginx's): spreads by weight, no bursts.
    #[default]
    RoundRobin,
    /// The backend with the fewest active connections per unit of weight.
    LeastConnections,
    /// The client IP picks the backend (weighted rendezvous hashing), so a
    /// client stays on one backend while the set is unchanged.
    SourceHash,
    /// A hash ring (ketama-like): a key keeps its backend, and a backend
    /// leaving moves only its own keys. The key is `hash_key`.
    ConsistentHash,
}

/// `[[lb.pool]]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbPool {
    /// Unique pool name, referenced by frontends.
    pub name: String,
    /// `"round-robin"` (default), `"least-connections"`, `"source-hash"`, `"consistent-hash"`.
    #[serde(default)]
    pub algorithm: LbAlgorithm,
    /// For `consistent-hash`: `"uri"` (path and query, default), `"source-ip"`,
    /// or `"header:NAME"` (HTTP mode; TCP mode always hashes the source IP).
    #[serde(default = "default_hash_key")]
    pub hash_key: String,
    /// Sticky sessions (HTTP): name of the cookie that pins a client to the
    /// backend that served it first. None: no stickiness.
    #[serde(default)]
    pub sticky_cookie: Option<String>,
    /// A backend coming back up gets traffic ramped from 10 % to its full
    /// weight over this time. 0: full weight at once.
    #[serde(default)]
    pub slow_start_ms: Millis,
    /// Passive health: this many consecutive connection errors (or 5xx
    /// answers, with `passive_5xx`) mark a backend down. 0: off.
    #[serde(default = "default_passive_fall")]
    pub passive_fall: u32,
    /// Count 5xx answers as passive failures.
    #[serde(default = "yes")]
    pub passive_5xx: bool,
    /// A backend marked down passively is tried again after this long when the
    /// pool has no active health check (with one, the check brings it back).
    #[serde(default = "default_passive_cooldown")]
    pub passive_cooldown_ms: Millis,
    /// Active health check. Absent: backends count as up unless passive
    /// health marks them down.
    #[serde(default)]
    pub health: Option<LbHealthCheck>,
    /// The backends.
    #[serde(default)]
    pub backend: Vec<LbBackend>,
}

fn default_hash_key() -> String {
    "uri".to_string()
}
fn default_passive_fall() -> u32 {
    3
}
fn default_passive_cooldown() -> Millis {
    Millis(10_000)
}
fn yes() -> bool {
    true
}

/// Kind of active health check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbHealthKind {
    /// A TCP connect succeeds.
    #[default]
    Tcp,
    /// `GET path` answers with a status in `expect_status`.
    Http,
}

/// `[lb.pool.health]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbHealthCheck {
    /// `"tcp"` (default) or `"http"`.
    #[serde(default, rename = "type")]
    pub kind: LbHealthKind,
    /// Path for HTTP checks.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Host header for HTTP checks (default: the backend address).
    #[serde(default)]
    pub host: Option<String>,
    /// Inclusive status range that counts as healthy, e.g. `[200, 399]`.
    #[serde(default = "default_expect_status")]
    pub expect_status: [u16; 2],
    /// Time between checks of one backend.
    #[serde(default = "default_health_interval")]
    pub interval_ms: Millis,
    /// Time limit of one check.
    #[serde(default = "default_health_timeout")]
    pub timeout_ms: Millis,
    /// Consecutive good checks that bring a down backend up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failed checks that take an up backend down.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_health_path() -> String {
    "/".to_string()
}
fn default_expect_status() -> [u16; 2] {
    [200, 399]
}
fn default_health_interval() -> Millis {
    Millis(2_000)
}
fn default_health_timeout() -> Millis {
    Millis(1_000)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

/// Operator state of a backend, separate from its health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbBackendState {
    /// Takes traffic when healthy.
    #[default]
    Enabled,
    /// No new clients; sticky clients and in-flight requests finish.
    Drain,
    /// No new traffic at all; in-flight requests finish.
    Maintenance,
}

/// `[[lb.pool.backend]]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbBackend {
    /// Unique name within the pool (stats, sticky cookie value, `keepup lb drain`).
    pub name: String,
    /// `IP:port` of the backend.
    pub address: String,
    /// Relative share of traffic (1..=1000).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Initial operator state: `"enabled"` (default), `"drain"`, `"maintenance"`.
    #[serde(default)]
    pub state: LbBackendState,
}

fn default_weight() -> u32 {
    100
}

/// One problem in `[lb]`: where it is (a path into the file, for its line)
/// and what is wrong, with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbProblem {
    /// Path of the offending value, e.g. `lb.frontend[1].bind`.
    pub at: crate::locate::Path,
    /// The message.
    pub message: String,
}

impl LbSection {
    /// What is wrong with this section, one message per problem (empty: fine).
    pub fn problems(&self) -> Vec<String> {
        self.problems_at().into_iter().map(|p| p.message).collect()
    }

    /// What is wrong, each with where: unique names and binds, pool
    /// references, addresses, weights, health-check ranges.
    pub fn problems_at(&self) -> Vec<LbProblem> {
        use crate::path;
        let mut out = Vec::new();
        let mut push =
            |at: crate::locate::Path, message: String| out.push(LbProblem { at, message });
        if self.workers == 0 || self.workers > 256 {
            push(
                path!["lb", "workers"],
                format!("[lb] workers = {} must be between 1 and 256", self.workers),
            );
        }
        let mut pools = BTreeSet::new();
        for (pi, p) in self.pool.iter().enumerate() {
            let here = |k: &'static str| path!["lb", "pool", pi, k];
            if !pools.insert(p.name.as_str()) {
                push(
                    here("name"),
                    format!(
                        "duplicate [[lb.pool]] {:?}: pool names must be unique",
                        p.name
                    ),
                );
            }
            if p.backend.is_empty() {
                push(here("name"), format!("pool {:?} has no backends: add a [[lb.pool.backend]] with name and address", p.name));
            }
            if p.algorithm == LbAlgorithm::ConsistentHash
                && !(p.hash_key == "uri"
                    || p.hash_key == "source-ip"
                    || p.hash_key
                        .strip_prefix("header:")
                        .is_some_and(|h| !h.is_empty() && http_token(h)))
            {
                push(
                    here("hash_key"),
                    format!(
                    "pool {:?}: hash_key {:?} must be \"uri\", \"source-ip\" or \"header:NAME\"",
                    p.name, p.hash_key
                ),
                );
            }
            if let Some(c) = &p.sticky_cookie {
                if c.is_empty() || !http_token(c) {
                    push(here("sticky_cookie"), format!(
                        "pool {:?}: sticky_cookie {c:?} is not a valid cookie name (letters, digits and -._~)",
                        p.name
                    ));
                }
            }
            if let Some(h) = &p.health {
                let hp = |k: &'static str| path!["lb", "pool", pi, "health", k];
                if h.expect_status[0] > h.expect_status[1]
                    || h.expect_status[0] < 100
                    || h.expect_status[1] > 599
                {
                    push(hp("expect_status"), format!(
                        "pool {:?}: expect_status {:?} must be [lowest, highest] HTTP statuses between 100 and 599, e.g. [200, 399]",
                        p.name, h.expect_status
                    ));
                }
                if h.interval_ms.ms() == 0 || h.rise == 0 || h.fall == 0 {
                    push(
                        hp("interval_ms"),
                        format!(
                            "pool {:?}: health interval_ms, rise and fall must be above 0",
                            p.name
                        ),
                    );
                }
                if h.timeout_ms.ms() == 0 {
                    push(
                        hp("timeout_ms"),
                        format!("pool {:?}: health timeout_ms must be above 0", p.name),
                    );
                }
                if !h.path.starts_with('/') {
                    push(
                        hp("path"),
                        format!(
                            "pool {:?}: health path {:?} must start with /",
                            p.name, h.path
                        ),
                    );
                }
            }
            let mut names = BTreeSet::new();
            let mut addresses = BTreeSet::new();
            for (bi, b) in p.backend.iter().enumerate() {
                let bp = |k: &'static str| path!["lb", "pool", pi, "backend", bi, k];
                if !names.insert(b.name.as_str()) {
                    push(bp("name"), format!("pool {:?}: duplicate backend {:?}: backend names must be unique in a pool", p.name, b.name));
                }
                if b.name.is_empty() || !http_token(&b.name) {
                    push(
                        bp("name"),
                        format!(
                            "pool {:?}: backend name {:?} may only hold letters, digits and -._~",
                            p.name, b.name
                        ),
                    );
                }
                match b.address.parse::<SocketAddr>() {
                    Err(_) => push(bp("address"), format!(
                        "pool {:?}: backend {:?} address {:?} is not IP:port, e.g. \"10.0.0.11:8080\" or \"[2001:db8::11]:8080\"",
                        p.name, b.name, b.address
                    )),
                    Ok(a) => {
                        if !addresses.insert(a) {
                            push(bp("address"), format!(
                                "pool {:?}: backend {:?} has the address {a} of another backend of the pool: it would get twice the traffic",
                                p.name, b.name
                            ));
                        }
                    }
                }
                if b.weight == 0 || b.weight > 1000 {
                    push(
                        bp("weight"),
                        format!(
                            "pool {:?}: backend {:?} weight {} must be between 1 and 1000",
                            p.name, b.name, b.weight
                        ),
                    );
                }
            }
        }
        let mut fronts = BTreeSet::new();
        let mut binds: Vec<(SocketAddr, &str)> = Vec::new();
        for (fi, f) in self.frontend.iter().enumerate() {
            let fp = |k: &'static str| path!["lb", "frontend", fi, k];
            if !fronts.insert(f.name.as_str()) {
                push(
                    fp("name"),
                    format!(
                        "duplicate [[lb.frontend]] {:?}: frontend names must be unique",
                        f.name
                    ),
                );
            }
            match f.bind.parse::<SocketAddr>() {
                Err(_) => push(fp("bind"), format!(
                    "frontend {:?}: bind {:?} is not IP:port, e.g. \"10.0.0.100:80\" (the floating IP) or \"0.0.0.0:80\"",
                    f.name, f.bind
                )),
                Ok(a) => {
                    // Two listeners on one port with SO_REUSEPORT would split
                    // the traffic between them at random.
                    let clash = binds.iter().find(|(o, _)| {
                        o.port() == a.port()
                            && (o.ip() == a.ip() || o.ip().is_unspecified() || a.ip().is_unspecified())
                    });
                    if let Some((o, other)) = clash {
                        push(fp("bind"), format!(
                            "frontend {:?}: bind {a} overlaps frontend {other:?} ({o}): both would listen and split the traffic at random; give each its own address or port",
                            f.name
                        ));
                    }
                    binds.push((a, f.name.as_str()));
                }
            }
            if !pools.contains(f.pool.as_str()) {
                let known: Vec<&str> = self.pool.iter().map(|p| p.name.as_str()).collect();
                push(
                    fp("pool"),
                    format!(
                        "frontend {:?} names unknown pool {:?} (pools: {})",
                        f.name,
                        f.pool,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            if f.mode == LbMode::Http && f.send_proxy_protocol != ProxyProtocolVersion::None {
                push(fp("send_proxy_protocol"), format!(
                    "frontend {:?}: send_proxy_protocol needs mode = \"tcp\" (HTTP backends get the client in X-Forwarded-For and Forwarded)",
                    f.name
                ));
            }
            if f.mode == LbMode::Tcp && !f.tls.is_empty() {
                push(fp("tls"), format!(
                    "frontend {:?}: tls needs mode = \"http\" (TCP mode passes TLS through untouched)",
                    f.name
                ));
            }
            for t in &f.trusted_proxies {
                if crate::parse_cidr(t).is_err() {
                    push(fp("trusted_proxies"), format!(
                        "frontend {:?}: trusted_proxies entry {t:?} is not an address or CIDR, e.g. \"10.0.0.0/8\"",
                        f.name
                    ));
                }
            }
            if f.max_connections == 0 {
                push(
                    fp("max_connections"),
                    format!("frontend {:?}: max_connections must be above 0", f.name),
                );
            }
            if f.max_header_bytes < 8192 {
                push(
                    fp("max_header_bytes"),
                    format!(
                        "frontend {:?}: max_header_bytes {} must be at least 8192",
                        f.name, f.max_header_bytes
                    ),
                );
            }
            if !(1..=256).contains(&f.max_headers) {
                push(
                    fp("max_headers"),
                    format!(
                        "frontend {:?}: max_headers {} must be between 1 and 256",
                        f.name, f.max_headers
                    ),
                );
            }
            for (field, v) in [
                ("header_read_timeout_ms", f.header_read_timeout_ms.ms()),
                ("idle_timeout_ms", f.idle_timeout_ms.ms()),
                ("connect_timeout_ms", f.connect_timeout_ms.ms()),
                ("backend_timeout_ms", f.backend_timeout_ms.ms()),
            ] {
                if v == 0 {
                    push(
                        fp(field),
                        format!("frontend {:?}: {field} must be above 0", f.name),
                    );
                }
            }
        }
        if let Some(bad) = self.nodes.iter().find(|n| n.is_empty()) {
            push(
                path!["lb", "nodes"],
                format!("[lb] nodes entry {bad:?} is empty: name [[node]]s"),
            );
        }
        out
    }
}

/// True when `s` uses only characters safe in a header/cookie name and value.
fn http_token(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> LbSection {
        toml::from_str(text).unwrap()
    }

    const OK: &str = r#"
[[frontend]]
name = "web"
bind = "127.0.0.1:8080"
pool = "p"
[[pool]]
name = "p"
[[pool.backend]]
name = "a"
address = "127.0.0.1:9000"
"#;

    #[test]
    fn minimal_section_is_fine_and_defaults_apply() {
        let s = parse(OK);
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        assert_eq!(s.workers, 1);
        let f = &s.frontend[0];
        assert_eq!(f.mode, LbMode::Http);
        assert_eq!(f.max_header_bytes, 16 * 1024);
        assert_eq!(s.pool[0].algorithm, LbAlgorithm::RoundRobin);
        assert_eq!(s.pool[0].backend[0].weight, 100);
    }

    #[test]
    fn problems_name_the_offending_value() {
        let s = parse(
            &OK.replace("pool = \"p\"", "pool = \"q\"\nsend_proxy_protocol = \"v2\"")
                .replace("127.0.0.1:9000", "nowhere")
                .replace("name = \"a\"", "name = \"a\"\nweight = 0"),
        );
        let p = s.problems().join("\n");
        assert!(p.contains("unknown pool \"q\""), "{p}");
        assert!(p.contains("address \"nowhere\""), "{p}");
        assert!(p.contains("weight 0"), "{p}");
        assert!(
            p.contains("send_proxy_protocol needs mode = \"tcp\""),
            "{p}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(
            toml::from_str::<LbSection>(&OK.replace("[[pool]]", "[[pool]]\nalgoritm = \"x\""))
                .is_err()
        );
    }
}
