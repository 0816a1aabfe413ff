//! `keepup lb ...`: load-balancer operations through the running agent's API.
//!
//! * `keepup lb drain|enable|maintenance [POOL/]BACKEND` →
//!   `POST /v1/lb/backends/{pool}/{backend}/{state}`
//! * `keepup lb reload` → `POST /v1/lb/reload` (the agent re-reads keepup.toml)
//!
//! The agent's address is `[api] listen`; with `[api] token_file` set, the
//! token is sent as `Authorization: Bearer ...` (through the same HTTP
//! client as the other control commands).

use anyhow::bail;
use clap::{Args, Subcommand};
use keepup_config::{Config, HostChecks};
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `keepup lb`.
#[derive(Debug, Args)]
pub struct LbArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: LbAction,
}

/// `keepup lb` subcommands.
#[derive(Debug, Subcommand)]
pub enum LbAction {
    /// Send no new clients to a backend; sticky clients and in-flight requests finish.
    Drain(BackendArg),
    /// Return a backend to service (after drain or maintenance).
    Enable(BackendArg),
    /// Send no new traffic at all to a backend; in-flight requests finish.
    Maintenance(BackendArg),
    /// Apply keepup.toml's [lb] section in the running agent without dropping connections.
    Reload,
}

/// Which backend.
#[derive(Debug, Args)]
pub struct BackendArg {
    /// `POOL/BACKEND`, or just `BACKEND` when only one pool has that name.
    pub backend: String,
}

/// Runs an LB subcommand.
pub fn run(config: &Path, args: LbArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config, HostChecks::FileOnly)?;
    let (path, what) = match &args.action {
        LbAction::Drain(b) => backend_path(&cfg, &b.backend, "drain")?,
        LbAction::Enable(b) => backend_path(&cfg, &b.backend, "enabled")?,
        LbAction::Maintenance(b) => backend_path(&cfg, &b.backend, "maintenance")?,
        LbAction::Reload => ("/v1/lb/reload".to_string(), "reload".to_string()),
    };
    let api = super::control::local_api(&cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (ok, message) = rt.block_on(super::control::post(&cfg, &api, &path, None))?;
    if ok {
        println!("{what}: ok ({message})");
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("{what}: refused by the agent: {message}")
    }
}

/// Renders the `lb` part of a status document (a `keepup_lb::LbStatus` as
/// JSON) for a person: one line per frontend, one per backend.
pub fn render_status(lb: &serde_json::Value, colour: bool) -> String {
    use std::fmt::Write as _;
    let paint = |code: &str, s: &str| {
        if colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let n = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let s = |v: &serde_json::Value, k: &str| {
        v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string()
    };
    let mut o = String::new();
    for f in lb["frontends"].as_array().into_iter().flatten() {
        let c = &f["counters"];
        let tls = if f["tls"].as_bool().unwrap_or(false) {
            "+tls"
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "  frontend {:<12} {}{tls} {:<22} -> {:<10} conns {:<5} req {} (2xx {} 4xx {} 5xx {}) errors {}",
            s(f, "name"),
            s(f, "mode"),
            s(f, "bind"),
            s(f, "pool"),
            n(f, "active_connections"),
            n(c, "requests"),
            n(c, "status_2xx"),
            n(c, "status_4xx"),
            n(c, "status_5xx"),
            n(c, "errors"),
        );
    }
    for p in lb["pools"].as_array().into_iter().flatten() {
        let _ = writeln!(o, "  pool {} ({})", s(p, "name"), s(p, "algorithm"));
        for b in p["backends"].as_array().into_iter().flatten() {
            let up = b["healthy"].as_bool().unwrap_or(false);
            let health = if up {
                paint("32", "UP  ")
            } else {
                paint("31", "DOWN")
            };
            let admin = s(b, "admin_state");
            let admin = if admin == "enabled" {
                String::new()
            } else {
                format!(" {}", paint("33", &admin.to_uppercase()))
            };
            let c = &b["counters"];
            let _ = write!(
                o,
                "    {:<12} {:<22} {health}{admin} weight {}/{} active {} req {} 5xx {} errors {}",
                s(b, "name"),
                s(b, "address"),
                n(b, "effective_weight"),
                n(b, "weight"),
                n(b, "active"),
                n(c, "requests"),
                n(c, "status_5xx"),
                n(c, "errors"),
            );
            if let Some(e) = b["last_check_error"].as_str() {
                let _ = write!(o, "  ({e})");
            }
            let _ = writeln!(o);
        }
    }
    o
}

/// Resolves `[POOL/]BACKEND` against the config and builds the API path.
fn backend_path(cfg: &Config, arg: &str, state: &str) -> anyhow::Result<(String, String)> {
    let Some(lb) = &cfg.file.lb else {
        bail!("{} has no [lb] section", cfg.path.display());
    };
    let (pool, backend) = match arg.split_once('/') {
        Some((p, b)) => (p.to_string(), b.to_string()),
        None => {
            let pools: Vec<&str> = lb
                .pool
                .iter()
                .filter(|p| p.backend.iter().any(|b| b.name == arg))
                .map(|p| p.name.as_str())
                .collect();
            match pools.as_slice() {
                [one] => (one.to_string(), arg.to_string()),
                [] => bail!("no pool has a backend named {arg:?}"),
                many => bail!(
                    "backend {arg:?} is in several pools ({}); write POOL/{arg}",
                    many.join(", ")
                ),
            }
        }
    };
    Ok((
        format!(
            "/v1/lb/backends/{}/{}/{state}",
            encode(&pool),
            encode(&backend)
        ),
        format!("{pool}/{backend} {state}"),
    ))
}

/// Percent-encodes a path segment.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments() {
        assert_eq!(encode("web-1"), "web-1");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn renders_backend_health_and_admin_state() {
        let doc = serde_json::json!({
            "frontends": [{"name": "web", "mode": "http", "tls": true, "bind": "10.0.0.1:443",
                "pool": "p", "active_connections": 3,
                "counters": {"requests": 10, "status_2xx": 9, "status_4xx": 0, "status_5xx": 1, "errors": 0}}],
            "pools": [{"name": "p", "algorithm": "round-robin", "backends": [
                {"name": "web-1", "address": "10.0.0.11:80", "healthy": false, "admin_state": "drain",
                 "weight": 100, "effective_weight": 100, "active": 0, "last_check_error": "connect refused",
                 "counters": {"requests": 5, "status_5xx": 1, "errors": 2}}]}]
        });
        let text = render_status(&doc, false);
        assert!(text.contains("frontend web"), "{text}");
        assert!(text.contains("http+tls"), "{text}");
        assert!(text.contains("web-1"), "{text}");
        assert!(text.contains("DOWN DRAIN"), "{text}");
        assert!(text.contains("(connect refused)"), "{text}");
    }
}
