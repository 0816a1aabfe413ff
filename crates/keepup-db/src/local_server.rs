//! Throw-away local `mariadbd` servers for tests, benchmarks and `keepup demo`.
//!
//! Each server gets its own data directory (created with
//! `mariadb-install-db --no-defaults`), its own port on 127.0.0.1 and its own
//! socket, runs with `--no-defaults` and explicit options, and is killed by
//! PID when dropped (its directory is then removed). An admin account
//! ([`ADMIN_USER`]/[`ADMIN_PASSWORD`] on 127.0.0.1) is created at every start
//! through `--init-file` with the binlog off, so it adds no GTIDs.
//!
//! ```no_run
//! use keepup_db::local_server::{LocalServer, LocalServerOptions, free_port};
//! let a = LocalServer::start("db-a", free_port()?, LocalServerOptions::new(1))?;
//! println!("{}", a.address());
//! # Ok::<(), keepup_db::DbError>(())
//! ```

use crate::DbError;
use keepup_config::DbServer;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Admin account created on every local server.
pub const ADMIN_USER: &str = "keepup_admin";
/// Its password (local test servers only: they listen on 127.0.0.1).
pub const ADMIN_PASSWORD: &str = "keepup-local-admin";

/// How to start a local server.
#[derive(Debug, Clone)]
pub struct LocalServerOptions {
    /// `server_id`.
    pub server_id: u32,
    /// `gtid_domain_id`.
    pub gtid_domain_id: u32,
    /// Binary log on (`log_bin = mysql-bin`).
    pub log_bin: bool,
    /// `binlog_format` (keepup needs ROW).
    pub binlog_format: String,
    /// `log_slave_updates`.
    pub log_slave_updates: bool,
    /// `gtid_strict_mode`.
    pub gtid_strict_mode: bool,
    /// Start read-only.
    pub read_only: bool,
    /// `skip_name_resolve`.
    pub skip_name_resolve: bool,
    /// Further mariadbd arguments.
    pub extra_args: Vec<String>,
    /// Parent of the server's directory (default: the system temp dir).
    pub base_dir: Option<PathBuf>,
    /// Run inside this network namespace (`ip netns exec`), as a lab host would.
    pub netns: Option<String>,
    /// Address to listen on (and to report to replicas).
    pub bind_address: String,
    /// Host part of the admin account (`10.77.0.%` lets the other lab hosts' agents in).
    pub admin_host: String,
    /// Listen on every address (a writer VIP that moves onto the host), not only `bind_address`.
    pub listen_all: bool,
}

impl LocalServerOptions {
    /// Options keepup's setup accepts: binlog on, ROW, log_slave_updates,
    /// GTID strict mode, domain 0, writable.
    pub fn new(server_id: u32) -> Self {
        LocalServerOptions {
            server_id,
            gtid_domain_id: 0,
            log_bin: true,
            binlog_format: "ROW".into(),
            log_slave_updates: true,
            gtid_strict_mode: true,
            read_only: false,
            skip_name_resolve: true,
            extra_args: Vec::new(),
            base_dir: None,
            netns: None,
            bind_address: "127.0.0.1".into(),
            admin_host: "127.0.0.1".into(),
            listen_all: false,
        }
    }
}

/// A running local mariadbd.
#[derive(Debug)]
pub struct LocalServer {
    name: String,
    port: u16,
    dir: PathBuf,
    opts: LocalServerOptions,
    child: Option<Child>,
}

/// Finds a MariaDB program on PATH or in the usual sbin/bin directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// True when `mariadbd` and `mariadb-install-db` are installed.
pub fn available() -> bool {
    find_program("mariadbd").is_some() && find_program("mariadb-install-db").is_some()
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, DbError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| DbError::Launcher {
        name: "-".into(),
        reason: format!("cannot find a free port: {e}"),
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| DbError::Launcher {
            name: "-".into(),
            reason: e.to_string(),
        })
}

/// Writes an admin credentials file (mode 0600) for local servers.
pub fn write_credentials_file(path: &Path) -> Result<(), DbError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |e: std::io::Error| DbError::Credentials {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::write(
        path,
        format!("[client]\nuser = {ADMIN_USER}\npassword = {ADMIN_PASSWORD}\n"),
    )
    .map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl LocalServer {
    /// Creates a data directory and starts `mariadbd` on 127.0.0.1:`port`;
    /// returns once it accepts connections (typically 0.5–2 s).
    pub fn start(name: &str, port: u16, opts: LocalServerOptions) -> Result<LocalServer, DbError> {
        let err = |reason: String| DbError::Launcher {
            name: name.to_string(),
            reason,
        };
        let install = find_program("mariadb-install-db").ok_or_else(|| {
            err("mariadb-install-db not found (apt-get install mariadb-server)".into())
        })?;
        let base = opts.base_dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!(
            "keepup-mariadb-{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            name
        ));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir)
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        // A private tmpdir: parallel bootstraps sharing /tmp sometimes lose
        // their temporary tables ("Unknown table 'mysql.tmp_user_sys'").
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp)
            .map_err(|e| err(format!("cannot create {}: {e}", tmp.display())))?;
        let out = Command::new(install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--user=root",
                "--skip-test-db",
                "--innodb-log-file-size=16M",
            ])
            .output()
            .map_err(|e| err(format!("cannot run mariadb-install-db: {e}")))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(err(format!(
                "mariadb-install-db failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        std::fs::write(
            dir.join("init.sql"),
            format!(
                "SET sql_log_bin=0;\n\
                 CREATE USER IF NOT EXISTS '{ADMIN_USER}'@'{host}' IDENTIFIED BY '{ADMIN_PASSWORD}';\n\
                 GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'{host}' WITH GRANT OPTION;\n",
                host = opts.admin_host.replace(['\'', '\\'], "")
            ),
        )
        .map_err(|e| err(format!("cannot write init.sql: {e}")))?;
        let mut s = LocalServer {
            name: name.to_string(),
            port,
            dir,
            opts,
            child: None,
        };
        s.launch()?;
        Ok(s)
    }

    fn launch(&mut self) -> Result<(), DbError> {
        let err = |reason: String| DbError::Launcher {
            name: self.name.clone(),
            reason,
        };
        let bin = find_program("mariadbd")
            .ok_or_else(|| err("mariadbd not found (apt-get install mariadb-server)".into()))?;
        let d = &self.dir;
        let o = &self.opts;
        let mut cmd = match &o.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!(
                "--bind-address={}",
                if o.listen_all {
                    "0.0.0.0"
                } else {
                    o.bind_address.as_str()
                }
            ))
            .arg(format!("--socket={}", d.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--init-file={}", d.join("init.sql").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .arg("--user=root")
            .arg(format!("--server-id={}", o.server_id))
            .arg(format!("--gtid-domain-id={}", o.gtid_domain_id))
            .arg(format!("--binlog-format={}", o.binlog_format))
            .arg(format!(
                "--gtid-strict-mode={}",
                u8::from(o.gtid_strict_mode)
            ))
            .arg(format!(
                "--log-slave-updates={}",
                u8::from(o.log_slave_updates)
            ))
            .arg(format!("--read-only={}", u8::from(o.read_only)))
            .arg(format!("--report-host={}", o.bind_address))
            .arg(format!("--report-port={}", self.port))
            .arg("--relay-log=relay-bin")
            .args([
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--performance-schema=OFF",
            ])
            .args([
                "--max-connections=300",
                "--log-bin-trust-function-creators=1",
            ]);
        if o.log_bin {
            cmd.arg("--log-bin=mysql-bin");
        } else {
            cmd.arg("--skip-log-bin");
        }
        if o.skip_name_resolve {
            cmd.arg("--skip-name-resolve");
        }
        cmd.args(&o.extra_args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Ready = one more "ready for connections" line in its error log than
        // before this start (a restart appends to the same log; connection
        // probes would fill the log with "Aborted connection" lines).
        let ready_before = self.ready_count();
        let child = cmd
            .spawn()
            .map_err(|e| err(format!("cannot start mariadbd: {e}")))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(err(format!(
                        "mariadbd exited ({status}); last log lines:\n{}",
                        self.log_tail(15)
                    )));
                }
            }
            if self.ready_count() > ready_before {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(err(format!(
                    "not ready after 60 s; log:\n{}",
                    self.log_tail(15)
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn ready_count(&self) -> usize {
        std::fs::read_to_string(self.dir.join("error.log"))
            .map(|t| t.matches("ready for connections").count())
            .unwrap_or(0)
    }

    /// The last `n` lines of its error log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.opts.bind_address, self.port)
    }
    /// Its directory (data directory, socket, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// PID of the running mariadbd.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    /// The options it was started with.
    pub fn options(&self) -> &LocalServerOptions {
        &self.opts
    }
    /// Is the process running?
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// A `[[database.server]]` entry for it.
    pub fn db_server(&self) -> DbServer {
        DbServer {
            name: self.name.clone(),
            address: self.address(),
            replication_address: None,
            node: None,
            no_promote: false,
            admin_credentials_file: None,
        }
    }

    /// SIGKILL, like a crash; the data directory stays for [`restart`](Self::restart).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Clean shutdown (SIGTERM, then SIGKILL after 30 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data directory and options (after
    /// [`kill9`](Self::kill9) or [`stop`](Self::stop)).
    pub fn restart(&mut self) -> Result<(), DbError> {
        self.kill9();
        self.launch()
    }

    /// Changes options used by the next [`restart`](Self::restart).
    pub fn options_mut(&mut self) -> &mut LocalServerOptions {
        &mut self.opts
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
