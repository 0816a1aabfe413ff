//! Watching: one snapshot of every server (`DbStatus`), true lag through
//! keepup's heartbeat row, problems with exact advice, and Prometheus text.

use crate::conn::{col, col_num, quote, Db};
use crate::plan::{errant_gtids, safe_to_rejoin, GtidPos};
use crate::{check_section, DbError, Problem};
use keepup_config::{DatabaseSection, DbServer, DbTopology};
use serde::Serialize;
use std::fmt::Write as _;

/// Schema keepup keeps its own tables in (heartbeat, failover history).
pub const KEEPUP_SCHEMA: &str = "keepup";

/// What a server is doing in the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Writable and followed by the replicas: where writes go.
    Primary,
    /// Replicates from the primary (or, master-master, from the other master).
    Replica,
    /// Answers but neither primary nor replicating (new server, or an old
    /// primary that came back: see the problems for what to do).
    Detached,
    /// Could not be reached.
    Down,
}

/// Semi-synchronous replication state of one server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SemiSync {
    /// `rpl_semi_sync_master_enabled`.
    pub master_enabled: bool,
    /// `Rpl_semi_sync_master_status`: ON while the primary really waits for
    /// acknowledgements; OFF after it fell back to asynchronous.
    pub master_active: bool,
    /// `Rpl_semi_sync_master_clients`: semi-sync replicas connected.
    pub master_clients: u32,
    /// `rpl_semi_sync_slave_enabled`.
    pub slave_enabled: bool,
}

/// The replica side of one server (`SHOW SLAVE STATUS`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicationThreads {
    /// `host:port` it replicates from.
    pub source: String,
    /// The configured server at that address, if any.
    pub source_server: Option<String>,
    /// `Slave_IO_Running`: Yes, No or Connecting.
    pub io_running: String,
    /// `Slave_SQL_Running`: Yes or No.
    pub sql_running: String,
    /// `Last_IO_Errno` (0: none).
    pub last_io_errno: i64,
    /// `Last_IO_Error`.
    pub last_io_error: String,
    /// `Last_SQL_Errno` (0: none).
    pub last_sql_errno: i64,
    /// `Last_SQL_Error`.
    pub last_sql_error: String,
    /// `Seconds_Behind_Master` (coarse; `lag_seconds` is the real figure).
    pub seconds_behind_master: Option<i64>,
    /// `Using_Gtid` (keepup wants Slave_Pos).
    pub using_gtid: String,
    /// `Gtid_IO_Pos`: last GTID received into the relay log.
    pub gtid_io_pos: String,
    /// `Master_Server_Id`.
    pub source_server_id: u32,
}

/// One server in a `DbStatus`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    /// Config name.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// It answered.
    pub up: bool,
    /// Why it did not answer.
    pub error: Option<String>,
    /// Positively down: the connection was refused (nothing listens), so it
    /// takes no writes. Not answering in time is not "down", only unknown.
    pub refused: bool,
    /// Its role.
    pub role: Role,
    /// `@@server_id`.
    pub server_id: u32,
    /// `@@version`.
    pub version: String,
    /// `@@read_only`.
    pub read_only: bool,
    /// `@@gtid_domain_id`.
    pub gtid_domain_id: u32,
    /// `@@gtid_binlog_pos`: everything in its binlog.
    pub gtid_binlog_pos: String,
    /// `@@gtid_slave_pos`: everything its SQL thread applied.
    pub gtid_slave_pos: String,
    /// `@@gtid_current_pos`.
    pub gtid_current_pos: String,
    /// Replica threads, when replication is configured.
    pub replication: Option<ReplicationThreads>,
    /// Seconds its data is behind the primary, from keepup's heartbeat row
    /// (falls back to `Seconds_Behind_Master` before the first heartbeat).
    pub lag_seconds: Option<f64>,
    /// Transactions the primary had when the observation began that this
    /// replica had still not *received* (Gtid_IO_Pos) after the heartbeat
    /// wait: coverage compared over time, so an IO thread that says "Yes"
    /// while its dump thread sends nothing shows. None: not measured (it
    /// applied the heartbeat, or it is no replica).
    pub not_received: Option<u64>,
    /// Semi-sync state.
    pub semi_sync: SemiSync,
    /// GTIDs it wrote itself although it is a replica.
    pub errant_gtids: Vec<String>,
}

/// A snapshot of the whole database topology, as `keepup db status` prints
/// it and as the agent serves it on its API.
#[derive(Debug, Clone, Serialize)]
pub struct DbStatus {
    /// `master-slave` or `master-master`.
    pub topology: String,
    /// The current primary (where writes go), if exactly one is identified.
    pub primary: Option<String>,
    /// `host:port` of the primary.
    pub primary_address: Option<String>,
    /// The writer endpoint's keepup group (from the config), so the agent
    /// knows which group to keep on the primary's node.
    pub writer_group: Option<String>,
    /// The keepup node the primary runs on.
    pub primary_node: Option<String>,
    /// Every configured server.
    pub servers: Vec<ServerStatus>,
    /// What is wrong, each with what to do about it.
    pub problems: Vec<Problem>,
    /// Safe actions `observe` took itself (setting read_only on a returning
    /// old primary).
    pub actions: Vec<String>,
    /// When the snapshot was taken (Unix milliseconds).
    pub observed_at_unix_ms: u64,
}

impl DbStatus {
    /// The status of server `name`.
    pub fn server(&self, name: &str) -> Option<&ServerStatus> {
        self.servers.iter().find(|s| s.name == name)
    }
}

fn yes(s: Option<String>) -> bool {
    matches!(s.as_deref(), Some("1" | "ON" | "on" | "Yes" | "YES"))
}

#[cfg(test)]
impl ServerStatus {
    /// A server that answers, read-write, not replicating (unit tests).
    pub(crate) fn blank(name: &str) -> ServerStatus {
        let mut s = down(
            &DbServer {
                name: name.into(),
                address: String::new(),
                replication_address: None,
                node: None,
                no_promote: false,
                admin_credentials_file: None,
            },
            String::new(),
        );
        s.up = true;
        s.error = None;
        s.role = Role::Detached;
        s
    }
}

#[cfg(test)]
impl DbStatus {
    /// A snapshot of `servers` with `primary` (unit tests).
    pub(crate) fn for_test(primary: Option<&str>, servers: Vec<ServerStatus>, at: u64) -> DbStatus {
        DbStatus {
            topology: "master-slave".into(),
            primary: primary.map(str::to_string),
            primary_address: None,
            writer_group: None,
            primary_node: None,
            servers,
            problems: Vec::new(),
            actions: Vec::new(),
            observed_at_unix_ms: at,
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn down(server: &DbServer, error: String) -> ServerStatus {
    ServerStatus {
        name: server.name.clone(),
        address: server.address.clone(),
        up: false,
        error: Some(error),
        refused: false,
        role: Role::Down,
        server_id: 0,
        version: String::new(),
        read_only: false,
        gtid_domain_id: 0,
        gtid_binlog_pos: String::new(),
        gtid_slave_pos: String::new(),
        gtid_current_pos: String::new(),
        replication: None,
        lag_seconds: None,
        not_received: None,
        semi_sync: SemiSync::default(),
        errant_gtids: Vec::new(),
    }
}

/// Reads one server's state (no writes).
pub(crate) async fn probe(
    section: &DatabaseSection,
    server: &DbServer,
) -> (ServerStatus, Option<Db>) {
    // A server that accepts connections but never answers (hung, disk
    // full) must not hang the caller: bound the whole probe.
    let limit = (section.connect_timeout_ms.duration() * 3).max(std::time::Duration::from_secs(3));
    let fut = async {
        let mut db = match Db::connect(section, server).await {
            Ok(db) => db,
            Err(e) => {
                let mut st = down(server, e.to_string());
                st.refused = e.positively_down();
                return (st, None);
            }
        };
        match probe_conn(section, server, &mut db).await {
            Ok(s) => (s, Some(db)),
            Err(e) => (down(server, e.to_string()), None),
        }
    };
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => (
            down(
                server,
                format!(
                    "server {} ({}) did not answer within {} ms",
                    server.name,
                    server.address,
                    limit.as_millis()
                ),
            ),
            None,
        ),
    }
}

pub(crate) async fn probe_conn(
    section: &DatabaseSection,
    server: &DbServer,
    db: &mut Db,
) -> Result<ServerStatus, DbError> {
    let row = db
        .row(
            "reading server variables",
            "SELECT @@server_id, @@version, @@read_only, @@gtid_domain_id, @@gtid_binlog_pos, \
             @@gtid_slave_pos, @@gtid_current_pos, @@rpl_semi_sync_master_enabled, \
             @@rpl_semi_sync_slave_enabled",
        )
        .await?
        .ok_or_else(|| DbError::Query {
            server: server.name.clone(),
            what: "reading server variables".into(),
            code: 0,
            message: "no row".into(),
        })?;
    let t = |i: usize| row.as_ref(i).and_then(crate::conn::value_text);
    let mut st = ServerStatus {
        name: server.name.clone(),
        address: server.address.clone(),
        up: true,
        error: None,
        refused: false,
        role: Role::Detached,
        server_id: t(0).and_then(|s| s.parse().ok()).unwrap_or(0),
        version: t(1).unwrap_or_default(),
        read_only: yes(t(2)),
        gtid_domain_id: t(3).and_then(|s| s.parse().ok()).unwrap_or(0),
        gtid_binlog_pos: t(4).unwrap_or_default(),
        gtid_slave_pos: t(5).unwrap_or_default(),
        gtid_current_pos: t(6).unwrap_or_default(),
        replication: None,
        lag_seconds: None,
        not_received: None,
        semi_sync: SemiSync {
            master_enabled: yes(t(7)),
            slave_enabled: yes(t(8)),
            ..SemiSync::default()
        },
        errant_gtids: Vec::new(),
    };
    st.semi_sync.master_active = yes(db.status_var("Rpl_semi_sync_master_status").await?);
    st.semi_sync.master_clients = db
        .status_var("Rpl_semi_sync_master_clients")
        .await?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if let Some(r) = db
        .row("reading SHOW SLAVE STATUS", "SHOW SLAVE STATUS")
        .await?
    {
        let host = col(&r, "Master_Host").unwrap_or_default();
        let port = col_num(&r, "Master_Port").unwrap_or(0);
        let source = format!("{host}:{port}");
        let source_server = section
            .server
            .iter()
            .find(|s| same_address(s.replication_address(), &source))
            .map(|s| s.name.clone());
        if !host.is_empty() {
            st.replication = Some(ReplicationThreads {
                source,
                source_server,
                io_running: col(&r, "Slave_IO_Running").unwrap_or_default(),
                sql_running: col(&r, "Slave_SQL_Running").unwrap_or_default(),
                last_io_errno: col_num(&r, "Last_IO_Errno").unwrap_or(0),
                last_io_error: col(&r, "Last_IO_Error").unwrap_or_default(),
                last_sql_errno: col_num(&r, "Last_SQL_Errno").unwrap_or(0),
                last_sql_error: col(&r, "Last_SQL_Error").unwrap_or_default(),
                seconds_behind_master: col_num(&r, "Seconds_Behind_Master"),
                using_gtid: col(&r, "Using_Gtid").unwrap_or_default(),
                gtid_io_pos: col(&r, "Gtid_IO_Pos").unwrap_or_default(),
                source_server_id: col_num(&r, "Master_Server_Id").unwrap_or(0) as u32,
            });
        }
    }
    Ok(st)
}

/// Compares `host:port` strings, treating `localhost` as 127.0.0.1.
pub(crate) fn same_address(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let (h, p) = crate::conn::split_address(s).unwrap_or_default();
        let h = if h == "localhost" {
            "127.0.0.1".to_string()
        } else {
            h
        };
        (h, p)
    };
    norm(a) == norm(b)
}

/// Picks the primary among probed servers: the writable server the replicas
/// follow; ties go to the preferred primary. Pure; used by observe and setup.
pub fn identify_primary(section: &DatabaseSection, servers: &[ServerStatus]) -> Option<String> {
    let writable: Vec<&ServerStatus> = servers.iter().filter(|s| s.up && !s.read_only).collect();
    let followers = |name: &str| {
        servers
            .iter()
            .filter(|s| {
                s.name != name
                    && s.replication
                        .as_ref()
                        .is_some_and(|r| r.source_server.as_deref() == Some(name))
            })
            .count()
    };
    match writable.len() {
        0 => None,
        1 => Some(writable[0].name.clone()),
        _ => {
            let preferred = section.preferred().unwrap_or_default();
            writable
                .iter()
                .max_by(|a, b| {
                    followers(&a.name)
                        .cmp(&followers(&b.name))
                        .then((a.name == preferred).cmp(&(b.name == preferred)))
                        // A writable server that replicates from another is
                        // less likely the primary.
                        .then(b.replication.is_some().cmp(&a.replication.is_some()))
                })
                .map(|s| s.name.clone())
        }
    }
}

/// Takes one snapshot of every server. Besides reading, `observe` does two
/// writes, both safe: it refreshes keepup's heartbeat row on the primary
/// (`keepup.heartbeat`, so replicas can measure their true lag), and it sets
/// `read_only = ON` on a writable server that is not the primary while the
/// replicas follow another one (an old primary that came back after a
/// failover), so applications cannot write to the wrong server. It never
/// rejoins, skips or re-seeds anything.
pub async fn observe(section: &DatabaseSection) -> DbStatus {
    let mut problems = Vec::new();
    if let Err(e) = check_section(section) {
        problems.push(Problem::new(
            None,
            "config",
            e.to_string(),
            "fix keepup.toml",
        ));
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, server) in section.server.iter().enumerate() {
        let section = section.clone();
        let server = server.clone();
        set.spawn(async move {
            let (st, db) = probe(&section, &server).await;
            (i, st, db)
        });
    }
    let mut probed: Vec<(usize, ServerStatus, Option<Db>)> = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(x) = r {
            probed.push(x);
        }
    }
    probed.sort_by_key(|(i, _, _)| *i);
    let mut servers: Vec<ServerStatus> = probed.iter().map(|(_, s, _)| s.clone()).collect();
    let mut conns: Vec<Option<Db>> = probed.into_iter().map(|(_, _, d)| d).collect();
    let mut actions = Vec::new();

    let primary = identify_primary(section, &servers);
    for s in servers.iter_mut() {
        s.role = if !s.up {
            Role::Down
        } else if Some(&s.name) == primary.as_ref() {
            Role::Primary
        } else if s.replication.is_some() {
            Role::Replica
        } else {
            Role::Detached
        };
    }

    // Heartbeat on the primary, then lag on the replicas: a replica that
    // applies this very heartbeat within HEARTBEAT_WAIT is behind by the time
    // it took; one that does not is behind by the age of the newest
    // heartbeat it has (as pt-heartbeat measures it).
    let mut beat: Option<(String, std::time::Instant)> = None;
    if let Some(p) = primary.as_ref() {
        if let Some(idx) = servers.iter().position(|s| &s.name == p) {
            let stalled =
                servers[idx].semi_sync.master_active && servers[idx].semi_sync.master_clients == 0;
            // Never on a read-only primary (fenced, or mid-switchover): the
            // admin account bypasses read_only, so the heartbeat would be a
            // transaction the new primary never gets (found by the fault
            // test: an errant GTID on an old primary after a SIGSTOP of its
            // agent, whose monitor observed during the switchover).
            let fenced = servers[idx].read_only;
            if let (Some(db), false, false) = (conns[idx].as_mut(), stalled, fenced) {
                let t = section.connect_timeout_ms.duration();
                let at = std::time::Instant::now();
                let wrote = async {
                    write_heartbeat(db).await?;
                    db.global("gtid_binlog_pos").await
                };
                if let Ok(Ok(pos)) = tokio::time::timeout(t, wrote).await {
                    beat = Some((pos, at));
                }
            }
        }
    }
    let primary_beat_written = beat.is_some();
    // What the primary had before the heartbeat: every replica should have
    // received it by the end of the heartbeat wait.
    let primary_had = primary
        .as_ref()
        .and_then(|p| servers.iter().find(|s| &s.name == p))
        .and_then(|s| GtidPos::parse(&s.gtid_binlog_pos).ok())
        .unwrap_or_default();
    const HEARTBEAT_WAIT_S: f64 = 0.25;
    for (idx, s) in servers.iter_mut().enumerate() {
        let (Some(db), Some(r)) = (conns[idx].as_mut(), s.replication.as_ref()) else {
            continue;
        };
        if Some(&s.name) == primary.as_ref() {
            continue;
        }
        let t = section.connect_timeout_ms.duration();
        if let Some((pos, at)) = beat.as_ref() {
            let sql = format!(
                "SELECT MASTER_GTID_WAIT({}, {HEARTBEAT_WAIT_S})",
                quote(pos)
            );
            if let Ok(Ok(Some(v))) =
                tokio::time::timeout(t, db.scalar("waiting for the heartbeat", &sql)).await
            {
                if v == "0" {
                    s.lag_seconds = Some(at.elapsed().as_secs_f64());
                    continue;
                }
            }
            // Not applied in time: has it at least received what the
            // primary had before the wait began?
            if let Ok(Ok(Some(row))) =
                tokio::time::timeout(t, db.row("reading SHOW SLAVE STATUS", "SHOW SLAVE STATUS"))
                    .await
            {
                let io = crate::conn::col(&row, "Gtid_IO_Pos").unwrap_or_default();
                // Its own binlog too: master-master, the primary's position
                // holds this server's own domain, never in its slave position.
                let received = GtidPos::parse(&io)
                    .unwrap_or_default()
                    .merge(&GtidPos::parse(&s.gtid_slave_pos).unwrap_or_default())
                    .merge(&GtidPos::parse(&s.gtid_binlog_pos).unwrap_or_default());
                s.not_received = Some(crate::plan::transactions_missing(&received, &primary_had));
            }
        }
        let sql = format!(
            "SELECT TIMESTAMPDIFF(MICROSECOND, ts, UTC_TIMESTAMP(6)) FROM {KEEPUP_SCHEMA}.heartbeat WHERE server_id = {}",
            r.source_server_id
        );
        // No heartbeat row from its source: unknown, never
        // Seconds_Behind_Master, which reads 0 while the IO thread waits on
        // a dump thread that sends nothing (seen: ~90 transactions missing,
        // "io=Yes sql=Yes lag 0.000s").
        s.lag_seconds = match tokio::time::timeout(t, db.scalar("reading heartbeat", &sql)).await {
            Ok(Ok(Some(us))) => us.parse::<f64>().ok().map(|us| (us / 1e6).max(0.0)),
            _ => None,
        };
    }

    // Problems, in the order an operator should read them.
    let mut ids: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for s in servers.iter().filter(|s| s.up) {
        ids.entry(s.server_id).or_default().push(s.name.clone());
    }
    for (id, names) in ids.iter().filter(|(_, n)| n.len() > 1) {
        problems.push(Problem::new(
            None,
            "server_id_collision",
            format!("servers {} share server_id {id}", names.join(", ")),
            "give each server a unique server_id in its my.cnf and restart it; replication silently drops events from a server with its own id",
        ));
    }
    for s in servers.iter() {
        if !s.up {
            problems.push(Problem::new(
                Some(&s.name),
                "down",
                s.error.clone().unwrap_or_default(),
                "start mariadbd there or fix the credentials; if it was the primary the agent promotes a replica",
            ));
        }
    }
    if primary.is_none() && servers.iter().any(|s| s.up) {
        problems.push(Problem::new(
            None,
            "no_primary",
            "no writable server: nobody can take writes".into(),
            "run `keepup db setup` (new cluster) or `keepup db switchover --to NAME`",
        ));
    }
    let mm_both = section.topology == DbTopology::MasterMaster && section.writes_on_both;
    let primary_pos: std::collections::BTreeMap<String, GtidPos> = servers
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                GtidPos::parse(&s.gtid_binlog_pos).unwrap_or_default(),
            )
        })
        .collect();
    // Fencing only once replication exists: before setup every server is
    // writable and none of them is "returning".
    let primary_followed = primary.as_ref().is_some_and(|p| {
        servers.iter().any(|x| {
            x.replication
                .as_ref()
                .is_some_and(|r| r.source_server.as_deref() == Some(p.as_str()))
        })
    });
    for (idx, s) in servers.iter_mut().enumerate() {
        if !s.up {
            continue;
        }
        let is_primary = Some(&s.name) == primary.as_ref();
        if let Some(r) = s.replication.clone() {
            if r.sql_running != "Yes" && r.last_sql_errno != 0 {
                problems.push(Problem::new(
                    Some(&s.name),
                    "sql_thread_stopped",
                    format!(
                        "SQL thread stopped on error {}: {}",
                        r.last_sql_errno, r.last_sql_error
                    ),
                    &format!("keepup will not skip transactions: inspect with `SHOW SLAVE STATUS` on {}, fix the row by hand (or re-seed with `keepup db setup --reseed {}`), then `START SLAVE`", s.name, s.name),
                ));
            } else if r.io_running != "Yes" && r.last_io_errno == 1236 {
                problems.push(Problem::new(
                    Some(&s.name),
                    "cannot_resume",
                    format!("its source cannot serve its position (error 1236: {})", r.last_io_error),
                    &format!("its GTID history diverged or the binlogs it needs were purged: re-seed it with `keepup db setup --reseed {}`", s.name),
                ));
            } else if r.io_running != "Yes" && !is_primary && primary.is_some() {
                problems.push(Problem::new(
                    Some(&s.name),
                    "io_thread_stopped",
                    format!(
                        "IO thread is {} (error {}: {})",
                        r.io_running, r.last_io_errno, r.last_io_error
                    ),
                    "check the network and the replication account; `keepup db setup` restarts stopped threads",
                ));
            } else if r.sql_running != "Yes" && !is_primary {
                problems.push(Problem::new(
                    Some(&s.name),
                    "sql_thread_stopped",
                    "SQL thread is stopped".into(),
                    "run `keepup db setup` to start it again",
                ));
            }
            if let (Some(p), false) = (primary.as_ref(), is_primary) {
                if r.source_server.as_ref() != Some(p) {
                    problems.push(Problem::new(
                        Some(&s.name),
                        "wrong_source",
                        format!("replicates from {} but the primary is {p}", r.source),
                        "run `keepup db setup` to repoint it",
                    ));
                }
            }
            if r.using_gtid != "Slave_Pos" {
                problems.push(Problem::new(
                    Some(&s.name),
                    "not_gtid",
                    format!("Using_Gtid is {:?}", r.using_gtid),
                    "run `keepup db setup` (CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos)",
                ));
            }
            if !is_primary && s.lag_seconds.is_none() && primary_beat_written {
                problems.push(Problem::new(
                    Some(&s.name),
                    "lag_unknown",
                    "lag unknown: keepup's heartbeat row from the primary has not arrived (its IO thread may wait on a dump thread that sends nothing)".into(),
                    "compare its Gtid_IO_Pos with the primary's gtid_binlog_pos; restart its IO thread (STOP SLAVE IO_THREAD; START SLAVE IO_THREAD); do not fail over to it until it has the heartbeat",
                ));
            }
            if let Some(n) = s.not_received.filter(|n| *n > 0) {
                if r.io_running == "Yes" {
                    problems.push(Problem::new(
                        Some(&s.name),
                        "not_receiving",
                        format!("its IO thread says Yes but it had not received {n} transaction(s) the primary wrote at least {HEARTBEAT_WAIT_S} s earlier (Gtid_IO_Pos behind the primary's gtid_binlog_pos)"),
                        "restart its IO thread (STOP SLAVE IO_THREAD; START SLAVE IO_THREAD) and check the network to the primary; keepup will not fail over to it while it lacks them",
                    ));
                }
            }
            if let Some(lag) = s.lag_seconds.filter(|l| *l > 30.0) {
                problems.push(Problem::new(
                    Some(&s.name),
                    "lagging",
                    format!("{lag:.1} s behind the primary"),
                    "a switchover to it would wait; check its disk and SQL thread",
                ));
            }
        }
        // Errant transactions: only meaningful on servers that should not write.
        if !is_primary && !mm_both && s.replication.is_some() {
            let binlog = GtidPos::parse(&s.gtid_binlog_pos).unwrap_or_default();
            let slave = GtidPos::parse(&s.gtid_slave_pos).unwrap_or_default();
            // What the primary has was replicated out (an old primary's own
            // history, a master-master peer's domain): not errant.
            let primary_binlog = primary
                .as_ref()
                .and_then(|p| primary_pos.get(p.as_str()))
                .cloned()
                .unwrap_or_default();
            let errant: Vec<_> = errant_gtids(&binlog, &slave, s.server_id)
                .into_iter()
                .filter(|g| {
                    // The primary's last GTID of that domain is this
                    // server's, at least as far: it has g (strict mode).
                    !primary_binlog
                        .0
                        .get(&g.domain)
                        .is_some_and(|p| p.server_id == g.server_id && p.seq >= g.seq)
                })
                .collect();
            if !errant.is_empty() {
                s.errant_gtids = errant
                    .iter()
                    .map(|g| format!("{}-{}-{}", g.domain, g.server_id, g.seq))
                    .collect();
                problems.push(Problem::new(
                    Some(&s.name),
                    "errant_transactions",
                    format!(
                        "it wrote transactions the primary never had: {}",
                        s.errant_gtids.join(",")
                    ),
                    &format!("keepup will never promote it; find them with `mariadb-binlog` on {}, replay what matters on the primary, then re-seed it: `keepup db setup --reseed {}`", s.name, s.name),
                ));
            }
        }
        if !is_primary && !s.read_only && !mm_both && (s.replication.is_some() || primary_followed)
        {
            if primary_followed {
                // Writable but not the primary while the replicas follow
                // another server: an old primary that came back writable
                // (possibly replicating again, in master-master). Fence it.
                let fenced = match conns[idx].as_mut() {
                    Some(db) => crate::switchover::fence(section, db, true)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    None => Err("no connection to it".to_string()),
                };
                match fenced {
                    Ok(()) => {
                        s.read_only = true;
                        actions.push(format!(
                            "set read_only = ON on {} (writable but not the primary)",
                            s.name
                        ));
                    }
                    Err(e) => problems.push(Problem::new(
                        Some(&s.name),
                        "second_writable",
                        format!("writable but not the primary, and setting read_only failed: {e}"),
                        &format!("set read_only = ON on {} by hand now (applications may be writing to two servers), then run `keepup db status` again", s.name),
                    )),
                }
            } else {
                problems.push(Problem::new(
                    Some(&s.name),
                    "replica_writable",
                    "read_only is OFF on a replica".into(),
                    "run `keepup db setup` (it sets read_only); add read_only = 1 to its my.cnf",
                ));
            }
        }
        if s.role == Role::Detached && primary.is_some() {
            let advice =
                rejoin_advice(section, &primary, &mut conns, &servers_names(section), s).await;
            problems.push(Problem::new(Some(&s.name), "detached", advice.0, &advice.1));
        }
        if is_primary && section.semi_sync {
            if !s.semi_sync.master_enabled {
                problems.push(Problem::new(
                    Some(&s.name),
                    "semi_sync_off",
                    "semi_sync = true in keepup.toml but rpl_semi_sync_master_enabled is OFF"
                        .into(),
                    "run `keepup db setup`; acknowledged writes are at risk until then",
                ));
            } else if !s.semi_sync.master_active {
                problems.push(Problem::new(
                    Some(&s.name),
                    "semi_sync_fallback",
                    "acknowledged writes at risk: the primary fell back to asynchronous replication (Rpl_semi_sync_master_status OFF)".into(),
                    if section.semi_sync_relaxed {
                        "a replica did not acknowledge within semi_sync_timeout_ms (relaxed mode): check the replicas' IO threads; it switches back by itself once a replica catches up"
                    } else {
                        "strict mode never falls back by itself: the timeout was changed outside keepup; run `keepup db setup`"
                    },
                ));
            } else if s.semi_sync.master_clients == 0 && !section.semi_sync_relaxed {
                problems.push(Problem::new(
                    Some(&s.name),
                    "writes_blocked",
                    "commits wait: no semi-sync replica is connected to acknowledge them (strict mode, nothing acknowledged is at risk)".into(),
                    "bring a replica back (its IO thread must run and reach the primary); to trade safety for availability set semi_sync_relaxed = true",
                ));
            }
        }
    }
    for db in conns.into_iter().flatten() {
        db.close().await;
    }
    let primary_server = primary.as_ref().and_then(|p| section.server(p));
    DbStatus {
        topology: match section.topology {
            DbTopology::MasterSlave => "master-slave".into(),
            DbTopology::MasterMaster => "master-master".into(),
        },
        primary_address: primary_server.map(|s| s.address.clone()),
        primary_node: primary_server.map(|s| s.node().to_string()),
        primary,
        writer_group: section.writer.group.clone(),
        servers,
        problems,
        actions,
        observed_at_unix_ms: now_ms(),
    }
}

fn servers_names(section: &DatabaseSection) -> Vec<String> {
    section.server.iter().map(|s| s.name.clone()).collect()
}

/// What to tell the operator about a detached server.
async fn rejoin_advice(
    section: &DatabaseSection,
    primary: &Option<String>,
    conns: &mut [Option<Db>],
    names: &[String],
    s: &ServerStatus,
) -> (String, String) {
    let Some(p) = primary else {
        return (String::new(), String::new());
    };
    let Some(pidx) = names.iter().position(|n| n == p) else {
        return (String::new(), String::new());
    };
    let mine = GtidPos::parse(&s.gtid_binlog_pos).unwrap_or_default();
    let recorded = match conns[pidx].as_mut() {
        Some(db) => recorded_failover_pos(db, &s.name).await,
        None => None,
    };
    let _ = section;
    match recorded {
        Some(rec) if safe_to_rejoin(&mine, &rec) => (
            format!("not replicating; its history ({}) is contained in {p}'s, so it can rejoin safely", s.gtid_binlog_pos),
            "run `keepup db setup` to make it a replica of the primary again".into(),
        ),
        Some(rec) => (
            format!(
                "old primary with transactions the new primary never received: it has {} but {p} took over at {}",
                s.gtid_binlog_pos, rec
            ),
            format!("do not rejoin it by GTID (error 1236). Save what it has beyond {rec} with `mariadb-binlog` if it matters, then re-seed it: `keepup db setup --reseed {}`", s.name),
        ),
        None if mine.is_empty() => (
            "new, empty server not yet replicating".into(),
            "run `keepup db setup` to seed it from the primary and start replication".into(),
        ),
        None => (
            format!("not replicating; it has its own history ({})", s.gtid_binlog_pos),
            format!("run `keepup db setup`: it rejoins it if the primary holds its whole history, else re-seed with `keepup db setup --reseed {}`", s.name),
        ),
    }
}

/// The position recorded when `old` was replaced by a failover (what the new
/// primary had received from it), if keepup ever recorded one.
pub(crate) async fn recorded_failover_pos(db: &mut Db, old: &str) -> Option<GtidPos> {
    let sql = format!(
        "SELECT old_primary_pos FROM {KEEPUP_SCHEMA}.failover WHERE old_primary = {} ORDER BY id DESC LIMIT 1",
        quote(old)
    );
    db.scalar("reading failover history", &sql)
        .await
        .ok()
        .flatten()
        .and_then(|s| GtidPos::parse(&s).ok())
}

/// Refreshes this server's heartbeat row (run on the primary).
pub async fn write_heartbeat(db: &mut Db) -> Result<(), DbError> {
    db.exec(
        "writing heartbeat",
        &format!("REPLACE INTO {KEEPUP_SCHEMA}.heartbeat (server_id, ts) VALUES (@@server_id, UTC_TIMESTAMP(6))"),
    )
    .await
}

/// Appends Prometheus text-format metrics for `status` to `out`:
/// `keepup_db_up`, `keepup_db_is_primary`, `keepup_db_read_only`,
/// `keepup_db_replication_lag_seconds`, `keepup_db_replication_io_running`,
/// `keepup_db_replication_sql_running`, `keepup_db_errant_transactions`,
/// `keepup_db_semi_sync_active`, `keepup_db_semi_sync_clients` (all with a
/// `server` label) and `keepup_db_problems`.
pub fn prometheus(status: &DbStatus, out: &mut String) {
    let mut metric = |name: &str, help: &str, vals: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (server, v) in vals {
            let _ = writeln!(out, "{name}{{server=\"{server}\"}} {v}");
        }
    };
    let per = |f: &dyn Fn(&ServerStatus) -> Option<f64>| -> Vec<(String, f64)> {
        status
            .servers
            .iter()
            .filter_map(|s| f(s).map(|v| (s.name.replace('"', ""), v)))
            .collect()
    };
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    metric(
        "keepup_db_up",
        "1 when keepup could query the server.",
        per(&|s| Some(b(s.up))),
    );
    metric(
        "keepup_db_is_primary",
        "1 on the current primary.",
        per(&|s| Some(b(s.role == Role::Primary))),
    );
    metric(
        "keepup_db_read_only",
        "The server's read_only flag.",
        per(&|s| s.up.then(|| b(s.read_only))),
    );
    metric(
        "keepup_db_replication_lag_seconds",
        "Seconds behind the primary, from keepup's heartbeat row.",
        per(&|s| s.lag_seconds),
    );
    metric(
        "keepup_db_replication_not_received",
        "Transactions the primary had that the replica had not received a heartbeat wait later.",
        per(&|s| s.not_received.map(|n| n as f64)),
    );
    metric(
        "keepup_db_replication_io_running",
        "1 when the replica IO thread runs.",
        per(&|s| s.replication.as_ref().map(|r| b(r.io_running == "Yes"))),
    );
    metric(
        "keepup_db_replication_sql_running",
        "1 when the replica SQL thread runs.",
        per(&|s| s.replication.as_ref().map(|r| b(r.sql_running == "Yes"))),
    );
    metric(
        "keepup_db_errant_transactions",
        "Domains in which a replica wrote transactions of its own.",
        per(&|s| s.up.then_some(s.errant_gtids.len() as f64)),
    );
    metric(
        "keepup_db_semi_sync_active",
        "1 while the primary waits for semi-sync acknowledgements (0: fell back to async).",
        per(&|s| (s.role == Role::Primary).then(|| b(s.semi_sync.master_active))),
    );
    metric(
        "keepup_db_semi_sync_clients",
        "Semi-sync replicas connected to the primary.",
        per(&|s| (s.role == Role::Primary).then_some(s.semi_sync.master_clients as f64)),
    );
    let _ = writeln!(
        out,
        "# HELP keepup_db_problems Problems keepup db status reports."
    );
    let _ = writeln!(out, "# TYPE keepup_db_problems gauge");
    let _ = writeln!(out, "keepup_db_problems {}", status.problems.len());
}

/// Formats `status` for people (what `keepup db status` prints).
pub fn render(status: &DbStatus) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "topology {}  primary {}",
        status.topology,
        status.primary.as_deref().unwrap_or("NONE")
    );
    for s in &status.servers {
        if !s.up {
            let _ = writeln!(
                o,
                "  {:<12} {:<22} DOWN  {}",
                s.name,
                s.address,
                s.error.as_deref().unwrap_or("")
            );
            continue;
        }
        let role = match s.role {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Detached => "detached",
            Role::Down => "down",
        };
        let threads = s
            .replication
            .as_ref()
            .map(|r| {
                format!(
                    "io={} sql={} from {}",
                    r.io_running,
                    r.sql_running,
                    r.source_server.as_deref().unwrap_or(&r.source)
                )
            })
            .unwrap_or_default();
        let mut lag = s
            .lag_seconds
            .map(|l| format!("lag {l:.3}s"))
            .unwrap_or_default();
        if let Some(n) = s.not_received.filter(|n| *n > 0) {
            lag.push_str(&format!(" not-received {n}"));
        }
        let _ = writeln!(
            o,
            "  {:<12} {:<22} {:<8} id={} ro={} gtid={} {} {}{}",
            s.name,
            s.address,
            role,
            s.server_id,
            if s.read_only { "ON" } else { "OFF" },
            if s.gtid_current_pos.is_empty() {
                "-"
            } else {
                &s.gtid_current_pos
            },
            threads,
            lag,
            if s.role == Role::Primary && s.semi_sync.master_enabled {
                format!(
                    " semi-sync={} clients={}",
                    if s.semi_sync.master_active {
                        "ON"
                    } else {
                        "OFF"
                    },
                    s.semi_sync.master_clients
                )
            } else {
                String::new()
            }
        );
    }
    for a in &status.actions {
        let _ = writeln!(o, "action: {a}");
    }
    if status.problems.is_empty() {
        let _ = writeln!(o, "no problems");
    }
    for p in &status.problems {
        let _ = writeln!(o, "PROBLEM {p}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use keepup_config::DbServer;

    fn section() -> DatabaseSection {
        let srv = |n: &str, a: &str| DbServer {
            name: n.into(),
            address: a.into(),
            replication_address: None,
            node: None,
            no_promote: false,
            admin_credentials_file: None,
        };
        DatabaseSection::new(
            "/x".into(),
            vec![
                srv("a", "10.0.0.1:3306"),
                srv("b", "10.0.0.2:3306"),
                srv("c", "10.0.0.3:3306"),
            ],
        )
    }
    fn st(name: &str, read_only: bool, source: Option<&str>) -> ServerStatus {
        let mut s = ServerStatus::blank(name);
        s.read_only = read_only;
        s.replication = source.map(|src| ReplicationThreads {
            source_server: Some(src.to_string()),
            ..ReplicationThreads::default()
        });
        s
    }

    #[test]
    fn the_followed_writable_server_is_primary() {
        let sec = section();
        // An old primary "a" came back writable; the replicas follow "b".
        let servers = vec![
            st("a", false, None),
            st("b", false, None),
            st("c", true, Some("b")),
        ];
        assert_eq!(identify_primary(&sec, &servers).as_deref(), Some("b"));
    }

    #[test]
    fn fresh_servers_prefer_the_preferred_primary() {
        let sec = section();
        let servers = vec![
            st("a", false, None),
            st("b", false, None),
            st("c", false, None),
        ];
        assert_eq!(identify_primary(&sec, &servers).as_deref(), Some("a"));
    }

    #[test]
    fn no_writable_server_no_primary() {
        let sec = section();
        let servers = vec![st("a", true, None), st("b", true, Some("a"))];
        assert_eq!(identify_primary(&sec, &servers), None);
    }

    #[test]
    fn addresses_compare_with_localhost() {
        assert!(same_address("localhost:3306", "127.0.0.1:3306"));
        assert!(!same_address("10.0.0.1:3306", "10.0.0.1:3307"));
    }
}
