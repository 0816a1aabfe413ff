//! An HTTP client that keeps requesting a URL on fresh connections and
//! reports who answered and every gap in service, as a visitor would see
//! a failover. Output is one JSON line per change, for tests and the demo.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// One request's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Answered 2xx by the named server.
    Ok(String),
    /// Failed (connect, timeout, HTTP error).
    Failed(String),
}

/// Sends one GET to `addr` (a fresh connection), `timeout` overall.
pub async fn get_once(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> Reply {
    match tokio::time::timeout(timeout, get(addr, host, path)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Reply::Failed(e),
        Err(_) => Reply::Failed("timeout".into()),
    }
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<Reply, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let by = resp
        .headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    Ok(Reply::Ok(by.unwrap_or_else(|| {
        String::from_utf8_lossy(&body).trim().to_string()
    })))
}

/// A change seen by the probe.
#[derive(Debug, Clone)]
pub struct Change {
    /// Milliseconds since the probe started.
    pub at_ms: u64,
    /// What the replies are now.
    pub reply: Reply,
    /// For a recovery: how long no request succeeded, in ms.
    pub gap_ms: Option<u64>,
}

/// Requests `addr` every `interval` for `duration` (forever when None),
/// calling `on_change` whenever the answer changes (server or failure).
pub async fn watch(
    addr: SocketAddr,
    interval: Duration,
    duration: Option<Duration>,
    mut on_change: impl FnMut(&Change),
) {
    let start = Instant::now();
    let mut last: Option<Reply> = None;
    let mut last_ok: Option<Instant> = None;
    let mut failing_since: Option<Instant> = None;
    let host = addr.to_string();
    loop {
        if duration.is_some_and(|d| start.elapsed() >= d) {
            return;
        }
        let sent = Instant::now();
        let reply = get_once(addr, &host, "/", interval.max(Duration::from_millis(200))).await;
        let now = Instant::now();
        let gap_ms = match &reply {
            Reply::Ok(_) => {
                let gap = failing_since
                    .take()
                    .and_then(|_| last_ok.map(|t| now.duration_since(t).as_millis() as u64));
                last_ok = Some(now);
                gap
            }
            Reply::Failed(_) => {
                failing_since.get_or_insert(now);
                None
            }
        };
        let changed = match (&last, &reply) {
            (Some(Reply::Ok(a)), Reply::Ok(b)) => a != b,
            (Some(Reply::Failed(_)), Reply::Failed(_)) => false,
            _ => true,
        };
        if changed || gap_ms.is_some() {
            on_change(&Change {
                at_ms: start.elapsed().as_millis() as u64,
                reply: reply.clone(),
                gap_ms,
            });
        }
        last = Some(reply);
        let spent = sent.elapsed();
        if spent < interval {
            tokio::time::sleep(interval - spent).await;
        }
    }
}

/// A `keepup internal probe` running in a lab host, its JSON lines
/// collected with the time each arrived (one clock for the caller's
/// measurements). Killed on drop.
pub struct ProbeProcess {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<(Instant, serde_json::Value)>>>,
}

impl ProbeProcess {
    /// Starts `keepup_exe internal probe --target TARGET` inside `host`.
    pub fn spawn(
        lab: &crate::lab::Lab,
        host: &str,
        keepup_exe: &str,
        target: &str,
        interval_ms: u64,
    ) -> anyhow::Result<ProbeProcess> {
        use std::io::BufRead;
        let mut cmd = lab.command(host, keepup_exe)?;
        cmd.args(["internal", "probe", "--target", target, "--interval-ms"])
            .arg(interval_ms.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("probe has no stdout"))?;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Ok(mut g) = sink.lock() {
                        g.push((Instant::now(), v));
                    }
                }
            }
        });
        Ok(ProbeProcess { child, lines })
    }

    /// Every line so far, with its arrival time.
    pub fn lines(&self) -> Vec<(Instant, serde_json::Value)> {
        self.lines.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

impl Drop for ProbeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
