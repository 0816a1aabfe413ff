//! The dashboard in a real browser: headless Chromium (Debian's package)
//! loads the page from a running agent, the page's script fetches the
//! status, and the rendered DOM and a screenshot are checked for content.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::{can_run, Builder};
use std::time::Duration;

fn chromium_args(dir: &std::path::Path) -> Vec<String> {
    // Flags from this machine's notes: without the background-networking
    // ones Chromium tries to reach Google's hosts, which the network refuses.
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,900",
        "--virtual-time-budget=4000",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", dir.display())])
    .collect()
}

// Operator surface: "Dashboard: a web page served by the agent showing the
// same picture live ... tested in headless Chromium with a screenshot
// compared for content".
#[test]
fn dashboard_shows_the_cluster_in_headless_chromium() {
    let test = "dashboard_shows_the_cluster_in_headless_chromium";
    if !can_run(test) || !keepup_testkit::require::has_program(test, "chromium") {
        return;
    }
    let mut c = Builder::new(&[("lb-1", 200), ("lb-2", 100)]).build("dash");
    c.start_all();
    c.wait_acquired("lb-1", Duration::from_secs(10));
    // A failover, so the timeline has something to show.
    c.kill9("lb-2");
    std::thread::sleep(Duration::from_millis(500));

    let profile = c.dir.join("chromium-profile");
    let mut args = chromium_args(&profile);
    args.push("--dump-dom".into());
    args.push("http://127.0.0.1:7947/".into());
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let dom = c
        .lab
        .run("lb-1", "chromium", &args_ref)
        .expect("chromium --dump-dom");
    for expected in [
        "lb-1",
        "lb-2",
        "active",
        "DOWN",
        "vip 10.77.0.100/24",
        "on lb-1",
        "peer lb-2 is dead",
        "live",
    ] {
        assert!(
            dom.contains(expected),
            "rendered page lacks {expected:?}:\n{dom}"
        );
    }
    assert!(
        dom.contains("id=\"conn\">live"),
        "the page reached the agent:\n{dom}"
    );

    let shot = c.dir.join("dashboard.png");
    let mut args = chromium_args(&profile);
    args.push(format!("--screenshot={}", shot.display()));
    args.push("http://127.0.0.1:7947/".into());
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    c.lab
        .run("lb-1", "chromium", &args_ref)
        .expect("chromium --screenshot");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert_eq!(&png[1..4], b"PNG");
    // A blank page compresses to a few KB; a rendered dashboard does not.
    assert!(
        png.len() > 20_000,
        "screenshot suspiciously small ({} bytes)",
        png.len()
    );
    if let Ok(keep) = std::env::var("KEEPUP_KEEP_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep);
    }
}
