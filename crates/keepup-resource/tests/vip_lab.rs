//! The `vip` resource against real network namespaces (keepup_testkit::lab):
//! the address really appears and disappears, operations are idempotent,
//! the monitor restores a deleted address, and a gratuitous ARP / unsolicited
//! NA really rewrites a neighbour's cache.
//!
//! Needs root and `ip`; skips with a reason otherwise (fails under CI=true).

#![allow(clippy::unwrap_used)]

mod common;

use common::{eventually, mac_of, neigh_mac, NsThread};
use keepup_config::VipResource;
use keepup_resource::vip::Vip;
use keepup_resource::{Health, Resource};
use keepup_testkit::lab::{sh, Lab};
use keepup_testkit::require;
use std::sync::Arc;
use std::time::Duration;

fn can_run(test: &str) -> bool {
    require::root(test) && require::has_program(test, "ip") && require::has_program(test, "ping")
}

fn vip_cfg(address: &str, garp_count: u32) -> VipResource {
    VipResource {
        address: address.to_string(),
        interface: "eth0".to_string(),
        garp_count,
        garp_interval_ms: keepup_config::Millis(50),
        monitor_interval_ms: keepup_config::Millis(1000),
    }
}

/// Times `address` (with prefix) is on `dev` in `ns`.
fn count_addr(ns: &str, address: &str) -> usize {
    let out = sh("ip", &["-n", ns, "addr", "show", "dev", "eth0"]).unwrap_or_default();
    out.split_whitespace().filter(|w| *w == address).count()
}

// Issue: "add the address through netlink ... remove it on release; monitor
// notices if it vanished and restores it; idempotent".
#[test]
fn vip_lifecycle_in_namespace() {
    let test = "vip_lifecycle_in_namespace";
    if !can_run(test) {
        return;
    }
    let mut lab = Lab::new(1).expect("lab");
    let a = lab.add_host("a", 1).expect("host a");
    let ns = NsThread::enter(&a.ns).expect("enter a");

    for address in ["10.77.0.100/24", "fd00:77::100/64"] {
        let vip = Arc::new(Vip::new(&vip_cfg(address, 2)).expect("config"));
        let v = Arc::clone(&vip);
        ns.run(move || async move { v.start().await })
            .expect("start");
        assert_eq!(count_addr(&a.ns, address), 1, "{address} added");

        let v = Arc::clone(&vip);
        ns.run(move || async move { v.start().await })
            .expect("second start is fine");
        assert_eq!(count_addr(&a.ns, address), 1, "{address} still once");

        let v = Arc::clone(&vip);
        assert_eq!(
            ns.run(move || async move { v.monitor().await })
                .expect("monitor"),
            Health::Running
        );

        sh("ip", &["-n", &a.ns, "addr", "del", address, "dev", "eth0"]).expect("ip addr del");
        assert_eq!(count_addr(&a.ns, address), 0);
        let v = Arc::clone(&vip);
        let h = ns
            .run(move || async move { v.monitor().await })
            .expect("monitor");
        assert!(
            matches!(h, Health::Restored(ref what) if what.contains("re-added")),
            "{h:?}"
        );
        assert_eq!(count_addr(&a.ns, address), 1, "{address} restored");

        let v = Arc::clone(&vip);
        ns.run(move || async move { v.stop().await }).expect("stop");
        assert_eq!(count_addr(&a.ns, address), 0, "{address} removed");
        let v = Arc::clone(&vip);
        ns.run(move || async move { v.stop().await })
            .expect("second stop is fine");
    }

    // The primary address is untouched by all of this.
    assert_eq!(count_addr(&a.ns, "10.77.0.1/24"), 1);

    // A downed interface is a failure the monitor cannot repair.
    let vip = Arc::new(Vip::new(&vip_cfg("10.77.0.100/24", 1)).expect("config"));
    let v = Arc::clone(&vip);
    ns.run(move || async move { v.start().await })
        .expect("start");
    lab.set_link("a", 0, false).expect("link down");
    let v = Arc::clone(&vip);
    let h = ns
        .run(move || async move { v.monitor().await })
        .expect("monitor");
    assert!(
        matches!(h, Health::Failed(ref why) if why.contains("down")),
        "{h:?}"
    );
    lab.set_link("a", 0, true).expect("link up");

    // A missing interface is an error that names the resource and the interface.
    let mut cfg = vip_cfg("10.77.0.101/24", 1);
    cfg.interface = "nosuch0".to_string();
    let vip = Arc::new(Vip::new(&cfg).expect("config"));
    let v = Arc::clone(&vip);
    let err = ns
        .run(move || async move { v.start().await })
        .expect_err("no interface");
    let msg = err.to_string();
    assert!(
        msg.contains("vip 10.77.0.101/24") && msg.contains("nosuch0"),
        "{msg}"
    );
    let v = Arc::clone(&vip);
    ns.run(move || async move { v.stop().await })
        .expect("stop without interface is fine");
    drop(ns);
}

/// B talks to the VIP on A; the VIP moves to C. Without announcements B's
/// cache keeps A's MAC; with them it switches to C's MAC without B
/// sending anything (no re-resolution).
fn neighbour_follows(test: &str, vip_addr: &str, b_addr: Option<&str>, ping_args: &[&str]) {
    let mut lab = Lab::new(1).expect("lab");
    let a = lab.add_host("a", 1).expect("host a");
    let b = lab.add_host("b", 2).expect("host b");
    let c = lab.add_host("c", 3).expect("host c");
    if let Some(extra) = b_addr {
        sh(
            "ip",
            &["-n", &b.ns, "addr", "add", extra, "dev", "eth0", "nodad"],
        )
        .expect("b's v6 address");
    }
    let ip = vip_addr.split('/').next().unwrap_or(vip_addr).to_string();
    let mac_a = mac_of(&a.ns, "eth0").expect("mac a");
    let mac_c = mac_of(&c.ns, "eth0").expect("mac c");
    let ns_a = NsThread::enter(&a.ns).expect("enter a");
    let ns_c = NsThread::enter(&c.ns).expect("enter c");

    // A announces for 2 s in the background; its stop must end that, or
    // B would flip back to A after C's takeover (checked at the end).
    let on_a = Arc::new(Vip::new(&vip_cfg(vip_addr, 40)).expect("config"));
    let v = Arc::clone(&on_a);
    ns_a.run(move || async move { v.start().await })
        .expect("start on a");

    let mut args: Vec<&str> = ping_args.to_vec();
    args.push(&ip);
    let pinged = eventually(Duration::from_secs(5), || {
        lab.run("b", "ping", &args).is_ok()
    });
    assert!(pinged, "{test}: b cannot ping the VIP on a");
    assert_eq!(
        neigh_mac(&b.ns, &ip).as_deref(),
        Some(mac_a.as_str()),
        "{test}: b learnt a's MAC"
    );

    let v = Arc::clone(&on_a);
    ns_a.run(move || async move { v.stop().await })
        .expect("stop on a");

    // Control: C takes the address silently; B's cache must not change.
    let silent = Arc::new(Vip::new(&vip_cfg(vip_addr, 0)).expect("config"));
    let v = Arc::clone(&silent);
    ns_c.run(move || async move { v.start().await })
        .expect("silent start on c");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        neigh_mac(&b.ns, &ip).as_deref(),
        Some(mac_a.as_str()),
        "{test}: without announcements b still points at a"
    );

    // Now a real takeover on C: 3 announcements 50 ms apart.
    let loud = Arc::new(Vip::new(&vip_cfg(vip_addr, 3)).expect("config"));
    let v = Arc::clone(&loud);
    ns_c.run(move || async move { v.start().await })
        .expect("start on c");
    let moved = eventually(Duration::from_secs(2), || {
        neigh_mac(&b.ns, &ip).as_deref() == Some(mac_c.as_str())
    });
    assert!(
        moved,
        "{test}: b's neighbour entry for {ip} is {:?}, expected c's MAC {mac_c}",
        neigh_mac(&b.ns, &ip)
    );
    // Give A's cancelled repeats (if they were not cancelled) time to
    // show: B must stay on C.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        neigh_mac(&b.ns, &ip).as_deref(),
        Some(mac_c.as_str()),
        "{test}: a released node kept announcing"
    );
    let v = Arc::clone(&loud);
    ns_c.run(move || async move { v.stop().await })
        .expect("stop on c");
    drop(ns_a);
    drop(ns_c);
}

// Issue: "a GARP really updates a neighbour: host B pings the VIP held by A,
// then the VIP moves to C and C's GARP must change B's neighbour entry".
#[test]
fn vip_gratuitous_arp_moves_neighbour_entry() {
    let test = "vip_gratuitous_arp_moves_neighbour_entry";
    if !can_run(test) {
        return;
    }
    neighbour_follows(test, "10.77.0.100/24", None, &["-c", "1", "-W", "1"]);
}

// Issue: "unsolicited neighbour advertisements for IPv6" (RFC 4861 §7.2.6).
#[test]
fn vip_unsolicited_na_moves_neighbour_entry() {
    let test = "vip_unsolicited_na_moves_neighbour_entry";
    if !can_run(test) {
        return;
    }
    neighbour_follows(
        test,
        "fd00:77::100/64",
        Some("fd00:77::2/64"),
        &["-6", "-c", "1", "-W", "1"],
    );
}

/// Packets counted by the single counter rule of `table FAMILY kut` in `ns`.
fn counted(ns: &str, family: &str) -> u64 {
    let out = sh(
        "ip",
        &["netns", "exec", ns, "nft", "list", "table", family, "kut"],
    )
    .unwrap_or_default();
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

// Issue: "repeated garp_count times every garp_interval_ms (the first
// immediately; the rest may continue in the background after start
// returns)"; NA "with hop limit 255 to ff02::1". Host b counts what it
// receives with an nftables counter.
#[test]
fn vip_announces_garp_count_times() {
    let test = "vip_announces_garp_count_times";
    if !(can_run(test) && require::has_program(test, "nft")) {
        return;
    }
    let mut lab = Lab::new(1).expect("lab");
    let a = lab.add_host("a", 1).expect("host a");
    let b = lab.add_host("b", 2).expect("host b");
    let rules = "table arp kut {
  chain c {
    type filter hook input priority 0; policy accept;
    arp operation request arp saddr ip 10.77.0.100 arp daddr ip 10.77.0.100 counter
  }
}
table ip6 kut {
  chain c {
    type filter hook input priority 0; policy accept;
    icmpv6 type nd-neighbor-advert ip6 hoplimit 255 ip6 saddr fd00:77::100 ip6 daddr ff02::1 counter
  }
}
";
    let file = std::env::temp_dir().join(format!("keepup-vip-nft-{}", std::process::id()));
    std::fs::write(&file, rules).expect("rules file");
    lab.run("b", "nft", &["-f", &file.display().to_string()])
        .expect("nft rules");
    let _ = std::fs::remove_file(&file);
    let ns = NsThread::enter(&a.ns).expect("enter a");

    for (address, family) in [("10.77.0.100/24", "arp"), ("fd00:77::100/64", "ip6")] {
        let mut cfg = vip_cfg(address, 4);
        cfg.garp_interval_ms = keepup_config::Millis(200);
        let vip = Arc::new(Vip::new(&cfg).expect("config"));
        let v = Arc::clone(&vip);
        let took = ns.run(move || async move {
            let t0 = std::time::Instant::now();
            v.start().await.map(|()| t0.elapsed())
        });
        let took = took.expect("start");
        // The three repeats take 600 ms; start must not wait for them.
        assert!(
            took < Duration::from_millis(500),
            "{test}: start took {took:?}"
        );
        assert!(
            eventually(Duration::from_millis(150), || counted(&b.ns, family) >= 1),
            "{test}: {family}: the first announcement is sent at once"
        );
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(
            counted(&b.ns, family),
            4,
            "{test}: {family}: garp_count announcements"
        );
        let v = Arc::clone(&vip);
        ns.run(move || async move { v.stop().await }).expect("stop");
    }
    drop(ns);
}
