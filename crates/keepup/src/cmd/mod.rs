//! One module per subcommand.

pub mod cluster_view;
pub mod config;
pub mod control;
pub mod db;
#[cfg(feature = "lab")]
pub mod demo;
pub mod docs;
pub mod init;
#[cfg(feature = "lab")]
pub mod internal;
pub mod lb;
pub mod run;
pub mod status;

use crate::cli::{Cli, Command};
use keepup_config::{Config, HostChecks};
use std::process::ExitCode;

/// Runs the chosen subcommand.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(&cli.config, cli.node.as_deref(), args),
        Command::Status(args) => status::run(&cli.config, cli.node.as_deref(), args),
        Command::ApiToken(a) => control::api_token(&cli.config, a),
        Command::CheckConfig => check_config(&cli.config, cli.node.as_deref()),
        Command::Config(args) => config::run(args),
        Command::Standby(a) => {
            control::node_request(&cli.config, cli.node.as_deref(), a, "standby")
        }
        Command::Online(a) => control::node_request(&cli.config, cli.node.as_deref(), a, "online"),
        Command::Move(a) => control::move_group(&cli.config, a),
        Command::Cleanup(a) => control::cleanup(&cli.config, a),
        Command::Lb(args) => lb::run(&cli.config, args),
        Command::Db(args) => db::run(&cli.config, args),
        Command::Init(args) => init::run(args),
        #[cfg(feature = "lab")]
        Command::Demo(args) => demo::run(args),
        #[cfg(feature = "lab")]
        Command::Internal(cmd) => internal::run(cmd),
        Command::Docs(args) => docs::run(args),
    }
}

/// Loads the config with every host check (key file, this node's addresses).
pub fn load_for_this_host(
    path: &std::path::Path,
    node: Option<&str>,
) -> anyhow::Result<(Config, String)> {
    let config = Config::load(path, HostChecks::Full)?;
    check_lb_files(&config)?;
    let me = config.local_node(node)?.clone();
    config.check_local_addresses(&me)?;
    Ok((config, me.name.get_ref().clone()))
}

/// What only the TLS code can judge, with the file's lines: the load
/// balancer's and the API's TLS files load and each key matches its certificate.
fn check_lb_files(config: &Config) -> Result<(), keepup_config::ConfigErrors> {
    let mut errors: Vec<keepup_config::ConfigError> = Vec::new();
    if let Some(lb) = &config.file.lb {
        errors.extend(
            keepup_lb::tls_problems(lb)
                .into_iter()
                .map(|p| config.error_at(&p.at, format!("[lb] {}", p.message))),
        );
    }
    if let Some(t) = &config.file.api.tls {
        if let Some((field, message)) = keepup_lb::pair_problem(t) {
            errors.push(config.error_at(
                keepup_config::path!["api", "tls", field],
                format!("[api] {message}"),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(keepup_config::ConfigErrors(errors))
    }
}

fn check_config(path: &std::path::Path, node: Option<&str>) -> anyhow::Result<ExitCode> {
    let config = Config::load(path, HostChecks::Full)?;
    check_lb_files(&config)?;
    match config.local_node(node) {
        Ok(me) => {
            config.check_local_addresses(me)?;
            println!(
                "{}: OK ({} nodes, {} groups; this host is node {:?})",
                path.display(),
                config.file.node.len(),
                config.file.group.len(),
                me.name.get_ref()
            );
        }
        Err(e) if node.is_none() => {
            println!(
                "{}: OK ({} nodes, {} groups; note: {})",
                path.display(),
                config.file.node.len(),
                config.file.group.len(),
                e.message
            );
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}
