//! keepup-db: MariaDB replication managed by keepup, replacing hand-run
//! `CHANGE MASTER TO` and MHA/Orchestrator-style failover scripts.
//!
//! What it owns:
//! - [`setup`]: checks every server, creates the replication account, seeds
//!   empty replicas with a consistent snapshot streamed from the primary,
//!   configures GTID replication (and master-master settings), verifies a row
//!   arrives everywhere. Idempotent.
//! - [`observe`]: a [`DbStatus`] snapshot (threads, true lag through a
//!   heartbeat row, GTID positions, read_only, errant transactions, semi-sync)
//!   with [`Problem`]s that say exactly what to do; [`prometheus`] renders it.
//! - [`switchover`]: planned move of the primary with no transaction lost.
//! - [`promote_after_failure`]: what the cluster agent calls once the primary
//!   is agreed dead: promote the most advanced replica ([`plan`] holds the
//!   pure planner), repoint the others ([`promote_after_failure_seen_down`]
//!   when the caller has just seen the old primary not answer).
//! - [`checksum`]: table checksums across servers (divergence finder).
//! - [`local_server`]: launches throw-away `mariadbd`s for tests and `keepup demo`.
//!
//! What it does not own: deciding that the primary is dead (the cluster
//! agent's job) and moving the floating IP / load-balancer backend (the agent
//! does that from [`DbStatus::primary_node`]; this crate only runs the
//! optional `on_primary_change` hook).
//!
//! Client library: `mysql_async` (default features off, `minimal-rust`: no C
//! zlib, no TLS stack pulled in). It is the maintained async MySQL/MariaDB
//! driver for tokio (the agent's runtime), speaks the protocol
//! natively (no libmysqlclient), and exposes server error codes, which
//! keepup needs to tell "access denied" (1045) from "binlog gone" (1236).
//!
//! MariaDB facts this crate relies on (measured on 10.11): `read_only` does not
//! stop accounts with READ_ONLY ADMIN/SUPER (root), and there is no
//! `super_read_only`, so keepup's own writes on replicas run with
//! `SET sql_log_bin = 0` (else GTID strict mode breaks on errant GTIDs), and
//! application accounts must not have SUPER. Semi-sync is acknowledged by
//! any one replica, hence promoting the most advanced one.
//!
//! # What each server's my.cnf should hold
//!
//! ```text
//! server_id          = N          # unique, non-zero
//! log_bin            = mysql-bin
//! binlog_format      = ROW
//! log_slave_updates  = ON         # a promoted replica must serve the others
//! gtid_strict_mode   = ON
//! gtid_domain_id     = N          # master-master: one per writable master
//! read_only          = ON         # on every server: keepup opens the primary
//! skip_slave_start   = ON         # a returning server must not resume by itself
//! ```
//!
//! `setup` checks the first five and refuses without them; it sets
//! `read_only`, semi-sync and master-master settings at runtime and lists in
//! [`SetupReport::persist`] what to copy into my.cnf.
//!
//! # Wiring into the agent
//!
//! - Poll [`observe`] (every second or so; each call is bounded by
//!   `connect_timeout_ms`) and serve the [`DbStatus`] (it is `Serialize`)
//!   and [`prometheus`] text.
//! - Keep the `[database.writer] group` on [`DbStatus::primary_node`].
//! - When the cluster agrees the primary's node is dead, call
//!   [`promote_after_failure`] once (from one node: the one holding the
//!   writer group), then move the writer group to the new primary's node.
//! - Never call it while the old primary answers: it refuses if the old
//!   primary is reachable and writable.

#![forbid(unsafe_code)]

mod checksum;
pub mod conn;
mod error;
mod failover;
pub mod health;
pub mod local_server;
mod observe;
pub mod plan;
mod setup;
mod switchover;

pub use checksum::{checksum, ChecksumReport};
pub use error::DbError;
pub use failover::{
    catch_up_before_opening, promote_after_failure, promote_after_failure_seen_down,
    with_dead_probe_timeout, CaughtUp, PromotionReport, DEAD_PROBE_TIMEOUT_MS,
};
pub use observe::{
    identify_primary, observe, prometheus, render, write_heartbeat, DbStatus, ReplicationThreads,
    Role, SemiSync, ServerStatus, KEEPUP_SCHEMA,
};
pub use setup::{setup, setup_with, SetupOptions, SetupReport};
pub use switchover::{make_read_only, switchover, SwitchoverReport};

use keepup_config::DatabaseSection;
use serde::Serialize;
use std::fmt;

/// One thing wrong, with exact advice. Used by [`DbStatus`] and by refusals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The server concerned (none: the whole topology).
    pub server: Option<String>,
    /// Stable machine-readable kind (`errant_transactions`, `sql_thread_stopped`, ...).
    pub kind: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub advice: String,
}

impl Problem {
    /// Builds a problem.
    pub fn new(server: Option<&str>, kind: &str, message: String, advice: &str) -> Problem {
        Problem {
            server: server.map(str::to_string),
            kind: kind.to_string(),
            message,
            advice: advice.to_string(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.server {
            write!(f, "{s}: ")?;
        }
        write!(f, "{} [{}] -> {}", self.message, self.kind, self.advice)
    }
}

/// Checks what serde cannot: at least two servers, unique names and
/// addresses, the preferred primary exists, master-master has exactly two
/// (the schema's own checks, which `keepup check-config` reports with lines).
pub fn check_section(section: &DatabaseSection) -> Result<(), DbError> {
    let errs: Vec<String> = section
        .problems_at()
        .into_iter()
        .map(|p| p.message)
        .collect();
    if errs.is_empty() {
        Ok(())
    } else {
        Err(DbError::Config(errs.join("; ")))
    }
}

/// Runs `future` to completion on a new current-thread tokio runtime (for
/// the `keepup db` commands, which are not inside the agent's runtime).
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, DbError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DbError::Config(format!("cannot start the async runtime: {e}")))?;
    Ok(rt.block_on(future))
}

/// Runs the configured `on_primary_change` command, if any, with
/// `KEEPUP_DB_PRIMARY` and `KEEPUP_DB_PRIMARY_ADDRESS` set. Returns what
/// happened, for reports (a failing hook does not undo the promotion).
pub(crate) async fn run_hook(section: &DatabaseSection, primary: &str) -> Option<String> {
    let cmd = section.writer.on_primary_change.as_ref()?;
    let address = section
        .server(primary)
        .map(|s| s.address.clone())
        .unwrap_or_default();
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env("KEEPUP_DB_PRIMARY", primary)
        .env("KEEPUP_DB_PRIMARY_ADDRESS", &address)
        .kill_on_drop(true)
        .output();
    Some(
        match tokio::time::timeout(std::time::Duration::from_secs(30), child).await {
            Err(_) => format!("on_primary_change {cmd:?} timed out after 30 s"),
            Ok(Err(e)) => format!("on_primary_change {cmd:?} could not run: {e}"),
            Ok(Ok(o)) if o.status.success() => format!("on_primary_change {cmd:?} ran"),
            Ok(Ok(o)) => format!(
                "on_primary_change {cmd:?} failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use keepup_config::DbServer;

    fn server(name: &str, address: &str) -> DbServer {
        DbServer {
            name: name.into(),
            address: address.into(),
            replication_address: None,
            node: None,
            no_promote: false,
            admin_credentials_file: None,
        }
    }

    #[test]
    fn section_checks() {
        let mut s = DatabaseSection::new(
            "/x".into(),
            vec![server("a", "127.0.0.1:1"), server("b", "127.0.0.1:2")],
        );
        assert!(check_section(&s).is_ok());
        s.preferred_primary = Some("zz".into());
        assert!(check_section(&s).is_err());
        s.preferred_primary = None;
        s.server.push(server("a", "127.0.0.1:2"));
        let e = check_section(&s).expect_err("dups").to_string();
        assert!(
            e.contains("\"a\" is used twice") && e.contains("used twice"),
            "{e}"
        );
        s.server.pop();
        s.topology = keepup_config::DbTopology::MasterMaster;
        s.server.push(server("c", "127.0.0.1:3"));
        assert!(check_section(&s).is_err());
    }

    /// The commented `[database]` example at the end of example.toml parses
    /// once uncommented (keepup-config's own test covers the rest).
    #[test]
    fn example_database_section_parses() {
        let ex = keepup_config::EXAMPLE;
        let start = ex
            .find("# [database]")
            .expect("example has a [database] block");
        let mut text: String = ex[..start].to_string();
        for l in ex[start..].lines() {
            let l = l.strip_prefix("# ").unwrap_or(l);
            let l = if l.starts_with('#') { "" } else { l };
            text.push_str(l);
            text.push('\n');
        }
        let c = keepup_config::Config::parse(
            std::path::Path::new("keepup.toml"),
            &text,
            keepup_config::HostChecks::FileOnly,
        )
        .expect("uncommented example parses");
        let db = c.file.database.expect("database section");
        assert_eq!(db.server.len(), 2);
        assert_eq!(db.writer.group.as_deref(), Some("db-writer"));
        assert!(check_section(&db).is_ok());
    }
}
