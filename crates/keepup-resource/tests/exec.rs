//! The `exec` resource with real shells: environment, timeouts that kill
//! the whole process group, failing scripts, monitor repair. Needs only
//! /bin/sh.

#![allow(clippy::unwrap_used)]

use keepup_config::ExecResource;
use keepup_resource::exec::Exec;
use keepup_resource::{build, Context, Health, Resource, ResourceError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn ctx() -> Context {
    Context {
        cluster: "lab".to_string(),
        node: "lb1".to_string(),
        group: "web".to_string(),
        epoch: keepup_resource::Epoch::default(),
    }
}

fn cfg(name: &str, start: &str, stop: &str, status: Option<&str>, timeout_ms: u64) -> ExecResource {
    ExecResource {
        name: name.to_string(),
        start: start.to_string(),
        stop: stop.to_string(),
        status: status.map(str::to_string),
        timeout_ms: keepup_config::Millis(timeout_ms),
        env: BTreeMap::new(),
        monitor_interval_ms: keepup_config::Millis(1000),
    }
}

/// A fresh scratch directory under the system temp dir.
fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("keepup-exec-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn alive(pid: &str) -> bool {
    // A zombie (state Z) is dead for our purpose: nothing of it runs.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("pid file")
        .trim()
        .to_string()
}

// Issue: "environment KEEPUP_CLUSTER, KEEPUP_NODE, KEEPUP_GROUP,
// KEEPUP_RESOURCE, KEEPUP_TRANSITION=start|stop|status plus configured env".
#[tokio::test]
async fn exec_passes_environment() {
    let dir = scratch("env");
    let out = dir.join("out");
    let script = format!(
        "echo \"$KEEPUP_CLUSTER $KEEPUP_NODE $KEEPUP_GROUP $KEEPUP_RESOURCE $KEEPUP_TRANSITION $FOO\" >> {}",
        out.display()
    );
    let mut c = cfg("web-app", &script, &script, Some(&script), 5000);
    c.env.insert("FOO".to_string(), "bar baz".to_string());
    // A configured KEEPUP_* cannot hide the real one.
    c.env
        .insert("KEEPUP_NODE".to_string(), "spoofed".to_string());
    let r = Exec::new(&c, &ctx()).expect("config");
    r.start().await.expect("start");
    assert_eq!(r.monitor().await.expect("monitor"), Health::Running);
    r.stop().await.expect("stop");
    let text = std::fs::read_to_string(&out).expect("output");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "lab lb1 web web-app start bar baz",
            "lab lb1 web web-app status bar baz",
            "lab lb1 web web-app stop bar baz",
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// Issue: "timeouts (kill the whole process group on timeout)".
#[tokio::test]
async fn exec_timeout_kills_process_group() {
    let dir = scratch("timeout");
    let pidfile = dir.join("child.pid");
    let script = format!("sleep 30 & echo $! > {}; sleep 30", pidfile.display());
    let r = Exec::new(&cfg("slow", &script, "true", None, 300), &ctx()).expect("config");
    let t0 = Instant::now();
    let err = r.start().await.expect_err("must time out");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(
        matches!(err, ResourceError::Timeout { operation: "start", after, .. } if after == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(err.to_string().contains("exec slow"), "{err}");
    let pid = read_pid(&pidfile);
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        !alive(&pid)
    });
    assert!(
        gone,
        "the script's background child {pid} survived the timeout"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// Issue: "captured stderr tail in the error".
#[tokio::test]
async fn exec_failing_script_reports_exit_and_stderr() {
    let r = Exec::new(
        &cfg(
            "db",
            "echo starting; echo 'cannot bind port 3306' >&2; exit 3",
            "exit 0",
            None,
            5000,
        ),
        &ctx(),
    )
    .expect("config");
    let err = r.start().await.expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.starts_with("exec db: start failed"), "{msg}");
    assert!(msg.contains("exit status 3"), "{msg}");
    assert!(msg.contains("cannot bind port 3306"), "{msg}");
    assert!(!msg.contains("starting"), "stdout is not stderr: {msg}");

    // Only the tail of a chatty stderr is kept.
    let chatty = Exec::new(
        &cfg(
            "chatty",
            "i=0; while [ $i -lt 2000 ]; do echo line$i >&2; i=$((i+1)); done; exit 1",
            "true",
            None,
            5000,
        ),
        &ctx(),
    )
    .expect("config");
    let msg = chatty.start().await.expect_err("fails").to_string();
    assert!(msg.contains("line1999"), "{msg}");
    assert!(
        !msg.contains("line10\n") && msg.len() < 4096,
        "len {}",
        msg.len()
    );
}

// A start script that launches a daemon with `&` returns at once, even
// though the daemon keeps the stderr pipe open.
#[tokio::test]
async fn exec_daemonising_start_returns() {
    let dir = scratch("daemon");
    let pidfile = dir.join("daemon.pid");
    let script = format!("sleep 20 & echo $! > {}", pidfile.display());
    let r = Exec::new(&cfg("daemon", &script, "true", None, 5000), &ctx()).expect("config");
    let t0 = Instant::now();
    r.start().await.expect("start");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    let pid = read_pid(&pidfile);
    assert!(alive(&pid), "the daemon must survive a successful start");
    let _ = std::process::Command::new("kill").arg(&pid).status();
    let _ = std::fs::remove_dir_all(&dir);
}

// Monitor: status fails → start → status again: Restored, or Failed.
#[tokio::test]
async fn exec_monitor_repairs_or_fails() {
    let dir = scratch("monitor");
    let flag = dir.join("running");
    let f = flag.display();
    let r = Exec::new(
        &cfg(
            "svc",
            &format!("touch {f}"),
            &format!("rm -f {f}"),
            Some(&format!("test -f {f}")),
            5000,
        ),
        &ctx(),
    )
    .expect("config");
    let h = r.monitor().await.expect("monitor");
    assert!(
        matches!(h, Health::Restored(ref w) if w.contains("status command failed")),
        "{h:?}"
    );
    assert_eq!(r.monitor().await.expect("monitor"), Health::Running);
    r.stop().await.expect("stop");
    r.stop().await.expect("stop twice");

    let broken = Exec::new(
        &cfg(
            "broken",
            "echo nope >&2; exit 1",
            "true",
            Some("exit 3"),
            5000,
        ),
        &ctx(),
    )
    .expect("config");
    let h = broken.monitor().await.expect("monitor");
    assert!(
        matches!(h, Health::Failed(ref w) if w.contains("exit status 1") && w.contains("nope")),
        "{h:?}"
    );

    let unwatched = Exec::new(&cfg("plain", "true", "true", None, 5000), &ctx()).expect("config");
    assert_eq!(unwatched.monitor().await.expect("monitor"), Health::Running);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exec_rejects_bad_config() {
    let e = Exec::new(&cfg("x", "", "true", None, 100), &ctx()).expect_err("empty start");
    assert!(e.to_string().contains("exec x: bad configuration"), "{e}");
    Exec::new(&cfg("x", "true", "true", None, 0), &ctx()).expect_err("zero timeout");
}

// `build` returns the kind the configuration names.
#[test]
fn build_returns_each_kind() {
    let toml = r#"
        [[r]]
        type = "vip"
        address = "10.77.0.100/24"
        interface = "eth0"
        [[r]]
        type = "digitalocean"
        reserved_ip = "203.0.113.10"
        token_file = "/nonexistent/token"
        [[r]]
        type = "exec"
        name = "app"
        start = "true"
        stop = "true"
    "#;
    #[derive(serde::Deserialize)]
    struct F {
        r: Vec<keepup_config::ResourceConfig>,
    }
    let f: F = toml::from_str(toml).expect("parse");
    let names: Vec<String> =
        f.r.iter()
            .map(|c| build(c, &ctx()).expect("build").describe())
            .collect();
    assert_eq!(
        names,
        [
            "vip 10.77.0.100/24",
            "digitalocean 203.0.113.10",
            "exec app"
        ]
    );

    let bad: F = toml::from_str(
        r#"
        [[r]]
        type = "vip"
        address = "10.77.0.300/24"
        interface = "eth0"
    "#,
    )
    .expect("parse");
    let err = build(&bad.r[0], &ctx()).err().expect("bad address");
    assert!(
        err.to_string()
            .contains("vip 10.77.0.300/24: bad configuration"),
        "{err}"
    );
}
