//! Issue #10, "cannot connect taken for stopped": only a refused connection
//! proves a server takes no writes. `make_read_only` (the db-primary stop
//! and a fencing new holder) against a real mariadbd: it makes the server
//! read-only and kills client connections; a full server (error 1040) and a
//! server that accepts and never answers are errors that are *not* "down",
//! while the server stays writable; a closed port is "down".

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use keepup_db::local_server::LocalServerOptions;
use keepup_db::make_read_only;
use mysql_async::prelude::Queryable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_refused_connection_counts_as_down() {
    guard(120, body()).await
}

async fn read_only(addr: &str) -> bool {
    let mut c = admin(addr).await;
    let v: Option<i64> = c.query_first("SELECT @@GLOBAL.read_only").await.unwrap();
    let _ = c.disconnect().await;
    v == Some(1)
}

async fn body() {
    if !can_run("only_a_refused_connection_counts_as_down") {
        return;
    }
    let c = cluster("fence", 1, |_| LocalServerOptions::new(1));
    let addr = c.servers[0].address();
    app_schema(&addr).await;

    // Answers: read-only, and the application's open connection is gone.
    let mut app = conn(&addr, "app", "app-pw").await;
    app.query_drop("INSERT INTO app.t (v, src) VALUES (1, 'x')")
        .await
        .unwrap();
    let killed = make_read_only(&c.section, "db-1").await.expect("fenced");
    assert!(killed >= 1, "the app connection was killed ({killed})");
    assert!(read_only(&addr).await);
    assert!(
        app.query_drop("INSERT INTO app.t (v, src) VALUES (2, 'x')")
            .await
            .is_err(),
        "the killed connection cannot write"
    );

    // Full for keepup's account (error 1226, max_user_connections reached;
    // SUPER accounts are exempt from max_connections): unknown, not down,
    // and the server still writable.
    let mut keep = admin(&addr).await;
    keep.query_drop(
        "SET GLOBAL read_only = 0; \
         ALTER USER 'keepup_admin'@'127.0.0.1' WITH MAX_USER_CONNECTIONS 2",
    )
    .await
    .unwrap();
    let _ = keep.disconnect().await;
    let held = vec![admin(&addr).await, admin(&addr).await];
    let e = make_read_only(&c.section, "db-1").await.expect_err("full");
    let text = e.to_string();
    assert!(
        text.contains("1226") || text.contains("max_user_connections"),
        "{text}"
    );
    assert!(
        !e.positively_down(),
        "a full server is not a stopped one: {text}"
    );
    for h in held {
        let _ = h.disconnect().await;
    }
    let mut keep = admin(&addr).await;
    let ro: Option<i64> = keep.query_first("SELECT @@GLOBAL.read_only").await.unwrap();
    assert_eq!(
        ro,
        Some(0),
        "still writable: calling this a stop would be a lie"
    );
    keep.query_drop("ALTER USER 'keepup_admin'@'127.0.0.1' WITH MAX_USER_CONNECTIONS 0")
        .await
        .unwrap();
    let _ = keep.disconnect().await;

    // "Too many connections" as MariaDB sends it when max_connections is
    // reached: an error packet (1040, SQLSTATE 08004) instead of the greeting.
    let full = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let full_addr = full.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::Write;
        let msg = b"Too many connections";
        let mut body = vec![0xff, 0x10, 0x04, b'#'];
        body.extend_from_slice(b"08004");
        body.extend_from_slice(msg);
        let mut pkt = vec![body.len() as u8, 0, 0, 0];
        pkt.extend_from_slice(&body);
        while let Ok((mut s, _)) = full.accept() {
            let _ = s.write_all(&pkt);
        }
    });
    let mut crowded = c.section.clone();
    crowded.server[0].address = full_addr;
    let e = make_read_only(&crowded, "db-1").await.expect_err("1040");
    assert!(e.to_string().contains("1040"), "{e}");
    assert!(!e.positively_down(), "{e}");

    // Accepts and never answers (hung, or a black hole): unknown.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut hung = c.section.clone();
    hung.server[0].address = listener.local_addr().unwrap().to_string();
    hung.connect_timeout_ms = keepup_config::Millis(300);
    let e = make_read_only(&hung, "db-1").await.expect_err("no answer");
    assert!(!e.positively_down(), "{e}");
    drop(listener);

    // Nothing listens: refused, positively down.
    let mut gone = c.section.clone();
    gone.server[0].address = format!(
        "127.0.0.1:{}",
        keepup_db::local_server::free_port().unwrap()
    );
    let e = make_read_only(&gone, "db-1").await.expect_err("refused");
    assert!(e.positively_down(), "{e}");
}

/// Issue #10, "takeover without catch-up (master-master)": the second
/// master, opened after a clean stop of the first, must first apply what it
/// received and everything the first has. Its SQL thread runs 2 s behind
/// (MASTER_DELAY); `catch_up_before_opening` returns only once every row of
/// the first master is applied, and refuses when the first master does not
/// answer in time (it may hold writes never received).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_master_catches_up_before_it_opens() {
    guard(180, catch_up_body()).await
}

async fn catch_up_body() {
    if !can_run("a_second_master_catches_up_before_it_opens") {
        return;
    }
    let mut c = cluster("catchup", 2, |i| {
        let mut o = LocalServerOptions::new(i as u32 + 1);
        o.gtid_domain_id = i as u32 + 1;
        o
    });
    c.section.topology = keepup_config::DbTopology::MasterMaster;
    let (a1, a2) = (c.servers[0].address(), c.servers[1].address());
    app_schema(&a1).await;
    keepup_db::setup(&c.section).await.expect("setup");
    let mut r = admin(&a2).await;
    r.query_drop("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 2; START SLAVE")
        .await
        .unwrap();
    let mut p = admin(&a1).await;
    for v in 0..50 {
        p.query_drop(format!("INSERT INTO app.t (v, src) VALUES ({v}, 'db-1')"))
            .await
            .unwrap();
    }
    // The clean stop of db-1's owner: read-only, clients killed.
    make_read_only(&c.section, "db-1").await.expect("demote");
    assert!(
        values(&a2).await.len() < 50,
        "the delay keeps db-2 behind (else this test proves nothing)"
    );
    let st = keepup_db::observe(&c.section).await;
    let received = st
        .server("db-2")
        .and_then(|s| s.replication.as_ref())
        .map(|r| r.gtid_io_pos.clone())
        .unwrap_or_default();
    let how = keepup_db::catch_up_before_opening(&c.section, "db-2", Some("db-1"), &received)
        .await
        .expect("caught up");
    assert!(matches!(how, keepup_db::CaughtUp::WithPeer(_)), "{how:?}");
    assert_eq!(
        values(&a2).await.len(),
        50,
        "every row of db-1 is applied on db-2"
    );

    // A peer that does not answer in time: refuse.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut hung = c.section.clone();
    hung.server[0].address = listener.local_addr().unwrap().to_string();
    hung.connect_timeout_ms = keepup_config::Millis(300);
    let e = keepup_db::catch_up_before_opening(&hung, "db-2", Some("db-1"), "")
        .await
        .expect_err("unknown peer");
    assert!(!e.positively_down(), "{e}");
    r.query_drop("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE")
        .await
        .unwrap();
    let _ = r.disconnect().await;
    let _ = p.disconnect().await;
}

/// Issue #10, "a replica that receives nothing shown healthy": with no
/// heartbeat row from its source (here: deleted, and new ones held back by
/// MASTER_DELAY while both threads run), the lag is unknown and a problem,
/// never `Seconds_Behind_Master`'s reassuring guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_without_a_heartbeat_is_unknown_and_a_problem() {
    guard(180, lag_body()).await
}

async fn lag_body() {
    if !can_run("lag_without_a_heartbeat_is_unknown_and_a_problem") {
        return;
    }
    let c = cluster("lag", 2, |i| LocalServerOptions::new(i as u32 + 1));
    let a2 = c.servers[1].address();
    app_schema(&c.servers[0].address()).await;
    keepup_db::setup(&c.section).await.expect("setup");
    let st = keepup_db::observe(&c.section).await;
    assert!(
        st.server("db-2").and_then(|s| s.lag_seconds).is_some(),
        "healthy: lag known"
    );
    let mut r = admin(&a2).await;
    r.query_drop(format!(
        "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 60; START SLAVE; \
         SET SESSION sql_log_bin = 0; DELETE FROM {}.heartbeat",
        keepup_db::KEEPUP_SCHEMA
    ))
    .await
    .unwrap();
    // The restarted IO thread reconnects ("Preparing", "Connecting") first.
    let t0 = std::time::Instant::now();
    let st = loop {
        let st = keepup_db::observe(&c.section).await;
        let r2 = st
            .server("db-2")
            .and_then(|s| s.replication.clone())
            .unwrap();
        if (r2.io_running.as_str(), r2.sql_running.as_str()) == ("Yes", "Yes") {
            break st;
        }
        assert!(
            t0.elapsed().as_secs() < 10,
            "threads never both ran: {r2:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let s = st.server("db-2").unwrap();
    assert_eq!(s.lag_seconds, None, "no heartbeat: unknown");
    assert!(
        st.problems
            .iter()
            .any(|p| p.kind == "lag_unknown" && p.server.as_deref() == Some("db-2")),
        "{:?}",
        st.problems
    );
    r.query_drop("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE")
        .await
        .unwrap();
    let _ = r.disconnect().await;
}

/// Found by the fault test (crates/keepup/tests/db_faults.rs): a partitioned
/// holder's stop took 4 s, because `SET GLOBAL read_only` waits for commits
/// in flight, and in strict semi-sync those wait for an ACK no replica can
/// send. Meanwhile the new holder had opened its server: two writable
/// servers for 3.6 s. The stop must not wait for such commits: it kills the
/// clients first (a killed commit is not acknowledged to its client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn making_a_primary_read_only_does_not_wait_for_commits_blocked_on_semi_sync() {
    guard(120, blocked_commit_body()).await
}

async fn blocked_commit_body() {
    if !can_run("making_a_primary_read_only_does_not_wait_for_commits_blocked_on_semi_sync") {
        return;
    }
    let mut c = cluster("fence-blocked", 2, |i| {
        LocalServerOptions::new(i as u32 + 1)
    });
    c.section.semi_sync = true;
    let addr = c.servers[0].address();
    app_schema(&addr).await;
    keepup_db::setup(&c.section).await.expect("setup");
    // The replica receives nothing: every commit on the primary waits.
    let mut r = admin(&c.servers[1].address()).await;
    r.query_drop("STOP SLAVE IO_THREAD").await.unwrap();
    let blocked = tokio::spawn({
        let addr = addr.clone();
        async move {
            let mut app = conn(&addr, "app", "app-pw").await;
            app.query_drop("INSERT INTO app.t (v, src) VALUES (7, 'blocked')")
                .await
        }
    });
    // Until the insert waits for its ACK.
    let mut p = admin(&addr).await;
    wait_until(20, "a commit waiting for a semi-sync ACK", || {
        let addr = addr.clone();
        async move {
            let mut p = admin(&addr).await;
            let n: Option<i64> = p
                .query_first(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE LIKE '%semi-sync ACK%'",
                )
                .await
                .unwrap();
            let _ = p.disconnect().await;
            n.unwrap_or(0) > 0
        }
    })
    .await;
    let fenced = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        make_read_only(&c.section, "db-1"),
    )
    .await
    .expect("make_read_only returned (it waited for the blocked commit)");
    assert!(fenced.is_ok(), "{fenced:?}");
    assert!(read_only(&addr).await);
    let insert = blocked.await.unwrap();
    assert!(
        insert.is_err(),
        "the blocked commit must not be acknowledged to its client"
    );
    let _ = p.query_drop("SET GLOBAL read_only = 0").await;
    r.query_drop("START SLAVE IO_THREAD").await.unwrap();
    let _ = p.disconnect().await;
    let _ = r.disconnect().await;
}
