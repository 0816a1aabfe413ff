//! The command line: one subcommand per operator task.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// keepup keeps a website up on a handful of servers: heartbeat and failover of a
/// floating IP, load balancing over the web servers, and MariaDB replication.
#[derive(Debug, Parser)]
#[command(name = "keepup", version, about, long_about = None)]
pub struct Cli {
    /// Path of keepup.toml.
    #[arg(
        short,
        long,
        global = true,
        env = "KEEPUP_CONFIG",
        default_value = "/etc/keepup/keepup.toml"
    )]
    pub config: PathBuf,
    /// This node's name (default: the host name).
    #[arg(long, global = true, env = "KEEPUP_NODE")]
    pub node: Option<String>,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// All subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent on this node (heartbeats, election, resources, load balancer).
    Run(crate::cmd::run::RunArgs),
    /// Show the cluster as the local agent sees it.
    Status(crate::cmd::status::StatusArgs),
    /// Validate the config file (and, with --node, this host's part of it) and exit.
    CheckConfig,
    /// Print config templates.
    Config(crate::cmd::config::ConfigArgs),
    /// Move every resource group off a node for maintenance (like Pacemaker's standby).
    Standby(crate::cmd::control::NodeArg),
    /// Let a node in standby hold resource groups again.
    Online(crate::cmd::control::NodeArg),
    /// Move a resource group to another node (run it on the group's current owner).
    Move(crate::cmd::control::MoveArgs),
    /// Clear a group stuck by a failed stop, once you have stopped it by hand.
    Cleanup(crate::cmd::control::CleanupArgs),
    /// Print the API's control token (or --read-only the read token), for
    /// scripts and the dashboard from another host (root: it is derived from the cluster key).
    ApiToken(crate::cmd::control::ApiTokenArgs),
    /// Load-balancer operations (drain, enable, maintenance, reload).
    Lb(crate::cmd::lb::LbArgs),
    /// Database replication: setup, status, switchover, checksum.
    Db(crate::cmd::db::DbArgs),
    /// Write the first files of a new cluster: the shared key and a starting keepup.toml.
    Init(crate::cmd::init::InitArgs),
    /// Build a whole demo site in network namespaces on this machine and fail it over (root).
    #[cfg(feature = "lab")]
    Demo(crate::cmd::demo::DemoArgs),
    /// Helpers the demo, tests and benchmarks run inside lab namespaces.
    #[cfg(feature = "lab")]
    #[command(hide = true, subcommand)]
    Internal(crate::cmd::internal::Internal),
    /// Man pages and shell completions from this CLI (the package build runs it).
    #[command(hide = true)]
    Docs(crate::cmd::docs::DocsArgs),
}

#[cfg(test)]
mod tests {
    // clap's own consistency checks (unique flags, valid defaults) over
    // every subcommand, which otherwise fire only when a command is built.
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
