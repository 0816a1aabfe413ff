//! Scenarios against real local mariadbd servers (issue 4). Each test starts
//! its own servers on free 127.0.0.1 ports; they are killed by PID on drop.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use keepup_db::local_server::LocalServerOptions;
use keepup_db::{observe, setup, Role};
use std::time::Duration;

/// Issue 4, setup: a primary and two empty replicas; seeding, GTID
/// replication, verification; a second run changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_master_slave_two_replicas_is_idempotent() {
    guard(180, setup_master_slave_two_replicas_is_idempotent_body()).await
}

async fn setup_master_slave_two_replicas_is_idempotent_body() {
    if !can_run("setup_master_slave_two_replicas_is_idempotent") {
        return;
    }
    let c = cluster("setup-ms", 3, |i| LocalServerOptions::new(i as u32 + 1));
    // Data on the primary before setup must reach the seeded replicas.
    app_schema(&c.servers[0].address()).await;
    let r = setup(&c.section).await.expect("setup");
    println!("{r:#?}");
    assert_eq!(r.primary, "db-1");
    assert!(!r.unchanged());
    assert!(
        r.changes.iter().any(|c| c.contains("db-2: seeded")),
        "{:?}",
        r.changes
    );
    assert_eq!(r.verified.len(), 2);
    for s in &c.servers[1..] {
        assert!(values(&s.address()).await.is_empty());
    }
    let again = setup(&c.section).await.expect("setup again");
    assert!(again.unchanged(), "second run changed: {:?}", again.changes);
    assert_eq!(again.verified.len(), 2);

    let st = observe(&c.section).await;
    println!("{}", keepup_db::render(&st));
    assert_eq!(st.primary.as_deref(), Some("db-1"));
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    assert!(st.actions.is_empty());
    for s in &st.servers[1..] {
        assert_eq!(s.role, Role::Replica);
        assert!(s.read_only);
        let lag = s.lag_seconds.expect("lag from heartbeat");
        assert!(lag < 5.0, "lag {lag}");
    }
    let mut prom = String::new();
    keepup_db::prometheus(&st, &mut prom);
    assert!(
        prom.contains("keepup_db_replication_lag_seconds{server=\"db-2\"}"),
        "{prom}"
    );
    assert!(prom.contains("keepup_db_up{server=\"db-3\"} 1"), "{prom}");
    let cs = keepup_db::checksum(&c.section).await.expect("checksum");
    assert!(cs.mismatches.is_empty(), "{:?}", cs.mismatches);
    assert!(cs.tables >= 2);

    // True lag: with db-3's SQL thread stopped, its newest heartbeat ages.
    {
        use mysql_async::prelude::Queryable;
        let mut x = admin(&c.servers[2].address()).await;
        x.query_drop("STOP SLAVE SQL_THREAD")
            .await
            .expect("stop sql");
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let st = observe(&c.section).await;
    println!("{}", keepup_db::render(&st));
    let lag = st.server("db-3").and_then(|s| s.lag_seconds).expect("lag");
    assert!(lag > 1.0, "db-3 lag {lag}");
    assert!(st.server("db-2").and_then(|s| s.lag_seconds).expect("lag") < 1.0);
    assert!(st
        .problems
        .iter()
        .any(|p| p.kind == "sql_thread_stopped" && p.server.as_deref() == Some("db-3")));
    // setup repairs a thread stopped without an error.
    let fix = setup(&c.section).await.expect("setup repairs");
    assert!(
        fix.changes
            .iter()
            .any(|c| c.contains("db-3: started the stopped")),
        "{:?}",
        fix.changes
    );
    let _ = Duration::from_secs(0);
}

async fn healthy_cluster(test: &str, semi_sync: bool) -> Cluster {
    let mut c = cluster(test, 3, |i| LocalServerOptions::new(i as u32 + 1));
    c.section.semi_sync = semi_sync;
    c.section.semi_sync_timeout_ms = keepup_config::Millis(5000);
    app_schema(&c.servers[0].address()).await;
    setup(&c.section).await.expect("setup");
    c
}

fn missing(acked: &[i64], present: &std::collections::BTreeSet<i64>) -> Vec<i64> {
    acked
        .iter()
        .filter(|v| !present.contains(v))
        .copied()
        .collect()
}

/// Issue 4, switchover: under a writer loop, every acknowledged row is on
/// every server afterwards; the old primary becomes a read-only replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_under_writes_loses_nothing() {
    guard(180, switchover_under_writes_loses_nothing_body()).await
}

async fn switchover_under_writes_loses_nothing_body() {
    if !can_run("switchover_under_writes_loses_nothing") {
        return;
    }
    let c = healthy_cluster("switchover", false).await;
    let w = Writer::start(&c.servers[0].address(), "w", 0);
    wait_until(20, "writes flowing", || async { w.count() > 200 }).await;
    let r = keepup_db::switchover(&c.section, "db-2")
        .await
        .expect("switchover");
    w.retarget(&c.servers[1].address());
    println!("{r:#?}");
    assert_eq!(r.new_primary, "db-2");
    assert!(r.not_repointed.is_empty(), "{:?}", r.not_repointed);
    let before = w.count();
    wait_until(20, "writes on the new primary", || async {
        w.count() > before + 200
    })
    .await;
    let (acked, gap) = w.finish().await;
    println!(
        "switchover: {} ms unavailable (keepup), longest client gap {gap:?}",
        r.write_unavailable_ms
    );
    let st = observe(&c.section).await;
    println!("{}", keepup_db::render(&st));
    assert_eq!(st.primary.as_deref(), Some("db-2"));
    assert_eq!(st.server("db-1").map(|s| s.role), Some(Role::Replica));
    assert!(st.server("db-1").is_some_and(|s| s.read_only));
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    // Let the replicas apply everything, then every acked row is everywhere.
    keepup_db::checksum(&c.section)
        .await
        .expect("checksum wait");
    for s in &c.servers {
        let present = values(&s.address()).await;
        let lost = missing(&acked, &present);
        assert!(
            lost.is_empty(),
            "{}: {} acked rows missing",
            s.name(),
            lost.len()
        );
    }
    // Switching to the current primary is a no-op.
    let same = keepup_db::switchover(&c.section, "db-2")
        .await
        .expect("noop");
    assert_eq!(same.write_unavailable_ms, 0.0);
}

async fn kill9_scenario(test: &str, semi_sync: bool) {
    let mut c = healthy_cluster(test, semi_sync).await;
    if semi_sync {
        let st = observe(&c.section).await;
        let p = st.server("db-1").expect("db-1");
        assert!(
            p.semi_sync.master_active,
            "semi-sync active before the kill: {:?}",
            p.semi_sync
        );
    }
    let w = Writer::start(&c.servers[0].address(), "w", 0);
    wait_until(20, "writes flowing", || async { w.count() > 300 }).await;
    c.servers[0].kill9();
    let acked_before_kill = w.count();
    let r = keepup_db::promote_after_failure(&c.section, "db-1")
        .await
        .expect("promote");
    println!("{r:#?}");
    let newp = c
        .section
        .server(&r.new_primary)
        .expect("new primary")
        .address
        .clone();
    w.retarget(&newp);
    wait_until(20, "writes on the new primary", || async {
        w.count() > acked_before_kill + 100
    })
    .await;
    let (acked, gap) = w.finish().await;
    keepup_db::checksum(&c.section).await.ok();
    let present = values(&newp).await;
    let lost = missing(&acked, &present);
    println!(
        "kill -9 ({}): promoted {} in {:.0} ms; client gap {gap:?}; {} acked, {} acknowledged writes lost",
        if semi_sync { "semi-sync" } else { "async" },
        r.new_primary,
        r.took_ms,
        acked.len(),
        lost.len()
    );
    if semi_sync {
        assert!(
            lost.is_empty(),
            "semi-sync lost acknowledged writes: {lost:?}"
        );
    }
    // The surviving replica follows the new primary and has everything too.
    let st = observe(&c.section).await;
    println!("{}", keepup_db::render(&st));
    assert_eq!(st.primary.as_deref(), Some(r.new_primary.as_str()));
    assert_eq!(r.repointed.len(), 1);

    // The old primary returns, writable (no read_only in its options):
    // observe fences it and says what to do; nothing rejoins by itself.
    c.servers[0].restart().expect("restart old primary");
    let st = observe(&c.section).await;
    println!("{}", keepup_db::render(&st));
    let old = st.server("db-1").expect("db-1");
    assert!(old.read_only, "returning old primary must be read-only");
    assert!(
        st.actions.iter().any(|a| a.contains("db-1")),
        "{:?}",
        st.actions
    );
    let p = st
        .problems
        .iter()
        .find(|p| p.server.as_deref() == Some("db-1") && p.kind == "detached")
        .expect("a problem about db-1");
    println!("advice for db-1: {p}");
    let st2 = observe(&c.section).await;
    assert_eq!(
        st2.primary.as_deref(),
        Some(r.new_primary.as_str()),
        "old primary must not take over"
    );
    // setup rejoins it only if its history is contained in the new primary's.
    match setup(&c.section).await {
        Ok(rep) => {
            assert!(
                p.message.contains("can rejoin safely"),
                "setup rejoined although advice was: {p}"
            );
            println!("rejoined: {:?}", rep.changes);
        }
        Err(e) => {
            println!("setup refused as expected: {e}");
            assert!(e.to_string().contains("--reseed db-1"), "{e}");
            let rep = keepup_db::setup_with(
                &c.section,
                &keepup_db::SetupOptions {
                    reseed: vec!["db-1".into()],
                },
            )
            .await
            .expect("reseed");
            println!("re-seeded: {:?}", rep.changes);
        }
    }
    let st = observe(&c.section).await;
    println!("{}", keepup_db::render(&st));
    assert_eq!(st.server("db-1").map(|s| s.role), Some(Role::Replica));
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    let present = values(&c.servers[0].address()).await;
    assert!(missing(&acked, &present).len() <= lost.len());

    if semi_sync {
        // Trap: after rpl_semi_sync_master_timeout the primary silently
        // falls back to async. keepup must say so.
        let newp_addr = c.section.server(&r.new_primary).expect("p").address.clone();
        use mysql_async::prelude::Queryable;
        for s in c.section.server.iter().filter(|s| s.name != r.new_primary) {
            let mut x = admin(&s.address).await;
            x.query_drop("STOP SLAVE IO_THREAD").await.expect("stop io");
        }
        let mut p = admin(&newp_addr).await;
        p.query_drop("SET GLOBAL rpl_semi_sync_master_timeout = 200")
            .await
            .expect("timeout");
        p.query_drop("INSERT INTO app.t (v, src) VALUES (-100, 'fallback')")
            .await
            .expect("insert");
        let st = observe(&c.section).await;
        println!("{}", keepup_db::render(&st));
        let f = st
            .problems
            .iter()
            .find(|p| p.kind == "semi_sync_fallback")
            .expect("fallback reported");
        assert!(f.message.contains("acknowledged writes at risk"), "{f}");
    }
}

/// Issue 4, failover without semi-sync: kill -9 of the primary under writes;
/// lost acknowledged writes are counted (async replication may lose some),
/// and the returning old primary stays read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_primary_async_and_old_primary_returns_read_only() {
    guard(
        180,
        kill9_primary_async_and_old_primary_returns_read_only_body(),
    )
    .await
}

async fn kill9_primary_async_and_old_primary_returns_read_only_body() {
    if !can_run("kill9_primary_async_and_old_primary_returns_read_only") {
        return;
    }
    kill9_scenario("kill9-async", false).await;
}

/// Issue 4, failover with semi-sync: no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_primary_semi_sync_loses_no_acknowledged_write() {
    guard(
        180,
        kill9_primary_semi_sync_loses_no_acknowledged_write_body(),
    )
    .await
}

async fn kill9_primary_semi_sync_loses_no_acknowledged_write_body() {
    if !can_run("kill9_primary_semi_sync_loses_no_acknowledged_write") {
        return;
    }
    kill9_scenario("kill9-semisync", true).await;
}

/// Issue 4, master-master with writes on both: concurrent inserts get no
/// id collisions (auto_increment offsets), both servers end identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_master_concurrent_inserts() {
    guard(180, master_master_concurrent_inserts_body()).await
}

async fn master_master_concurrent_inserts_body() {
    if !can_run("master_master_concurrent_inserts") {
        return;
    }
    let mut c = cluster("mm", 2, |i| LocalServerOptions::new(i as u32 + 1));
    c.section.topology = keepup_config::DbTopology::MasterMaster;
    c.section.writes_on_both = true;
    app_schema(&c.servers[0].address()).await;
    let r = setup(&c.section).await.expect("setup");
    println!("{r:#?}");
    assert!(r.changes.iter().any(|c| c.contains("gtid_domain_id")));
    let again = setup(&c.section).await.expect("again");
    assert!(again.unchanged(), "{:?}", again.changes);
    let st = observe(&c.section).await;
    println!("{}", keepup_db::render(&st));
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    let a = Writer::start(&c.servers[0].address(), "a", 0);
    let b = Writer::start(&c.servers[1].address(), "b", 1_000_000_000);
    wait_until(30, "writes on both", || async {
        a.count() > 300 && b.count() > 300
    })
    .await;
    let (aa, _) = a.finish().await;
    let (bb, _) = b.finish().await;
    let cs = keepup_db::checksum(&c.section).await.expect("checksum");
    assert!(cs.mismatches.is_empty(), "{:?}", cs.mismatches);
    for s in &c.servers {
        let present = values(&s.address()).await;
        assert!(missing(&aa, &present).is_empty() && missing(&bb, &present).is_empty());
        let mut conn = admin(&s.address()).await;
        use mysql_async::prelude::Queryable;
        let n: Option<i64> = conn
            .query_first("SELECT COUNT(*) FROM app.t")
            .await
            .expect("count");
        assert_eq!(n, Some((aa.len() + bb.len()) as i64));
    }
    let st = observe(&c.section).await;
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    // Divergence finder: a row changed on one side only is found.
    let mut conn = admin(&c.servers[1].address()).await;
    use mysql_async::prelude::Queryable;
    conn.query_drop("SET sql_log_bin=0; UPDATE app.t SET src='x' ORDER BY id LIMIT 1")
        .await
        .expect("diverge");
    let cs = keepup_db::checksum(&c.section).await.expect("checksum");
    assert_eq!(cs.mismatches.len(), 1, "{:?}", cs.mismatches);
}

/// Issue 4, bad situations: wrong credentials, an unreachable server, a
/// server_id collision and a wrongly configured server each refuse setup
/// with a clear message, changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_refuses_bad_servers() {
    guard(180, setup_refuses_bad_servers_body()).await
}

async fn setup_refuses_bad_servers_body() {
    if !can_run("setup_refuses_bad_servers") {
        return;
    }
    let c = cluster("bad", 3, |i| {
        let mut o = LocalServerOptions::new(if i == 2 { 2 } else { i as u32 + 1 });
        if i == 1 {
            o.binlog_format = "STATEMENT".into();
            o.log_slave_updates = false;
        }
        o
    });
    let e = setup(&c.section)
        .await
        .expect_err("must refuse")
        .to_string();
    println!("{e}");
    assert!(e.contains("share server_id 2"), "{e}");
    assert!(e.contains("binlog_format is STATEMENT"), "{e}");
    assert!(e.contains("log_slave_updates is off"), "{e}");
    assert!(e.contains("nothing was changed"), "{e}");
    // Nothing was changed: no replication account anywhere.
    for s in &c.servers {
        let mut conn = admin(&s.address()).await;
        use mysql_async::prelude::Queryable;
        let n: Option<i64> = conn
            .query_first("SELECT COUNT(*) FROM mysql.user WHERE User = 'keepup_repl'")
            .await
            .expect("count");
        assert_eq!(n, Some(0));
    }

    // Wrong credentials.
    let mut wrong = c.section.clone();
    let bad = c.dir.join("bad.cnf");
    std::fs::write(&bad, "user = keepup_admin\npassword = nope\n").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    wrong.admin_credentials_file = bad;
    let e = setup(&wrong).await.expect_err("wrong password").to_string();
    println!("{e}");
    assert!(
        e.contains("refused user \"keepup_admin\"") && e.contains("1045"),
        "{e}"
    );

    // Unreachable.
    let mut gone = c.section.clone();
    let port = keepup_db::local_server::free_port().expect("port");
    gone.server[2].address = format!("127.0.0.1:{port}");
    let e = setup(&gone).await.expect_err("unreachable").to_string();
    println!("{e}");
    assert!(e.contains("db-3") && e.contains("unreachable"), "{e}");
    let st = observe(&gone).await;
    assert!(st
        .problems
        .iter()
        .any(|p| p.kind == "down" && p.server.as_deref() == Some("db-3")));
    assert!(
        st.problems.iter().any(|p| p.kind == "server_id_collision")
            || st.servers.iter().filter(|s| s.up).count() == 2
    );
}

/// Issue 4, bad situations: a replica with errant writes and a replica whose
/// SQL thread stopped on an error are reported with advice, never promoted,
/// and nothing is done automatically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errant_writes_and_stopped_sql_thread_are_reported_not_touched() {
    guard(
        180,
        errant_writes_and_stopped_sql_thread_are_reported_not_touched_body(),
    )
    .await
}

async fn errant_writes_and_stopped_sql_thread_are_reported_not_touched_body() {
    if !can_run("errant_writes_and_stopped_sql_thread_are_reported_not_touched") {
        return;
    }
    let mut c = healthy_cluster("errant", false).await;
    use mysql_async::prelude::Queryable;
    // db-2: an admin (read_only does not stop it) writes on the replica.
    let mut b = admin(&c.servers[1].address()).await;
    b.query_drop("INSERT INTO app.t (v, src) VALUES (-1, 'errant')")
        .await
        .expect("errant write");
    // db-3: a local row (binlog off, so not errant) that the primary then also writes.
    let mut cc = admin(&c.servers[2].address()).await;
    cc.query_drop("SET sql_log_bin=0; INSERT INTO app.t (v, src) VALUES (-2, 'local')")
        .await
        .expect("local");
    let mut a = admin(&c.servers[0].address()).await;
    a.query_drop("INSERT INTO app.t (v, src) VALUES (-2, 'primary')")
        .await
        .expect("primary write");
    wait_until(10, "db-3 SQL thread to stop", || async {
        let st = observe(&c.section).await;
        st.problems.iter().any(|p| p.kind == "sql_thread_stopped")
    })
    .await;
    let st = observe(&c.section).await;
    println!("{}", keepup_db::render(&st));
    let errant = st
        .problems
        .iter()
        .find(|p| p.kind == "errant_transactions")
        .expect("errant reported");
    assert_eq!(errant.server.as_deref(), Some("db-2"));
    assert!(errant.advice.contains("--reseed db-2"));
    // db-2's own write also stops its SQL thread (GTID strict mode, error
    // 1950: out-of-order sequence number) as soon as the primary writes.
    let sql = st
        .problems
        .iter()
        .find(|p| p.kind == "sql_thread_stopped" && p.server.as_deref() == Some("db-3"))
        .expect("sql stop reported");
    assert!(sql.message.contains("1062"), "{}", sql.message);
    // Switchover to either is refused; setup refuses too.
    let e = keepup_db::switchover(&c.section, "db-2")
        .await
        .expect_err("errant target")
        .to_string();
    assert!(e.contains("errant"), "{e}");
    let e = keepup_db::switchover(&c.section, "db-3")
        .await
        .expect_err("broken target")
        .to_string();
    assert!(e.contains("threads"), "{e}");
    let e = setup(&c.section)
        .await
        .expect_err("setup refuses")
        .to_string();
    println!("{e}");
    assert!(e.contains("errant") && e.contains("1062"), "{e}");
    // The primary dies: neither may be promoted, nothing is changed.
    c.servers[0].kill9();
    let e = keepup_db::promote_after_failure(&c.section, "db-1")
        .await
        .expect_err("no candidate")
        .to_string();
    println!("{e}");
    assert!(e.contains("no replica can be promoted"), "{e}");
    let st = observe(&c.section).await;
    assert!(
        st.server("db-2").is_some_and(|s| s.read_only)
            && st.server("db-3").is_some_and(|s| s.read_only)
    );
}

/// Issue 4, master-master as `keepup demo` runs it: the second master stays
/// read-only; switchover under writes moves the writer with nothing lost;
/// kill -9 of the new primary promotes the other one; the returning server
/// is fenced read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_master_switchover_and_failover() {
    guard(180, master_master_switchover_and_failover_body()).await
}

async fn master_master_switchover_and_failover_body() {
    if !can_run("master_master_switchover_and_failover") {
        return;
    }
    let mut c = cluster("mm-so", 2, |i| {
        let mut o = LocalServerOptions::new(i as u32 + 1);
        o.gtid_domain_id = i as u32 + 1;
        o
    });
    c.section.topology = keepup_config::DbTopology::MasterMaster;
    c.section.semi_sync = true;
    app_schema(&c.servers[0].address()).await;
    let r = match setup(&c.section).await {
        Ok(r) => r,
        Err(e) => {
            for s in &c.servers {
                println!("--- {} log:\n{}", s.name(), s.log_tail(25));
                dump_replication(&s.address()).await;
            }
            panic!("setup: {e}");
        }
    };
    println!("{r:#?}");
    assert!(
        !r.changes.iter().any(|c| c.contains("gtid_domain_id")),
        "domains were distinct already"
    );
    // Issue #10: "setup verifies both directions in master-master".
    assert!(
        r.verified
            .iter()
            .any(|v| v.contains("db-1: verification row from db-2")),
        "{:?}",
        r.verified
    );
    let st = observe(&c.section).await;
    println!("{}", keepup_db::render(&st));
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    assert_eq!(st.primary.as_deref(), Some("db-1"));
    assert!(st
        .server("db-2")
        .is_some_and(|s| s.read_only && s.role == Role::Replica));

    let w = Writer::start(&c.servers[0].address(), "w", 0);
    wait_until(20, "writes", || async { w.count() > 200 }).await;
    let so = keepup_db::switchover(&c.section, "db-2")
        .await
        .expect("switchover");
    w.retarget(&c.servers[1].address());
    println!(
        "master-master switchover: {:.1} ms",
        so.write_unavailable_ms
    );
    let n = w.count();
    wait_until(20, "writes on db-2", || async { w.count() > n + 200 }).await;
    let st = observe(&c.section).await;
    assert_eq!(st.primary.as_deref(), Some("db-2"));
    assert!(st.server("db-1").is_some_and(|s| s.read_only));

    // kill -9 of db-2: db-1 takes over with every acknowledged write (semi-sync).
    let st = observe(&c.section).await;
    println!("{}", keepup_db::render(&st));
    let p2 = st.server("db-2").expect("db-2");
    assert!(
        p2.semi_sync.master_active && p2.semi_sync.master_clients == 1,
        "semi-sync on db-2 before the kill: {:?}",
        p2.semi_sync
    );
    c.servers[1].kill9();
    let p = keepup_db::promote_after_failure(&c.section, "db-2")
        .await
        .expect("promote");
    assert_eq!(p.new_primary, "db-1");
    w.retarget(&c.servers[0].address());
    let n = w.count();
    wait_until(20, "writes on db-1", || async { w.count() > n + 100 }).await;
    let (acked, _) = w.finish().await;
    let present = values(&c.servers[0].address()).await;
    assert!(
        missing(&acked, &present).is_empty(),
        "lost acknowledged writes"
    );

    // db-2 returns writable and starts replicating again by itself: fenced.
    c.servers[1].restart().expect("restart");
    let st = observe(&c.section).await;
    println!("{}", keepup_db::render(&st));
    assert_eq!(st.primary.as_deref(), Some("db-1"));
    assert!(
        st.server("db-2").is_some_and(|s| s.read_only),
        "returning master must be read-only"
    );
}

/// Issue #10, "acknowledged writes lost without a word" and "semi-sync
/// silently left in async": with both replicas receiving nothing, a
/// strict-mode primary (the default) acknowledges no commit, so a failover
/// then cannot lose an acknowledged one, and `observe` says why writes wait;
/// relaxed mode acknowledges after its timeout and reports "acknowledged
/// writes at risk".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_semi_sync_acknowledges_nothing_no_replica_has() {
    guard(240, strict_semi_sync_body()).await
}

async fn strict_semi_sync_body() {
    use mysql_async::prelude::Queryable;
    if !can_run("strict_semi_sync_acknowledges_nothing_no_replica_has") {
        return;
    }
    let mut c = cluster("strict", 3, |i| LocalServerOptions::new(i as u32 + 1));
    c.section.semi_sync = true;
    let primary = c.servers[0].address();
    app_schema(&primary).await;
    setup(&c.section).await.expect("setup");
    let mut p = admin(&primary).await;
    let timeout: Option<u64> = p
        .query_first("SELECT @@GLOBAL.rpl_semi_sync_master_timeout")
        .await
        .unwrap();
    assert_eq!(
        timeout,
        Some(keepup_config::STRICT_SEMI_SYNC_TIMEOUT_MS),
        "strict mode never falls back"
    );
    let cut = |on: bool| {
        let addrs: Vec<String> = c.servers[1..].iter().map(|s| s.address()).collect();
        async move {
            for a in addrs {
                let mut r = admin(&a).await;
                r.query_drop(if on {
                    "STOP SLAVE IO_THREAD"
                } else {
                    "START SLAVE IO_THREAD"
                })
                .await
                .unwrap();
                let _ = r.disconnect().await;
            }
        }
    };
    cut(true).await;
    let mut app = conn(&primary, "app", "app-pw").await;
    let ack = tokio::time::timeout(
        Duration::from_secs(2),
        app.query_drop("INSERT INTO app.t (v, src) VALUES (1, 'strict')"),
    )
    .await;
    assert!(
        ack.is_err(),
        "strict: acknowledged without a replica: {ack:?}"
    );
    drop(app);
    let st = observe(&c.section).await;
    assert!(
        st.problems
            .iter()
            .any(|x| x.kind == "writes_blocked" && x.server.as_deref() == Some("db-1")),
        "{:?}",
        st.problems
    );
    // The replicas return: the waiting commit completes, and nothing is
    // reported any more.
    cut(false).await;
    let t = std::time::Instant::now();
    loop {
        let st = observe(&c.section).await;
        if !st.problems.iter().any(|x| x.kind == "writes_blocked") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", st.problems);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Relaxed: the fallback after the timeout, reported.
    c.section.semi_sync_relaxed = true;
    c.section.semi_sync_timeout_ms = keepup_config::Millis(300);
    setup(&c.section).await.expect("setup relaxed");
    cut(true).await;
    let mut app = conn(&primary, "app", "app-pw").await;
    tokio::time::timeout(
        Duration::from_secs(5),
        app.query_drop("INSERT INTO app.t (v, src) VALUES (2, 'relaxed')"),
    )
    .await
    .expect("relaxed acknowledges after its timeout")
    .unwrap();
    let st = observe(&c.section).await;
    assert!(
        st.problems.iter().any(|x| x.kind == "semi_sync_fallback"),
        "{:?}",
        st.problems
    );
    cut(false).await;
    let _ = p.disconnect().await;
}
