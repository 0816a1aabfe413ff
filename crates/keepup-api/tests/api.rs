//! The API server against its OpenAPI description: every documented GET
//! answers, the status document matches its schema, auth is enforced.

#![allow(clippy::unwrap_used)]

use keepup_api::types::{cluster_json, ControlRequest, ControlResponse, EventRecord, StatusReport};
use keepup_api::{schema, serve, Backend, BoxFuture};
use keepup_cluster::sim::Sim;
use keepup_cluster::{Core, Event};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Fake {
    seen: Mutex<Vec<ControlRequest>>,
}

fn report() -> StatusReport {
    let mut spec = Sim::spec(&[("a", 200), ("b", 100)], 2, Sim::timing());
    spec.me = "a".into();
    let core = Core::new(spec, Duration::ZERO, keepup_cluster::Boot::default()).unwrap();
    let ev = Event::PeerDead {
        node: "b".into(),
        silent_ms: 300,
    };
    StatusReport {
        schema: 1,
        version: "test".into(),
        node: "a".into(),
        uptime_s: 1.5,
        cluster: cluster_json(&core.view(Duration::from_millis(10))),
        dropped_packets: [("bad_signature".to_string(), 3u64)].into_iter().collect(),
        realtime: false,
        resources: vec![],
        events: vec![EventRecord::now("a", &ev)],
        lb: None,
        db: None,
    }
}

impl Backend for Fake {
    fn status_json(&self) -> serde_json::Value {
        serde_json::to_value(report()).unwrap()
    }
    fn events_json(&self) -> serde_json::Value {
        serde_json::to_value(report().events).unwrap()
    }
    fn metrics(&self) -> String {
        "keepup_up 1\n".into()
    }
    fn control(&self, req: ControlRequest) -> BoxFuture<'_, ControlResponse> {
        self.seen.lock().unwrap().push(req.clone());
        Box::pin(async move {
            match req {
                ControlRequest::Standby => ControlResponse {
                    ok: false,
                    message: "refused: last node".into(),
                },
                _ => ControlResponse {
                    ok: true,
                    message: "done".into(),
                },
            }
        })
    }
    // Stands in for the database extension's health checks: answers what
    // it was asked, query included, so the routing is what is tested.
    fn extra(
        &self,
        method: &keepup_api::Method,
        path: &str,
        query: Option<&str>,
    ) -> Option<(keepup_api::StatusCode, &'static str, keepup_api::Bytes)> {
        if method != keepup_api::Method::GET || !path.starts_with("/db/") {
            return None;
        }
        let body = serde_json::json!({"ok": true, "path": path, "query": query, "reason": "fake"});
        Some((
            keepup_api::StatusCode::OK,
            "application/json",
            keepup_api::Bytes::from(body.to_string()),
        ))
    }
}

// The health routes reach the backend without a token, with their query.
#[tokio::test]
async fn health_routes_pass_path_and_query_to_the_backend_without_a_token() {
    let (base, _) = start(Some(TOKEN)).await;
    let v: serde_json::Value = reqwest::get(format!("{base}/db/replica?max_lag_ms=250"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["path"], "/db/replica");
    assert_eq!(v["query"], "max_lag_ms=250");
    let r = reqwest::get(format!("{base}/nothing/here")).await.unwrap();
    assert_eq!(r.status(), 404);
}

const TOKEN: &str = "s3cret-token-0123";
const READ_TOKEN: &str = "read-only-token-0123";

/// POSTs `body` to `url` with the bearer token, as JSON.
async fn post_with_token(c: &reqwest::Client, url: String, body: &str) -> reqwest::Response {
    c.post(url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn start_with(max_connections: usize, header_timeout: Duration) -> (String, Arc<Fake>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let fake = Arc::new(Fake {
        seen: Mutex::new(vec![]),
    });
    let options = keepup_api::ServeOptions {
        policy: keepup_api::AccessPolicy {
            control_token: TOKEN.into(),
            read_token: Some(READ_TOKEN.into()),
            port: addr.port(),
            hosts: vec![],
        },
        max_connections,
        header_timeout,
        tls: None,
    };
    tokio::spawn(serve(l, fake.clone(), options, std::future::pending()));
    (format!("http://{addr}"), fake)
}

async fn start(_: Option<&str>) -> (String, Arc<Fake>) {
    start_with(64, Duration::from_secs(5)).await
}

#[tokio::test]
async fn every_documented_get_route_answers_and_status_matches_its_schema() {
    let (base, _) = start(None).await;
    let spec: serde_json::Value = serde_json::from_str(keepup_api::OPENAPI).unwrap();
    let c = reqwest::Client::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        if ops.get("get").is_some() {
            let r = c.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "GET {path}");
        }
    }
    let doc: serde_json::Value = c
        .get(format!("{base}/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let errors = schema::check(&doc, "StatusReport");
    assert!(errors.is_empty(), "{errors:#?}");
    let events: serde_json::Value = c
        .get(format!("{base}/v1/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for e in events.as_array().unwrap() {
        assert!(schema::check(e, "EventRecord").is_empty());
    }
    let html = c
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("/v1/status"),
        "the dashboard polls the status API"
    );
}

#[tokio::test]
async fn schema_check_notices_a_broken_document() {
    let mut doc = serde_json::to_value(report()).unwrap();
    doc.as_object_mut().unwrap().remove("node");
    doc["cluster"]["nodes"][0]["alive"] = serde_json::json!("yes");
    let errors = schema::check(&doc, "StatusReport");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("missing required field \"node\"")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("alive: expected boolean")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn control_needs_the_token_and_refusals_are_409() {
    let (base, fake) = start(Some(TOKEN)).await;
    let c = reqwest::Client::new();
    let r = c.post(format!("{base}/v1/online")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(format!("{base}/v1/online"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = post_with_token(&c, format!("{base}/v1/online"), "").await;
    assert_eq!(r.status(), 200);
    let r = post_with_token(&c, format!("{base}/v1/standby"), "").await;
    assert_eq!(r.status(), 409);
    let body: ControlResponse = r.json().await.unwrap();
    assert!(body.message.contains("refused"));
    let r = post_with_token(&c, format!("{base}/v1/lb/backends/web/web-2/drain"), "").await;
    assert_eq!(r.status(), 200);
    let r = post_with_token(
        &c,
        format!("{base}/v1/control"),
        "{\"request\":\"teleport\"}",
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = post_with_token(&c, format!("{base}/v1/nope"), "").await;
    assert_eq!(r.status(), 404);
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            ControlRequest::Online,
            ControlRequest::Standby,
            ControlRequest::LbBackend {
                pool: "web".into(),
                backend: "web-2".into(),
                state: "drain".into()
            }
        ]
    );
}

// The attacks a web page in the operator's browser can make, and a
// relaying load balancer: each refused, and none reaches the agent.
#[tokio::test]
async fn browser_and_relay_attacks_are_refused_without_effect() {
    let (base, fake) = start(None).await;
    let port = base.rsplit(':').next().unwrap().to_string();
    let c = reqwest::Client::new();
    let standby = format!("{base}/v1/standby");
    let status = format!("{base}/v1/status");
    let host = format!("evil.example:{port}");
    let control = format!("Bearer {TOKEN}");
    let read = format!("Bearer {READ_TOKEN}");
    // (method, url, headers, the status the attack gets)
    type Attack<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16);
    let attacks: &[Attack] = &[
        // A form POST from a foreign page: no token, text/plain, foreign Origin.
        (
            "POST",
            &standby,
            &[
                ("origin", "http://evil.example"),
                ("content-type", "text/plain"),
            ],
            403,
        ),
        // The same without Origin (an old browser, or a script on this host).
        ("POST", &standby, &[("content-type", "text/plain")], 401),
        // With the token but not JSON.
        (
            "POST",
            &standby,
            &[("authorization", &control), ("content-type", "text/plain")],
            415,
        ),
        // The read token cannot control.
        (
            "POST",
            &standby,
            &[
                ("authorization", &read),
                ("content-type", "application/json"),
            ],
            401,
        ),
        // DNS rebinding: the page's own name in Host.
        ("GET", &status, &[("host", &host)], 421),
        // A load balancer on this host relaying to the API is not loopback...
        ("GET", &status, &[("x-forwarded-for", "192.0.2.7")], 401),
        // ...unless it passes the read token on.
        (
            "GET",
            &status,
            &[("x-forwarded-for", "192.0.2.7"), ("authorization", &read)],
            200,
        ),
    ];
    for (method, url, headers, want) in attacks {
        let mut req = c.request(method.parse().unwrap(), *url);
        for (k, v) in *headers {
            req = req.header(*k, *v);
        }
        let r = req.body("x=1").send().await.unwrap();
        assert_eq!(r.status(), *want, "{method} {url} {headers:?}");
    }
    assert!(
        fake.seen.lock().unwrap().is_empty(),
        "no attack reached the agent"
    );
    // Loopback reads stay open, as `keepup status` needs.
    let r = c.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

// 200 half-open connections against a cap of 16: the other 184 are closed
// at once, the 16 held ones when the header timeout passes, and the API
// answers again right after. (Windows are generous: the test counts
// connections, it does not time the server.)
#[tokio::test]
async fn a_half_open_flood_is_capped_and_timed_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let header_timeout = Duration::from_secs(4);
    let (base, _) = start_with(16, header_timeout).await;
    let addr = base.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: ")
            .await
            .unwrap();
        held.push(s);
    }
    let started = std::time::Instant::now();
    // Each connection: when the server closed it (None: still open at the end).
    let closed_after = futures_util::future::join_all(held.into_iter().map(|mut s| async move {
        let mut b = [0u8; 512];
        let t = std::time::Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
                Ok(Ok(_)) => continue, // a 408 answer, then EOF
                Err(_) => return None,
            }
        }
    }))
    .await;
    let at_once = closed_after
        .iter()
        .filter(|c| c.is_some_and(|d| d < Duration::from_secs(2)))
        .count();
    assert_eq!(
        at_once, 184,
        "connections beyond the cap of 16 are refused at once"
    );
    assert!(
        closed_after.iter().all(Option::is_some),
        "connections outlived the header timeout"
    );
    assert!(started.elapsed() >= header_timeout - Duration::from_millis(500));
    let r = reqwest::get(format!("{base}/v1/status")).await.unwrap();
    assert_eq!(r.status(), 200);
}
