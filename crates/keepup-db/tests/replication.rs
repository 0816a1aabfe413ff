//! Scenarios against real local mariadbd servers (issue 4). Each test starts
//! its own servers on free 127.0.0.1 ports; they are killed by PID on drop.

mod common;

use common::*;
use keepup_db::local_server::LocalServerOptions;
use keepup_db::{observe, setup, Role};
use std::time::Duration;

/// Issue 4, setup: a primary and two empty replicas; seeding, GTID
/// replication, verification; a second run changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_master_slave_two_replicas_is_idempotent() {
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
    let _ = Duration::from_secs(0);
}
