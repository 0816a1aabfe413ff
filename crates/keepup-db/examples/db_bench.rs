//! Database failover benchmark (driven by `bench/db.sh`; not a test).
//!
//! Per run: three fresh local mariadbd servers (primary + two replicas) set up
//! by `keepup_db::setup`, an application writing one autocommit row at a time
//! through the writer endpoint (the address keepup reports as primary).
//!
//! - failover: `kill -9` of the primary. Detection is keepup's own watcher:
//!   connect + `SELECT 1` to the primary every `POLL_MS` (100 ms) with a
//!   100 ms limit; `FAILS` (3) consecutive failures = dead, then
//!   `promote_after_failure`; the writer is pointed at the reported new
//!   primary. Measured: kill → first write acknowledged by the new primary.
//! - lost acknowledged writes: acked rows missing on the new primary.
//! - switchover (on the surviving pair): `keepup_db::switchover`'s measured
//!   write-unavailability window, and the client-side gap (last ack on the
//!   old primary → first ack on the new one).
//!
//! Usage: `db_bench RUNS OUT.json` (semi-sync and async runs alternate).

use keepup_config::DatabaseSection;
use keepup_db::local_server::{free_port, write_credentials_file, LocalServer, LocalServerOptions};
use mysql_async::prelude::Queryable;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const POLL_MS: u64 = 100;
const FAILS: u32 = 3;

type Acks = Arc<Mutex<Vec<(i64, Instant, String)>>>;

struct Writer {
    target: Arc<Mutex<String>>,
    acked: Acks,
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<()>,
}

fn opts(addr: &str, user: &str, pw: &str) -> mysql_async::OptsBuilder {
    let (h, p) = addr.split_once(':').unwrap_or(("127.0.0.1", "3306"));
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(h.to_string())
        .tcp_port(p.parse().unwrap_or(3306))
        .user(Some(user.to_string()))
        .pass(Some(pw.to_string()))
        .prefer_socket(false)
}

impl Writer {
    fn start(target: &str) -> Writer {
        let target = Arc::new(Mutex::new(target.to_string()));
        let acked: Acks = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, a, s) = (target.clone(), acked.clone(), stop.clone());
        let handle = tokio::spawn(async move {
            let mut v = 0i64;
            let mut c: Option<(mysql_async::Conn, String)> = None;
            while !s.load(Ordering::Relaxed) {
                if c.is_none() {
                    let addr = t.lock().map(|g| g.clone()).unwrap_or_default();
                    match tokio::time::timeout(
                        Duration::from_millis(200),
                        mysql_async::Conn::new(opts(&addr, "app", "app-pw")),
                    )
                    .await
                    {
                        Ok(Ok(x)) => c = Some((x, addr)),
                        _ => {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            continue;
                        }
                    }
                }
                let Some((conn, addr)) = c.as_mut() else {
                    continue;
                };
                // A retarget drops the old connection (the endpoint moved).
                if t.lock()
                    .map(|g| g.as_str() != addr.as_str())
                    .unwrap_or(false)
                {
                    c = None;
                    continue;
                }
                v += 1;
                let r = tokio::time::timeout(
                    Duration::from_secs(30),
                    conn.query_drop(format!("INSERT INTO app.t (v) VALUES ({v})")),
                )
                .await;
                match r {
                    Ok(Ok(())) => {
                        let addr = addr.clone();
                        if let Ok(mut g) = a.lock() {
                            g.push((v, Instant::now(), addr));
                        }
                    }
                    _ => {
                        c = None;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        });
        Writer {
            target,
            acked,
            stop,
            handle,
        }
    }
    fn retarget(&self, a: &str) {
        if let Ok(mut g) = self.target.lock() {
            *g = a.to_string();
        }
    }
    fn count(&self) -> usize {
        self.acked.lock().map(|g| g.len()).unwrap_or(0)
    }
    fn snapshot(&self) -> Vec<(i64, Instant, String)> {
        self.acked.lock().map(|g| g.clone()).unwrap_or_default()
    }
    async fn finish(self) -> Vec<(i64, Instant, String)> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.await;
        self.acked.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

async fn admin_exec(addr: &str, sql: &str) -> Result<(), mysql_async::Error> {
    let mut c = mysql_async::Conn::new(opts(
        addr,
        keepup_db::local_server::ADMIN_USER,
        keepup_db::local_server::ADMIN_PASSWORD,
    ))
    .await?;
    c.query_drop(sql).await?;
    c.disconnect().await
}

async fn values(addr: &str) -> std::collections::BTreeSet<i64> {
    let Ok(mut c) = mysql_async::Conn::new(opts(
        addr,
        keepup_db::local_server::ADMIN_USER,
        keepup_db::local_server::ADMIN_PASSWORD,
    ))
    .await
    else {
        return Default::default();
    };
    let v: Vec<i64> = c.query("SELECT v FROM app.t").await.unwrap_or_default();
    let _ = c.disconnect().await;
    v.into_iter().collect()
}

/// keepup's watcher: is the primary answering?
async fn alive(addr: &str) -> bool {
    let fut = async {
        let mut c = mysql_async::Conn::new(opts(
            addr,
            keepup_db::local_server::ADMIN_USER,
            keepup_db::local_server::ADMIN_PASSWORD,
        ))
        .await?;
        c.query_drop("SELECT 1").await?;
        c.disconnect().await
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(100), fut).await,
        Ok(Ok(()))
    )
}

#[derive(serde::Serialize, Default)]
struct Run {
    semi_sync: bool,
    detect_ms: f64,
    promote_ms: f64,
    failover_ms: f64,
    acked: usize,
    lost: usize,
    switchover_ms: f64,
    switchover_client_gap_ms: f64,
    switchover_lost: usize,
}

async fn one_run(semi_sync: bool, dir: &std::path::Path) -> Result<Run, String> {
    let servers: Vec<LocalServer> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|i| {
                s.spawn(move || {
                    let port = free_port().map_err(|e| e.to_string())?;
                    LocalServer::start(
                        &format!("db-{}", i + 1),
                        port,
                        LocalServerOptions::new(i + 1),
                    )
                    .map_err(|e| e.to_string())
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().map_err(|_| "start thread panicked".to_string())?)
            .collect::<Result<Vec<_>, String>>()
    })?;
    let mut servers = servers;
    let creds = dir.join("admin.cnf");
    write_credentials_file(&creds).map_err(|e| e.to_string())?;
    let mut section = DatabaseSection::new(creds, servers.iter().map(|s| s.db_server()).collect());
    section.replication_password_file = dir.join("repl.password");
    section.semi_sync = semi_sync;
    section.semi_sync_timeout_ms = keepup_config::Millis(5000);
    admin_exec(
        &servers[0].address(),
        "CREATE DATABASE app; CREATE TABLE app.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, v BIGINT NOT NULL UNIQUE) ENGINE=InnoDB; \
         CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'app-pw'; GRANT SELECT, INSERT ON app.* TO 'app'@'127.0.0.1'",
    )
    .await
    .map_err(|e| e.to_string())?;
    keepup_db::setup(&section)
        .await
        .map_err(|e| e.to_string())?;
    let status = keepup_db::observe(&section).await;
    let primary = status.primary_address.clone().ok_or("no primary")?;

    let w = Writer::start(&primary);
    let t = Instant::now();
    while w.count() < 500 && t.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Watcher running before the kill, as in production.
    let watch_addr = primary.clone();
    let watcher = tokio::spawn(async move {
        let mut fails = 0;
        loop {
            let tick = Instant::now();
            if alive(&watch_addr).await {
                fails = 0;
            } else {
                fails += 1;
                if fails >= FAILS {
                    return Instant::now();
                }
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS).saturating_sub(tick.elapsed())).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(rand_ms())).await;
    let t_kill = Instant::now();
    servers[0].kill9();
    let detected = watcher.await.map_err(|e| e.to_string())?;
    let report = keepup_db::promote_after_failure(&section, "db-1")
        .await
        .map_err(|e| e.to_string())?;
    let new_addr = section
        .server(&report.new_primary)
        .map(|s| s.address.clone())
        .ok_or("no new primary")?;
    w.retarget(&new_addr);
    let t = Instant::now();
    let first_new = loop {
        if let Some(x) = w
            .snapshot()
            .iter()
            .find(|(_, at, a)| *at > t_kill && a == &new_addr)
        {
            break x.1;
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Err("no write accepted by the new primary".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let mut run = Run {
        semi_sync,
        detect_ms: (detected - t_kill).as_secs_f64() * 1000.0,
        promote_ms: report.took_ms,
        failover_ms: (first_new - t_kill).as_secs_f64() * 1000.0,
        ..Run::default()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Switchover on the surviving pair, under the same writer.
    let other = section
        .server
        .iter()
        .find(|s| s.name != "db-1" && s.name != report.new_primary)
        .map(|s| (s.name.clone(), s.address.clone()))
        .ok_or("no replica left")?;
    let before = w.snapshot().len();
    let so = keepup_db::switchover(&section, &other.0)
        .await
        .map_err(|e| e.to_string())?;
    w.retarget(&other.1);
    run.switchover_ms = so.write_unavailable_ms;
    let t = Instant::now();
    while w.count() < before + 200 && t.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let acked = w.finish().await;
    let last_old = acked
        .iter()
        .filter(|(_, _, a)| a == &new_addr)
        .map(|x| x.1)
        .max();
    let first_other = acked
        .iter()
        .filter(|(_, _, a)| a == &other.1)
        .map(|x| x.1)
        .min();
    if let (Some(a), Some(b)) = (last_old, first_other) {
        run.switchover_client_gap_ms = b.saturating_duration_since(a).as_secs_f64() * 1000.0;
    }
    // Let the last rows replicate, then count.
    let _ = keepup_db::checksum(&section).await;
    let present = values(&other.1).await;
    // Rows acknowledged by the killed primary belong to the failover (some
    // may be acknowledged in the instant between t_kill and the process
    // dying); rows acknowledged by the later primaries to the switchover.
    run.acked = acked.len();
    run.lost = acked
        .iter()
        .filter(|(v, _, a)| a == &primary && !present.contains(v))
        .count();
    run.switchover_lost = acked
        .iter()
        .filter(|(v, _, a)| a != &primary && !present.contains(v))
        .count();
    drop(servers);
    Ok(run)
}

/// 0–99 ms, so the kill does not always land at the same point of the poll cycle.
fn rand_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_micros() as u64 % 100)
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let out = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "db-bench.json".into());
    if !keepup_db::local_server::available() {
        eprintln!("db_bench: needs mariadbd (apt-get install mariadb-server mariadb-client)");
        std::process::exit(2);
    }
    let dir = std::env::temp_dir().join(format!("keepup-db-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut results = Vec::new();
    for i in 0..runs {
        let semi = i % 2 == 0;
        let _ = std::fs::remove_file(dir.join("repl.password"));
        match one_run(semi, &dir).await {
            Ok(r) => {
                eprintln!(
                    "run {:>2} {:<9} detect {:>5.0} ms  promote {:>4.0} ms  failover {:>5.0} ms  lost {:>2}/{:<5}  switchover {:>4.0} ms (client gap {:>4.0} ms, lost {})",
                    i + 1,
                    if semi { "semi-sync" } else { "async" },
                    r.detect_ms,
                    r.promote_ms,
                    r.failover_ms,
                    r.lost,
                    r.acked,
                    r.switchover_ms,
                    r.switchover_client_gap_ms,
                    r.switchover_lost
                );
                results.push(r);
            }
            Err(e) => eprintln!("run {} failed: {e}", i + 1),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    match serde_json::to_string_pretty(&results) {
        Ok(j) => {
            if let Err(e) = std::fs::write(&out, j) {
                eprintln!("cannot write {out}: {e}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
