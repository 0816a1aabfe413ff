//! `keepup status`: one screen on the cluster, from the local agent's API.

use clap::Args;
use keepup_config::{Config, HostChecks};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `keepup status`.
#[derive(Debug, Args)]
#[command(
    long_about = "Shows the cluster as the local agent sees it: nodes (up/down, links, \
last heard, priority), resource groups and their owner, load-balancer pools, database \
topology, dropped packets and the last transitions.\n\n\
--all asks every node's agent at once (with the read token derived from the cluster key, \
so run it as root) and shows their views side by side, with every disagreement listed \
as a problem; it exits 1 when there is one.\n\n\
--json prints the API's status document (schema: GET /openapi.json, crates/keepup-api/openapi.json) for scripts."
)]
pub struct StatusArgs {
    /// Print the status document as JSON.
    #[arg(long)]
    pub json: bool,
    /// Refresh every second until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Every node's own view side by side, disagreements as problems.
    #[arg(long, conflicts_with = "api")]
    pub all: bool,
    /// Agent API address (default: api.listen from the config).
    #[arg(long)]
    pub api: Option<String>,
}

/// Asks the local agent (or every agent, `--all`) and prints what it knows.
pub fn run(config_path: &Path, local: Option<&str>, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path, HostChecks::FileOnly)?;
    // The read token when this user can produce it (root); loopback reads
    // need none, so a plain `keepup status` works without it.
    let token = match super::control::tokens(&config) {
        Ok(t) => Some(t.read),
        // --all asks other hosts, which need the token.
        Err(e) if args.all => return Err(e),
        Err(_) => None,
    };
    let api = match &args.api {
        Some(a) => a.clone(),
        None => super::control::local_api(&config)?,
    };
    let here = local
        .map(str::to_string)
        .unwrap_or_else(keepup_config::hostname);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    loop {
        let mut out = std::io::stdout().lock();
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        if args.watch && colour && !args.json {
            write!(out, "\x1b[2J\x1b[H")?;
        }
        let mut code = ExitCode::SUCCESS;
        if args.all {
            let client = super::control::client(&config, keepup_api::cluster::ASK_TIMEOUT)?;
            let answers = rt.block_on(super::cluster_view::fetch_all(
                &client,
                &config,
                &here,
                token.as_deref().unwrap_or_default(),
            ));
            let cmp = keepup_api::cluster::compare(&answers);
            if !cmp.problems.is_empty() {
                code = ExitCode::FAILURE;
            }
            if args.json {
                let doc = keepup_api::cluster::document(answers);
                writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            } else {
                write!(out, "{}", super::cluster_view::render(&cmp, &here))?;
            }
        } else {
            let client = super::control::client(&config, std::time::Duration::from_secs(3))?;
            let doc = rt
                .block_on(client.get_json(&api, "/v1/status", token.as_deref()))
                .map_err(|e| anyhow::anyhow!("{e} (is `keepup run` running on this node?)"))?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            } else {
                write!(out, "{}", render(&doc, colour))?;
            }
        }
        out.flush()?;
        if !args.watch {
            return Ok(code);
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

struct Paint(bool);
impl Paint {
    fn c(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn good(&self, s: &str) -> String {
        self.c("32", s)
    }
    fn bad(&self, s: &str) -> String {
        self.c("31;1", s)
    }
    fn dim(&self, s: &str) -> String {
        self.c("2", s)
    }
    fn bold(&self, s: &str) -> String {
        self.c("1", s)
    }
}

/// Renders the status document for a person.
pub fn render(doc: &Value, colour: bool) -> String {
    use std::fmt::Write;
    let p = Paint(colour);
    let mut o = String::new();
    let cl = &doc["cluster"];
    let _ = writeln!(
        o,
        "{} {}   node {}   up {:.0}s   keepup {}{}",
        p.bold("cluster"),
        cl["cluster"].as_str().unwrap_or("?"),
        doc["node"].as_str().unwrap_or("?"),
        doc["uptime_s"].as_f64().unwrap_or(0.0),
        doc["version"].as_str().unwrap_or("?"),
        if doc["realtime"].as_bool() == Some(true) {
            "   realtime"
        } else {
            "   (no realtime priority)"
        }
    );
    let _ = writeln!(o, "\n{}", p.bold("NODES"));
    let _ = writeln!(
        o,
        "  {:<16} {:<6} {:>8} {:<10} {:>12}  flags",
        "name", "state", "priority", "links", "last heard"
    );
    for n in cl["nodes"].as_array().into_iter().flatten() {
        let alive = n["alive"].as_bool() == Some(true);
        let state = if alive {
            p.good("up    ")
        } else {
            p.bad("DOWN  ")
        };
        let links: String = n["links"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| if l.as_bool() == Some(true) { '+' } else { '-' })
            .collect();
        let heard = if n["me"].as_bool() == Some(true) {
            "(this node)".to_string()
        } else {
            match n["last_heard_ms"].as_u64() {
                Some(ms) => format!("{ms} ms ago"),
                None => "never".to_string(),
            }
        };
        let mut flags = Vec::new();
        if n["standby"].as_bool() == Some(true) {
            flags.push("standby");
        }
        if n["connected"].as_bool() == Some(false) {
            flags.push("cut-off");
        }
        if n["quorum"].as_bool() == Some(false) {
            flags.push("no-quorum");
        }
        if n["witness"].as_bool() == Some(true) {
            flags.push("witness");
        }
        let _ = writeln!(
            o,
            "  {:<16} {} {:>8} {:<10} {:>12}  {}",
            n["name"].as_str().unwrap_or("?"),
            state,
            n["priority"].as_u64().unwrap_or(0),
            links,
            heard,
            flags.join(",")
        );
    }
    match cl["consensus"].as_object() {
        Some(c) => {
            let leader = match c.get("leader").and_then(|l| l.as_str()) {
                Some(l) => p.good(l),
                None => p.bad("(none: electing, or no majority of voters up)"),
            };
            let _ = writeln!(
                o,
                "\n{} leader {}   term {}   voters {}",
                p.bold("CONSENSUS"),
                leader,
                c.get("term").and_then(|t| t.as_u64()).unwrap_or(0),
                c.get("voters")
                    .and_then(|v| v.as_array())
                    .map(|v| v
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(
                o,
                "\n{} {}",
                p.bold("OWNERSHIP"),
                p.bad("unguarded (quorum = \"none\"): in a partition both sides may hold a group; add a witness")
            );
        }
    }
    let _ = writeln!(o, "\n{}", p.bold("GROUPS"));
    for g in cl["groups"].as_array().into_iter().flatten() {
        let owner = match g["owner"].as_str() {
            Some(o) => p.good(o),
            None => p.bad("(nobody)"),
        };
        let _ = write!(
            o,
            "  {:<16} owner {}   here: {}",
            g["name"].as_str().unwrap_or("?"),
            owner,
            g["local_state"].as_str().unwrap_or("?")
        );
        if let Some(e) = g["epoch"].as_u64().filter(|e| *e > 0) {
            let _ = write!(o, "   epoch {e}");
        }
        if let Some(l) = g["lease_ms_left"].as_u64() {
            let _ = write!(o, "   lease {l} ms");
        }
        if let Some(b) = g["backoff_ms"].as_u64() {
            let _ = write!(o, "   {}", p.bad(&format!("failed here, back-off {b} ms")));
        }
        let _ = writeln!(o);
        if let Some(sf) = g["stop_failed"].as_str() {
            let _ = writeln!(
                o,
                "      {} on {}: {}",
                p.bad("STOP FAILED"),
                g["holder"].as_str().unwrap_or("?"),
                p.bad(sf)
            );
        }
        for r in doc["resources"].as_array().into_iter().flatten() {
            if r["group"] == g["name"] {
                let _ = write!(
                    o,
                    "      {:<36} {}",
                    r["resource"].as_str().unwrap_or("?"),
                    r["state"].as_str().unwrap_or("?")
                );
                if let Some(e) = r["last_error"].as_str() {
                    let _ = write!(o, "  {}", p.bad(e));
                }
                let _ = writeln!(o);
            }
        }
    }
    if let Some(drops) = doc["dropped_packets"].as_object() {
        if !drops.is_empty() {
            let list: Vec<String> = drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(o, "\n{} {}", p.bold("DROPPED PACKETS"), list.join(" "));
        }
    }
    if let Some(lb) = doc.get("lb").filter(|v| !v.is_null()) {
        let _ = writeln!(o, "\n{}", p.bold("LOAD BALANCER"));
        let _ = write!(o, "{}", crate::cmd::lb::render_status(lb, colour));
    }
    if let Some(db) = doc.get("db").filter(|v| !v.is_null()) {
        let _ = writeln!(o, "\n{}", p.bold("DATABASE"));
        let _ = write!(o, "{}", crate::cmd::db::render_status(db, colour));
    }
    let events = doc["events"].as_array().cloned().unwrap_or_default();
    if !events.is_empty() {
        let _ = writeln!(o, "\n{}", p.bold("RECENT TRANSITIONS"));
        for e in events.iter().rev().take(10).rev() {
            let ms = e["unix_ms"].as_u64().unwrap_or(0);
            let _ = writeln!(
                o,
                "  {}  {}",
                p.dim(&format_time(ms)),
                e["text"].as_str().unwrap_or("")
            );
        }
    }
    o
}

/// `HH:MM:SS.mmm` UTC for a unix time in ms.
fn format_time(unix_ms: u64) -> String {
    let s = unix_ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        unix_ms % 1000
    )
}
