//! Heartbeat 3 (Debian's `heartbeat` 1:3.0.6) in a lab namespace.
//!
//! Heartbeat keeps its state in fixed paths (`/etc/ha.d`, `/var/lib/heartbeat`,
//! `/run/heartbeat.pid`, `/run/heartbeat/`) and takes its node name from the
//! host name, so each node runs in its own mount and UTS namespace (`unshare
//! -m -u` inside the node's network namespace) with per-node copies bound over
//! those paths and a private tmpfs on `/run`.

use anyhow::{Context, Result};
use keepup_testkit::lab::{sh, Lab};
use std::path::Path;
use std::process::Command;

const DAEMON: &str = "/usr/libexec/heartbeat/heartbeat";

/// Whether Heartbeat can run here.
pub fn available() -> std::result::Result<(), String> {
    if !Path::new(DAEMON).exists() {
        return Err(format!("needs the heartbeat package ({DAEMON})"));
    }
    if keepup_testkit::require::program("unshare").is_none() {
        return Err("needs unshare (util-linux)".into());
    }
    Ok(())
}

/// Writes each node's `/etc/ha.d` and `/var/lib/heartbeat` copies under `dir`.
pub fn prepare(dir: &Path, keepalive_ms: u64, deadtime_ms: u64) -> Result<()> {
    for (name, _, _) in crate::tools::NODES {
        let d = dir.join(format!("hb-{name}"));
        std::fs::create_dir_all(&d)?;
        let d_s = d.to_string_lossy().to_string();
        sh("cp", &["-a", "/etc/ha.d", &format!("{d_s}/ha.d")])?;
        sh("cp", &["-a", "/var/lib/heartbeat", &format!("{d_s}/lib")])?;
        std::fs::write(
            d.join("ha.d/ha.cf"),
            crate::tools::heartbeat_ha_cf(
                name,
                keepalive_ms,
                deadtime_ms,
                &dir.join(format!("{name}-hb.log")),
            ),
        )?;
        std::fs::write(
            d.join("ha.d/haresources"),
            format!("a IPaddr::{}/24/eth0\n", crate::tools::VIP),
        )?;
        let keys = d.join("ha.d/authkeys");
        std::fs::write(&keys, "auth 1\n1 sha1 failover-bench-key\n")?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600))?;
        // A fresh node identity per node (the copy may hold the host's).
        let _ = std::fs::remove_file(d.join("lib/hb_uuid"));
        let _ = std::fs::remove_file(d.join("lib/hostcache"));
        let _ = std::fs::remove_file(d.join("lib/delhostcache"));
    }
    Ok(())
}

/// The command starting Heartbeat on `node` (it daemonizes: the runner finds
/// its processes by name in the namespace).
pub fn command(lab: &Lab, dir: &Path, node: &str) -> Result<Command> {
    let d = dir.join(format!("hb-{node}"));
    let d = d.to_str().context("non-UTF-8 path")?;
    let script = format!(
        "set -e; hostname {node}; mount --make-rprivate /; \
         mount --bind {d}/ha.d /etc/ha.d; mount --bind {d}/lib /var/lib/heartbeat; \
         mount -t tmpfs tmpfs /run; mkdir -p /run/heartbeat/ccm /run/heartbeat/crm /run/heartbeat/dopd /run/resource-agents; \
         chown -R hacluster:haclient /run/heartbeat; exec {DAEMON}"
    );
    let mut c = lab.command(node, "unshare")?;
    c.args(["-m", "-u", "sh", "-c", &script]);
    Ok(c)
}
