//! Checks that serde cannot make, each reported with its line.

use crate::{ConfigError, ConfigErrors, FenceConfig, FileConfig, HostChecks, ResourceConfig};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use toml::Spanned;

/// 1-based line number of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn at<T>(&mut self, spanned: &Spanned<T>, msg: impl Into<String>) {
        let line = line_of(self.text, spanned.span().start);
        self.errors
            .push(ConfigError::new(self.path, Some(line), msg.into()));
    }
    /// At the line of the value `path` leads to (`lb.frontend[1].bind`),
    /// for sections without spans; the nearest written parent when the
    /// value is a default.
    fn at_path(&mut self, path: impl AsRef<[crate::locate::Step]>, msg: impl Into<String>) {
        let line =
            crate::locate::offset_of(self.text, path.as_ref()).map(|o| line_of(self.text, o));
        self.errors
            .push(ConfigError::new(self.path, line, msg.into()));
    }
    /// Line of the first `"value"` after `after` (values inside resources carry no span).
    fn at_value<T>(&mut self, after: &Spanned<T>, value: &str, msg: impl Into<String>) {
        let start = after.span().start;
        let needle = format!("{value:?}");
        let line = self.text[start.min(self.text.len())..]
            .find(&needle)
            .map(|i| line_of(self.text, start + i))
            .unwrap_or_else(|| line_of(self.text, start));
        self.errors
            .push(ConfigError::new(self.path, Some(line), msg.into()));
    }
    fn nowhere(&mut self, msg: impl Into<String>) {
        self.errors
            .push(ConfigError::new(self.path, None, msg.into()));
    }
    fn secret_file(&mut self, file: &Spanned<std::path::PathBuf>, what: &str, min_len: usize) {
        if let Some(msg) = secret_file_problem(file.get_ref(), what, min_len) {
            self.at(file, msg);
        }
    }
}

/// An I/O error without Rust's "(os error N)".
pub(crate) fn plain_io(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// `a, b, c`, or "none".
fn list(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// What is wrong with a secret file, if anything: missing, readable by others, too short.
fn secret_file_problem(p: &Path, what: &str, min_len: usize) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    {
        match std::fs::metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
                "{what} {} does not exist: create it (mode 0600) or fix the path",
                p.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some(format!(
                "{what} {} cannot be read: permission denied (run as root)",
                p.display()
            )),
            Err(e) => Some(format!("{what} {}: {}", p.display(), plain_io(&e))),
            Ok(m) => {
                if m.permissions().mode() & 0o077 != 0 {
                    Some(format!(
                        "{what} {} is readable by other users (mode {:o}); run: chmod 600 {}",
                        p.display(),
                        m.permissions().mode() & 0o777,
                        p.display()
                    ))
                } else if (m.len() as usize) < min_len {
                    Some(
                        format!(
                            "{what} {} holds {} bytes; it needs at least {min_len} (e.g. head -c 32 /dev/urandom > {})",
                            p.display(),
                            m.len(),
                            p.display()
                        ),
                    )
                } else {
                    None
                }
            }
        }
    }
}

/// Parses `10.0.0.1/24` (prefix optional) into address and prefix length.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
            format!("{s:?} has a bad prefix length: it must be a number from 0 to {max}")
        })?,
    };
    Ok((ip, prefix))
}

pub(crate) fn validate(
    path: &Path,
    text: &str,
    f: &FileConfig,
    checks: HostChecks,
) -> Result<(), ConfigErrors> {
    let mut c = Checker {
        path,
        text,
        errors: Vec::new(),
    };

    let name = f.cluster.name.get_ref();
    if name.is_empty() || name.len() > 32 {
        c.at(&f.cluster.name, "cluster name must be 1 to 32 bytes");
    }

    let t = f.timing.in_ms();
    use crate::path;
    if t.heartbeat_ms == 0 {
        c.at_path(
            path!["timing", "heartbeat_ms"],
            "[timing] heartbeat_ms must be above 0",
        );
    }
    if t.dead_ms < 2 * t.heartbeat_ms {
        c.at_path(path!["timing", "dead_ms"], format!(
            "[timing] dead_ms ({}) must be at least twice heartbeat_ms ({}), or one lost packet is a failover",
            t.dead_ms, t.heartbeat_ms
        ));
    }
    if t.warn_ms < t.heartbeat_ms || t.warn_ms > t.dead_ms {
        c.at_path(
            path!["timing", "warn_ms"],
            format!(
                "[timing] warn_ms ({}) must lie between heartbeat_ms ({}) and dead_ms ({})",
                t.warn_ms, t.heartbeat_ms, t.dead_ms
            ),
        );
    }

    if let Some(lease) = t.lease_ms {
        if lease < 2 * t.heartbeat_ms {
            c.at_path(
                path!["timing", "lease_ms"],
                format!(
                    "[timing] lease_ms ({lease}) must be at least twice heartbeat_ms ({})",
                    t.heartbeat_ms
                ),
            );
        }
    }
    let lease = t.lease_ms.unwrap_or(t.dead_ms);
    if let Some(bound) = t.stop_bound_ms {
        if bound * 2 > lease {
            c.at_path(path!["timing", "stop_bound_ms"], format!(
                "[timing] stop_bound_ms ({bound}) must be at most half of the lease ({lease} ms): the holder starts stopping this long before its lease ends; raise lease_ms"
            ));
        }
    }

    if f.node.is_empty() {
        c.nowhere("no [[node]] defined; a cluster needs at least one");
    }
    let unguarded = match f.cluster.quorum {
        crate::QuorumPolicy::None => true,
        crate::QuorumPolicy::Majority => false,
        crate::QuorumPolicy::Auto => f.node.len() < 3,
    };
    let mut ids = std::collections::BTreeMap::new();
    for n in &f.node {
        if let Some(other) = ids.insert(consensus_id(n.name.get_ref()), n.name.get_ref()) {
            c.at(
                &n.name,
                format!(
                    "node names {other:?} and {:?} hash to the same consensus id; rename one",
                    n.name.get_ref()
                ),
            );
        }
    }
    let witnesses: BTreeSet<&String> = f
        .node
        .iter()
        .filter(|n| n.is_witness())
        .map(|n| n.name.get_ref())
        .collect();
    if f.node.iter().all(|n| n.is_witness()) && !f.node.is_empty() {
        c.nowhere(
            "every [[node]] is a witness: at least one must be role = \"node\" to hold groups",
        );
    }
    let mut names = BTreeSet::new();
    let mut seen_addresses: std::collections::BTreeMap<IpAddr, String> = Default::default();
    let links = f.node.first().map(|n| n.addresses.len()).unwrap_or(0);
    for n in &f.node {
        let nm = n.name.get_ref();
        if nm.is_empty() || nm.len() > 63 {
            c.at(&n.name, "node name must be 1 to 63 bytes");
        }
        if !names.insert(nm.clone()) {
            c.at(&n.name, format!("duplicate node {nm:?}"));
        }
        if n.addresses.is_empty() {
            c.at(&n.name, format!("node {nm:?} has no addresses"));
        } else if n.addresses.len() != links {
            c.at(
                &n.name,
                format!(
                    "node {nm:?} has {} addresses but the first node has {links}; the i-th address of every node forms heartbeat link i",
                    n.addresses.len()
                ),
            );
        }
        for a in &n.addresses {
            match a.get_ref().parse::<IpAddr>() {
                Err(_) => c.at(
                    a,
                    format!(
                        "{:?} is not an IP address (write it without port or prefix, e.g. \"10.0.0.1\")",
                        a.get_ref()
                    ),
                ),
                Ok(ip) => {
                    if let Some(other) = seen_addresses.insert(ip, nm.clone()) {
                        c.at(
                            a,
                            format!(
                                "address {ip} is given twice ({}): every node needs its own address on each link",
                                if other == *nm { format!("twice for node {nm:?}") } else { format!("for nodes {other:?} and {nm:?}") }
                            ),
                        );
                    }
                }
            }
        }
    }
    // Link i joins the i-th address of every node: one address family per link.
    for i in 0..links {
        let mut v4: Option<&String> = None;
        let mut v6: Option<&String> = None;
        for n in &f.node {
            match n
                .addresses
                .get(i)
                .and_then(|a| a.get_ref().parse::<IpAddr>().ok())
            {
                Some(IpAddr::V4(_)) => v4 = v4.or(Some(n.name.get_ref())),
                Some(IpAddr::V6(_)) => v6 = v6.or(Some(n.name.get_ref())),
                None => {}
            }
        }
        if let (Some(a), Some(b)) = (v4, v6) {
            if let Some(n) = f.node.iter().find(|n| n.name.get_ref() == b) {
                if let Some(addr) = n.addresses.get(i) {
                    c.at(
                        addr,
                        format!(
                            "heartbeat link {} mixes IPv4 (node {a:?}) and IPv6 (node {b:?}): the i-th address of every node forms link i, so give every node the same family there",
                            i + 1
                        ),
                    );
                }
            }
        }
    }

    let mut groups = BTreeSet::new();
    let mut vips: std::collections::BTreeMap<IpAddr, String> = Default::default();
    for g in &f.group {
        if !groups.insert(g.name.get_ref().clone()) {
            c.at(&g.name, format!("duplicate group {:?}", g.name.get_ref()));
        }
        for n in &g.nodes {
            if witnesses.contains(n.get_ref()) {
                c.at(
                    n,
                    format!(
                        "group {:?} names {:?}, a witness: witnesses vote but never hold groups",
                        g.name.get_ref(),
                        n.get_ref()
                    ),
                );
            }
            if !names.contains(n.get_ref()) {
                c.at(
                    n,
                    format!(
                        "group {:?} names unknown node {:?}",
                        g.name.get_ref(),
                        n.get_ref()
                    ),
                );
            }
        }
        if g.resource.is_empty() {
            c.at(
                &g.name,
                format!("group {:?} has no resources", g.name.get_ref()),
            );
        }
        if let Some(FenceConfig::Digitalocean {
            token_file,
            droplets,
            timeout_ms,
            ..
        }) = &g.fence
        {
            let holders: Vec<&String> = if g.nodes.is_empty() {
                f.node
                    .iter()
                    .filter(|n| !n.is_witness())
                    .map(|n| n.name.get_ref())
                    .collect()
            } else {
                g.nodes.iter().map(|n| n.get_ref()).collect()
            };
            for h in &holders {
                if !droplets.contains_key(*h) {
                    c.at(
                        &g.name,
                        format!(
                            "group {:?}: the digitalocean fence has no droplet id for node {h:?}; add it to [group.fence] droplets, e.g. droplets = {{ {h:?} = 3164444 }}",
                            g.name.get_ref()
                        ),
                    );
                }
            }
            for (n, id) in droplets {
                if !holders.contains(&n) {
                    c.at(
                        &g.name,
                        format!(
                            "group {:?}: the digitalocean fence lists {n:?}, which cannot hold the group",
                            g.name.get_ref()
                        ),
                    );
                }
                if *id == 0 {
                    c.at(
                        &g.name,
                        format!(
                            "group {:?}: droplet id 0 for {n:?} is not a droplet",
                            g.name.get_ref()
                        ),
                    );
                }
            }
            if timeout_ms.ms() == 0 {
                c.at(
                    &g.name,
                    format!(
                        "group {:?}: the fence's timeout_ms must be greater than 0",
                        g.name.get_ref()
                    ),
                );
            }
            if checks != HostChecks::FileOnly {
                if let Some(msg) = secret_file_problem(token_file, "DigitalOcean token file", 1) {
                    c.at_value(&g.name, &token_file.to_string_lossy(), msg);
                }
            }
        }
        for r in &g.resource {
            match r {
                ResourceConfig::Vip(v) => match parse_cidr(&v.address) {
                    Err(e) => c.at_value(&g.name, &v.address, e),
                    Ok((ip, _)) => {
                        if let Some(other) = vips.insert(ip, g.name.get_ref().clone()) {
                            c.at_value(
                                &g.name,
                                &v.address,
                                format!(
                                    "floating IP {ip} is in group {other:?} already: two groups would move it independently and both hold it; keep it in one group"
                                ),
                            );
                        }
                    }
                },
                ResourceConfig::Digitalocean(d) => {
                    if d.reserved_ip.parse::<IpAddr>().is_err() {
                        c.at_value(
                            &g.name,
                            &d.reserved_ip,
                            format!("reserved_ip {:?} is not an IP address", d.reserved_ip),
                        );
                    }
                    if checks != HostChecks::FileOnly {
                        let tf = d.token_file.to_string_lossy();
                        if let Some(msg) =
                            secret_file_problem(&d.token_file, "DigitalOcean token file", 1)
                        {
                            c.at_value(&g.name, &tf, msg);
                        }
                    }
                }
                ResourceConfig::Exec(_) => {}
                ResourceConfig::DbPrimary(d) => {
                    if unguarded {
                        c.at(
                            &g.name,
                            format!(
                                "group {:?} has a db-primary resource, which must never run on two nodes at once, but ownership is unguarded (quorum = \"none\", or \"auto\" with fewer than 3 nodes): a partition would make both servers writable. Add a witness, e.g. [[node]] name = \"witness\" addresses = [...] role = \"witness\" (the backup server or a small VM)",
                                g.name.get_ref()
                            ),
                        );
                    }
                    let servers: Vec<&str> = f
                        .database
                        .as_ref()
                        .map(|db| db.server.iter().map(|s| s.name.as_str()).collect())
                        .unwrap_or_default();
                    if f.database.is_none() {
                        c.at(&g.name, format!("group {:?} has a db-primary resource but there is no [database] section", g.name.get_ref()));
                    } else if let Some(s) = &d.server {
                        if !servers.contains(&s.as_str()) {
                            c.at_value(
                                &g.name,
                                s,
                                format!(
                                    "db-primary names unknown server {s:?} (servers: {})",
                                    servers.join(", ")
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
    for t in &f.split_brain.ping_targets {
        if t.get_ref().parse::<IpAddr>().is_err() {
            c.at(
                t,
                format!("ping target {:?} is not an IP address", t.get_ref()),
            );
        }
    }

    if let Some(lb) = &f.lb {
        for n in &lb.nodes {
            if !names.contains(n) {
                c.at_path(
                    path!["lb", "nodes"],
                    format!("[lb] nodes names unknown node {n:?}"),
                );
            }
        }
        for p in lb.problems_at() {
            c.at_path(&p.at, format!("[lb] {}", p.message));
        }
    }
    if let Some(db) = &f.database {
        for p in db.problems_at() {
            c.at_path(&p.at, format!("[database] {}", p.message));
        }
        if let Some(g) = &db.writer.group {
            if !groups.contains(g) {
                c.at_path(
                    path!["database", "writer", "group"],
                    format!(
                        "[database] writer group {g:?} is not a [[group]] (groups: {})",
                        list(&groups)
                    ),
                );
            }
        }
        if let Some(fe) = &db.writer.lb_frontend {
            let fronts: BTreeSet<String> =
                f.lb.iter()
                    .flat_map(|lb| lb.frontend.iter().map(|x| x.name.clone()))
                    .collect();
            if !fronts.contains(fe) {
                c.at_path(
                    path!["database", "writer", "lb_frontend"],
                    format!("[database] writer lb_frontend {fe:?} is not a [[lb.frontend]] (frontends: {})", list(&fronts)),
                );
            }
        }
        for (i, s) in db.server.iter().enumerate() {
            if !names.contains(s.node()) {
                c.at_path(
                    path!["database", "server", i, if s.node.is_some() { "node" } else { "name" }],
                    format!(
                        "[database] server {:?} runs on node {:?}, which is not a [[node]]; set node = \"...\" to the keepup node it runs on (nodes: {})",
                        s.name,
                        s.node(),
                        list(&names)
                    ),
                );
            }
        }
        if checks == HostChecks::Full {
            let mut files = vec![(
                path!["database", "admin_credentials_file"],
                &db.admin_credentials_file,
                "database admin credentials file",
            )];
            for (i, s) in db.server.iter().enumerate() {
                if let Some(a) = &s.admin_credentials_file {
                    files.push((
                        path!["database", "server", i, "admin_credentials_file"],
                        a,
                        "database admin credentials file",
                    ));
                }
            }
            for (at, file, what) in files {
                if let Some(msg) = secret_file_problem(file, what, 1) {
                    c.at_path(&at, msg);
                }
            }
        }
    }

    if f.api
        .listen
        .get_ref()
        .parse::<std::net::SocketAddr>()
        .is_err()
    {
        c.at(
            &f.api.listen,
            format!(
                "[api] listen {:?} is not an address: write IP:PORT, e.g. \"127.0.0.1:7947\" (loopback only) or \"0.0.0.0:7947\" (every address; remote reads need the read token)",
                f.api.listen.get_ref()
            ),
        );
    }
    if !(1..=65_536).contains(f.api.max_connections.get_ref()) {
        c.at(
            &f.api.max_connections,
            "[api] max_connections must be between 1 and 65536".to_string(),
        );
    }
    for h in &f.api.hosts {
        let name = h.get_ref();
        if name.is_empty() || name.contains([':', '/', ' ']) {
            c.at(
                h,
                format!("[api] hosts entry {name:?} must be a bare host name (no port, scheme or path), e.g. \"lb1.example.net\""),
            );
        }
    }

    if let HostChecks::Full = checks {
        c.secret_file(&f.cluster.key_file, "key file", 16);
        if let Some(tok) = &f.api.token_file {
            c.secret_file(tok, "API token file", 16);
        }
        if let Some(tok) = &f.api.read_token_file {
            c.secret_file(tok, "API read token file", 16);
        }
    }

    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(c.errors))
    }
}

/// The consensus engine's id for a node name: a stable hash (FNV-1a, never
/// 0), so ids survive the config being reordered. keepup-consensus uses
/// this one definition; a collision is refused by `validate`.
pub fn consensus_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// Addresses configured on this host's interfaces (from /proc, no netlink needed).
pub fn host_addresses() -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    // IPv4: the local routing table lists each address as "|-- A.B.C.D" followed by "/32 host LOCAL".
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut last: Option<IpAddr> = None;
        for line in trie.lines() {
            let l = line.trim();
            if let Some(a) = l.strip_prefix("|-- ") {
                last = a.parse().ok();
            } else if l.contains("host LOCAL") {
                if let Some(a) = last {
                    out.insert(a);
                }
            }
        }
    }
    if let Ok(v6) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in v6.lines() {
            if let Some(hex) = line.split_whitespace().next() {
                if let Ok(n) = u128::from_str_radix(hex, 16) {
                    out.insert(IpAddr::V6(std::net::Ipv6Addr::from(n)));
                }
            }
        }
    }
    out
}

/// Checks that every address of `node` is on one of this host's interfaces.
pub(crate) fn check_node_addresses(
    path: &Path,
    text: &str,
    node: &crate::NodeConfig,
) -> Result<(), ConfigErrors> {
    let have = host_addresses();
    let mut errors = Vec::new();
    for a in &node.addresses {
        if let Ok(ip) = a.get_ref().parse::<IpAddr>() {
            if !have.contains(&ip) {
                errors.push(ConfigError::new(
                    path,
                    Some(line_of(text, a.span().start)),
                    format!(
                        "address {ip} of node {:?} is not on any interface of this host",
                        node.name.get_ref()
                    ),
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}
