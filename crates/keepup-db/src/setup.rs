//! `keepup db setup`: check, create the replication account, seed, configure,
//! verify. Every step first reads the current state and only changes what
//! differs, so a second run on a healthy cluster changes nothing.

use crate::conn::{credentials_for, quote, split_address, Credentials, Db};
use crate::observe::{
    identify_primary, probe_conn, recorded_failover_pos, ServerStatus, KEEPUP_SCHEMA,
};
use crate::plan::{errant_gtids, master_master_settings, safe_to_rejoin, GtidPos};
use crate::{check_section, DbError, Problem};
use keepup_config::{DatabaseSection, DbServer, DbTopology};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// Options of `keepup db setup`.
#[derive(Debug, Clone, Default)]
pub struct SetupOptions {
    /// Replicas to wipe and re-seed from the primary even though they hold
    /// data (`--reseed NAME`): their user schemas are dropped first.
    pub reseed: Vec<String>,
}

/// What `setup` found and did.
#[derive(Debug, Clone, Serialize)]
pub struct SetupReport {
    /// The primary after setup.
    pub primary: String,
    /// Every change made, in order (empty: the cluster was already set up).
    pub changes: Vec<String>,
    /// Settings changed at runtime that must also go into each server's
    /// my.cnf to survive a restart (`server: line`).
    pub persist: Vec<String>,
    /// Verification: a row written on the primary and read on each replica.
    pub verified: Vec<String>,
}

impl SetupReport {
    /// True when nothing had to be changed.
    pub fn unchanged(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Facts setup needs beyond `ServerStatus`.
struct Facts {
    st: ServerStatus,
    log_bin: bool,
    binlog_format: String,
    log_slave_updates: bool,
    strict: bool,
    aii: u64,
    aio: u64,
    semi_timeout: u64,
    wait_point: String,
    master_user: String,
    user_tables: u64,
    user_schemas: Vec<String>,
}

const SYSTEM_SCHEMAS: &str = "'mysql','information_schema','performance_schema','sys'";

async fn facts(
    section: &DatabaseSection,
    server: &DbServer,
    db: &mut Db,
) -> Result<Facts, DbError> {
    let st = probe_conn(section, server, db).await?;
    let row = db
        .row(
            "reading replication settings",
            "SELECT @@log_bin, @@binlog_format, @@log_slave_updates, @@gtid_strict_mode, \
             @@auto_increment_increment, @@auto_increment_offset, @@rpl_semi_sync_master_timeout, \
             @@rpl_semi_sync_master_wait_point",
        )
        .await?;
    let t = |i: usize| {
        row.as_ref()
            .and_then(|r| r.as_ref(i))
            .and_then(crate::conn::value_text)
            .unwrap_or_default()
    };
    let on = |s: String| s == "1" || s.eq_ignore_ascii_case("ON");
    let master_user = db
        .row("reading SHOW SLAVE STATUS", "SHOW SLAVE STATUS")
        .await?
        .and_then(|r| crate::conn::col(&r, "Master_User"))
        .unwrap_or_default();
    let user_tables = db
        .scalar(
            "counting tables",
            &format!("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema NOT IN ({SYSTEM_SCHEMAS})"),
        )
        .await?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let user_schemas = db
        .rows(
            "listing schemas",
            &format!("SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN ({SYSTEM_SCHEMAS}) ORDER BY 1"),
        )
        .await?
        .iter()
        .filter_map(|r| r.as_ref(0).and_then(crate::conn::value_text))
        .collect();
    Ok(Facts {
        st,
        log_bin: on(t(0)),
        binlog_format: t(1),
        log_slave_updates: on(t(2)),
        strict: on(t(3)),
        aii: t(4).parse().unwrap_or(1),
        aio: t(5).parse().unwrap_or(1),
        semi_timeout: t(6).parse().unwrap_or(0),
        wait_point: t(7),
        master_user,
        user_tables,
        user_schemas,
    })
}

/// `(major, minor)` of a MariaDB version string, `None` for MySQL.
fn mariadb_version(v: &str) -> Option<(u32, u32)> {
    if !v.contains("MariaDB") {
        return None;
    }
    let mut it = v.split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Reads the replication password file, or generates one (0600).
pub(crate) fn replication_password(path: &Path) -> Result<(String, bool), DbError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |reason: String| DbError::Credentials {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::metadata(path) {
        Ok(m) => {
            if m.permissions().mode() & 0o077 != 0 {
                return Err(err(format!(
                    "readable by other users (mode {:o}); run: chmod 600 {}",
                    m.permissions().mode() & 0o777,
                    path.display()
                )));
            }
            let pw = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            let pw = pw.trim().to_string();
            if pw.len() < 12 {
                return Err(err(
                    "holds fewer than 12 characters; delete it and keepup generates a new one"
                        .into(),
                ));
            }
            Ok((pw, false))
        }
        Err(_) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
            }
            let mut raw = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
                .map_err(|e| err(format!("cannot read /dev/urandom: {e}")))?;
            const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
            let pw: String = raw
                .iter()
                .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
                .collect();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(format!("cannot create it: {e}")))?;
            f.write_all(pw.as_bytes())
                .and_then(|_| f.write_all(b"\n"))
                .map_err(|e| err(format!("cannot write it: {e}")))?;
            Ok((pw, true))
        }
    }
}

/// The `CHANGE MASTER TO` statement pointing a server at `source`.
pub(crate) fn change_master_sql(
    section: &DatabaseSection,
    source: &DbServer,
    password: &str,
) -> Result<String, DbError> {
    let (host, port) = split_address(source.replication_address())?;
    Ok(format!(
        "CHANGE MASTER TO MASTER_HOST={}, MASTER_PORT={port}, MASTER_USER={}, MASTER_PASSWORD={}, \
         MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1",
        quote(&host),
        quote(&section.replication_user),
        quote(password)
    ))
}

/// Points `db` at `source` and starts replication (password never in errors).
pub(crate) async fn point_at(
    section: &DatabaseSection,
    db: &mut Db,
    source: &DbServer,
    password: &str,
) -> Result<(), DbError> {
    db.exec("stopping replication", "STOP SLAVE").await?;
    let sql = change_master_sql(section, source, password)?;
    db.exec(&format!("CHANGE MASTER TO {}", source.name), &sql)
        .await
        .map_err(|e| match e {
            DbError::Query {
                server, what, code, ..
            } => DbError::Query {
                server,
                what,
                code,
                message: "(statement hidden: it holds the replication password)".into(),
            },
            other => other,
        })?;
    db.exec("starting replication", "START SLAVE").await
}

/// Waits until `db` has applied `pos` (MASTER_GTID_WAIT).
pub(crate) async fn gtid_wait(db: &mut Db, pos: &str, timeout_ms: u64) -> Result<(), DbError> {
    // MASTER_GTID_WAIT watches @@gtid_slave_pos, which never contains the
    // server's own transactions (master-master: its own domain), so those are
    // taken from its binlog instead. Only its own: the binlog position of a
    // replicated transaction moves before the transaction is visible.
    let own: u32 = db.global("server_id").await?.parse().unwrap_or(0);
    let have = GtidPos::parse(&db.global("gtid_binlog_pos").await?).unwrap_or_default();
    let want = GtidPos::parse(pos).unwrap_or_default();
    let need = GtidPos(
        want.0
            .values()
            .filter(|g| {
                !(g.server_id == own
                    && have
                        .0
                        .get(&g.domain)
                        .is_some_and(|h| h.server_id == own && h.seq >= g.seq))
            })
            .map(|g| (g.domain, *g))
            .collect(),
    );
    if need.is_empty() {
        return Ok(());
    }
    let pos = need.to_string();
    let pos = pos.as_str();
    let secs = timeout_ms as f64 / 1000.0;
    let r = db
        .scalar(
            "MASTER_GTID_WAIT",
            &format!("SELECT MASTER_GTID_WAIT({}, {secs})", quote(pos)),
        )
        .await?;
    if r.as_deref() == Some("0") {
        Ok(())
    } else {
        Err(DbError::Timeout {
            server: db.server.clone(),
            what: format!("its SQL thread to apply up to {pos}"),
            after_ms: timeout_ms,
        })
    }
}

/// Makes sure keepup's own schema exists on the primary (binlogged, so it
/// replicates). Creates only what is missing.
pub(crate) async fn ensure_schema(db: &mut Db, changes: &mut Vec<String>) -> Result<(), DbError> {
    let have: Vec<String> = db
        .rows(
            "listing keepup tables",
            &format!("SELECT table_name FROM information_schema.tables WHERE table_schema = '{KEEPUP_SCHEMA}'"),
        )
        .await?
        .iter()
        .filter_map(|r| r.as_ref(0).and_then(crate::conn::value_text))
        .collect();
    let tables = [
        ("heartbeat", "server_id INT UNSIGNED NOT NULL PRIMARY KEY, ts DATETIME(6) NOT NULL"),
        ("failover", "id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, at DATETIME(6) NOT NULL, old_primary VARCHAR(128) NOT NULL, new_primary VARCHAR(128) NOT NULL, old_primary_pos TEXT NOT NULL"),
        ("setup_check", "id INT UNSIGNED NOT NULL PRIMARY KEY, token VARCHAR(64) NOT NULL, at DATETIME(6) NOT NULL"),
    ];
    if have.is_empty() {
        db.exec(
            "creating schema keepup",
            &format!("CREATE DATABASE IF NOT EXISTS {KEEPUP_SCHEMA}"),
        )
        .await?;
    }
    for (t, cols) in tables {
        if !have.iter().any(|h| h == t) {
            db.exec(
                &format!("creating {KEEPUP_SCHEMA}.{t}"),
                &format!("CREATE TABLE IF NOT EXISTS {KEEPUP_SCHEMA}.{t} ({cols}) ENGINE=InnoDB"),
            )
            .await?;
            changes.push(format!("created table {KEEPUP_SCHEMA}.{t} on the primary"));
        }
    }
    Ok(())
}

/// Streams a consistent snapshot of `primary` into `replica` through a pipe
/// (`mariadb-dump --single-transaction --gtid --master-data | mariadb`), with
/// the replica's binlog off for the load so it gains no GTIDs of its own. The
/// dump sets the replica's `gtid_slave_pos` to the snapshot's position.
async fn seed(
    primary: &DbServer,
    pcreds: &Credentials,
    replica: &DbServer,
    rcreds: &Credentials,
    schemas: Vec<String>,
) -> Result<(), DbError> {
    let (ph, pp) = split_address(&primary.address)?;
    let (rh, rp) = split_address(&replica.address)?;
    let pcreds = pcreds.clone();
    let rcreds = rcreds.clone();
    let (pname, rname) = (primary.name.clone(), replica.name.clone());
    let seed_err = move |reason: String| DbError::Seed {
        server: rname.clone(),
        source_server: pname.clone(),
        reason,
    };
    let seed_err2 = seed_err.clone();
    tokio::task::spawn_blocking(move || {
        use std::process::{Command, Stdio};
        let mut dump = Command::new("mariadb-dump")
            .args([
                "--no-defaults",
                "--protocol=tcp",
                "--host",
                &ph,
                "--port",
                &pp.to_string(),
                "--user",
                &pcreds.user,
            ])
            .args([
                "--single-transaction",
                "--gtid",
                "--master-data=1",
                "--routines",
                "--events",
                "--triggers",
                "--hex-blob",
                "--databases",
            ])
            .args(&schemas)
            .env("MYSQL_PWD", &pcreds.password)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                seed_err(format!(
                    "cannot run mariadb-dump (install mariadb-client): {e}"
                ))
            })?;
        let Some(out) = dump.stdout.take() else {
            return Err(seed_err("mariadb-dump has no stdout".into()));
        };
        let load = Command::new("mariadb")
            .args([
                "--no-defaults",
                "--protocol=tcp",
                "--host",
                &rh,
                "--port",
                &rp.to_string(),
                "--user",
                &rcreds.user,
            ])
            .args(["--init-command=SET sql_log_bin=0", "--binary-mode"])
            .env("MYSQL_PWD", &rcreds.password)
            .stdin(Stdio::from(out))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| seed_err(format!("cannot run mariadb (install mariadb-client): {e}")))?;
        let lo = load
            .wait_with_output()
            .map_err(|e| seed_err(e.to_string()))?;
        let dout = dump
            .wait_with_output()
            .map_err(|e| seed_err(e.to_string()))?;
        if !dout.status.success() {
            return Err(seed_err(format!(
                "mariadb-dump failed: {}",
                String::from_utf8_lossy(&dout.stderr).trim()
            )));
        }
        if !lo.status.success() {
            return Err(seed_err(format!(
                "loading into the replica failed: {}",
                String::from_utf8_lossy(&lo.stderr).trim()
            )));
        }
        Ok(())
    })
    .await
    .map_err(|e| seed_err2(e.to_string()))?
}

/// Copies the application accounts (`CREATE USER` + `GRANT`s) from the
/// primary to a freshly seeded replica, with its binlog off: the snapshot
/// holds no accounts (the `mysql` schema is not dumped), yet applications must
/// be able to log in after a failover. Existing accounts are kept; root,
/// system and replication accounts and roles are skipped.
async fn copy_accounts(
    section: &DatabaseSection,
    primary: &mut Db,
    replica: &mut Db,
) -> Result<usize, DbError> {
    let rows = primary
        .rows(
            "listing accounts",
            &format!(
                "SELECT User, Host FROM mysql.user WHERE User NOT IN ('', 'root', 'mariadb.sys', 'PUBLIC', {}) AND is_role = 'N'",
                quote(&section.replication_user)
            ),
        )
        .await?;
    replica
        .exec("SET sql_log_bin=0", "SET SESSION sql_log_bin = 0")
        .await?;
    let mut n = 0;
    for r in rows {
        let (Some(u), Some(h)) = (
            r.as_ref(0).and_then(crate::conn::value_text),
            r.as_ref(1).and_then(crate::conn::value_text),
        ) else {
            continue;
        };
        let who = format!("{}@{}", quote(&u), quote(&h));
        // Accounts by host name are unusable under skip-name-resolve; skip what cannot be shown.
        let Ok(Some(create)) = primary
            .scalar("SHOW CREATE USER", &format!("SHOW CREATE USER {who}"))
            .await
        else {
            continue;
        };
        let Ok(grants) = primary
            .rows("SHOW GRANTS", &format!("SHOW GRANTS FOR {who}"))
            .await
        else {
            continue;
        };
        let create = create.replacen("CREATE USER ", "CREATE USER IF NOT EXISTS ", 1);
        replica
            .exec(&format!("creating account {u}@{h}"), &create)
            .await?;
        for g in grants
            .iter()
            .filter_map(|g| g.as_ref(0).and_then(crate::conn::value_text))
        {
            replica.exec(&format!("granting to {u}@{h}"), &g).await?;
        }
        n += 1;
    }
    replica
        .exec("SET sql_log_bin=1", "SET SESSION sql_log_bin = 1")
        .await?;
    Ok(n)
}

/// `keepup db setup` with default options. See [`setup_with`].
pub async fn setup(section: &DatabaseSection) -> Result<SetupReport, DbError> {
    setup_with(section, &SetupOptions::default()).await
}

/// Sets up replication as `section` describes:
/// 1. connects to every server and checks it (unique non-zero server_id,
///    log_bin, binlog_format=ROW, log_slave_updates, gtid_strict_mode,
///    MariaDB with compatible versions, no errant transactions, no stopped
///    SQL thread); any problem refuses the whole setup before changing anything;
/// 2. creates the replication account on every server (binlog off, so no
///    server gains GTIDs of its own) with a generated password kept in a 0600 file;
/// 3. keeps the current primary if there is one, else the preferred one;
///    creates keepup's schema there;
/// 4. seeds empty replicas with a snapshot streamed from the primary; rejoins
///    a server whose GTID history the primary holds; refuses one with data of
///    its own unless listed in `opts.reseed`;
/// 5. configures GTID replication, read_only, master-master settings and
///    semi-sync (the primary side before any replica connects);
/// 6. writes a row on the primary and checks it arrives on every replica
///    (and, master-master, a row from the second master on the first).
#[allow(clippy::needless_range_loop)] // parallel vectors: servers, facts, connections
pub async fn setup_with(
    section: &DatabaseSection,
    opts: &SetupOptions,
) -> Result<SetupReport, DbError> {
    check_section(section)?;
    let mut problems = Vec::new();
    let mut conns: Vec<Db> = Vec::new();
    for s in &section.server {
        match Db::connect(section, s).await {
            Ok(db) => conns.push(db),
            Err(e) => {
                let (kind, advice) = match &e {
                    DbError::AccessDenied { .. } => (
                        "access_denied",
                        "fix the admin credentials file or the account's grants",
                    ),
                    DbError::Credentials { .. } => ("credentials", "fix the credentials file"),
                    _ => (
                        "unreachable",
                        "start mariadbd there, check the address, then run setup again",
                    ),
                };
                problems.push(Problem::new(Some(&s.name), kind, e.to_string(), advice));
            }
        }
    }
    if !problems.is_empty() {
        return Err(DbError::Refused { problems });
    }
    let mut f = Vec::new();
    for (s, db) in section.server.iter().zip(conns.iter_mut()) {
        f.push(facts(section, s, db).await?);
    }
    let statuses: Vec<ServerStatus> = f.iter().map(|x| x.st.clone()).collect();
    let primary_name = identify_primary(section, &statuses)
        .or_else(|| section.preferred().map(str::to_string))
        .ok_or_else(|| DbError::Config("no servers".into()))?;
    let pidx = section
        .server
        .iter()
        .position(|s| s.name == primary_name)
        .ok_or_else(|| DbError::Config(format!("primary {primary_name} not configured")))?;

    // 1. Checks.
    let mut ids: std::collections::BTreeMap<u32, Vec<&str>> = Default::default();
    for x in &f {
        ids.entry(x.st.server_id).or_default().push(&x.st.name);
    }
    for (id, names) in &ids {
        if *id == 0 {
            for n in names {
                problems.push(Problem::new(
                    Some(n),
                    "server_id_zero",
                    "server_id is 0; replication needs a unique non-zero server_id".into(),
                    "set server_id = N (unique) in its my.cnf and restart it",
                ));
            }
        } else if names.len() > 1 {
            problems.push(Problem::new(
                None,
                "server_id_collision",
                format!("servers {} share server_id {id}", names.join(", ")),
                "give each server a unique server_id in its my.cnf and restart it",
            ));
        }
    }
    let pver = mariadb_version(&f[pidx].st.version);
    for (i, x) in f.iter().enumerate() {
        let n = x.st.name.as_str();
        if !x.log_bin {
            problems.push(Problem::new(
                Some(n),
                "log_bin_off",
                "binary log is off".into(),
                "add log_bin = mysql-bin to its my.cnf and restart it",
            ));
        }
        if !x.binlog_format.eq_ignore_ascii_case("ROW") {
            problems.push(Problem::new(
                Some(n),
                "binlog_format",
                format!("binlog_format is {}", x.binlog_format),
                "set binlog_format = ROW in its my.cnf (and SET GLOBAL binlog_format = ROW)",
            ));
        }
        if !x.log_slave_updates {
            problems.push(Problem::new(
                Some(n),
                "log_slave_updates_off",
                "log_slave_updates is off, so it cannot serve replicas after a promotion".into(),
                "add log_slave_updates = ON to its my.cnf and restart it",
            ));
        }
        if !x.strict {
            problems.push(Problem::new(
                Some(n),
                "gtid_strict_mode_off",
                "gtid_strict_mode is off, so diverging histories go unnoticed".into(),
                "add gtid_strict_mode = ON to its my.cnf (and SET GLOBAL gtid_strict_mode = ON)",
            ));
        }
        match (mariadb_version(&x.st.version), pver) {
            (None, _) => problems.push(Problem::new(
                Some(n),
                "not_mariadb",
                format!("version {} is not MariaDB", x.st.version),
                "keepup manages MariaDB (10.5 or later) only",
            )),
            (Some(v), Some(p)) if i != pidx && v < p => problems.push(Problem::new(
                Some(n),
                "version",
                format!(
                    "replica runs {}.{}, older than the primary's {}.{}",
                    v.0, v.1, p.0, p.1
                ),
                "upgrade the replica first (replication goes from older to newer only)",
            )),
            (Some(v), _) if v < (10, 5) => problems.push(Problem::new(
                Some(n),
                "version",
                format!("MariaDB {}.{} is too old", v.0, v.1),
                "upgrade to 10.5 or later",
            )),
            _ => {}
        }
        if i == pidx || opts.reseed.iter().any(|r| r == n) {
            continue;
        }
        if let Some(r) = &x.st.replication {
            if r.last_sql_errno != 0 && r.sql_running != "Yes" {
                problems.push(Problem::new(Some(n), "sql_thread_stopped", format!("SQL thread stopped on error {}: {}", r.last_sql_errno, r.last_sql_error), &format!("keepup will not skip transactions: fix it by hand and START SLAVE, or re-seed: keepup db setup --reseed {n}")));
            }
            if section.topology == DbTopology::MasterSlave || !section.writes_on_both {
                let errant = errant_gtids(
                    &GtidPos::parse(&x.st.gtid_binlog_pos).unwrap_or_default(),
                    &GtidPos::parse(&x.st.gtid_slave_pos).unwrap_or_default(),
                    x.st.server_id,
                );
                // In master-master the second master's own domain is legitimate.
                let errant: Vec<_> = errant
                    .into_iter()
                    .filter(|g| {
                        !(section.topology == DbTopology::MasterMaster
                            && g.domain == x.st.gtid_domain_id
                            && g.domain != f[pidx].st.gtid_domain_id)
                    })
                    .collect();
                if !errant.is_empty() {
                    let list: Vec<String> = errant
                        .iter()
                        .map(|g| format!("{}-{}-{}", g.domain, g.server_id, g.seq))
                        .collect();
                    problems.push(Problem::new(Some(n), "errant_transactions", format!("replica wrote transactions of its own: {}", list.join(",")), &format!("inspect them with mariadb-binlog; keepup will not replicate over them. Re-seed: keepup db setup --reseed {n}")));
                }
            }
        } else if x.user_tables > 0
            && GtidPos::parse(&x.st.gtid_binlog_pos)
                .unwrap_or_default()
                .is_empty()
        {
            problems.push(Problem::new(Some(n), "has_data", format!("holds {} tables but no replication history", x.user_tables), &format!("keepup will not overwrite data: to replace it with a copy of {primary_name}, run keepup db setup --reseed {n}")));
        }
    }
    if section.topology == DbTopology::MasterMaster {
        // Two masters must not have the same server_id (covered) and need a
        // domain each; settings below fix domains and offsets.
    }
    if !problems.is_empty() {
        return Err(DbError::Refused { problems });
    }

    let mut changes = Vec::new();
    let mut persist = Vec::new();
    let primary = &section.server[pidx];
    let pcreds = credentials_for(section, primary)?;

    // 2. Replication account everywhere (not binlogged).
    let (password, generated) = replication_password(&section.replication_password_file)?;
    if generated {
        changes.push(format!(
            "generated the replication password into {} (mode 0600)",
            section.replication_password_file.display()
        ));
    }
    let mut hosts: Vec<String> = if section.replication_hosts.is_empty() {
        section
            .server
            .iter()
            .filter_map(|s| split_address(s.replication_address()).ok().map(|(h, _)| h))
            .collect()
    } else {
        section.replication_hosts.clone()
    };
    hosts.sort();
    hosts.dedup();
    for db in conns.iter_mut() {
        db.exec("SET sql_log_bin=0", "SET SESSION sql_log_bin = 0")
            .await?;
        for h in &hosts {
            let who = format!("{}@{}", quote(&section.replication_user), quote(h));
            let state = db
                .row(
                    "checking the replication account",
                    &format!(
                        "SELECT Password = PASSWORD({}), Repl_slave_priv FROM mysql.user WHERE User = {} AND Host = {}",
                        quote(&password),
                        quote(&section.replication_user),
                        quote(h)
                    ),
                )
                .await?;
            let (exists, pw_ok, grant_ok) = match &state {
                None => (false, false, false),
                Some(r) => (
                    true,
                    r.as_ref(0).and_then(crate::conn::value_text).as_deref() == Some("1"),
                    r.as_ref(1).and_then(crate::conn::value_text).as_deref() == Some("Y"),
                ),
            };
            let hide = |e: DbError| match e {
                DbError::Query {
                    server, what, code, ..
                } => DbError::Query {
                    server,
                    what,
                    code,
                    message: "(statement hidden: it holds the replication password)".into(),
                },
                o => o,
            };
            if !exists {
                db.exec(
                    "creating the replication account",
                    &format!("CREATE USER {who} IDENTIFIED BY {}", quote(&password)),
                )
                .await
                .map_err(hide)?;
                changes.push(format!(
                    "{}: created replication account {}@{h}",
                    db.server, section.replication_user
                ));
            } else if !pw_ok {
                db.exec(
                    "setting the replication password",
                    &format!("ALTER USER {who} IDENTIFIED BY {}", quote(&password)),
                )
                .await
                .map_err(hide)?;
                changes.push(format!(
                    "{}: reset the password of {}@{h} to the one in the password file",
                    db.server, section.replication_user
                ));
            }
            if !grant_ok {
                db.exec(
                    "granting replication",
                    &format!("GRANT REPLICATION SLAVE ON *.* TO {who}"),
                )
                .await?;
                changes.push(format!(
                    "{}: granted REPLICATION SLAVE to {}@{h}",
                    db.server, section.replication_user
                ));
            }
        }
        db.exec("SET sql_log_bin=1", "SET SESSION sql_log_bin = 1")
            .await?;
    }

    // 3. Master-master settings (before anything is written).
    if section.topology == DbTopology::MasterMaster {
        let n = section.server.len();
        let domains_distinct = f[0].st.gtid_domain_id != f[1].st.gtid_domain_id;
        for (i, db) in conns.iter_mut().enumerate() {
            let (inc, off, dom) = master_master_settings(i, n);
            if f[i].aii != inc || f[i].aio != off {
                db.exec("setting auto_increment", &format!("SET GLOBAL auto_increment_increment = {inc}, GLOBAL auto_increment_offset = {off}")).await?;
                changes.push(format!(
                    "{}: auto_increment_increment = {inc}, auto_increment_offset = {off}",
                    db.server
                ));
                persist.push(format!("{}: auto_increment_increment = {inc}", db.server));
                persist.push(format!("{}: auto_increment_offset = {off}", db.server));
            }
            if !domains_distinct {
                db.exec(
                    "setting gtid_domain_id",
                    &format!("SET GLOBAL gtid_domain_id = {dom}"),
                )
                .await?;
                changes.push(format!("{}: gtid_domain_id = {dom}", db.server));
                persist.push(format!("{}: gtid_domain_id = {dom}", db.server));
            }
        }
        if !domains_distinct {
            // Reconnect so our sessions use the new domain.
            for (i, s) in section.server.iter().enumerate() {
                conns[i] = Db::connect(section, s).await?;
            }
        }
    }

    // 4. The primary: writable, keepup schema.
    if f[pidx].st.read_only {
        conns[pidx]
            .exec("opening the primary", "SET GLOBAL read_only = OFF")
            .await?;
        changes.push(format!("{primary_name}: read_only = OFF (primary)"));
    }
    ensure_schema(&mut conns[pidx], &mut changes).await?;

    // 4b. Semi-sync on the primary side, before any replica connects, so
    // every replica registers as a semi-sync client when it first connects
    // and no IO thread has to be restarted. Restarting one just after
    // `rpl_semi_sync_master_enabled = ON` hung MariaDB 10.11: the killed
    // dump thread stayed "Waiting to finalize termination" (its removal
    // from the just-started ack receiver never completed), the new dump
    // thread waited for it, and the second master's SQL thread waited for
    // a semi-sync ACK for ever (1 setup in ~13 timed out here). A replica
    // connected already is paused around the switch instead (its dump
    // thread was no semi-sync one, so its end involves no ack receiver).
    // Commits in between wait only until the first replica connects.
    for i in 0..section.server.len() {
        let x = &f[i];
        let db = &mut conns[i];
        let is_master = i == pidx || section.topology == DbTopology::MasterMaster;
        let want = section.semi_sync && is_master;
        // Timeout and wait point on every server, so a promoted replica has them.
        let timeout = section.semi_sync_server_timeout_ms();
        if section.semi_sync && x.semi_timeout != timeout {
            db.exec(
                "setting the semi-sync timeout",
                &format!("SET GLOBAL rpl_semi_sync_master_timeout = {timeout}"),
            )
            .await?;
            changes.push(format!(
                "{}: rpl_semi_sync_master_timeout = {timeout}{}",
                db.server,
                if section.semi_sync_relaxed {
                    " (relaxed: falls back to async after it)"
                } else {
                    " (strict: never falls back)"
                }
            ));
            persist.push(format!(
                "{}: rpl_semi_sync_master_timeout = {timeout}",
                db.server
            ));
        }
        if section.semi_sync && !x.wait_point.eq_ignore_ascii_case("AFTER_SYNC") {
            db.exec(
                "setting the semi-sync wait point",
                "SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC",
            )
            .await?;
            changes.push(format!(
                "{}: rpl_semi_sync_master_wait_point = AFTER_SYNC (ack before commit is visible)",
                db.server
            ));
        }
        if want != x.st.semi_sync.master_enabled {
            let on = if want { "ON" } else { "OFF" };
            // Replicas connected already re-register only by reconnecting:
            // their IO threads stop before the primary side turns on (no
            // dump thread dies while the new ack receiver starts) and start
            // again after it.
            let name = section.server[i].name.clone();
            let connected: Vec<usize> = (0..section.server.len())
                .filter(|j| {
                    want && *j != i
                        && f[*j].st.replication.as_ref().is_some_and(|r| {
                            r.source_server.as_deref() == Some(name.as_str())
                                && r.io_running != "No"
                        })
                })
                .collect();
            for &j in &connected {
                let _ = conns[j]
                    .exec("pausing the IO thread", "STOP SLAVE IO_THREAD")
                    .await;
            }
            conns[i]
                .exec(
                    "setting semi-sync (primary side)",
                    &format!("SET GLOBAL rpl_semi_sync_master_enabled = {on}"),
                )
                .await?;
            for &j in &connected {
                let _ = conns[j]
                    .exec("restarting the IO thread", "START SLAVE IO_THREAD")
                    .await;
            }
            let line = format!("{name}: rpl_semi_sync_master_enabled = {on}");
            changes.push(line.clone());
            persist.push(line);
        }
    }

    // 5. Replicas.
    let mut failed = Vec::new();
    let mut restarts: Vec<usize> = Vec::new();
    for i in 0..section.server.len() {
        if i == pidx {
            continue;
        }
        let s = &section.server[i];
        let x = &f[i];
        let reseed = opts.reseed.iter().any(|r| r == &s.name);
        let binlog = GtidPos::parse(&x.st.gtid_binlog_pos).unwrap_or_default();
        let repl_ok = x.st.replication.as_ref().is_some_and(|r| {
            r.source_server.as_deref() == Some(primary_name.as_str())
                && r.using_gtid == "Slave_Pos"
                && x.master_user == section.replication_user
        });
        let want_ro = !(section.topology == DbTopology::MasterMaster && section.writes_on_both);
        if want_ro && !x.st.read_only {
            conns[i]
                .exec("setting read_only", "SET GLOBAL read_only = ON")
                .await?;
            changes.push(format!("{}: read_only = ON", s.name));
            persist.push(format!(
                "{}: read_only = ON (keep it in every server's my.cnf; keepup opens the primary)",
                s.name
            ));
        } else if !want_ro && x.st.read_only {
            conns[i]
                .exec("setting read_only", "SET GLOBAL read_only = OFF")
                .await?;
            changes.push(format!("{}: read_only = OFF (writes_on_both)", s.name));
        }
        if section.semi_sync && !x.st.semi_sync.slave_enabled {
            conns[i]
                .exec(
                    "enabling semi-sync (replica side)",
                    "SET GLOBAL rpl_semi_sync_slave_enabled = ON",
                )
                .await?;
            changes.push(format!("{}: rpl_semi_sync_slave_enabled = ON", s.name));
            persist.push(format!("{}: rpl_semi_sync_slave_enabled = ON", s.name));
            if repl_ok {
                // Its IO thread connected without semi-sync: restarted in 6.
                restarts.push(i);
            }
        }
        if repl_ok && !reseed {
            let r = x.st.replication.as_ref();
            if r.is_some_and(|r| r.io_running == "No" || r.sql_running != "Yes") {
                conns[i].exec("starting replication", "START SLAVE").await?;
                changes.push(format!(
                    "{}: started the stopped replication threads",
                    s.name
                ));
            }
            continue;
        }
        let fresh = x.user_tables == 0
            && binlog.is_empty()
            && GtidPos::parse(&x.st.gtid_slave_pos)
                .unwrap_or_default()
                .is_empty();
        if reseed || fresh {
            let db = &mut conns[i];
            db.exec("stopping replication", "STOP SLAVE").await?;
            db.exec("clearing replication", "RESET SLAVE ALL").await?;
            if reseed {
                db.exec("SET sql_log_bin=0", "SET SESSION sql_log_bin = 0")
                    .await?;
                for schema in &x.user_schemas {
                    db.exec(
                        "dropping a schema for re-seeding",
                        &format!("DROP DATABASE `{}`", schema.replace('`', "``")),
                    )
                    .await?;
                }
                db.exec("SET sql_log_bin=1", "SET SESSION sql_log_bin = 1")
                    .await?;
                db.exec("clearing its binlog for re-seeding", "RESET MASTER")
                    .await?;
                db.exec(
                    "clearing its GTID position",
                    "SET GLOBAL gtid_slave_pos = ''",
                )
                .await?;
                changes.push(format!(
                    "{}: dropped {} schema(s), its binlog and GTID position for re-seeding",
                    s.name,
                    x.user_schemas.len()
                ));
            }
            let schemas: Vec<String> = conns[pidx]
                .rows("listing schemas", &format!("SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN ({SYSTEM_SCHEMAS}) ORDER BY 1"))
                .await?
                .iter()
                .filter_map(|r| r.as_ref(0).and_then(crate::conn::value_text))
                .collect();
            let t0 = Instant::now();
            seed(primary, &pcreds, s, &credentials_for(section, s)?, schemas).await?;
            let (a, b) = if i < pidx {
                let (l, r) = conns.split_at_mut(pidx);
                (&mut r[0], &mut l[i])
            } else {
                let (l, r) = conns.split_at_mut(i);
                (&mut l[pidx], &mut r[0])
            };
            let accounts = copy_accounts(section, a, b).await?;
            changes.push(format!(
                "{}: seeded from {primary_name} with a consistent snapshot and {accounts} account(s) ({} ms)",
                s.name,
                t0.elapsed().as_millis()
            ));
            point_at(section, &mut conns[i], primary, &password).await?;
            changes.push(format!(
                "{}: replicating from {primary_name} (GTID, slave_pos)",
                s.name
            ));
            continue;
        }
        // Has history of its own, not replicating from the primary: rejoin
        // only if the primary holds that history.
        if x.st.replication.is_none() {
            if let Some(rec) = recorded_failover_pos(&mut conns[pidx], &s.name).await {
                if !safe_to_rejoin(&binlog, &rec) {
                    failed.push(Problem::new(Some(&s.name), "diverged", format!("it has {} but {primary_name} took over at {rec}: transactions it holds never reached the new primary", binlog), &format!("save what it has beyond {rec} with mariadb-binlog if it matters, then re-seed: keepup db setup --reseed {}", s.name)));
                    continue;
                }
            }
            let db = &mut conns[i];
            db.exec("stopping replication", "STOP SLAVE").await?;
            db.exec(
                "setting its GTID position",
                "SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos",
            )
            .await?;
        }
        point_at(section, &mut conns[i], primary, &password).await?;
        // A diverged history shows up as error 1236 within moments.
        let deadline = Instant::now() + Duration::from_millis(3000);
        loop {
            let row = conns[i]
                .row("reading SHOW SLAVE STATUS", "SHOW SLAVE STATUS")
                .await?;
            let io = row
                .as_ref()
                .and_then(|r| crate::conn::col(r, "Slave_IO_Running"))
                .unwrap_or_default();
            let errno = row
                .as_ref()
                .and_then(|r| crate::conn::col_num(r, "Last_IO_Errno"))
                .unwrap_or(0);
            if errno == 1236 {
                conns[i].exec("stopping replication", "STOP SLAVE").await?;
                conns[i]
                    .exec("clearing replication", "RESET SLAVE ALL")
                    .await?;
                failed.push(Problem::new(Some(&s.name), "cannot_rejoin", format!("{primary_name} does not hold its GTID history ({}): error 1236", x.st.gtid_binlog_pos), &format!("it diverged or needs purged binlogs; re-seed it: keepup db setup --reseed {}", s.name)));
                break;
            }
            if io == "Yes" || Instant::now() > deadline {
                changes.push(format!(
                    "{}: rejoined, replicating from {primary_name} (GTID, slave_pos)",
                    s.name
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Master-master: the primary replicates from the other master too.
    if section.topology == DbTopology::MasterMaster {
        let oidx = 1 - pidx;
        let other = &section.server[oidx];
        let x = &f[pidx];
        let ok = x.st.replication.as_ref().is_some_and(|r| {
            r.source_server.as_deref() == Some(other.name.as_str())
                && r.using_gtid == "Slave_Pos"
                && x.master_user == section.replication_user
        });
        if section.semi_sync && !x.st.semi_sync.slave_enabled {
            conns[pidx]
                .exec(
                    "enabling semi-sync (replica side)",
                    "SET GLOBAL rpl_semi_sync_slave_enabled = ON",
                )
                .await?;
            changes.push(format!("{primary_name}: rpl_semi_sync_slave_enabled = ON"));
            if ok && !restarts.contains(&pidx) {
                restarts.push(pidx);
            }
        }
        if !ok
            && !failed
                .iter()
                .any(|p| p.server.as_deref() == Some(other.name.as_str()))
        {
            let db = &mut conns[pidx];
            db.exec("stopping replication", "STOP SLAVE").await?;
            // Its slave position stays empty: the other master was seeded
            // with its binlog off, so its binlog starts after the snapshot and
            // cannot serve this server's own position (error 1236). From an
            // empty position it sends its whole binlog; events that came from
            // this server carry its server_id and are skipped.
            point_at(section, &mut conns[pidx], other, &password).await?;
            changes.push(format!(
                "{primary_name}: replicating from {} (master-master)",
                other.name
            ));
        } else if x
            .st
            .replication
            .as_ref()
            .is_some_and(|r| r.io_running == "No" || r.sql_running != "Yes")
            && x.st
                .replication
                .as_ref()
                .is_some_and(|r| r.last_sql_errno == 0)
        {
            conns[pidx]
                .exec("starting replication", "START SLAVE")
                .await?;
            changes.push(format!(
                "{primary_name}: started the stopped replication threads"
            ));
        }
    }

    // 6. Replicas whose own replica side was just enabled re-register as
    // semi-sync clients: restart their IO threads (the primary side was
    // enabled before they connected, see 4b).
    let failed_names: Vec<String> = failed.iter().filter_map(|p| p.server.clone()).collect();
    restarts.retain(|j| !failed_names.contains(&section.server[*j].name));
    for j in restarts {
        let _ = conns[j]
            .exec("restarting the IO thread", "STOP SLAVE IO_THREAD")
            .await;
        let _ = conns[j]
            .exec("restarting the IO thread", "START SLAVE IO_THREAD")
            .await;
    }
    if section.semi_sync && !wait_semi_sync_clients(&mut conns[pidx], 3000).await {
        // A replica that connected without registering (a run before this
        // one failed half-way, or it was "Connecting" when looked at).
        let replicas: Vec<String> = section
            .server
            .iter()
            .enumerate()
            .filter(|(j, s)| *j != pidx && !failed_names.contains(&s.name))
            .map(|(_, s)| s.name.clone())
            .collect();
        if !ensure_semi_sync_clients(section, &mut conns[pidx], &replicas).await
            && !section.semi_sync_relaxed
        {
            // Strict mode: the verification write would wait for ever.
            let mut problems = failed;
            problems.push(Problem::new(
                Some(&primary_name),
                "no_semi_sync_replica",
                "no replica registered as a semi-sync client, so in strict mode every commit on the primary waits (setup writes nothing more)".into(),
                "check the replicas' IO threads with `keepup db status` (network, replication account), then run `keepup db setup` again",
            ));
            return Err(DbError::Refused { problems });
        }
    }

    // 7. Verify: a row written on the primary arrives everywhere. A
    // heartbeat goes first, so every replica has one and its lag is known
    // from the first observation on.
    crate::observe::write_heartbeat(&mut conns[pidx]).await?;
    let mut verified = Vec::new();
    let token = format!("{:x}", crate::observe::now_ms());
    conns[pidx]
        .exec("writing the verification row", &format!("REPLACE INTO {KEEPUP_SCHEMA}.setup_check (id, token, at) VALUES (1, {}, UTC_TIMESTAMP(6))", quote(&token)))
        .await?;
    let pos = conns[pidx].global("gtid_binlog_pos").await?;
    for i in 0..section.server.len() {
        if i == pidx
            || failed
                .iter()
                .any(|p| p.server.as_deref() == Some(section.server[i].name.as_str()))
        {
            continue;
        }
        let ms = await_verification_row(
            &mut conns[i],
            &pos,
            1,
            &token,
            section.catchup_timeout_ms.ms(),
            "verifying replication".into(),
        )
        .await?;
        verified.push(format!(
            "{}: verification row arrived in {ms} ms",
            section.server[i].name
        ));
    }
    // Master-master: the other direction too (a row written on the second
    // master must reach the first), or a takeover would open a master its
    // peer never hears from.
    if section.topology == DbTopology::MasterMaster {
        for i in (0..section.server.len()).filter(|i| *i != pidx) {
            if failed
                .iter()
                .any(|p| p.server.as_deref() == Some(section.server[i].name.as_str()))
            {
                continue;
            }
            let back = format!("{token}-{i}");
            conns[i]
                .exec("writing the reverse verification row", &format!("REPLACE INTO {KEEPUP_SCHEMA}.setup_check (id, token, at) VALUES (2, {}, UTC_TIMESTAMP(6))", quote(&back)))
                .await?;
            let pos = conns[i].global("gtid_binlog_pos").await?;
            let ms = await_verification_row(
                &mut conns[pidx],
                &pos,
                2,
                &back,
                section.catchup_timeout_ms.ms(),
                format!("verifying replication from {}", section.server[i].name),
            )
            .await?;
            verified.push(format!(
                "{primary_name}: verification row from {} arrived in {ms} ms",
                section.server[i].name
            ));
        }
    }
    for db in conns {
        db.close().await;
    }
    if !failed.is_empty() {
        return Err(DbError::Refused { problems: failed });
    }
    if changes
        .iter()
        .any(|c| c.contains("read_only = OFF (primary)") || c.contains("replicating from"))
    {
        if let Some(msg) = crate::run_hook(section, &primary_name).await {
            changes.push(msg);
        }
    }
    Ok(SetupReport {
        primary: primary_name,
        changes,
        persist,
        verified,
    })
}

/// Waits until `db` applied `pos` and checks that setup_check row `id`
/// holds `token` there; returns how long it took (ms).
async fn await_verification_row(
    db: &mut Db,
    pos: &str,
    id: u32,
    token: &str,
    timeout_ms: u64,
    what: String,
) -> Result<u128, DbError> {
    let t0 = Instant::now();
    gtid_wait(db, pos, timeout_ms).await?;
    let got = db
        .scalar(
            "reading the verification row",
            &format!("SELECT token FROM {KEEPUP_SCHEMA}.setup_check WHERE id = {id}"),
        )
        .await?;
    if got.as_deref() != Some(token) {
        return Err(DbError::Query {
            server: db.server.clone(),
            what,
            code: 0,
            message: format!("the verification row did not arrive (found {got:?})"),
        });
    }
    Ok(t0.elapsed().as_millis())
}

/// After a role change: waits for a semi-sync replica to register with the
/// new primary and, when none has within a second, restarts the replicas'
/// IO threads (a replica that connected before the primary side was
/// enabled, or whose connection hung, is no semi-sync client until it
/// reconnects; seen in the lab: `Rpl_semi_sync_master_clients` stayed 0
/// with a caught-up replica) and waits again. False: still none, which
/// `observe` reports.
pub(crate) async fn ensure_semi_sync_clients(
    section: &DatabaseSection,
    primary: &mut Db,
    replicas: &[String],
) -> bool {
    if wait_semi_sync_clients(primary, 1000).await {
        return true;
    }
    for name in replicas {
        let Some(s) = section.server(name) else {
            continue;
        };
        if let Ok(mut db) = Db::connect(section, s).await {
            let _ = db
                .exec("restarting the IO thread", "STOP SLAVE IO_THREAD")
                .await;
            let _ = db
                .exec("restarting the IO thread", "START SLAVE IO_THREAD")
                .await;
            db.close().await;
        }
    }
    let ok = wait_semi_sync_clients(primary, 2000).await;
    if ok {
        tracing::info!(server = %primary.server, "semi-sync replica registered after restarting the replicas' IO threads");
    } else {
        tracing::warn!(server = %primary.server, "no semi-sync replica registered with the new primary, even after restarting the replicas' IO threads");
    }
    ok
}

/// Waits (bounded) until a semi-sync primary has a replica connected, so the
/// next commit does not stall for `rpl_semi_sync_master_timeout`.
pub(crate) async fn wait_semi_sync_clients(db: &mut Db, max_ms: u64) -> bool {
    let deadline = Instant::now() + Duration::from_millis(max_ms);
    loop {
        let n: u32 = db
            .status_var("Rpl_semi_sync_master_clients")
            .await
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if n > 0 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            mariadb_version("10.11.19-MariaDB-0+deb12u1-log"),
            Some((10, 11))
        );
        assert_eq!(mariadb_version("8.0.36"), None);
        assert!(Some((10, 6)) < Some((10, 11)));
    }

    #[test]
    fn password_file_is_generated_0600_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("keepup-db-pw-{}", std::process::id()));
        let p = dir.join("sub").join("pw");
        let (a, gen) = replication_password(&p).expect("generate");
        assert!(gen && a.len() == 32);
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, gen) = replication_password(&p).expect("reuse");
        assert!(!gen);
        assert_eq!(a, b);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
