//! The client side: a probe process that runs inside the client namespace and
//! starts a new HTTP request (fresh connection) every interval *without
//! waiting for the previous one*, and the runner-side reader that stamps each
//! reply on receipt with the runner's monotonic clock.
//!
//! Why not `keepup internal probe`: it sends one request at a time with a
//! timeout of at least 200 ms, so a request whose SYN went to the old owner's
//! MAC just before the takeover hides the new owner for up to 200 ms. That
//! error is larger than the 150 ms target being measured. Overlapping
//! requests (each one `keepup_testkit::probe::get_once`, the same client code)
//! bound the error by the interval (5 ms).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs the probe until killed: one line per completed request,
/// `{"ok":true,"by":"a"}` or `{"ok":false,"err":"..."}`.
pub fn run_probe(target: SocketAddr, interval: Duration, timeout: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let host = target.to_string();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let host = host.clone();
            tokio::spawn(async move {
                let r = keepup_testkit::probe::get_once(target, &host, "/", timeout).await;
                let line = match r {
                    keepup_testkit::probe::Reply::Ok(by) => {
                        serde_json::json!({"ok": true, "by": by})
                    }
                    keepup_testkit::probe::Reply::Failed(e) => {
                        serde_json::json!({"ok": false, "err": e})
                    }
                };
                let mut out = std::io::stdout().lock();
                if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                    // The runner went away: stop.
                    std::process::exit(0);
                }
            });
        }
    })
}

/// One completed request, as the runner received it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the runner read the line (its monotonic clock).
    pub at: Instant,
    /// Served by this node, or `None` for a failed request.
    pub by: Option<String>,
}

/// The runner's view of a running probe process.
pub struct Reader {
    samples: Arc<Mutex<Vec<Sample>>>,
}

impl Reader {
    /// Starts reading `child`'s stdout on a thread, stamping every line.
    pub fn attach(child: &mut Child) -> anyhow::Result<Reader> {
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("probe has no stdout"))?;
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = samples.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let at = Instant::now();
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let by = if v["ok"] == true {
                    Some(v["by"].as_str().unwrap_or("?").to_string())
                } else {
                    None
                };
                if let Ok(mut s) = sink.lock() {
                    s.push(Sample { at, by });
                }
            }
        });
        Ok(Reader { samples })
    }

    fn snapshot(&self) -> Vec<Sample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits for the first reply served by `name` received after `after`.
    pub fn first_from(&self, name: &str, after: Instant, max: Duration) -> Option<Instant> {
        let deadline = Instant::now() + max;
        loop {
            if let Some(s) = self
                .snapshot()
                .iter()
                .find(|s| s.at > after && s.by.as_deref() == Some(name))
            {
                return Some(s.at);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until `name` has served every reply for `stable` in a row.
    pub fn wait_stable(&self, name: &str, stable: Duration, max: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < max {
            std::thread::sleep(Duration::from_millis(50));
            let s = self.snapshot();
            let since = Instant::now() - stable;
            if since < t0 {
                continue;
            }
            let recent: Vec<&Sample> = s.iter().filter(|x| x.at >= since).collect();
            if recent.len() >= 5 && recent.iter().all(|x| x.by.as_deref() == Some(name)) {
                return true;
            }
        }
        false
    }

    /// Service seen by the client between `from` and `to`: the longest time
    /// without a successful reply (ms), counting from the last success before
    /// `from`, and how many requests failed.
    pub fn gap(&self, from: Instant, to: Instant) -> (f64, usize) {
        let s = self.snapshot();
        let mut last_ok = s
            .iter()
            .filter(|x| x.at <= from && x.by.is_some())
            .map(|x| x.at)
            .next_back()
            .unwrap_or(from);
        let mut longest = Duration::ZERO;
        let mut failed = 0;
        for x in s.iter().filter(|x| x.at > from && x.at <= to) {
            match x.by {
                Some(_) => {
                    longest = longest.max(x.at - last_ok);
                    last_ok = x.at;
                }
                None => failed += 1,
            }
        }
        longest = longest.max(to.saturating_duration_since(last_ok));
        (longest.as_secs_f64() * 1000.0, failed)
    }

    /// Counts (ok, failed, served by each name) over the whole run.
    pub fn totals(&self) -> (usize, usize, Vec<(String, usize)>) {
        let s = self.snapshot();
        let mut by: Vec<(String, usize)> = Vec::new();
        let mut failed = 0;
        for x in &s {
            match &x.by {
                Some(n) => match by.iter_mut().find(|(m, _)| m == n) {
                    Some(e) => e.1 += 1,
                    None => by.push((n.clone(), 1)),
                },
                None => failed += 1,
            }
        }
        (s.len() - failed, failed, by)
    }
}
