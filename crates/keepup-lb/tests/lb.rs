//! Integration tests of the load balancer (issue 3): real backends, real
//! clients, everything on 127.0.0.1 with port 0.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use keepup_lb::AdminState;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn counts(bs: &[&TestBackend]) -> Vec<usize> {
    bs.iter().map(|b| b.hits()).collect()
}

// Issue 3: "each algorithm's distribution" — weighted round-robin.
#[tokio::test]
async fn round_robin_follows_weights_exactly() {
    let [a, b, c] = backends(["a", "b", "c"]).await;
    let (lb, addr) = start_lb(&http_lb("", "", &[(&a, 300), (&b, 100), (&c, 100)])).await;
    let cl = client();
    for _ in 0..500 {
        let (code, _, _) = get(&cl, addr, "/", &[]).await.unwrap();
        assert_eq!(code, 200);
    }
    assert_eq!(counts(&[&a, &b, &c]), vec![300, 100, 100]);
    let st = lb.status();
    assert_eq!(st.frontends[0].counters.requests, 500);
    assert_eq!(st.frontends[0].counters.status_2xx, 500);
    assert_eq!(st.pools[0].backends[0].counters.requests, 300);
    let mut text = String::new();
    keepup_lb::prometheus(&st, &mut text);
    assert!(text.contains("keepup_lb_requests_total{frontend=\"web\",code_class=\"2xx\"} 500"));
    assert!(text.contains("keepup_lb_backend_up{pool=\"p\",backend=\"a\"} 1"));
    assert!(text.contains("keepup_lb_request_duration_seconds_count{frontend=\"web\"} 500"));
    lb.shutdown(Duration::from_secs(1)).await;
}

// Least-connections: concurrent slow requests spread evenly by in-flight count.
#[tokio::test]
async fn least_connections_spreads_in_flight_requests() {
    let [a, b, c] = backends(["a", "b", "c"]).await;
    let (lb, addr) = start_lb(&http_lb(
        "",
        "algorithm = \"least-connections\"",
        &[(&a, 100), (&b, 100), (&c, 100)],
    ))
    .await;
    let mut tasks = Vec::new();
    for i in 0..9 {
        tasks.push(tokio::spawn(async move {
            // Stagger so each selection sees the previous ones in flight.
            tokio::time::sleep(Duration::from_millis(i * 20)).await;
            get(&client(), addr, "/slow", &[]).await.unwrap().1
        }));
    }
    let mut by: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        *by.entry(t.await.unwrap()).or_default() += 1;
    }
    assert_eq!(
        by.values().copied().collect::<Vec<_>>(),
        vec![3, 3, 3],
        "{by:?}"
    );
    lb.shutdown(Duration::from_secs(1)).await;
}

/// One HTTP request over a raw connection that first sends a PROXY v1 header
/// claiming to come from `client_ip` (the frontend trusts 127.0.0.0/8).
async fn get_as(addr: std::net::SocketAddr, client_ip: &str, path: &str) -> String {
    let req = format!(
        "PROXY TCP4 {client_ip} 127.0.0.1 40000 {}\r\nGET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    let text = raw(addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&text), 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("x-backend: "))
        .unwrap()
        .trim()
        .to_string()
}

// Source-IP hash: one client always lands on one backend; many spread.
// Also covers accepting PROXY protocol from a trusted upstream.
#[tokio::test]
async fn source_hash_pins_clients_and_spreads_them() {
    let [a, b, c] = backends(["a", "b", "c"]).await;
    let (lb, addr) = start_lb(&http_lb(
        "trusted_proxies = [\"127.0.0.0/8\"]",
        "algorithm = \"source-hash\"",
        &[(&a, 100), (&b, 100), (&c, 100)],
    ))
    .await;
    let first = get_as(addr, "10.9.8.7", "/").await;
    for _ in 0..5 {
        assert_eq!(get_as(addr, "10.9.8.7", "/").await, first);
    }
    assert_eq!(
        a.seen
            .lock()
            .unwrap()
            .get("x-forwarded-for")
            .cloned()
            .or_else(|| b.seen.lock().unwrap().get("x-forwarded-for").cloned())
            .or_else(|| c.seen.lock().unwrap().get("x-forwarded-for").cloned()),
        Some("10.9.8.7".to_string())
    );
    let mut by: HashMap<String, usize> = HashMap::new();
    for i in 0..150 {
        *by.entry(get_as(addr, &format!("10.0.{}.{}", i / 200, i % 200 + 1), "/").await)
            .or_default() += 1;
    }
    assert_eq!(by.len(), 3, "{by:?}");
    assert!(by.values().all(|&n| n >= 20), "{by:?}");
    lb.shutdown(Duration::from_secs(1)).await;
}

// Consistent hashing on the URI: a path keeps its backend; taking one
// backend out moves only that backend's paths.
#[tokio::test]
async fn consistent_hash_keeps_keys_when_a_backend_leaves() {
    let [a, b, c] = backends(["a", "b", "c"]).await;
    let (lb, addr) = start_lb(&http_lb(
        "",
        "algorithm = \"consistent-hash\"\nhash_key = \"uri\"",
        &[(&a, 100), (&b, 100), (&c, 100)],
    ))
    .await;
    let cl = client();
    let mut before = Vec::new();
    for i in 0..90 {
        before.push(get(&cl, addr, &format!("/item/{i}"), &[]).await.unwrap().1);
    }
    for (i, was) in before.iter().enumerate() {
        assert_eq!(
            &get(&cl, addr, &format!("/item/{i}"), &[]).await.unwrap().1,
            was
        );
    }
    let mut per: HashMap<&str, usize> = HashMap::new();
    for b in &before {
        *per.entry(b.as_str()).or_default() += 1;
    }
    assert_eq!(per.len(), 3, "{per:?}");
    lb.set_backend_state("p", "b", AdminState::Maintenance)
        .unwrap();
    for (i, was) in before.iter().enumerate() {
        let now = get(&cl, addr, &format!("/item/{i}"), &[]).await.unwrap().1;
        if was != "b" {
            assert_eq!(&now, was, "/item/{i} moved although its backend stayed");
        } else {
            assert_ne!(now, "b");
        }
    }
    lb.shutdown(Duration::from_secs(1)).await;
}

// Sticky sessions by cookie, and drain/maintenance semantics for them.
#[tokio::test]
async fn sticky_cookie_pins_and_drain_keeps_sticky_clients() {
    let [a, b, c] = backends(["a", "b", "c"]).await;
    let (lb, addr) = start_lb(&http_lb(
        "",
        "sticky_cookie = \"SRV\"",
        &[(&a, 100), (&b, 100), (&c, 100)],
    ))
    .await;
    let cl = client();
    let (_, first, cookie) = get(&cl, addr, "/", &[]).await.unwrap();
    let cookie = cookie.unwrap();
    assert!(cookie.starts_with(&format!("SRV={first};")), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    for _ in 0..20 {
        let (code, be, set) = get(&cl, addr, "/", &[("cookie", &pair)]).await.unwrap();
        assert_eq!((code, be.as_str(), set), (200, first.as_str(), None));
    }
    // Drain: the sticky client stays, new clients never land there.
    lb.set_backend_state("p", &first, AdminState::Drain)
        .unwrap();
    for _ in 0..10 {
        assert_eq!(
            get(&cl, addr, "/", &[("cookie", &pair)]).await.unwrap().1,
            first
        );
        assert_ne!(get(&cl, addr, "/", &[]).await.unwrap().1, first);
    }
    // Maintenance: even the sticky client moves, and gets a new cookie.
    lb.set_backend_state("p", &first, AdminState::Maintenance)
        .unwrap();
    let (_, moved, set) = get(&cl, addr, "/", &[("cookie", &pair)]).await.unwrap();
    assert_ne!(moved, first);
    assert!(set.unwrap().starts_with(&format!("SRV={moved};")));
    assert!(matches!(
        lb.set_backend_state("p", "nope", AdminState::Enabled),
        Err(keepup_lb::LbError::UnknownBackend { .. })
    ));
    lb.shutdown(Duration::from_secs(1)).await;
}

// Active HTTP health checks with rise/fall; status shows transitions.
#[tokio::test]
async fn health_check_takes_a_backend_down_and_back_up() {
    let [a, b] = backends(["a", "b"]).await;
    let (lb, addr) = start_lb(&http_lb(
        "",
        "slow_start_ms = 60000\n[pool.health]\ntype = \"http\"\npath = \"/health\"\nexpect_status = [200, 299]\ninterval_ms = 50\ntimeout_ms = 500\nrise = 2\nfall = 2",
        &[(&a, 100), (&b, 100)],
    )).await;
    a.healthy.store(false, Ordering::SeqCst);
    let lb2 = lb.clone();
    assert!(
        eventually(Duration::from_secs(5), || !lb2.status().pools[0].backends
            [0]
        .healthy)
        .await
    );
    let before = a.hits();
    let cl = client();
    for _ in 0..20 {
        assert_eq!(get(&cl, addr, "/", &[]).await.unwrap().1, "b");
    }
    assert_eq!(a.hits(), before);
    let st = lb.status();
    assert!(st.pools[0].backends[0]
        .last_check_error
        .as_deref()
        .unwrap_or("")
        .contains("503"));
    a.healthy.store(true, Ordering::SeqCst);
    let lb2 = lb.clone();
    assert!(
        eventually(Duration::from_secs(5), || lb2.status().pools[0].backends[0]
            .healthy)
        .await
    );
    let st = lb.status();
    assert_eq!(st.pools[0].backends[0].health_transitions, 2);
    // Slow start: it comes back at a fraction of its weight.
    assert!(st.pools[0].backends[0].effective_weight < 100);
    let mut text = String::new();
    keepup_lb::prometheus(&st, &mut text);
    assert!(text.contains("keepup_lb_backend_health_transitions_total{pool=\"p\",backend=\"a\"} 2"));
    lb.shutdown(Duration::from_secs(1)).await;
}

// A backend killed mid-traffic costs no failed GET: requests that hit the
// dead backend are retried on another one.
#[tokio::test]
async fn backend_killed_under_load_fails_no_get() {
    let [mut a, b, c] = backends(["a", "b", "c"]).await;
    let (lb, addr) = start_lb(&http_lb(
        "",
        "passive_fall = 2",
        &[(&a, 100), (&b, 100), (&c, 100)],
    ))
    .await;
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (f, d) = (failures.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let cl = client();
            for _ in 0..300 {
                match get(&cl, addr, "/", &[]).await {
                    Ok((200, _, _)) => {}
                    other => {
                        eprintln!("failed: {other:?}");
                        f.fetch_add(1, Ordering::SeqCst);
                    }
                }
                d.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let d = done.clone();
    eventually(Duration::from_secs(10), || d.load(Ordering::SeqCst) >= 300).await;
    a.kill();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert_eq!(done.load(Ordering::SeqCst), 1200);
    let st = lb.status();
    assert!(
        !st.pools[0].backends[0].healthy,
        "passive health marks it down"
    );
    lb.shutdown(Duration::from_secs(1)).await;
}

// Drain: in-flight requests finish, no new ones arrive.
#[tokio::test]
async fn drain_lets_in_flight_finish_and_sends_nothing_new() {
    let [a, b] = backends(["a", "b"]).await;
    let (lb, addr) = start_lb(&http_lb("", "", &[(&a, 100), (&b, 100)])).await;
    // Round-robin starts at a: this slow request is in flight on a.
    let slow = tokio::spawn(async move { get(&client(), addr, "/slow", &[]).await });
    let lb2 = lb.clone();
    assert!(
        eventually(Duration::from_secs(2), || lb2.status().pools[0].backends[0]
            .active
            == 1)
        .await
    );
    lb.set_backend_state("p", "a", AdminState::Drain).unwrap();
    let r = slow.await.unwrap().unwrap();
    assert_eq!((r.0, r.1.as_str()), (200, "a"));
    let cl = client();
    let before = a.hits();
    for _ in 0..10 {
        assert_eq!(get(&cl, addr, "/", &[]).await.unwrap().1, "b");
    }
    assert_eq!(a.hits(), before);
    assert_eq!(
        lb.status().pools[0].backends[0].admin_state,
        AdminState::Drain
    );
    lb.set_backend_state("p", "a", AdminState::Enabled).unwrap();
    let mut seen_a = false;
    for _ in 0..4 {
        seen_a |= get(&cl, addr, "/", &[]).await.unwrap().1 == "a";
    }
    assert!(seen_a);
    lb.shutdown(Duration::from_secs(1)).await;
}

// Reload under load: keep-alive and new-connection clients see no error
// while the pool changes; the new backend gets traffic afterwards.
#[tokio::test]
async fn reload_under_load_drops_no_connection() {
    let [a, b, c] = backends(["a", "b", "c"]).await;
    let v1 = http_lb("", "", &[(&a, 100), (&b, 100)]);
    let lb = keepup_lb::start(&v1).await.unwrap();
    let addr = lb.local_addr("web").unwrap();
    let failures = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (f, s) = (failures.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let cl = client();
            let mut n = 0;
            while !s.load(Ordering::SeqCst) {
                let hdr: &[(&str, &str)] = if i % 2 == 0 {
                    &[]
                } else {
                    &[("connection", "close")]
                };
                match get(&cl, addr, "/", hdr).await {
                    Ok((200, _, _)) => {}
                    other => {
                        eprintln!("failed: {other:?}");
                        f.fetch_add(1, Ordering::SeqCst);
                    }
                }
                n += 1;
            }
            n
        }));
    }
    let v2 = http_lb(
        "retries = 3",
        "algorithm = \"least-connections\"",
        &[(&a, 100), (&b, 50), (&c, 100)],
    );
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = if round % 2 == 0 { &v2 } else { &v1 };
        lb.reload(s).await.unwrap();
        assert_eq!(lb.local_addr("web"), Some(addr), "the listener is kept");
    }
    lb.reload(&v2).await.unwrap();
    let before = c.hits();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0, "of {total}");
    assert!(c.hits() > before, "the added backend gets traffic");
    // Backends that stayed kept their counters.
    assert!(lb.status().pools[0].backends[0].counters.requests > 0);
    // A broken reload changes nothing.
    let mut bad = v2.clone();
    bad.frontend[0].pool = "nope".into();
    assert!(matches!(
        lb.reload(&bad).await,
        Err(keepup_lb::LbError::Config(_))
    ));
    assert_eq!(get(&client(), addr, "/", &[]).await.unwrap().0, 200);
    lb.shutdown(Duration::from_secs(1)).await;
}

// Forwarding headers reach the backend; hop-by-hop headers do not.
#[tokio::test]
async fn forwarding_headers() {
    let a = TestBackend::start("a").await;
    let (lb, addr) = start_lb(&http_lb("", "", &[(&a, 100)])).await;
    let cl = client();
    get(
        &cl,
        addr,
        "/",
        &[
            ("x-forwarded-for", "192.0.2.1"),
            ("connection", "x-private"),
            ("x-private", "1"),
        ],
    )
    .await
    .unwrap();
    let seen = a.seen.lock().unwrap().clone();
    assert_eq!(seen.get("x-forwarded-for").unwrap(), "192.0.2.1, 127.0.0.1");
    assert_eq!(seen.get("x-forwarded-proto").unwrap(), "http");
    assert_eq!(seen.get("x-forwarded-host").unwrap(), &addr.to_string());
    assert_eq!(seen.get("forwarded").unwrap(), "for=127.0.0.1;proto=http");
    assert_eq!(seen.get("host").unwrap(), &addr.to_string());
    assert!(!seen.contains_key("x-private"));
    lb.shutdown(Duration::from_secs(1)).await;
}

// Errors are proper statuses: no backend -> 503, dead backend -> 502,
// slow backend -> 504, 5xx passes through and counts passively.
#[tokio::test]
async fn error_statuses() {
    let mut a = TestBackend::start("a").await;
    let (lb, addr) = start_lb(&http_lb(
        "backend_timeout_ms = 300",
        "passive_fall = 0",
        &[(&a, 100)],
    ))
    .await;
    let cl = client();
    assert_eq!(get(&cl, addr, "/fail", &[]).await.unwrap().0, 500);
    assert_eq!(get(&cl, addr, "/very-slow", &[]).await.unwrap().0, 504);
    a.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(get(&client(), addr, "/", &[]).await.unwrap().0, 502);
    lb.set_backend_state("p", "a", AdminState::Maintenance)
        .unwrap();
    assert_eq!(get(&cl, addr, "/", &[]).await.unwrap().0, 503);
    let st = lb.status();
    assert!(st.frontends[0].counters.status_5xx >= 4);
    assert!(st.pools[0].backends[0].counters.errors >= 2);
    lb.shutdown(Duration::from_secs(1)).await;
}

// Hostile inputs get the right status and the proxy keeps serving others.
#[tokio::test]
async fn hostile_inputs_get_proper_statuses() {
    let a = TestBackend::start("a").await;
    let (lb, addr) = start_lb(&http_lb(
        "header_read_timeout_ms = 300\nmax_header_bytes = 8192\nmax_headers = 20",
        "",
        &[(&a, 100)],
    ))
    .await;
    let w = Duration::from_secs(3);
    // Smuggling: both Content-Length and Transfer-Encoding is refused with
    // 400 and the connection closes, so neither the request nor the one
    // hidden behind its body reaches a backend.
    let before = a.hits();
    let t = raw(addr, b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", w).await;
    assert_eq!(status_of(&t), 400, "{t}");
    assert_eq!(t.matches("HTTP/1.1 ").count(), 1, "{t}");
    assert_eq!(a.hits(), before);
    // Transfer-Encoding in HTTP/1.0, two Transfer-Encoding headers, and
    // HTTP/1.1 without Host: 400 too.
    for bad in [
        &b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let t = raw(addr, bad, w).await;
        assert_eq!(status_of(&t), 400, "{t}");
    }
    assert_eq!(a.hits(), before);
    // Two different Content-Lengths.
    let t = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        w,
    )
    .await;
    assert_eq!(status_of(&t), 400, "{t}");
    // A coding other than chunked.
    let t = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        w,
    )
    .await;
    assert_eq!(status_of(&t), 400, "{t}");
    // Bad chunk size: the streamed body fails, the client gets 400 and the
    // backend is not blamed (still healthy, no error counted).
    let t = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        w,
    )
    .await;
    assert_eq!(status_of(&t), 400, "{t}");
    assert_eq!(lb.status().pools[0].backends[0].counters.errors, 0);
    // A bad chunk in a small body with Content-Length is impossible; a body
    // shorter than its Content-Length (client hangs up) is a 400 too.
    let t = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        Duration::from_millis(300),
    )
    .await;
    assert!(
        t.is_empty() || status_of(&t) == 400 || status_of(&t) == 408,
        "{t}"
    );
    // Garbage request line.
    let t = raw(addr, b"HELLO\x01 WORLD\r\n\r\n", w).await;
    assert_eq!(status_of(&t), 400, "{t}");
    // Header block too large.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let t = raw(addr, big.as_bytes(), w).await;
    assert_eq!(status_of(&t), 431, "{t}");
    // Too many headers.
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let t = raw(addr, many.as_bytes(), w).await;
    assert_eq!(status_of(&t), 431, "{t}");
    // Slowloris: a head that never ends is cut off after header_read_timeout.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok(),
        "connection not closed by the header-read timeout"
    );
    // And the proxy still serves normal clients.
    assert_eq!(get(&client(), addr, "/", &[]).await.unwrap().0, 200);
    lb.shutdown(Duration::from_secs(1)).await;
}

// Graceful shutdown: the in-flight request completes, then the port closes.
#[tokio::test]
async fn graceful_shutdown_finishes_in_flight() {
    let a = TestBackend::start("a").await;
    let (lb, addr) = start_lb(&http_lb("", "", &[(&a, 100)])).await;
    let slow = tokio::spawn(async move { get(&client(), addr, "/slow", &[]).await });
    let lb2 = lb.clone();
    assert!(
        eventually(Duration::from_secs(2), || lb2.status().pools[0].backends[0]
            .active
            == 1)
        .await
    );
    lb.shutdown(Duration::from_secs(5)).await;
    assert_eq!(slow.await.unwrap().unwrap().0, 200);
    assert!(TcpStream::connect(addr).await.is_err());
}

/// A TCP echo backend that first reads a PROXY header, then echoes, and
/// reports the source address the header named.
async fn echo_backend(
    expect_proxy: bool,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Option<std::net::SocketAddr>>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let src = if expect_proxy {
                    keepup_lb::proxy_protocol::read_header(&mut s)
                        .await
                        .ok()
                        .and_then(|h| h.source)
                } else {
                    None
                };
                let _ = tx.send(src);
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, rx)
}

// TCP mode: bytes pass unchanged, PROXY v2 tells the backend the client.
#[tokio::test]
async fn tcp_mode_with_proxy_protocol_v2() {
    let (b1, mut rx1) = echo_backend(true).await;
    let (b2, mut rx2) = echo_backend(true).await;
    let s = section(&format!(
        "[[frontend]]\nname = \"db\"\nbind = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"p\"\nsend_proxy_protocol = \"v2\"\nidle_timeout_ms = 2000\n[[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"x\"\naddress = \"{b1}\"\n[[pool.backend]]\nname = \"y\"\naddress = \"{b2}\"\n"
    ));
    let lb = keepup_lb::start(&s).await.unwrap();
    let addr = lb.local_addr("db").unwrap();
    for i in 0..4u8 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let me = c.local_addr().unwrap();
        let msg = vec![i; 100_000];
        c.write_all(&msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
        let src = if i % 2 == 0 {
            rx1.recv().await
        } else {
            rx2.recv().await
        };
        assert_eq!(src.unwrap(), Some(me));
    }
    let lb2 = lb.clone();
    assert!(
        eventually(Duration::from_secs(2), || lb2.status().frontends[0]
            .active_connections
            == 0)
        .await
    );
    let st = lb.status();
    assert_eq!(st.frontends[0].counters.bytes_in, 400_000);
    assert_eq!(st.frontends[0].counters.bytes_out, 400_000);
    lb.shutdown(Duration::from_secs(1)).await;
}

// TCP mode: a dead backend is skipped at connect time.
#[tokio::test]
async fn tcp_mode_skips_dead_backend() {
    let (b1, _rx) = echo_backend(false).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s = section(&format!(
        "[[frontend]]\nname = \"t\"\nbind = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"p\"\n[[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"dead\"\naddress = \"{dead}\"\n[[pool.backend]]\nname = \"live\"\naddress = \"{b1}\"\n"
    ));
    let lb = keepup_lb::start(&s).await.unwrap();
    let addr = lb.local_addr("t").unwrap();
    for _ in 0..6 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
    }
    lb.shutdown(Duration::from_secs(1)).await;
}

// max_connections: further clients wait in the listen queue (not refused)
// and are served once a slot frees.
#[tokio::test]
async fn max_connections_queues_further_clients() {
    let a = TestBackend::start("a").await;
    let (lb, addr) = start_lb(&http_lb("max_connections = 1", "", &[(&a, 100)])).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The first connection stays open (keep-alive) and holds the only slot.
    let second = tokio::spawn(async move {
        raw(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second client was served too early"
    );
    drop(first);
    let text = second.await.unwrap();
    assert_eq!(status_of(&text), 200, "{text}");
    lb.shutdown(Duration::from_secs(1)).await;
}

// TCP mode closes a connection that is silent for idle_timeout_ms.
#[tokio::test]
async fn tcp_idle_timeout_closes_silent_connections() {
    let (b1, _rx) = echo_backend(false).await;
    let s = section(&format!(
        "[[frontend]]\nname = \"t\"\nbind = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"p\"\nidle_timeout_ms = 200\n[[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"x\"\naddress = \"{b1}\"\n"
    ));
    let lb = keepup_lb::start(&s).await.unwrap();
    let addr = lb.local_addr("t").unwrap();
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"hi").await.unwrap();
    let mut back = [0u8; 2];
    c.read_exact(&mut back).await.unwrap();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "idle connection not closed");
    lb.shutdown(Duration::from_secs(1)).await;
}

// Reload that adds a frontend and removes another: the new one serves at
// once; the removed one stops accepting but finishes its in-flight request.
#[tokio::test]
async fn reload_adds_and_removes_frontends() {
    let a = TestBackend::start("a").await;
    let pool = format!(
        "[[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"a\"\naddress = \"{}\"\n",
        a.addr
    );
    let one = section(&format!(
        "[[frontend]]\nname = \"old\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n{pool}"
    ));
    let lb = keepup_lb::start(&one).await.unwrap();
    let old = lb.local_addr("old").unwrap();
    let slow = tokio::spawn(async move { get(&client(), old, "/slow", &[]).await });
    let lb2 = lb.clone();
    assert!(
        eventually(Duration::from_secs(2), || lb2.status().pools[0].backends[0]
            .active
            == 1)
        .await
    );
    let two = section(&format!(
        "[[frontend]]\nname = \"new\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\nmode = \"tcp\"\n{pool}"
    ));
    lb.reload(&two).await.unwrap();
    assert_eq!(lb.local_addr("old"), None);
    let new = lb.local_addr("new").unwrap();
    assert_eq!(get(&client(), new, "/", &[]).await.unwrap().0, 200);
    assert_eq!(
        slow.await.unwrap().unwrap().0,
        200,
        "in-flight request finished"
    );
    assert!(
        eventually(Duration::from_secs(2), || std::net::TcpStream::connect(old)
            .is_err())
        .await,
        "the removed frontend still accepts"
    );
    assert_eq!(lb.status().frontends.len(), 1);
    lb.shutdown(Duration::from_secs(1)).await;
}

// Active TCP health check: a backend whose port closes goes down.
#[tokio::test]
async fn tcp_health_check_detects_a_closed_port() {
    let [mut a, b] = backends(["a", "b"]).await;
    let lb = keepup_lb::start(&http_lb(
        "",
        "[pool.health]\ntype = \"tcp\"\ninterval_ms = 50\ntimeout_ms = 300\nrise = 1\nfall = 1",
        &[(&a, 100), (&b, 100)],
    ))
    .await
    .unwrap();
    a.kill();
    let lb2 = lb.clone();
    assert!(
        eventually(Duration::from_secs(5), || !lb2.status().pools[0].backends
            [0]
        .healthy)
        .await
    );
    assert!(lb.status().pools[0].backends[0]
        .last_check_error
        .as_deref()
        .unwrap_or("")
        .contains("connect"));
    assert!(lb.status().pools[0].backends[1].healthy);
    lb.shutdown(Duration::from_secs(1)).await;
}
