//! The lab itself: hosts on a bridge reach each other; a partition cuts them.

#![allow(clippy::unwrap_used)]

use keepup_testkit::{lab::Lab, require};

#[test]
fn hosts_ping_each_other_and_partition_cuts() {
    if !require::root("hosts_ping_each_other_and_partition_cuts")
        || !require::has_program("hosts_ping_each_other_and_partition_cuts", "nft")
    {
        return;
    }
    let mut lab = Lab::new(2).expect("lab");
    lab.add_host("a", 1).expect("a");
    lab.add_host("b", 2).expect("b");
    lab.run("a", "ping", &["-c1", "-W1", "10.77.0.2"])
        .expect("link 0");
    lab.run("a", "ping", &["-c1", "-W1", "10.77.1.2"])
        .expect("link 1");
    lab.partition("b", true).expect("cut");
    assert!(lab.run("a", "ping", &["-c1", "-W1", "10.77.0.2"]).is_err());
    lab.partition("b", false).expect("heal");
    lab.run("a", "ping", &["-c1", "-W1", "10.77.0.2"])
        .expect("healed");
    lab.set_link("b", 1, false).expect("down");
    assert!(lab.run("a", "ping", &["-c1", "-W1", "10.77.1.2"]).is_err());
}
