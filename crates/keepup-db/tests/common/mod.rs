//! Shared helpers: start local clusters, an application writer loop.
#![allow(dead_code)]

use keepup_config::{DatabaseSection, DbTopology};
use keepup_db::local_server::{free_port, write_credentials_file, LocalServer, LocalServerOptions};
use mysql_async::prelude::Queryable;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Local servers plus a `[database]` section describing them.
pub struct Cluster {
    pub servers: Vec<LocalServer>,
    pub section: DatabaseSection,
    pub dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.servers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// True when the test can run (prints SKIPPED otherwise; fails under CI=true).
pub fn can_run(test: &str) -> bool {
    keepup_testkit::require::available(test, "mariadbd", keepup_db::local_server::available())
}

/// Starts `n` servers named db-1.. in parallel with `opts(i)`.
pub fn cluster(test: &str, n: usize, opts: impl Fn(usize) -> LocalServerOptions + Sync) -> Cluster {
    let dir = std::env::temp_dir().join(format!("keepup-db-test-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    let servers: Vec<LocalServer> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let o = opts(i);
                s.spawn(move || {
                    let mut last = None;
                    for _ in 0..3 {
                        let port = free_port().expect("port");
                        match LocalServer::start(&format!("db-{}", i + 1), port, o.clone()) {
                            Ok(srv) => return srv,
                            Err(e) => last = Some(e),
                        }
                    }
                    panic!("cannot start mariadbd: {last:?}")
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("start thread"))
            .collect()
    });
    let creds = dir.join("admin.cnf");
    write_credentials_file(&creds).expect("creds");
    let mut section = DatabaseSection::new(creds, servers.iter().map(|s| s.db_server()).collect());
    section.replication_password_file = dir.join("repl.password");
    section.topology = DbTopology::MasterSlave;
    section.connect_timeout_ms = keepup_config::Millis(1000);
    Cluster {
        servers,
        section,
        dir,
    }
}

pub async fn admin(address: &str) -> mysql_async::Conn {
    conn(
        address,
        keepup_db::local_server::ADMIN_USER,
        keepup_db::local_server::ADMIN_PASSWORD,
    )
    .await
}

pub async fn conn(address: &str, user: &str, pw: &str) -> mysql_async::Conn {
    let (h, p) = address.split_once(':').expect("addr");
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(h.to_string())
        .tcp_port(p.parse().expect("port"))
        .user(Some(user.to_string()))
        .pass(Some(pw.to_string()))
        .prefer_socket(false);
    mysql_async::Conn::new(opts).await.expect("connect")
}

/// Creates the application schema and a non-SUPER application account on the primary.
pub async fn app_schema(primary: &str) {
    let mut c = admin(primary).await;
    c.query_drop(
        "CREATE DATABASE app; \
         CREATE TABLE app.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, v BIGINT NOT NULL UNIQUE, src VARCHAR(16) NOT NULL) ENGINE=InnoDB; \
         CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'app-pw'; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON app.* TO 'app'@'127.0.0.1'",
    )
    .await
    .expect("app schema");
    let _ = c.disconnect().await;
}

/// Values present in app.t on `address`.
pub async fn values(address: &str) -> std::collections::BTreeSet<i64> {
    let mut c = admin(address).await;
    let v: Vec<i64> = c.query("SELECT v FROM app.t").await.expect("select");
    let _ = c.disconnect().await;
    v.into_iter().collect()
}

/// An application writing one row per statement (autocommit) to `target`,
/// recording the values the server acknowledged.
pub struct Writer {
    pub target: Arc<Mutex<String>>,
    pub acked: Arc<Mutex<Vec<(i64, Instant)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Writer {
    pub fn start(target: &str, src: &'static str, first: i64) -> Writer {
        let target = Arc::new(Mutex::new(target.to_string()));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, a, s) = (target.clone(), acked.clone(), stop.clone());
        let handle = tokio::spawn(async move {
            let mut v = first;
            let mut c: Option<mysql_async::Conn> = None;
            while !s.load(Ordering::Relaxed) {
                if c.is_none() {
                    let addr = t.lock().expect("lock").clone();
                    let (h, p) = addr.split_once(':').expect("addr");
                    let opts = mysql_async::OptsBuilder::default()
                        .ip_or_hostname(h.to_string())
                        .tcp_port(p.parse().expect("port"))
                        .user(Some("app"))
                        .pass(Some("app-pw"))
                        .prefer_socket(false);
                    match tokio::time::timeout(
                        Duration::from_millis(300),
                        mysql_async::Conn::new(opts),
                    )
                    .await
                    {
                        Ok(Ok(x)) => c = Some(x),
                        _ => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                    }
                }
                let Some(conn) = c.as_mut() else { continue };
                v += 1;
                let r = tokio::time::timeout(
                    Duration::from_secs(30),
                    conn.query_drop(format!("INSERT INTO app.t (v, src) VALUES ({v}, '{src}')")),
                )
                .await;
                match r {
                    Ok(Ok(())) => a.lock().expect("lock").push((v, Instant::now())),
                    _ => {
                        c = None;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            }
        });
        Writer {
            target,
            acked,
            stop,
            handle: Some(handle),
        }
    }

    pub fn retarget(&self, address: &str) {
        *self.target.lock().expect("lock") = address.to_string();
    }

    pub fn count(&self) -> usize {
        self.acked.lock().expect("lock").len()
    }

    /// Stops and returns the acknowledged values and the longest gap between acks.
    pub async fn finish(mut self) -> (Vec<i64>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
        let acked = self.acked.lock().expect("lock").clone();
        let gap = acked
            .windows(2)
            .map(|w| w[1].1.duration_since(w[0].1))
            .max()
            .unwrap_or_default();
        (acked.into_iter().map(|(v, _)| v).collect(), gap)
    }
}

/// Waits until `f` is true or panics after `secs`.
pub async fn wait_until<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Runs a scenario with a time limit: a hang fails the test (and dropping
/// the scenario kills its servers) instead of blocking the suite.
pub async fn guard<F: std::future::Future<Output = ()>>(secs: u64, f: F) {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("scenario timed out");
}

/// Prints what replication looks like on `address` (for a failure's report).
pub async fn dump_replication(address: &str) {
    let mut c = admin(address).await;
    for q in [
        "SHOW ALL SLAVES STATUS",
        "SHOW PROCESSLIST",
        "SHOW GLOBAL STATUS LIKE 'Rpl_semi%'",
        "SHOW GLOBAL VARIABLES LIKE 'rpl_semi%'",
        "SELECT @@gtid_binlog_pos, @@gtid_slave_pos, @@gtid_current_pos",
    ] {
        let rows: Vec<mysql_async::Row> = c.query(q).await.unwrap_or_default();
        println!("--- {address}: {q}");
        for r in rows {
            let cols = r.columns_ref().to_vec();
            let vals: Vec<String> = (0..r.len())
                .map(|i| {
                    format!(
                        "{}={:?}",
                        cols[i].name_str(),
                        r.as_ref(i).map(|v| v.as_sql(true))
                    )
                })
                .collect();
            println!("  {}", vals.join(" "));
        }
    }
    let _ = c.disconnect().await;
}
