//! `keepup db ...`: MariaDB replication setup, status, switchover, checksum.
//!
//! These commands talk to the MariaDB servers of `[database]` directly (with
//! the admin credentials file), not through the agent, so they also work
//! before the agent runs.

use anyhow::Context;
use clap::{Args, Subcommand};
use keepup_config::{Config, DatabaseSection, HostChecks};
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `keepup db`.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: DbCommand,
}

/// `keepup db` subcommands.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Check every server, create the replication account, seed empty
    /// replicas, configure GTID replication and verify it. Safe to re-run.
    Setup {
        /// Wipe this replica's data and copy the primary again (repeatable).
        #[arg(long, value_name = "NAME")]
        reseed: Vec<String>,
    },
    /// Show every server: role, read_only, threads, lag, GTID positions,
    /// problems with advice. Exit status 2 when there are problems.
    Status {
        /// Print Prometheus metrics instead.
        #[arg(long)]
        prometheus: bool,
    },
    /// Move the primary to another server with no transaction lost.
    Switchover {
        /// The server to promote.
        #[arg(long, value_name = "NAME")]
        to: String,
    },
    /// Promote the most advanced replica because the primary is dead (what
    /// the agent does by itself; for manual use when the agent is not running).
    Promote {
        /// The dead primary.
        #[arg(long, value_name = "NAME")]
        dead: String,
    },
    /// Compare table checksums across servers (finds divergence).
    Checksum,
}

fn section(path: &Path) -> anyhow::Result<DatabaseSection> {
    let config = Config::load(path, HostChecks::FileOnly)?;
    config
        .file
        .database
        .clone()
        .with_context(|| format!("{} has no [database] section", path.display()))
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs a DB subcommand.
pub fn run(config: &Path, args: DbArgs) -> anyhow::Result<ExitCode> {
    let section = section(config)?;
    match args.command {
        DbCommand::Setup { reseed } => {
            let opts = keepup_db::SetupOptions { reseed };
            let report = keepup_db::block_on(keepup_db::setup_with(&section, &opts))??;
            if args.json {
                print_json(&report)?;
            } else {
                println!("primary: {}", report.primary);
                if report.unchanged() {
                    println!("already set up: nothing changed");
                }
                for c in &report.changes {
                    println!("changed: {c}");
                }
                for v in &report.verified {
                    println!("verified: {v}");
                }
                if !report.persist.is_empty() {
                    println!("add to my.cnf so these survive a restart:");
                    for p in &report.persist {
                        println!("  {p}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Status { prometheus } => {
            let status = keepup_db::block_on(keepup_db::observe(&section))?;
            if prometheus {
                let mut out = String::new();
                keepup_db::prometheus(&status, &mut out);
                print!("{out}");
            } else if args.json {
                print_json(&status)?;
            } else {
                print!("{}", keepup_db::render(&status));
            }
            Ok(if status.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        DbCommand::Switchover { to } => {
            let r = keepup_db::block_on(keepup_db::switchover(&section, &to))??;
            if args.json {
                print_json(&r)?;
            } else if r.old_primary == r.new_primary {
                println!("{} is already the primary: nothing to do", r.new_primary);
            } else {
                println!(
                    "primary moved {} -> {}; writes unavailable for {:.0} ms; final position {} applied; {} client connection(s) closed",
                    r.old_primary, r.new_primary, r.write_unavailable_ms, r.final_position, r.killed_connections
                );
                for n in &r.repointed {
                    println!("  {n} replicates from {}", r.new_primary);
                }
                for (n, why) in &r.not_repointed {
                    println!("  {n} NOT repointed: {why}");
                }
                if let Some(h) = &r.hook {
                    println!("  {h}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Promote { dead } => {
            let r = keepup_db::block_on(keepup_db::promote_after_failure(&section, &dead))??;
            if args.json {
                print_json(&r)?;
            } else {
                println!(
                    "promoted {} in {:.0} ms (recorded position {})",
                    r.new_primary, r.took_ms, r.recorded_position
                );
                for (n, why) in r.excluded.iter().chain(r.not_repointed.iter()) {
                    println!("  {n}: {why}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Checksum => {
            let r = keepup_db::block_on(keepup_db::checksum(&section))??;
            if args.json {
                print_json(&r)?;
            } else if r.mismatches.is_empty() {
                println!("{} tables identical on {}", r.tables, r.servers.join(", "));
            } else {
                for (t, sums) in &r.mismatches {
                    let parts: Vec<String> = sums.iter().map(|(s, c)| format!("{s}={c}")).collect();
                    println!("DIFFERS {t}: {}", parts.join(" "));
                }
            }
            Ok(if r.mismatches.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}

/// Renders the `db` part of a status document (a serialized
/// `keepup_db::DbStatus`) for a person.
pub fn render_status(db: &serde_json::Value, _colour: bool) -> String {
    let mut o = String::new();
    let primary = db.get("primary").and_then(|p| p.as_str()).unwrap_or("NONE");
    o.push_str(&format!("  database primary: {primary}\n"));
    for s in db
        .get("servers")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
    {
        let name = s.get("name").and_then(|v| v.as_str()).unwrap_or("?");
        let role = s.get("role").and_then(|v| v.as_str()).unwrap_or("?");
        let lag = s
            .get("lag_seconds")
            .and_then(|v| v.as_f64())
            .map(|l| format!(" lag {l:.3}s"))
            .unwrap_or_default();
        let ro = if s
            .get("read_only")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
        {
            " read-only"
        } else {
            ""
        };
        o.push_str(&format!("    {name:<12} {role}{ro}{lag}\n"));
    }
    for p in db
        .get("problems")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
    {
        let server = p.get("server").and_then(|v| v.as_str()).unwrap_or("");
        let msg = p.get("message").and_then(|v| v.as_str()).unwrap_or("");
        let advice = p.get("advice").and_then(|v| v.as_str()).unwrap_or("");
        o.push_str(&format!("    PROBLEM {server}: {msg} -> {advice}\n"));
    }
    o
}
