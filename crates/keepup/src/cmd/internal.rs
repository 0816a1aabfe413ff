//! `keepup internal ...`: small helpers that the demo, the tests and the
//! benchmarks start inside lab namespaces (hidden from `--help`).

use clap::Subcommand;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Hidden helper commands.
#[derive(Debug, Subcommand)]
pub enum Internal {
    /// Appends `<CLOCK_MONOTONIC ns> <event> <$KEEPUP_NODE> <$KEEPUP_EPOCH>` to
    /// a file: an exec resource that records when it holds (chaos tests).
    /// CLOCK_MONOTONIC is one clock for every namespace of the machine.
    Hold {
        /// `start` or `stop`.
        event: String,
        /// The log file (appended to, one line per call).
        file: std::path::PathBuf,
    },
    /// A web server answering every request with its name.
    Web {
        /// Name to answer with.
        #[arg(long)]
        name: String,
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Requests a URL on fresh connections; prints one JSON line per change.
    Probe {
        /// Address to request.
        #[arg(long)]
        target: SocketAddr,
        /// Interval between requests, in ms.
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        /// Stop after this many seconds (default: run until killed).
        #[arg(long)]
        duration_s: Option<f64>,
    },
    /// Inserts `(client, seq)` rows into `jepsen.t` through `target` from
    /// `clients` connections; prints one JSON line per insert (acknowledged
    /// or not), for the database fault-injection test.
    DbClients {
        /// `host:port` (the writer endpoint).
        #[arg(long)]
        target: String,
        /// A non-SUPER account.
        #[arg(long)]
        user: String,
        /// Its password.
        #[arg(long)]
        password: String,
        /// Concurrent clients.
        #[arg(long, default_value_t = 3)]
        clients: u32,
        /// Seconds to run.
        #[arg(long)]
        duration_s: f64,
        /// Pause between one client's inserts, ms.
        #[arg(long, default_value_t = 10)]
        pause_ms: u64,
        /// An insert unanswered after this many ms is recorded unacknowledged.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// A connection attempt unanswered after this many ms is retried.
        #[arg(long, default_value_t = 250)]
        connect_timeout_ms: u64,
    },
    /// Samples each server's read_only; prints one JSON line per answer.
    DbSample {
        /// `name=host:port`, one per server.
        #[arg(long = "server", required = true)]
        servers: Vec<String>,
        /// A non-SUPER account.
        #[arg(long)]
        user: String,
        /// Its password.
        #[arg(long)]
        password: String,
        /// Interval, ms.
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
        /// Seconds to run.
        #[arg(long)]
        duration_s: f64,
    },
    /// Sends UDP datagrams (hex payloads), optionally from a non-local source address.
    SendUdp {
        /// Destination.
        #[arg(long)]
        to: SocketAddr,
        /// Source address to bind (IP_TRANSPARENT: it need not be local; root only).
        #[arg(long)]
        from: Option<SocketAddr>,
        /// Payloads, hex-encoded, sent in order.
        #[arg(required = true)]
        hex: Vec<String>,
    },
}

fn from_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        anyhow::bail!("odd-length hex payload");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| anyhow::anyhow!("bad hex: {e}")))
        .collect()
}

fn send_udp(to: SocketAddr, from: Option<SocketAddr>, payloads: &[String]) -> anyhow::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(to), Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(from) = from {
        // IP_TRANSPARENT (root) lets the datagram leave with a source address
        // this host does not own: a spoofing rogue, for tests.
        if from.is_ipv4() {
            sock.set_ip_transparent_v4(true)?;
        } else {
            sock.set_ip_transparent_v6(true)?;
        }
        sock.bind(&from.into())?;
    }
    for p in payloads {
        sock.send_to(&from_hex(p)?, &to.into())?;
    }
    Ok(())
}

/// Runs a helper.
pub fn run(cmd: Internal) -> anyhow::Result<ExitCode> {
    if let Internal::Hold { event, file } = &cmd {
        use std::io::Write;
        let line = format!(
            "{} {event} {} {}\n",
            keepup_testkit::monotonic_ns(),
            std::env::var("KEEPUP_NODE").unwrap_or_default(),
            std::env::var("KEEPUP_EPOCH").unwrap_or_default()
        );
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)?;
        // One write of a short line to an O_APPEND file: never interleaved.
        f.write_all(line.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Internal::SendUdp { to, from, hex } = &cmd {
        send_udp(*to, *from, hex)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cmd {
        Internal::Web { name, listen } => rt.block_on(async move {
            let l = tokio::net::TcpListener::bind(listen).await?;
            keepup_testkit::web::serve_name(l, name).await;
            Ok(ExitCode::SUCCESS)
        }),
        Internal::Probe {
            target,
            interval_ms,
            duration_s,
        } => rt.block_on(async move {
            use std::io::Write;
            keepup_testkit::probe::watch(
                target,
                Duration::from_millis(interval_ms),
                duration_s.map(Duration::from_secs_f64),
                |c| {
                    let (ok, detail) = match &c.reply {
                        keepup_testkit::probe::Reply::Ok(by) => (true, by.clone()),
                        keepup_testkit::probe::Reply::Failed(e) => (false, e.clone()),
                    };
                    let line = serde_json::json!({
                        "at_ms": c.at_ms, "ok": ok, "detail": detail, "gap_ms": c.gap_ms,
                    });
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                },
            )
            .await;
            Ok(ExitCode::SUCCESS)
        }),
        Internal::DbClients {
            target,
            user,
            password,
            clients,
            duration_s,
            pause_ms,
            timeout_ms,
            connect_timeout_ms,
        } => rt.block_on(async move {
            let t = keepup_testkit::dbclient::Target {
                address: target,
                user,
                password,
            };
            let o = keepup_testkit::dbclient::ClientOptions {
                clients,
                duration: Duration::from_secs_f64(duration_s),
                pause: Duration::from_millis(pause_ms),
                timeout: Duration::from_millis(timeout_ms),
                connect_timeout: Duration::from_millis(connect_timeout_ms),
            };
            keepup_testkit::dbclient::run_clients(t, o).await;
            Ok(ExitCode::SUCCESS)
        }),
        Internal::DbSample {
            servers,
            user,
            password,
            interval_ms,
            duration_s,
        } => rt.block_on(async move {
            let mut list = Vec::new();
            for s in servers {
                let (name, address) = s
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--server {s:?}: expected name=host:port"))?;
                list.push((
                    name.to_string(),
                    keepup_testkit::dbclient::Target {
                        address: address.to_string(),
                        user: user.clone(),
                        password: password.clone(),
                    },
                ));
            }
            keepup_testkit::dbclient::run_sampler(
                list,
                Duration::from_millis(interval_ms),
                Duration::from_secs_f64(duration_s),
            )
            .await;
            Ok(ExitCode::SUCCESS)
        }),
        Internal::SendUdp { .. } | Internal::Hold { .. } => Ok(ExitCode::SUCCESS),
    }
}
