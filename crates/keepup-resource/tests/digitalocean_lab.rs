//! End to end in a namespace lab: the `digitalocean` resource on two
//! "droplets" (lab hosts a and b) talks to the `fake-do` binary running in
//! a third host; an assign really moves the reserved IP between the hosts'
//! namespaces. All traffic stays inside the lab (10.77.0.x).
//!
//! Needs root, `ip`, and the `fake-do` binary of keepup-testkit next to
//! this test's executable (built by `cargo test -p keepup-resource -p
//! keepup-testkit` or a workspace build; override with KEEPUP_FAKE_DO).

#![allow(clippy::unwrap_used)]

mod common;

use common::NsThread;
use keepup_config::DigitalOceanResource;
use keepup_resource::digitalocean::{ReservedIp, RetryPolicy};
use keepup_resource::{Health, Resource};
use keepup_testkit::lab::{sh, Lab};
use keepup_testkit::require;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

const RIP: &str = "10.77.0.200";

fn fake_do_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KEEPUP_FAKE_DO") {
        return Some(PathBuf::from(p));
    }
    // target/debug/deps/digitalocean_lab-HASH → target/debug/fake-do
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("fake-do");
    p.is_file().then_some(p)
}

fn has_rip(ns: &str) -> bool {
    sh("ip", &["-n", ns, "addr", "show", "dev", "eth0"])
        .map(|o| o.contains(&format!("{RIP}/24")))
        .unwrap_or(false)
}

// Issue: the fake-do binary "on assign actually moves the reserved IP in the
// lab"; DigitalOcean API v2 "Reserved IP Actions" and Metadata "/metadata/v1/id".
#[test]
fn do_reserved_ip_moves_between_lab_hosts() {
    let test = "do_reserved_ip_moves_between_lab_hosts";
    if !(require::root(test) && require::has_program(test, "ip")) {
        return;
    }
    let bin = fake_do_binary();
    if !require::available(
        test,
        "the fake-do binary (cargo build -p keepup-testkit --bin fake-do)",
        bin.is_some(),
    ) {
        return;
    }
    let Some(bin) = bin else { return };

    let mut lab = Lab::new(1).expect("lab");
    let a = lab.add_host("a", 1).expect("host a");
    let b = lab.add_host("b", 2).expect("host b");
    lab.add_host("api", 250).expect("host api");

    let dir = std::env::temp_dir().join(format!("keepup-do-lab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "dop_v1_labtoken\n").expect("token");

    let mut cmd = lab
        .command("api", &bin.display().to_string())
        .expect("command");
    cmd.args([
        "--listen",
        "10.77.0.250:8080",
        "--token-file",
        &token_file.display().to_string(),
        "--reserved-ip",
        RIP,
        "--droplet",
        &format!("10.77.0.1=1001:{}:eth0", a.ns),
        "--droplet",
        &format!("10.77.0.2=1002:{}:eth0", b.ns),
    ])
    .stdout(Stdio::piped())
    .stdin(Stdio::null());
    let idx = lab.spawn(cmd).expect("spawn fake-do");
    let out = lab.child(idx).stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("read");
    assert!(
        line.starts_with("listening on 10.77.0.250:8080"),
        "fake-do said {line:?}"
    );

    let cfg = DigitalOceanResource {
        reserved_ip: RIP.to_string(),
        token_file: token_file.clone(),
        api_url: "http://10.77.0.250:8080".to_string(),
        metadata_url: "http://10.77.0.250:8080/metadata/v1".to_string(),
        timeout_ms: keepup_config::Millis(5000),
        monitor_interval_ms: keepup_config::Millis(1000),
    };
    let policy = RetryPolicy {
        base: Duration::from_millis(50),
        max: Duration::from_millis(500),
        poll_interval: Duration::from_millis(50),
        request_timeout: Duration::from_secs(2),
    };
    let on_a = Arc::new(
        ReservedIp::new(&cfg)
            .expect("config")
            .with_retry_policy(policy.clone()),
    );
    let on_b = Arc::new(
        ReservedIp::new(&cfg)
            .expect("config")
            .with_retry_policy(policy),
    );
    let ns_a = NsThread::enter(&a.ns).expect("enter a");
    let ns_b = NsThread::enter(&b.ns).expect("enter b");

    let r = Arc::clone(&on_a);
    ns_a.run(move || async move { r.start().await })
        .expect("start on a");
    assert!(has_rip(&a.ns) && !has_rip(&b.ns), "the IP is on a only");

    let r = Arc::clone(&on_b);
    ns_b.run(move || async move { r.start().await })
        .expect("start on b");
    assert!(has_rip(&b.ns) && !has_rip(&a.ns), "the IP moved to b");

    // b holds it: its monitor is content; a's monitor takes it back.
    let r = Arc::clone(&on_b);
    assert_eq!(
        ns_b.run(move || async move { r.monitor().await })
            .expect("monitor b"),
        Health::Running
    );
    let r = Arc::clone(&on_a);
    let h = ns_a
        .run(move || async move { r.monitor().await })
        .expect("monitor a");
    assert!(
        matches!(h, Health::Restored(ref w) if w.contains("droplet 1002")),
        "{h:?}"
    );
    assert!(has_rip(&a.ns) && !has_rip(&b.ns), "the IP is back on a");

    // stop is a no-op: the IP stays where it is.
    let r = Arc::clone(&on_a);
    ns_a.run(move || async move { r.stop().await })
        .expect("stop");
    assert!(has_rip(&a.ns));

    drop(ns_a);
    drop(ns_b);
    let _ = std::fs::remove_dir_all(&dir);
}
