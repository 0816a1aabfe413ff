//! The tools under test and how each one's configuration is written and its
//! daemon started in a lab namespace.

use std::path::Path;

/// The floating IP every tool moves.
pub const VIP: &str = "10.77.0.100";
/// The two cluster nodes: name, host index (address 10.77.0.H), priority.
pub const NODES: [(&str, u8, u32); 2] = [("a", 1, 200), ("b", 2, 100)];

/// A tool and its setting.
#[derive(Debug, Clone, PartialEq)]
pub enum Tool {
    /// `keepup run` with these timings (ms).
    Keepup {
        /// Short label (`keepup-default`, `keepup-fast`).
        label: String,
        /// `[timing] heartbeat_ms`.
        heartbeat_ms: u64,
        /// `[timing] dead_ms`.
        dead_ms: u64,
    },
    /// keepalived (Debian package) in VRRP-only mode.
    Keepalived {
        /// VRRP version 2 or 3.
        version: u8,
        /// `advert_int` in seconds.
        advert_s: f64,
    },
    /// Heartbeat 3 (Debian package) with `keepalive`/`deadtime` in ms.
    Heartbeat {
        /// `keepalive` in ms.
        keepalive_ms: u64,
        /// `deadtime` in ms.
        deadtime_ms: u64,
    },
}

impl Tool {
    /// The label used in tables and `--only`.
    pub fn label(&self) -> String {
        match self {
            Tool::Keepup { label, .. } => label.clone(),
            Tool::Keepalived { version, .. } => format!("keepalived-v{version}"),
            Tool::Heartbeat { .. } => "heartbeat".into(),
        }
    }

    /// A human description of the setting.
    pub fn setting(&self) -> String {
        match self {
            Tool::Keepup {
                heartbeat_ms,
                dead_ms,
                ..
            } => format!("heartbeat {heartbeat_ms} ms, dead {dead_ms} ms"),
            Tool::Keepalived { version, advert_s } => {
                format!("VRRPv{version}, advert_int {advert_s} s")
            }
            Tool::Heartbeat {
                keepalive_ms,
                deadtime_ms,
            } => format!("keepalive {keepalive_ms} ms, deadtime {deadtime_ms} ms"),
        }
    }

    /// Whether this tool is a keepup setting (the others are peers).
    pub fn is_keepup(&self) -> bool {
        matches!(self, Tool::Keepup { .. })
    }

    /// How long to let the backup settle after the owner serves steadily
    /// before failing it: a few of the tool's own advert intervals, so the
    /// failure hits a steady state (keepalived's backup right after startup
    /// was seen to take over early, after 0.6 s instead of 3.6 s).
    pub fn settle(&self) -> std::time::Duration {
        let ms = match self {
            Tool::Keepup { heartbeat_ms, .. } => (10 * heartbeat_ms).max(1000),
            Tool::Keepalived { advert_s, .. } => ((4.0 * advert_s * 1000.0) as u64).max(1000),
            Tool::Heartbeat { .. } => 3000,
        };
        std::time::Duration::from_millis(ms)
    }

    /// Names of the daemon's processes (`/proc/PID/comm`) for kill -9.
    pub fn comm(&self) -> &'static str {
        match self {
            Tool::Keepup { .. } => "keepup",
            Tool::Keepalived { .. } => "keepalived",
            Tool::Heartbeat { .. } => "heartbeat",
        }
    }
}

/// keepup's third vote in the lab (never failed by the benchmark).
pub const WITNESS: (&str, u8) = ("w", 9);

/// keepup's config for every node (one file): nodes a and b, a witness,
/// the VIP group, failback on with no delay.
pub fn keepup_toml(dir: &Path, heartbeat_ms: u64, dead_ms: u64) -> String {
    let warn = (2 * heartbeat_ms).min(dead_ms);
    let mut t = format!(
        "[cluster]\nname = \"bench\"\nkey_file = \"{}\"\n\n\
         [timing]\nheartbeat_ms = {heartbeat_ms}\ndead_ms = {dead_ms}\nwarn_ms = {warn}\ninitial_dead_ms = 1000\n\n\
         [failback]\nauto = true\ndelay_ms = 0\n\n",
        dir.join("key").display()
    );
    for (name, idx, prio) in NODES {
        t.push_str(&format!(
            "[[node]]\nname = \"{name}\"\naddresses = [\"10.77.0.{idx}\"]\npriority = {prio}\n\n"
        ));
    }
    t.push_str(&format!(
        "[[node]]\nname = \"{}\"\naddresses = [\"10.77.0.{}\"]\nrole = \"witness\"\n\n",
        WITNESS.0, WITNESS.1
    ));
    // VIP resource with keepup's defaults for GARP (3 x 100 ms) and monitoring.
    t.push_str(&format!(
        "[[group]]\nname = \"site\"\n\n[[group.resource]]\ntype = \"vip\"\naddress = \"{VIP}/24\"\ninterface = \"eth0\"\n"
    ));
    t
}

/// keepalived.conf for node `me` (unicast to the other node, keepalived's
/// GARP defaults, preemption on as by default).
pub fn keepalived_conf(me: &str, version: u8, advert_s: f64) -> String {
    let (_, my_idx, prio) = NODES
        .iter()
        .copied()
        .find(|(n, _, _)| *n == me)
        .unwrap_or(NODES[0]);
    let peer_idx = NODES
        .iter()
        .find(|(n, _, _)| *n != me)
        .map(|n| n.1)
        .unwrap_or(2);
    format!(
        "global_defs {{\n  router_id {me}\n  vrrp_version {version}\n  script_user root\n}}\n\n\
         vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority {prio}\n  advert_int {advert_s}\n  \
         unicast_src_ip 10.77.0.{my_idx}\n  unicast_peer {{\n    10.77.0.{peer_idx}\n  }}\n  \
         virtual_ipaddress {{\n    {VIP}/24 dev eth0\n  }}\n}}\n"
    )
}

/// Heartbeat 3 `ha.cf` for node `me`.
pub fn heartbeat_ha_cf(me: &str, keepalive_ms: u64, deadtime_ms: u64, log: &Path) -> String {
    let peer_idx = NODES
        .iter()
        .find(|(n, _, _)| *n != me)
        .map(|n| n.1)
        .unwrap_or(2);
    let warn = (2 * keepalive_ms).min(deadtime_ms);
    format!(
        "logfacility none\nlogfile {}\n\
         keepalive {keepalive_ms}ms\nwarntime {warn}ms\ndeadtime {deadtime_ms}ms\ninitdead 2\n\
         udpport 694\nucast eth0 10.77.0.{peer_idx}\nauto_failback on\n\
         node a\nnode b\ncrm no\n",
        log.display()
    )
}
