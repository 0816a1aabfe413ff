//! Control requests to an agent's API: `keepup standby|online [NODE]`, and
//! the helper `post` used by `keepup lb` and `keepup db`.

use anyhow::Context;
use clap::Args;
use keepup_config::{Config, HostChecks};
use std::path::Path;
use std::process::ExitCode;

/// A node to act on.
#[derive(Debug, Args)]
pub struct NodeArg {
    /// The node (default: this host's node). Another node's agent must listen
    /// on a non-loopback `api.listen`.
    pub target: Option<String>,
}

/// The address to dial for this host's agent.
pub fn local_api(config: &Config) -> anyhow::Result<String> {
    Ok(config.file.api.local_addr().to_string())
}

/// Where `node`'s agent answers from another host.
pub fn api_of_node(config: &Config, node: &str) -> anyhow::Result<String> {
    let n = config
        .node(node)
        .with_context(|| format!("no node {node:?} in {}", config.path.display()))?;
    config
        .file
        .api
        .remote_addr(n)
        .map(|a| a.to_string())
        .map_err(|e| anyhow::anyhow!(e))
}

/// Where to reach `target`'s API: this host's `api.listen`, or the node's
/// first address on the same port.
fn api_of(config: &Config, local: Option<&str>, target: Option<&str>) -> anyhow::Result<String> {
    let local_name = local
        .map(str::to_string)
        .unwrap_or_else(keepup_config::hostname);
    let Some(t) = target.filter(|t| *t != local_name) else {
        return local_api(config);
    };
    api_of_node(config, t)
}

/// The API tokens for `config`: its token files, else derived from the
/// cluster key (readable by root).
pub fn tokens(config: &Config) -> anyhow::Result<keepup_api::ApiTokens> {
    keepup_agent::api_tokens(&config.file).map_err(|e| anyhow::anyhow!(e))
}

/// Arguments of `keepup api-token`.
#[derive(Debug, Args)]
pub struct ApiTokenArgs {
    /// The read-only token (status, events, metrics, the dashboard) instead
    /// of the control token.
    #[arg(long)]
    pub read_only: bool,
}

/// `keepup api-token [--read-only]`: prints the token and, for the read
/// token, the dashboard address to open.
pub fn api_token(config_path: &Path, args: ApiTokenArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path, HostChecks::FileOnly)?;
    let t = tokens(&config)?;
    if args.read_only {
        println!("{}", t.read);
        eprintln!(
            "dashboard from another host: http://NODE:{}/#token={} (the page keeps it and clears it from the address bar)",
            config.file.api.listen_addr().port(),
            t.read
        );
    } else {
        println!("{}", t.control);
    }
    Ok(ExitCode::SUCCESS)
}

/// The client for `config`'s agents: HTTPS trusting `[api.tls] cert` when set.
pub fn client(
    config: &Config,
    timeout: std::time::Duration,
) -> anyhow::Result<keepup_api::ApiClient> {
    keepup_api::ApiClient::new(
        config.file.api.tls.as_ref().map(|t| t.cert.as_path()),
        timeout,
    )
    .map_err(|e| anyhow::anyhow!(e))
}

/// POSTs `path` to the agent at `api` with the control token and a JSON
/// body (`{}` when there is nothing to say).
pub async fn post(
    config: &Config,
    api: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(bool, String)> {
    let token = tokens(config)?.control;
    let client = client(config, std::time::Duration::from_secs(120))?;
    let req = client
        .http
        .post(client.url(api, path))
        .bearer_auth(token)
        .json(&body.unwrap_or_else(|| serde_json::json!({})));
    let resp = req
        .send()
        .await
        .with_context(|| format!("no agent answers at {api} (is `keepup run` running there?)"))?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    let message = v["message"].as_str().unwrap_or("").to_string();
    if status.is_client_error() && status != reqwest::StatusCode::CONFLICT {
        anyhow::bail!("{api}: HTTP {status}: {message}");
    }
    Ok((status.is_success() && v["ok"] == true, message))
}

/// `keepup standby|online [NODE]`.
pub fn node_request(
    config_path: &Path,
    local: Option<&str>,
    arg: NodeArg,
    what: &str,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path, HostChecks::FileOnly)?;
    let api = api_of(&config, local, arg.target.as_deref())?;
    post_and_report(&config, &api, &format!("/v1/{what}"))
}

/// POSTs `path` (no body) and turns the agent's answer into output and an exit code.
fn post_and_report(config: &Config, api: &str, path: &str) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (ok, message) = rt.block_on(post(config, api, path, None))?;
    if ok {
        println!("{message}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("keepup: {message}");
        Ok(ExitCode::from(1))
    }
}

/// `keepup move GROUP NODE`.
#[derive(Debug, Args)]
#[command(
    long_about = "Moves a resource group to NODE, like Pacemaker's move. Run it on the \
node that holds the group: that node stops the group and steps aside for a while \
(10 dead times, at least 5 s), and NODE, which must be alive, eligible and next in line by \
priority, takes it. With failback off the group then stays on NODE."
)]
pub struct MoveArgs {
    /// The group to move.
    pub group: String,
    /// The node that should take it.
    pub node: String,
}

/// Asks the local agent to move a group.
pub fn move_group(config_path: &Path, args: MoveArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path, HostChecks::FileOnly)?;
    let api = local_api(&config)?;
    post_and_report(
        &config,
        &api,
        &format!("/v1/move/{}/{}", args.group, args.node),
    )
}

/// `keepup cleanup GROUP`.
#[derive(Debug, Args)]
#[command(
    long_about = "Clears a group whose stop failed, like Pacemaker's resource cleanup. While a \
stop has failed the group stays on its node and no other node starts it (it may still run \
there). Stop it by hand first, then run this on any node: the group is free once the \
cluster has committed the cleanup, and the best node takes it."
)]
pub struct CleanupArgs {
    /// The group.
    pub group: String,
}

/// Asks the local agent to clear a failed stop.
pub fn cleanup(config_path: &Path, args: CleanupArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path, HostChecks::FileOnly)?;
    let api = local_api(&config)?;
    post_and_report(&config, &api, &format!("/v1/cleanup/{}", args.group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_dials_loopback() {
        let text = "[cluster]\nname = \"c\"\nkey_file = \"/k\"\n[api]\nlisten = \"0.0.0.0:7947\"\n[[node]]\nname = \"a\"\naddresses = [\"10.0.0.1\"]\n";
        let c = Config::parse(Path::new("k.toml"), text, HostChecks::FileOnly).unwrap();
        assert_eq!(local_api(&c).unwrap(), "127.0.0.1:7947");
    }
}
