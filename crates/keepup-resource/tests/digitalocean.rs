//! The `digitalocean` resource against the in-process fake API
//! (keepup_testkit::fake_do) on 127.0.0.1: the exact requests the
//! DigitalOcean API v2 documents, the bearer header, retries with backoff,
//! no-op when the IP is already ours, errored actions, and a token that
//! never shows up in errors or logs.

#![allow(clippy::unwrap_used)]

use keepup_config::DigitalOceanResource;
use keepup_resource::digitalocean::{ReservedIp, RetryPolicy};
use keepup_resource::{Health, Resource, ResourceError};
use keepup_testkit::fake_do::{FakeDo, Options, Recorded};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const IP: &str = "203.0.113.10";
const TOKEN: &str = "dop_v1_0123456789abcdef_TOPSECRET";
const ME: u64 = 1001;

struct Setup {
    fake: FakeDo,
    res: ReservedIp,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(40),
        max: Duration::from_millis(400),
        poll_interval: Duration::from_millis(20),
        request_timeout: Duration::from_secs(2),
    }
}

async fn setup(test: &str, holder: Option<u64>, token_in_file: &str, timeout_ms: u64) -> Setup {
    let mut ips = BTreeMap::new();
    ips.insert(IP.to_string(), holder);
    let fake = FakeDo::start(Options {
        token: TOKEN.to_string(),
        reserved_ips: ips,
        default_droplet: Some(ME),
        ..Options::default()
    })
    .await
    .expect("fake api");
    let dir = std::env::temp_dir().join(format!("keepup-do-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token_file = dir.join("token");
    let mut f = std::fs::File::create(&token_file).expect("token file");
    writeln!(f, "{token_in_file}").expect("write token");
    let cfg = DigitalOceanResource {
        reserved_ip: IP.to_string(),
        token_file,
        api_url: fake.api_url(),
        metadata_url: fake.metadata_url(),
        timeout_ms: keepup_config::Millis(timeout_ms),
        monitor_interval_ms: keepup_config::Millis(1000),
    };
    let res = ReservedIp::new(&cfg)
        .expect("config")
        .with_retry_policy(fast());
    Setup {
        fake,
        res,
        _dir: TempDir(dir),
    }
}

fn summary(reqs: &[Recorded]) -> Vec<String> {
    reqs.iter()
        .map(|r| format!("{} {} {}", r.status, r.method, r.path))
        .collect()
}

// DigitalOcean API v2: "Reserved IP Actions → Initiate a Reserved IP Action"
// (POST /v2/reserved_ips/{ip}/actions, {"type":"assign","droplet_id":N}),
// "Actions → Retrieve an Existing Action" (GET /v2/actions/{id}),
// "Reserved IPs → Retrieve an Existing Reserved IP", and the Metadata API
// "/metadata/v1/id".
#[tokio::test]
async fn do_assign_sends_documented_requests() {
    let s = setup("assign", Some(2002), TOKEN, 5000).await;
    s.fake.set_polls_before_complete(2);
    s.res.start().await.expect("start");
    assert_eq!(s.fake.holder(IP), Some(ME));

    let reqs = s.fake.requests();
    let action = reqs[2].path.clone();
    assert_eq!(
        summary(&reqs),
        [
            "200 GET /metadata/v1/id".to_string(),
            format!("200 GET /v2/reserved_ips/{IP}"),
            format!("201 POST /v2/reserved_ips/{IP}/actions"),
            "200 GET /v2/actions/1000001".to_string(),
            "200 GET /v2/actions/1000001".to_string(),
            "200 GET /v2/actions/1000001".to_string(),
        ],
        "{action}"
    );
    // The metadata service gets no token; every API request the bearer one.
    assert_eq!(reqs[0].header("authorization"), None);
    for r in &reqs[1..] {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{}",
            r.path
        );
    }
    let post = &reqs[2];
    assert_eq!(post.json, Some(json!({"type": "assign", "droplet_id": ME})));
    assert_eq!(post.header("content-type"), Some("application/json"));
    assert_eq!(post.header("accept"), Some("application/json"));
}

#[tokio::test]
async fn do_start_is_noop_when_already_ours() {
    let s = setup("noop", Some(ME), TOKEN, 5000).await;
    s.res.start().await.expect("start");
    s.res.start().await.expect("start again");
    assert_eq!(
        summary(&s.fake.requests()),
        [
            "200 GET /metadata/v1/id".to_string(),
            format!("200 GET /v2/reserved_ips/{IP}"),
            // The droplet id is asked once and kept.
            format!("200 GET /v2/reserved_ips/{IP}"),
        ]
    );
    // stop never unassigns (the next owner's assign moves the IP at once).
    s.fake.clear_requests();
    s.res.stop().await.expect("stop");
    assert!(s.fake.requests().is_empty());
    assert_eq!(s.fake.holder(IP), Some(ME));
}

// "retry with exponential backoff + jitter on 429 and 5xx".
#[tokio::test]
async fn do_retries_5xx_and_429_with_backoff() {
    let s = setup("retry", None, TOKEN, 10_000).await;
    s.fake.fail_next(3, 503);
    let t0 = Instant::now();
    s.res.start().await.expect("start despite 503s");
    let took = t0.elapsed();
    // Backoffs: [20,40] + [40,80] + [80,160] ms with base 40 ms.
    assert!(
        took >= Duration::from_millis(140),
        "retried too fast: {took:?}"
    );
    let reqs = s.fake.requests();
    assert_eq!(
        summary(&reqs[..4]),
        [
            "503 GET /metadata/v1/id",
            "503 GET /metadata/v1/id",
            "503 GET /metadata/v1/id",
            "200 GET /metadata/v1/id"
        ]
    );
    assert_eq!(s.fake.holder(IP), Some(ME));

    // 429 with Retry-After: the server's wait is honoured.
    s.fake.set_holder(IP, Some(2002));
    s.fake.clear_requests();
    s.fake.fail_next_with_retry_after(1, 429, 1);
    let t0 = Instant::now();
    s.res.monitor().await.expect("monitor");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(950),
        "Retry-After ignored: {took:?}"
    );
    let reqs = s.fake.requests();
    assert_eq!(reqs[0].status, 429);
    assert_eq!(reqs[1].path, format!("/v2/reserved_ips/{IP}"));
    assert_eq!(s.fake.holder(IP), Some(ME));
}

// The API refuses an action while another one on the same IP or droplet
// runs: 422 "The reserved IP already has a pending event." That clears by
// itself (doctl#493), so it is retried; other 4xx answers are not.
#[tokio::test]
async fn do_retries_pending_event_but_not_other_4xx() {
    let s = setup("pending", Some(2002), TOKEN, 5000).await;
    s.fake.fail_next_request(
        "POST",
        "/actions",
        2,
        422,
        "The reserved IP already has a pending event.",
    );
    s.res
        .start()
        .await
        .expect("start after the pending event clears");
    let posts: Vec<u16> = s
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.status)
        .collect();
    assert_eq!(posts, [422, 422, 201]);
    assert_eq!(s.fake.holder(IP), Some(ME));

    s.fake.set_holder(IP, Some(2002));
    s.fake.clear_requests();
    s.fake.fail_next_request(
        "POST",
        "/actions",
        5,
        403,
        "You do not have access for the attempted action.",
    );
    let msg = s.res.start().await.expect_err("403 is final").to_string();
    assert!(
        msg.contains("403") && msg.contains("do not have access"),
        "{msg}"
    );
    assert_eq!(
        s.fake
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count(),
        1
    );
}

#[tokio::test]
async fn do_gives_up_at_the_deadline() {
    let s = setup("deadline", None, TOKEN, 600).await;
    s.fake.fail_next(1000, 500);
    let t0 = Instant::now();
    let err = s.res.start().await.expect_err("keeps failing");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("digitalocean {IP}: start failed")),
        "{msg}"
    );
    assert!(msg.contains("500") && msg.contains("gave up"), "{msg}");
}

#[tokio::test]
async fn do_errored_action_is_an_error() {
    let s = setup("errored", None, TOKEN, 5000).await;
    s.fake.set_polls_before_complete(1);
    s.fake.error_next_action();
    let err = s.res.start().await.expect_err("errored");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            ResourceError::Failed {
                operation: "start",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.contains("errored") && msg.contains(&format!("digitalocean {IP}")),
        "{msg}"
    );
    assert_eq!(s.fake.holder(IP), None);
}

#[tokio::test]
async fn do_monitor_reassigns_when_moved_away() {
    let s = setup("monitor", Some(ME), TOKEN, 5000).await;
    assert_eq!(s.res.monitor().await.expect("monitor"), Health::Running);
    s.fake.set_holder(IP, Some(2002));
    let h = s.res.monitor().await.expect("monitor");
    assert!(
        matches!(h, Health::Restored(ref w) if w.contains("droplet 2002")),
        "{h:?}"
    );
    assert_eq!(s.fake.holder(IP), Some(ME));
    s.fake.set_holder(IP, None);
    let h = s.res.monitor().await.expect("monitor");
    assert!(
        matches!(h, Health::Restored(ref w) if w.contains("no droplet")),
        "{h:?}"
    );
    assert_eq!(s.res.monitor().await.expect("monitor"), Health::Running);
}

/// A tracing writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// "the token is never logged or put in an error message".
#[tokio::test]
async fn do_token_never_in_errors_or_logs() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // A wrong token: the API answers 401, the error must not echo either token.
    let wrong = "dop_v1_WRONGWRONGWRONG";
    let s = setup("token", None, wrong, 5000).await;
    let err = s.res.start().await.expect_err("401");
    for text in [err.to_string(), format!("{err:?}"), format!("{:?}", s.res)] {
        assert!(
            !text.contains(wrong) && !text.contains(TOKEN),
            "token leaked: {text}"
        );
    }
    assert!(err.to_string().contains("401"), "{err}");

    // The right token, through retries (warn logs) and success (info log).
    let s = setup("token2", None, TOKEN, 5000).await;
    s.fake.fail_next(2, 502);
    s.res.start().await.expect("start");
    let text = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    assert!(text.contains("retrying"), "logs were captured: {text}");
    assert!(text.contains("assigned to droplet"), "{text}");
    assert!(
        !text.contains(TOKEN) && !text.contains(wrong),
        "token in logs: {text}"
    );
    // The requests really carried it, so the check above means something.
    assert!(s
        .fake
        .requests()
        .iter()
        .any(|r| r.header("authorization") == Some(format!("Bearer {TOKEN}").as_str())));
}

#[tokio::test]
async fn do_unreadable_token_file_names_the_file() {
    let s = setup("notoken", None, TOKEN, 5000).await;
    let cfg = DigitalOceanResource {
        reserved_ip: IP.to_string(),
        token_file: PathBuf::from("/nonexistent/keepup/token"),
        api_url: s.fake.api_url(),
        metadata_url: s.fake.metadata_url(),
        timeout_ms: keepup_config::Millis(1000),
        monitor_interval_ms: keepup_config::Millis(1000),
    };
    let r = ReservedIp::new(&cfg).expect("config");
    let msg = r.start().await.expect_err("no token").to_string();
    assert!(
        msg.contains("/nonexistent/keepup/token") && msg.contains(&format!("digitalocean {IP}")),
        "{msg}"
    );
    assert!(s.fake.requests().is_empty(), "nothing sent without a token");
}

// The monitor repairs a moved IP only while the group's grant is current:
// a node whose lease ran out (resumed after SIGSTOP, stop on its way) must
// not move the IP back from the next holder.
#[tokio::test]
async fn do_monitor_never_reassigns_after_the_grant_ends() {
    let s = setup("grant", Some(ME), TOKEN, 5000).await;
    let epoch = keepup_resource::Epoch::default();
    epoch.set(7);
    epoch.grant(Some(Instant::now() + Duration::from_secs(60)));
    let res = s.res.with_epoch(epoch.clone());
    s.fake.set_holder(IP, Some(2002));
    let h = res.monitor().await.expect("monitor");
    assert!(matches!(h, Health::Restored(_)), "{h:?}");
    assert_eq!(s.fake.holder(IP), Some(ME));

    s.fake.set_holder(IP, Some(2002));
    epoch.revoke();
    let e = res
        .monitor()
        .await
        .expect_err("no repair without the grant");
    let text = e.to_string();
    assert!(
        text.contains("droplet 2002") && text.contains("epoch 7"),
        "{text}"
    );
    assert_eq!(s.fake.holder(IP), Some(2002), "the next holder keeps it");

    // A grant that ran out by time alone counts as revoked.
    epoch.grant(Some(Instant::now()));
    assert!(!epoch.is_current());
    res.monitor().await.expect_err("expired grant");
    assert_eq!(s.fake.holder(IP), Some(2002));
    let posts = s
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 1, "only the repair under a current grant assigned");
}

mod fence {
    use super::*;
    use keepup_resource::digitalocean::PowerOff;

    const VICTIM: u64 = 2002;

    async fn setup(status: &str) -> (FakeDo, PowerOff, TempDir) {
        let fake = FakeDo::start(Options {
            token: TOKEN.to_string(),
            droplets: [(VICTIM, status.to_string()), (ME, "active".to_string())].into(),
            ..Options::default()
        })
        .await
        .expect("fake api");
        let dir =
            std::env::temp_dir().join(format!("keepup-do-fence-{status}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let token_file = dir.join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
        let fence = PowerOff::new(
            &fake.api_url(),
            &token_file,
            [("lb-2".to_string(), VICTIM)].into(),
            Duration::from_secs(5),
        )
        .expect("config")
        .with_retry_policy(fast());
        (fake, fence, TempDir(dir))
    }

    // DigitalOcean API v2, "Droplet Actions → Power Off a Droplet"
    // (POST /v2/droplets/{id}/actions, {"type":"power_off"}), "Actions →
    // Retrieve an Existing Action", "Droplets → Retrieve an Existing Droplet"
    // (droplet.status "off").
    #[tokio::test]
    async fn do_fence_powers_off_and_confirms() {
        let (fake, fence, _dir) = setup("active").await;
        fake.set_polls_before_complete(1);
        assert_eq!(fence.fence("lb-2").await.expect("fenced"), VICTIM);
        assert_eq!(fake.droplet_status(VICTIM).as_deref(), Some("off"));
        assert_eq!(fake.droplet_status(ME).as_deref(), Some("active"));
        let reqs = fake.requests();
        assert_eq!(
            summary(&reqs),
            [
                format!("200 GET /v2/droplets/{VICTIM}"),
                format!("201 POST /v2/droplets/{VICTIM}/actions"),
                // One poll answered in-progress, the next completed.
                "200 GET /v2/actions/1000001".to_string(),
                "200 GET /v2/actions/1000001".to_string(),
                format!("200 GET /v2/droplets/{VICTIM}"),
            ]
        );
        assert_eq!(reqs[1].json, Some(json!({"type": "power_off"})));
        for r in &reqs {
            assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer {TOKEN}").as_str())
            );
        }
    }

    #[tokio::test]
    async fn do_fence_of_a_droplet_already_off_sends_no_action() {
        let (fake, fence, _dir) = setup("off").await;
        fence.fence("lb-2").await.expect("fenced");
        assert_eq!(
            summary(&fake.requests()),
            [format!("200 GET /v2/droplets/{VICTIM}")]
        );
    }

    #[tokio::test]
    async fn do_fence_failures_name_the_cause() {
        let (fake, fence, _dir) = setup("active").await;
        let e = fence.fence("lb-9").await.expect_err("unknown node");
        assert!(e.to_string().contains("\"lb-9\""), "{e}");
        fake.error_next_action();
        let e = fence.fence("lb-2").await.expect_err("errored action");
        assert!(e.to_string().contains("errored"), "{e}");
        assert_eq!(fake.droplet_status(VICTIM).as_deref(), Some("active"));
        // Retried through a 503, then fenced.
        fake.fail_next(1, 503);
        fence.fence("lb-2").await.expect("fenced after a retry");
        assert!(!format!("{e}").contains("TOPSECRET"));
    }
}
