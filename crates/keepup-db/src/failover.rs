//! Failover: promote the most advanced replica once the cluster agreed the
//! primary is dead.

use crate::conn::{col, quote, Db};
use crate::observe::KEEPUP_SCHEMA;
use crate::plan::{errant_gtids, plan_promotion_onto, Candidate, GtidPos};
use crate::setup::{ensure_semi_sync_clients, gtid_wait, point_at, replication_password};
use crate::{check_section, DbError, Problem};
use keepup_config::{DatabaseSection, DbTopology};
use serde::Serialize;
use std::time::{Duration, Instant};

/// What a promotion did.
#[derive(Debug, Clone, Serialize)]
pub struct PromotionReport {
    /// The primary that died.
    pub dead_primary: String,
    /// The promoted server.
    pub new_primary: String,
    /// Each surviving candidate and everything it had received (applied +
    /// relay log) when its IO thread was stopped.
    pub candidates: Vec<(String, String)>,
    /// Servers that could not be considered, and why.
    pub excluded: Vec<(String, String)>,
    /// Servers the winner caught up from before opening.
    pub caught_up_from: Vec<String>,
    /// Servers now replicating from the new primary.
    pub repointed: Vec<String>,
    /// Servers left alone, and why (errant transactions, stopped SQL thread, unreachable).
    pub not_repointed: Vec<(String, String)>,
    /// From the call until the new primary accepted writes, in milliseconds.
    pub took_ms: f64,
    /// The new primary's position when it opened: everything it had from the
    /// dead primary. Recorded in `keepup.failover`; the old primary may rejoin
    /// later only if its own history is contained in it.
    pub recorded_position: String,
    /// Whether the failover record could be written (it replicates; a stall
    /// here is reported, not fatal).
    pub recorded: bool,
    /// Result of the `on_primary_change` hook, if configured.
    pub hook: Option<String>,
}

/// The longest a failover waits to learn that a server presumed dead does
/// not answer (a live MariaDB on the LAN accepts in milliseconds).
pub const DEAD_PROBE_TIMEOUT_MS: u64 = 300;

/// `section` with its connect timeout capped at [`DEAD_PROBE_TIMEOUT_MS`]:
/// for looks at the servers while one of them is presumed dead, so the dead
/// one costs no more than that.
pub fn with_dead_probe_timeout(section: &DatabaseSection) -> DatabaseSection {
    let mut quick = section.clone();
    quick.connect_timeout_ms = quick
        .connect_timeout_ms
        .min(keepup_config::Millis(DEAD_PROBE_TIMEOUT_MS));
    quick
}

struct Probe {
    idx: usize,
    db: Db,
    received: GtidPos,
    binlog: GtidPos,
    slave: GtidPos,
    sql_error: Option<String>,
    domain: u32,
    server_id: u32,
}

/// Stops the IO thread of a replica whose primary is dead.
///
/// After a power failure (no TCP reset) the IO thread waits on a socket whose
/// peer is gone, and `STOP SLAVE IO_THREAD` issued then often missed its
/// first signal: MariaDB signals again only after 2 s (measured here: the
/// STOP took 2.0 s in 4 of 5 runs, the whole failover 2.7 s). So the thread
/// is first killed and seen gone from the process list (one round of 5 ms in
/// practice, at most 0.5 s), and the STOP after that returns in about a
/// millisecond. What the relay log already holds is kept either way.
async fn stop_io_thread(db: &mut Db) -> Result<(), DbError> {
    for _ in 0..100 {
        let io_threads = db
            .rows(
                "finding the IO thread",
                "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Slave_IO'",
            )
            .await?;
        if io_threads.is_empty() {
            break;
        }
        for id in io_threads
            .iter()
            .filter_map(|r| crate::conn::col_num(r, "ID"))
        {
            // It may end by itself meanwhile: not an error.
            let _ = db.exec("waking the IO thread", &format!("KILL {id}")).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    db.exec("stopping the IO thread", "STOP SLAVE IO_THREAD")
        .await
}

async fn freeze_and_read(
    db: &mut Db,
) -> Result<(GtidPos, GtidPos, GtidPos, Option<String>, (u32, u32)), DbError> {
    // Freeze what it has received: the IO thread only retries the dead primary.
    stop_io_thread(db).await?;
    let row = db
        .row("reading SHOW SLAVE STATUS", "SHOW SLAVE STATUS")
        .await?;
    let io_pos = row
        .as_ref()
        .and_then(|r| col(r, "Gtid_IO_Pos"))
        .unwrap_or_default();
    let sql_errno = row
        .as_ref()
        .and_then(|r| crate::conn::col_num(r, "Last_SQL_Errno"))
        .unwrap_or(0);
    let sql_error = (sql_errno != 0).then(|| {
        format!(
            "SQL thread error {sql_errno}: {}",
            row.as_ref()
                .and_then(|r| col(r, "Last_SQL_Error"))
                .unwrap_or_default()
        )
    });
    let binlog = GtidPos::parse(&db.global("gtid_binlog_pos").await?).unwrap_or_default();
    let slave = GtidPos::parse(&db.global("gtid_slave_pos").await?).unwrap_or_default();
    let domain: u32 = db.global("gtid_domain_id").await?.parse().unwrap_or(0);
    let server_id: u32 = db.global("server_id").await?.parse().unwrap_or(0);
    let io = GtidPos::parse(&io_pos).unwrap_or_default();
    Ok((
        slave.merge(&io),
        binlog,
        slave,
        sql_error,
        (domain, server_id),
    ))
}

/// What [`catch_up_before_opening`] waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaughtUp {
    /// Everything `peer` has (its `gtid_binlog_pos`) is applied here.
    WithPeer(String),
    /// The peer is down (refused) or not configured: its own relay log is applied.
    RelayLogOnly,
}

/// Before `server` is opened for writes outside a failover (a demoted
/// primary reopened, a master-master takeover after a clean stop or a
/// standby): it first applies everything it has received (`received`, its
/// `Gtid_IO_Pos`) and, when `peer` (the server it replicates from) answers,
/// everything the peer has, within `catchup_timeout_ms`. An error means it
/// is not caught up, with what is missing: the caller must not open it. A
/// peer that does not answer in time (not refused) is an error too: it may
/// hold writes this server never received.
pub async fn catch_up_before_opening(
    section: &DatabaseSection,
    server: &str,
    peer: Option<&str>,
    received: &str,
) -> Result<CaughtUp, DbError> {
    let timeout = section.catchup_timeout_ms.ms();
    let me = section
        .server(server)
        .ok_or_else(|| DbError::Config(format!("no server {server}")))?;
    let mut db = Db::connect(section, me).await?;
    if !received.is_empty() {
        apply_relay_log(&mut db, received, timeout).await?;
    }
    let Some(peer) = peer.and_then(|p| section.server(p)) else {
        db.close().await;
        return Ok(CaughtUp::RelayLogOnly);
    };
    let pos = match Db::connect(section, peer).await {
        Ok(mut p) => {
            let pos = p.global("gtid_binlog_pos").await;
            p.close().await;
            pos?
        }
        Err(e) if e.positively_down() => {
            db.close().await;
            return Ok(CaughtUp::RelayLogOnly);
        }
        Err(e) => {
            db.close().await;
            return Err(e);
        }
    };
    let r = gtid_wait(&mut db, &pos, timeout).await;
    db.close().await;
    r.map(|()| CaughtUp::WithPeer(pos))
}

/// Waits until a replica whose IO thread is stopped has applied its relay
/// log: up to `received`, or until its SQL thread has read everything (the
/// last transaction may have arrived only in part when the primary died; it
/// was never acknowledged to its client, and is dropped).
async fn apply_relay_log(db: &mut Db, received: &str, timeout_ms: u64) -> Result<(), DbError> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    // The usual case: everything received is applied within moments.
    if gtid_wait(db, received, 50.min(timeout_ms)).await.is_ok() {
        return Ok(());
    }
    // Otherwise the SQL thread must be seen idle at the end of the relay log
    // several times in a row with its executed position unchanged (one
    // sighting can be stale: it may not have noticed the last events yet).
    let mut idle = 0;
    let mut last_exec = String::new();
    loop {
        if gtid_wait(db, received, 1).await.is_ok() {
            return Ok(());
        }
        let row = db
            .row("reading SHOW SLAVE STATUS", "SHOW SLAVE STATUS")
            .await?;
        let state = row
            .as_ref()
            .and_then(|r| col(r, "Slave_SQL_Running_State"))
            .unwrap_or_default();
        let running = row
            .as_ref()
            .and_then(|r| col(r, "Slave_SQL_Running"))
            .unwrap_or_default();
        if running != "Yes" {
            return Err(DbError::Query {
                server: db.server.clone(),
                what: "applying its relay log".into(),
                code: 0,
                message: format!("the SQL thread stopped ({state})"),
            });
        }
        let exec = format!(
            "{}:{}",
            row.as_ref()
                .and_then(|r| col(r, "Relay_Master_Log_File"))
                .unwrap_or_default(),
            row.as_ref()
                .and_then(|r| col(r, "Exec_Master_Log_Pos"))
                .unwrap_or_default()
        );
        if state.contains("read all relay log") && exec == last_exec {
            idle += 1;
            if idle >= 4 {
                return Ok(());
            }
        } else {
            idle = 0;
        }
        last_exec = exec;
        if Instant::now() > deadline {
            return Err(DbError::Timeout {
                server: db.server.clone(),
                what: format!("its SQL thread to apply its relay log up to {received}"),
                after_ms: timeout_ms,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Promotes a replica after `dead_primary` was agreed dead by the cluster.
///
/// 1. Refuses if `dead_primary` still answers and is writable (use switchover).
/// 2. Stops every survivor's IO thread and reads what it received (applied
///    position merged with `Gtid_IO_Pos`, i.e. including its relay log).
/// 3. [`plan_promotion`](crate::plan::plan_promotion) picks the most
///    advanced eligible replica (never one with errant transactions, a
///    stopped SQL thread or `no_promote`). With semi-sync, every acknowledged
///    commit is in at least one replica's relay log, so the most advanced one
///    has them all.
/// 4. The winner applies its whole relay log (`MASTER_GTID_WAIT`), catches up
///    from any survivor holding transactions it lacks, then `RESET SLAVE ALL`.
/// 5. The other survivors are repointed at it (GTID, slave_pos); then it
///    becomes writable (after a semi-sync replica connected, when semi-sync
///    is on), the position is recorded in `keepup.failover`, and the
///    `on_primary_change` hook runs.
///
/// The dead primary is never touched; when it returns, [`observe`](crate::observe)
/// makes it read-only and says whether it can rejoin.
pub async fn promote_after_failure(
    section: &DatabaseSection,
    dead_primary: &str,
) -> Result<PromotionReport, DbError> {
    promote(section, dead_primary, true, None).await
}

/// [`promote_after_failure`] for a caller that has just seen `dead_primary`
/// fail to answer within [`DEAD_PROBE_TIMEOUT_MS`] (the cluster agent's
/// db-primary resource does, to choose between switchover and promotion):
/// the promotion's own last look at it is skipped, which saves that timeout
/// again after a power failure.
/// `here`: the server on the caller's node, promoted (after catching up
/// from any replica holding more) whenever it is eligible, so the primary
/// role stays on the node that holds it (see [`crate::plan::plan_promotion_onto`]).
pub async fn promote_after_failure_seen_down(
    section: &DatabaseSection,
    dead_primary: &str,
    here: Option<&str>,
) -> Result<PromotionReport, DbError> {
    promote(section, dead_primary, false, here).await
}

async fn promote(
    section: &DatabaseSection,
    dead_primary: &str,
    last_look: bool,
    here: Option<&str>,
) -> Result<PromotionReport, DbError> {
    let t0 = Instant::now();
    check_section(section)?;
    let dead = section
        .server(dead_primary)
        .ok_or_else(|| DbError::Config(format!("no [[database.server]] named {dead_primary:?}")))?
        .clone();
    let mm = section.topology == DbTopology::MasterMaster;

    // Survivors and a last look at the "dead" primary, in parallel.
    let mut set = tokio::task::JoinSet::new();
    for (i, s) in section.server.iter().enumerate() {
        let (section, s) = (section.clone(), s.clone());
        let is_dead = s.name == dead.name;
        if is_dead && !last_look {
            continue;
        }
        set.spawn(async move {
            if is_dead {
                let r = match Db::connect(&with_dead_probe_timeout(&section), &s).await {
                    Ok(mut db) => {
                        let ro = db.global("read_only").await.unwrap_or_default();
                        db.close().await;
                        Some(ro)
                    }
                    Err(_) => None,
                };
                return (i, Err(r));
            }
            let r = async {
                let mut db = Db::connect(&section, &s).await?;
                let (received, binlog, slave, sql_error, (domain, server_id)) =
                    freeze_and_read(&mut db).await?;
                Ok::<_, DbError>(Probe {
                    idx: i,
                    db,
                    received,
                    binlog,
                    slave,
                    sql_error,
                    domain,
                    server_id,
                })
            }
            .await;
            (i, Ok(r))
        });
    }
    let mut probes: Vec<Probe> = Vec::new();
    let mut excluded = Vec::new();
    let mut dead_answer = None;
    while let Some(j) = set.join_next().await {
        match j {
            Ok((_, Err(ro))) => dead_answer = ro,
            Ok((i, Ok(Ok(p)))) => {
                let _ = i;
                probes.push(p)
            }
            Ok((i, Ok(Err(e)))) => excluded.push((section.server[i].name.clone(), e.to_string())),
            Err(e) => excluded.push(("?".into(), e.to_string())),
        }
    }
    probes.sort_by_key(|p| p.idx);
    if let Some(ro) = dead_answer {
        if ro != "1" && !ro.eq_ignore_ascii_case("ON") {
            for p in probes.iter_mut() {
                let _ =
                    p.db.exec("restarting the IO thread", "START SLAVE IO_THREAD")
                        .await;
            }
            return Err(DbError::Refused {
                problems: vec![Problem::new(
                    Some(&dead.name),
                    "primary_alive",
                    "the primary still answers and is writable".into(),
                    "it is not dead: use `keepup db switchover --to NAME` for a planned move",
                )],
            });
        }
    }
    let pref = |name: &str| {
        let order = section.preferred().unwrap_or_default();
        if name == order {
            0
        } else {
            1 + section
                .server
                .iter()
                .position(|s| s.name == name)
                .unwrap_or(usize::MAX - 1)
        }
    };
    let cands: Vec<Candidate> = probes
        .iter()
        .map(|p| {
            let mut errant = errant_gtids(&p.binlog, &p.slave, p.server_id);
            if mm {
                errant.retain(|g| g.domain != p.domain);
            }
            let name = section.server[p.idx].name.clone();
            Candidate {
                received: p.received.clone(),
                errant: !errant.is_empty(),
                no_promote: section.server[p.idx].no_promote,
                sql_error: p.sql_error.is_some(),
                preference: pref(&name),
                name,
            }
        })
        .collect();
    let plan = plan_promotion_onto(&cands, here).map_err(|reason| {
        let mut problems = vec![Problem::new(
            None,
            "no_candidate",
            reason,
            "fix a replica (see `keepup db status`) or bring the primary back",
        )];
        for (n, r) in &excluded {
            problems.push(Problem::new(Some(n), "unreachable", r.clone(), "start it"));
        }
        DbError::Refused { problems }
    })?;
    for (n, r) in &plan.excluded {
        excluded.push((n.clone(), r.clone()));
    }
    let widx = probes
        .iter()
        .position(|p| section.server[p.idx].name == plan.winner)
        .ok_or_else(|| DbError::Config("planner chose an unknown server".into()))?;
    let timeout = section.catchup_timeout_ms.ms();
    let password = replication_password(&section.replication_password_file)?.0;

    // A winner that is a semi-sync primary itself (master-master) would
    // wait, for every relayed commit, for an acknowledgement from the dead
    // peer (strict mode waits for ever). It takes no client writes yet
    // (read-only), so its primary side stays off until its replicas are
    // repointed; it is turned on again below.
    if section.semi_sync {
        probes[widx]
            .db
            .exec(
                "pausing semi-sync while the relay log applies",
                "SET GLOBAL rpl_semi_sync_master_enabled = OFF",
            )
            .await?;
    }
    // The winner applies its relay log.
    let wrecv = probes[widx].received.to_string();
    apply_relay_log(&mut probes[widx].db, &wrecv, timeout).await?;
    // ... and catches up from anyone holding more.
    let mut caught_up_from = Vec::new();
    for other in &plan.catch_up_from {
        let Some(oi) = probes
            .iter()
            .position(|p| &section.server[p.idx].name == other)
        else {
            continue;
        };
        // Covered already (catching up from a more advanced one did it):
        // skip, so a source that cannot apply its relay log is not needed.
        let have =
            GtidPos::parse(&probes[widx].db.global("gtid_binlog_pos").await?).unwrap_or_default();
        if have.covers(&probes[oi].received) {
            continue;
        }
        let orecv = probes[oi].received.to_string();
        apply_relay_log(&mut probes[oi].db, &orecv, timeout).await?;
        // What it really has (a partial last transaction is not in its binlog).
        let ohas = probes[oi].db.global("gtid_binlog_pos").await?;
        let source = section.server[probes[oi].idx].clone();
        point_at(section, &mut probes[widx].db, &source, &password).await?;
        gtid_wait(&mut probes[widx].db, &ohas, timeout).await?;
        probes[widx]
            .db
            .exec("stopping catch-up replication", "STOP SLAVE")
            .await?;
        caught_up_from.push(other.clone());
    }
    {
        let w = &mut probes[widx].db;
        w.exec("stopping replication on the new primary", "STOP SLAVE")
            .await?;
        w.exec("detaching the new primary", "RESET SLAVE ALL")
            .await?;
        // Semi-sync only with a replica to acknowledge: a semi-sync primary
        // without one stalls every commit for rpl_semi_sync_master_timeout.
        // Without, observe reports "acknowledged writes at risk" and setup
        // turns it back on once a replica returns.
        let will_repoint = cands
            .iter()
            .any(|c| c.name != plan.winner && !c.errant && !c.sql_error);
        if section.semi_sync && will_repoint {
            w.exec(
                "enabling semi-sync on the new primary",
                "SET GLOBAL rpl_semi_sync_master_enabled = ON",
            )
            .await?;
        } else if section.semi_sync {
            // No replica left (a master-master survivor still has semi-sync on,
            // and the dead peer's half-open connection may still count as a
            // client after a power failure): every commit would wait for
            // rpl_semi_sync_master_timeout.
            w.exec(
                "turning semi-sync off on the new primary (no replica left)",
                "SET GLOBAL rpl_semi_sync_master_enabled = OFF",
            )
            .await?;
            tracing::warn!(
                server = %w.server,
                "no replica left to acknowledge: semi-sync is off, acknowledged writes are at risk until a replica returns (`keepup db setup` turns it back on)"
            );
        }
    }
    let winner = section.server[probes[widx].idx].clone();
    let recorded_position = probes[widx].db.global("gtid_binlog_pos").await?;

    // Repoint the others in parallel; leave alone what could lose data.
    let mut repointed = Vec::new();
    let mut not_repointed = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    let mut winner_probe = None;
    for (k, p) in probes.into_iter().enumerate() {
        if k == widx {
            winner_probe = Some(p);
            continue;
        }
        let name = section.server[p.idx].name.clone();
        let c = cands.iter().find(|c| c.name == name);
        if c.is_some_and(|c| c.errant) {
            not_repointed.push((name.clone(), format!("errant transactions: left alone; re-seed it with `keepup db setup --reseed {name}`")));
            let mut db = p.db;
            let _ = db
                .exec("restarting the IO thread", "START SLAVE IO_THREAD")
                .await;
            continue;
        }
        if c.is_some_and(|c| c.sql_error) {
            not_repointed.push((
                name.clone(),
                "its SQL thread stopped on an error: left alone; fix it, then `keepup db setup`"
                    .into(),
            ));
            continue;
        }
        let (section, winner, password) = (section.clone(), winner.clone(), password.clone());
        set.spawn(async move {
            let mut db = p.db;
            let r = point_at(&section, &mut db, &winner, &password).await;
            db.close().await;
            (name, r)
        });
    }
    while let Some(j) = set.join_next().await {
        if let Ok((name, r)) = j {
            match r {
                Ok(()) => repointed.push(name),
                Err(e) => not_repointed.push((name, e.to_string())),
            }
        }
    }
    let mut wp = winner_probe.ok_or_else(|| DbError::Config("winner vanished".into()))?;
    if section.semi_sync && !repointed.is_empty() {
        ensure_semi_sync_clients(section, &mut wp.db, &repointed).await;
    }
    wp.db
        .exec("opening the new primary", "SET GLOBAL read_only = OFF")
        .await?;
    let took_ms = t0.elapsed().as_secs_f64() * 1000.0;

    // Record the takeover position (replicates; bounded in case semi-sync stalls).
    let record = format!(
        "INSERT INTO {KEEPUP_SCHEMA}.failover (at, old_primary, new_primary, old_primary_pos) VALUES (UTC_TIMESTAMP(6), {}, {}, {})",
        quote(&dead.name),
        quote(&winner.name),
        quote(&recorded_position)
    );
    let recorded = matches!(
        tokio::time::timeout(
            Duration::from_millis(3000),
            wp.db.exec("recording the failover", &record)
        )
        .await,
        Ok(Ok(()))
    );
    // The replicas' lag is measured against the new primary's heartbeat:
    // one now, so it is known from the next observation on (only when the
    // record went through: a cut-off query leaves the connection unusable).
    if recorded {
        let _ = tokio::time::timeout(
            Duration::from_millis(3000),
            crate::observe::write_heartbeat(&mut wp.db),
        )
        .await;
    }
    wp.db.close().await;
    let hook = crate::run_hook(section, &winner.name).await;
    tracing::warn!(dead = %dead.name, new = %winner.name, took_ms, "database primary promoted after failure");
    if !section.semi_sync || section.semi_sync_relaxed {
        // Measured by bench/db.sh: every replica cut 3 s, then the primary
        // killed, relaxed mode lost 650 acknowledged rows (strict: 0).
        tracing::warn!(dead = %dead.name, "{} replication: writes {} acknowledged that no replica received are lost; when it returns, `keepup db setup` names them (diverged) before re-seeding it", if section.semi_sync { "relaxed semi-sync" } else { "asynchronous" }, dead.name);
    }
    Ok(PromotionReport {
        dead_primary: dead.name.clone(),
        new_primary: winner.name.clone(),
        candidates: cands
            .iter()
            .map(|c| (c.name.clone(), c.received.to_string()))
            .collect(),
        excluded,
        caught_up_from,
        repointed,
        not_repointed,
        took_ms,
        recorded_position,
        recorded,
        hook,
    })
}
