//! The two recorders of a database fault-injection run, started inside the
//! lab's client namespace (`keepup internal db-clients` / `db-sample`):
//! clients that insert `(client, seq)` rows through the writer endpoint and
//! record which commits were acknowledged, and a sampler that records each
//! server's `read_only`. One JSON line per event on stdout, stamped with
//! CLOCK_MONOTONIC ns, read back by [`parse_writes`] / [`parse_samples`] for
//! [`crate::dbcheck::check`].

use crate::dbcheck::{Sample, Write};
use crate::monotonic_ns;
use mysql_async::prelude::Queryable;
use std::io::Write as _;
use std::time::Duration;

/// The table the clients write: created by the test through the primary.
pub const TABLE: &str = "jepsen.t";

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`.
    pub address: String,
    /// A non-SUPER account, so `read_only` applies to it.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl Target {
    fn opts(&self) -> Result<mysql_async::Opts, String> {
        let (h, p) = self
            .address
            .rsplit_once(':')
            .ok_or_else(|| format!("{}: not host:port", self.address))?;
        let port: u16 = p
            .parse()
            .map_err(|_| format!("{}: bad port", self.address))?;
        Ok(mysql_async::OptsBuilder::default()
            .ip_or_hostname(h.to_string())
            .tcp_port(port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .prefer_socket(false)
            .into())
    }
}

async fn connect(t: &Target, timeout: Duration) -> Result<mysql_async::Conn, String> {
    let opts = t.opts()?;
    match tokio::time::timeout(timeout, mysql_async::Conn::new(opts)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connect timeout".into()),
    }
}

fn emit(line: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// How a client behaves.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Concurrent clients.
    pub clients: u32,
    /// How long to run.
    pub duration: Duration,
    /// Pause between one client's inserts.
    pub pause: Duration,
    /// An insert unanswered after this is recorded unacknowledged.
    pub timeout: Duration,
    /// A connection attempt unanswered after this is retried (as a pool
    /// would): a SYN lost while the writer address moves otherwise costs
    /// TCP's 1 s retransmission timeout, which is the client's, not the
    /// failover's.
    pub connect_timeout: Duration,
}

/// Runs concurrent writers against `target`, one autocommit insert at a
/// time each. A statement that fails or times out is recorded
/// unacknowledged and its connection dropped (the commit may still happen:
/// indeterminate).
pub async fn run_clients(target: Target, o: ClientOptions) {
    let ClientOptions {
        clients,
        duration,
        pause,
        timeout,
        connect_timeout,
    } = o;
    let end = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let t = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<mysql_async::Conn> = None;
            let mut seq: u64 = 0;
            while tokio::time::Instant::now() < end {
                if conn.is_none() {
                    match connect(&t, connect_timeout).await {
                        Ok(c) => conn = Some(c),
                        Err(_) => {
                            tokio::time::sleep(pause).await;
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                seq += 1;
                let sent = monotonic_ns();
                let sql = format!("INSERT INTO {TABLE} (client, seq) VALUES ({client}, {seq})");
                let r = tokio::time::timeout(timeout, c.query_drop(sql)).await;
                let answered = monotonic_ns();
                let (acked, err) = match r {
                    Ok(Ok(())) => (true, None),
                    Ok(Err(e)) => (false, Some(e.to_string())),
                    Err(_) => (false, Some("timeout".to_string())),
                };
                if !acked {
                    conn = None;
                }
                emit(serde_json::json!({
                    "c": client, "s": seq, "t0": sent as u64, "t1": answered as u64,
                    "ok": acked, "err": err,
                }));
                tokio::time::sleep(pause).await;
            }
            if let Some(c) = conn {
                let _ = c.disconnect().await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Samples `SELECT @@GLOBAL.read_only` on each `(name, target)` every
/// `interval` for `duration`; a failure is recorded as a sample without an
/// answer (`"w": null`: nothing known then).
pub async fn run_sampler(servers: Vec<(String, Target)>, interval: Duration, duration: Duration) {
    let end = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    for (name, t) in servers {
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<mysql_async::Conn> = None;
            while tokio::time::Instant::now() < end {
                if conn.is_none() {
                    conn = connect(&t, Duration::from_millis(500)).await.ok();
                }
                if let Some(c) = conn.as_mut() {
                    let sent = monotonic_ns();
                    let r = tokio::time::timeout(
                        Duration::from_millis(500),
                        c.query_first::<u8, _>("SELECT @@GLOBAL.read_only"),
                    )
                    .await;
                    let answered = monotonic_ns();
                    match r {
                        Ok(Ok(Some(ro))) => emit(serde_json::json!({
                            "srv": name, "t0": sent as u64, "t1": answered as u64, "w": ro == 0,
                        })),
                        _ => {
                            conn = None;
                            emit(serde_json::json!({
                                "srv": name, "t0": sent as u64, "t1": answered as u64, "w": null,
                            }));
                        }
                    }
                } else {
                    let t = monotonic_ns() as u64;
                    emit(serde_json::json!({ "srv": name, "t0": t, "t1": t, "w": null }));
                }
                tokio::time::sleep(interval).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The non-empty lines of a recorder's output as JSON, each with its line
/// number for errors (`what` names the file in them).
fn json_lines<'a>(
    text: &'a str,
    what: &'a str,
) -> impl Iterator<Item = Result<(usize, serde_json::Value), String>> + 'a {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(move |(i, line)| {
            serde_json::from_str(line)
                .map(|v| (i + 1, v))
                .map_err(|e| format!("{what} line {}: {e}", i + 1))
        })
}

/// Field `k` of line `n` as a number, or an error naming both.
fn field(v: &serde_json::Value, k: &str, what: &str, n: usize) -> Result<u64, String> {
    v[k].as_u64()
        .ok_or_else(|| format!("{what} line {n}: no {k}"))
}

/// Reads [`run_clients`]' output; a line that does not parse is an error
/// naming its number.
pub fn parse_writes(text: &str) -> Result<Vec<Write>, String> {
    json_lines(text, "writes")
        .map(|l| {
            let (n, v) = l?;
            let num = |k: &str| field(&v, k, "writes", n);
            Ok(Write {
                client: num("c")? as u32,
                seq: num("s")?,
                sent: num("t0")? as u128,
                answered: num("t1")? as u128,
                acked: v["ok"].as_bool().unwrap_or(false),
            })
        })
        .collect()
}

/// Reads [`run_sampler`]'s output.
pub fn parse_samples(text: &str) -> Result<Vec<Sample>, String> {
    json_lines(text, "samples")
        .map(|l| {
            let (n, v) = l?;
            let num = |k: &str| field(&v, k, "samples", n);
            Ok(Sample {
                server: v["srv"]
                    .as_str()
                    .ok_or_else(|| format!("samples line {n}: no srv"))?
                    .to_string(),
                sent: num("t0")? as u128,
                answered: num("t1")? as u128,
                writable: v["w"].as_bool(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_bad_lines_name_their_number() {
        let w = parse_writes("{\"c\":1,\"s\":2,\"t0\":3,\"t1\":4,\"ok\":true,\"err\":null}\n")
            .unwrap_or_default();
        assert_eq!(w.len(), 1);
        assert!(w[0].acked && w[0].seq == 2);
        let e = parse_writes("{\"c\":1}\n\nnot json").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let s =
            parse_samples("{\"srv\":\"db-a\",\"t0\":1,\"t1\":2,\"w\":true}").unwrap_or_default();
        assert_eq!(s[0].server, "db-a");
        assert!(parse_samples("{\"t0\":1}").unwrap_err().contains("srv"));
    }
}
