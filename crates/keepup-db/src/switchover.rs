//! `keepup db switchover --to NAME`: a planned move of the primary with no
//! transaction lost, and the write-unavailability window measured.

use crate::conn::{quote, Db};
use crate::observe::{identify_primary, ServerStatus};
use crate::plan::{errant_gtids, GtidPos};
use crate::setup::{ensure_semi_sync_clients, gtid_wait, point_at, replication_password};
use crate::{check_section, DbError, Problem};
use keepup_config::{DatabaseSection, DbTopology};
use serde::Serialize;
use std::time::Instant;

/// What a switchover did.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchoverReport {
    /// The primary before.
    pub old_primary: String,
    /// The primary now.
    pub new_primary: String,
    /// Milliseconds during which no server accepted writes (old primary
    /// read-only until the new one writable).
    pub write_unavailable_ms: f64,
    /// The old primary's final GTID position, applied on the new primary.
    pub final_position: String,
    /// Client connections killed on the old primary.
    pub killed_connections: u32,
    /// Servers now replicating from the new primary.
    pub repointed: Vec<String>,
    /// Servers that could not be repointed, and why.
    pub not_repointed: Vec<(String, String)>,
    /// Result of the `on_primary_change` hook, if configured.
    pub hook: Option<String>,
}

async fn connect_all(section: &DatabaseSection) -> Vec<(ServerStatus, Option<Db>)> {
    let mut set = tokio::task::JoinSet::new();
    for (i, s) in section.server.iter().enumerate() {
        let (section, s) = (section.clone(), s.clone());
        set.spawn(async move { (i, crate::observe::probe(&section, &s).await) });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(x) = r {
            out.push(x);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, x)| x).collect()
}

/// Kills client connections on the old primary so no open transaction can
/// commit after the switch. Spares keepup's admin account, the replication
/// account and the server's own threads.
pub(crate) async fn kill_clients(section: &DatabaseSection, db: &mut Db) -> u32 {
    let admin = crate::conn::credentials_for(
        section,
        section
            .server
            .iter()
            .find(|s| s.name == db.server)
            .unwrap_or(&section.server[0]),
    )
    .map(|c| c.user)
    .unwrap_or_default();
    let sql = format!(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
         AND USER NOT IN ('system user', 'event_scheduler', {}, {}) \
         AND COMMAND NOT IN ('Binlog Dump', 'Daemon', 'Slave_IO', 'Slave_SQL', 'Slave_worker')",
        quote(&admin),
        quote(&section.replication_user)
    );
    let ids: Vec<String> = match db.rows("listing client connections", &sql).await {
        Ok(rows) => rows
            .iter()
            .filter_map(|r| r.as_ref(0).and_then(crate::conn::value_text))
            .collect(),
        Err(_) => return 0,
    };
    let mut n = 0;
    for id in ids {
        if db
            .exec("killing a client", &format!("KILL CONNECTION {id}"))
            .await
            .is_ok()
        {
            n += 1;
        }
    }
    n
}

/// Takes writes away from `server`: kills client connections, sets
/// `read_only = ON`, and kills the connections that came in between (an
/// open transaction could otherwise still commit): the fence a db-primary
/// stop and a fencing new holder apply. Returns the number of connections
/// killed. Any error means the server may still take writes, except
/// [`DbError::positively_down`] (refused: nothing listens).
///
/// Clients go first because `SET GLOBAL read_only` waits for commits in
/// flight, and in strict semi-sync a commit no replica can acknowledge
/// waits for ever: a partitioned holder's stop took 4 s that way (found by
/// the fault test) while the new holder had opened its server. A killed
/// commit is not acknowledged to its client.
pub async fn make_read_only(section: &DatabaseSection, server: &str) -> Result<u32, DbError> {
    let s = section
        .server(server)
        .ok_or_else(|| DbError::Config(format!("no server {server}")))?;
    let mut db = Db::connect(section, s).await?;
    let killed = fence(section, &mut db, true).await?;
    db.close().await;
    Ok(killed)
}

/// Makes the server behind `db` read-only and kills its client
/// connections; returns how many were killed. `kill_first`: kill before
/// setting read_only (a stop, which must finish before its lease ends);
/// else only when read_only waited 1 s for the lock (a planned switchover,
/// where commits in flight may finish). Either way a client that connected
/// in between and blocks it again is killed and read_only retried (lock
/// wait 1 s, error 1205).
pub(crate) async fn fence(
    section: &DatabaseSection,
    db: &mut Db,
    kill_first: bool,
) -> Result<u32, DbError> {
    db.exec(
        "bounding the read_only wait",
        "SET SESSION lock_wait_timeout = 1",
    )
    .await?;
    let mut killed = 0;
    for attempt in 1.. {
        if kill_first || attempt > 1 {
            killed += kill_clients(section, db).await;
        }
        match db
            .exec("setting read_only", "SET GLOBAL read_only = 1")
            .await
        {
            Ok(()) => break,
            Err(e) if e.code() == Some(1205) && attempt < READ_ONLY_ATTEMPTS => continue,
            Err(e) => return Err(e),
        }
    }
    killed += kill_clients(section, db).await;
    db.exec(
        "restoring the lock wait",
        "SET SESSION lock_wait_timeout = DEFAULT",
    )
    .await?;
    Ok(killed)
}

/// How often [`fence`] tries a `read_only` that waited 1 s for the lock.
const READ_ONLY_ATTEMPTS: u32 = 5;

/// Moves the primary role to `to`:
/// 1. checks `to` is a healthy replica of the current primary (threads
///    running, no errant transactions, not `no_promote`), waits until it is
///    nearly caught up;
/// 2. sets `read_only` on the old primary and kills client connections;
/// 3. waits until `to` applied the old primary's final GTID position
///    (`MASTER_GTID_WAIT`); on timeout, reopens the old primary and fails;
/// 4. master-slave: detaches `to` (`RESET SLAVE ALL`) and repoints every
///    other server, the old primary included, at it (GTID, slave_pos);
///    master-master: the ring stays as is;
/// 5. opens `to` for writes (after a semi-sync replica connected, when
///    semi-sync is on), then runs the `on_primary_change` hook.
///
/// Application accounts must not have SUPER/READ_ONLY ADMIN: MariaDB's
/// read_only does not stop them.
pub async fn switchover(section: &DatabaseSection, to: &str) -> Result<SwitchoverReport, DbError> {
    check_section(section)?;
    let tidx = section
        .server
        .iter()
        .position(|s| s.name == to)
        .ok_or_else(|| DbError::Config(format!("no [[database.server]] named {to:?}")))?;
    let probed = connect_all(section).await;
    let statuses: Vec<ServerStatus> = probed.iter().map(|(s, _)| s.clone()).collect();
    let mut conns: Vec<Option<Db>> = probed.into_iter().map(|(_, d)| d).collect();
    let old = identify_primary(section, &statuses).ok_or_else(|| DbError::Refused {
        problems: vec![Problem::new(
            None,
            "no_primary",
            "there is no writable primary to switch from".into(),
            "if the primary died, the agent fails over; else run `keepup db setup`",
        )],
    })?;
    if old == to {
        return Ok(SwitchoverReport {
            old_primary: old.clone(),
            new_primary: old,
            write_unavailable_ms: 0.0,
            final_position: String::new(),
            killed_connections: 0,
            repointed: Vec::new(),
            not_repointed: Vec::new(),
            hook: None,
        });
    }
    let oidx = section
        .server
        .iter()
        .position(|s| s.name == old)
        .unwrap_or(0);
    let t = &statuses[tidx];
    let mut problems = Vec::new();
    let mm = section.topology == DbTopology::MasterMaster;
    if !t.up {
        problems.push(Problem::new(
            Some(to),
            "down",
            t.error.clone().unwrap_or_default(),
            "start it, or choose another target",
        ));
    } else {
        match &t.replication {
            Some(r) if r.source_server.as_deref() == Some(old.as_str()) => {
                if r.io_running != "Yes" || r.sql_running != "Yes" {
                    problems.push(Problem::new(
                        Some(to),
                        "threads_stopped",
                        format!(
                            "replication threads io={} sql={} (error {} {})",
                            r.io_running, r.sql_running, r.last_sql_errno, r.last_sql_error
                        ),
                        "fix its replication first (see `keepup db status`)",
                    ));
                }
            }
            _ => problems.push(Problem::new(
                Some(to),
                "not_replica",
                format!("it does not replicate from the primary {old}"),
                "run `keepup db setup` first",
            )),
        }
        let mut errant = errant_gtids(
            &GtidPos::parse(&t.gtid_binlog_pos).unwrap_or_default(),
            &GtidPos::parse(&t.gtid_slave_pos).unwrap_or_default(),
            t.server_id,
        );
        if mm {
            errant.retain(|g| g.domain != t.gtid_domain_id);
        }
        if !errant.is_empty() {
            problems.push(Problem::new(
                Some(to),
                "errant_transactions",
                format!(
                    "it has transactions of its own: {}",
                    errant
                        .iter()
                        .map(|g| format!("{}-{}-{}", g.domain, g.server_id, g.seq))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                &format!("re-seed it (`keepup db setup --reseed {to}`) or pick another target"),
            ));
        }
    }
    if section.server[tidx].no_promote {
        problems.push(Problem::new(
            Some(to),
            "no_promote",
            "no_promote = true in keepup.toml".into(),
            "choose another server",
        ));
    }
    if conns[oidx].is_none() {
        problems.push(Problem::new(
            Some(&old),
            "down",
            "the primary does not answer".into(),
            "a dead primary is failed over, not switched over",
        ));
    }
    if !problems.is_empty() {
        return Err(DbError::Refused { problems });
    }
    let password = if mm {
        String::new()
    } else {
        replication_password(&section.replication_password_file)?.0
    };
    let timeout = section.catchup_timeout_ms;

    // Near catch-up while writes still flow, so the locked window is short.
    let pre = statuses[oidx].gtid_binlog_pos.clone();
    if let Some(db) = conns[tidx].as_mut() {
        gtid_wait(db, &pre, timeout.ms()).await?;
    }

    // The window opens.
    let t0 = Instant::now();
    let (killed, final_pos) = {
        let db = conns[oidx]
            .as_mut()
            .ok_or_else(|| DbError::Config("old primary vanished".into()))?;
        let killed = fence(section, db, false).await?;
        let pos = db.global("gtid_binlog_pos").await?;
        (killed, pos)
    };
    let caught_up = match conns[tidx].as_mut() {
        Some(db) => gtid_wait(db, &final_pos, timeout.ms()).await,
        None => Err(DbError::Config("target vanished".into())),
    };
    if let Err(e) = caught_up {
        if let Some(db) = conns[oidx].as_mut() {
            let _ = db
                .exec("reopening the old primary", "SET GLOBAL read_only = OFF")
                .await;
        }
        return Err(e);
    }
    let mut repointed = Vec::new();
    let mut not_repointed = Vec::new();
    let mut opened_at = None;
    let target = section.server[tidx].clone();
    if !mm {
        let db = conns[tidx]
            .as_mut()
            .ok_or_else(|| DbError::Config("target vanished".into()))?;
        db.exec("stopping replication on the new primary", "STOP SLAVE")
            .await?;
        db.exec("detaching the new primary", "RESET SLAVE ALL")
            .await?;
        if section.semi_sync {
            db.exec(
                "enabling semi-sync on the new primary",
                "SET GLOBAL rpl_semi_sync_master_enabled = ON",
            )
            .await?;
        } else {
            // Without semi-sync nothing waits on the replicas: open now, they
            // pick up the new writes once repointed.
            db.exec("opening the new primary", "SET GLOBAL read_only = OFF")
                .await?;
            opened_at = Some(t0.elapsed());
        }
        // Repoint everyone else in parallel.
        let mut set = tokio::task::JoinSet::new();
        for (i, c) in conns.iter_mut().enumerate() {
            if i == tidx {
                continue;
            }
            let name = section.server[i].name.clone();
            let Some(mut db) = c.take() else {
                not_repointed.push((name, "unreachable".to_string()));
                continue;
            };
            let (section, target, password, final_pos) = (
                section.clone(),
                target.clone(),
                password.clone(),
                final_pos.clone(),
            );
            let is_old = i == oidx;
            set.spawn(async move {
                let r = async {
                    if is_old {
                        db.exec("stopping replication", "STOP SLAVE").await?;
                        db.exec(
                            "setting its GTID position",
                            "SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos",
                        )
                        .await?;
                        if section.semi_sync {
                            db.exec(
                                "semi-sync replica side",
                                "SET GLOBAL rpl_semi_sync_slave_enabled = ON",
                            )
                            .await?;
                        }
                    } else {
                        gtid_wait(&mut db, &final_pos, section.catchup_timeout_ms.ms()).await?;
                    }
                    point_at(&section, &mut db, &target, &password).await
                }
                .await;
                (i, name, r, db)
            });
        }
        while let Some(j) = set.join_next().await {
            if let Ok((i, name, r, db)) = j {
                match r {
                    Ok(()) => repointed.push(name),
                    Err(e) => not_repointed.push((name, e.to_string())),
                }
                conns[i] = Some(db);
            }
        }
        if section.semi_sync && !repointed.is_empty() {
            if let Some(db) = conns[tidx].as_mut() {
                ensure_semi_sync_clients(section, db, &repointed).await;
            }
        }
    }
    let opened_at = match opened_at {
        Some(t) => t,
        None => {
            let db = conns[tidx]
                .as_mut()
                .ok_or_else(|| DbError::Config("target vanished".into()))?;
            db.exec("opening the new primary", "SET GLOBAL read_only = OFF")
                .await?;
            t0.elapsed()
        }
    };
    let write_unavailable_ms = opened_at.as_secs_f64() * 1000.0;
    // The replicas' lag is measured against the new primary's heartbeat:
    // one now, so it is known from the next observation on.
    if let Some(db) = conns[tidx].as_mut() {
        let _ = tokio::time::timeout(
            section.connect_timeout_ms.duration(),
            crate::observe::write_heartbeat(db),
        )
        .await;
    }
    for db in conns.into_iter().flatten() {
        db.close().await;
    }
    let hook = crate::run_hook(section, to).await;
    tracing::info!(old = %old, new = %to, write_unavailable_ms, "database switchover done");
    Ok(SwitchoverReport {
        old_primary: old,
        new_primary: to.to_string(),
        write_unavailable_ms,
        final_position: final_pos,
        killed_connections: killed,
        repointed,
        not_repointed,
        hook,
    })
}
