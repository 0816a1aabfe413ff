//! HTTP/1 message handling of the load balancer's own connection loop:
//! WebSocket upgrades, chunked and large bodies, `Expect: 100-continue`,
//! HTTP/1.0 clients, pipelining, and responses framed every way a backend
//! may frame them. Real sockets on 127.0.0.1, raw bytes where the framing
//! itself is under test.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(3);

/// A backend that reads one request head, sends it to `heads`, and answers
/// with `reply`; after a 101 it echoes whatever arrives.
async fn raw_backend(
    reply: &'static [u8],
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
                if s.write_all(reply).await.is_err() {
                    return;
                }
                if reply.starts_with(b"HTTP/1.1 101") {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
                // Close-delimited replies end by closing; others too, after a while.
                tokio::time::sleep(Duration::from_millis(200)).await;
            });
        }
    });
    (addr, rx)
}

fn lb_for(addr: SocketAddr) -> keepup_lb::LbSection {
    section(&format!(
        "[[frontend]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n[[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"b\"\naddress = \"{addr}\"\n"
    ))
}

/// Reads from `s` until `needle` appears or WAIT passes.
async fn read_until(s: &mut TcpStream, needle: &[u8]) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = tokio::time::Instant::now() + WAIT;
    while !got.windows(needle.len()).any(|w| w == needle) {
        match tokio::time::timeout_at(end, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

// A WebSocket handshake through an HTTP frontend: the Upgrade reaches the
// backend, the 101 reaches the client, then bytes flow both ways.
#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let (b, mut heads) = raw_backend(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    )
    .await;
    let lb = keepup_lb::start(&lb_for(b)).await.unwrap();
    let addr = lb.local_addr("web").unwrap();
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let head = read_until(&mut c, b"\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    let seen = heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(seen.contains("upgrade: websocket"), "{seen}");
    assert!(seen.contains("connection: upgrade"), "{seen}");
    assert!(seen.contains("sec-websocket-key: "), "{seen}");
    c.write_all(b"frame-1").await.unwrap();
    assert!(read_until(&mut c, b"frame-1").await.ends_with("frame-1"));
    c.write_all(b"frame-2").await.unwrap();
    assert!(read_until(&mut c, b"frame-2").await.ends_with("frame-2"));
    // Without `Connection: upgrade` the Upgrade header is not forwarded.
    let (b2, mut heads2) = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let lb2 = keepup_lb::start(&lb_for(b2)).await.unwrap();
    let t = raw(
        lb2.local_addr("web").unwrap(),
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(status_of(&t), 200, "{t}");
    assert!(!heads2
        .recv()
        .await
        .unwrap()
        .to_ascii_lowercase()
        .contains("upgrade"));
    lb.shutdown(Duration::from_secs(1)).await;
    lb2.shutdown(Duration::from_secs(1)).await;
}

// Request bodies: chunked (split across writes, with an extension and a
// trailer) and larger than the retry buffer arrive whole.
#[tokio::test]
async fn chunked_and_large_request_bodies_arrive_whole() {
    let (_a, lb, addr) = one_backend_lb().await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhel")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.write_all(b"lo\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")
        .await
        .unwrap();
    let t = read_until(&mut c, b"\r\n\r\na").await;
    assert_eq!(status_of(&t), 200, "{t}");
    assert!(t.to_ascii_lowercase().contains("x-body-len: 11"), "{t}");
    // 300 KiB with Content-Length: streamed, not kept.
    let n = 300 * 1024;
    let mut req =
        format!("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n").into_bytes();
    req.extend(std::iter::repeat_n(b'z', n));
    c.write_all(&req).await.unwrap();
    let t = read_until(&mut c, b"\r\n\r\na").await;
    assert!(
        t.to_ascii_lowercase().contains(&format!("x-body-len: {n}")),
        "{t}"
    );
    lb.shutdown(Duration::from_secs(1)).await;
}

// `Expect: 100-continue`: the client gets `100 Continue` before it sends
// the body, then the backend's answer.
#[tokio::test]
async fn expect_continue() {
    let (_a, lb, addr) = one_backend_lb().await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let t = read_until(&mut c, b"\r\n\r\n").await;
    assert!(t.starts_with("HTTP/1.1 100 Continue"), "{t}");
    c.write_all(b"abcde").await.unwrap();
    let t = read_until(&mut c, b"\r\n\r\na").await;
    assert_eq!(status_of(&t), 200, "{t}");
    assert!(t.to_ascii_lowercase().contains("x-body-len: 5"), "{t}");
    // An expectation this proxy cannot meet.
    let t = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(status_of(&t), 417, "{t}");
    lb.shutdown(Duration::from_secs(1)).await;
}

// HTTP/1.0 without Host is served and closed; pipelined requests are
// answered in order on one connection.
#[tokio::test]
async fn http10_and_pipelining() {
    let (a, lb, addr) = one_backend_lb().await;
    let t = raw(addr, b"GET / HTTP/1.0\r\n\r\n", WAIT).await;
    assert_eq!(status_of(&t), 200, "{t}");
    assert!(t.to_ascii_lowercase().contains("connection: close"), "{t}");
    assert!(t.ends_with('a'), "{t}");
    let t = raw(
        addr,
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(t.matches("HTTP/1.1 200").count(), 3, "{t}");
    assert_eq!(a.hits(), 4);
    lb.shutdown(Duration::from_secs(1)).await;
}

// Responses framed by chunked coding and by closing arrive whole; an
// HTTP/1.0 client gets a chunked response decoded, then the close.
#[tokio::test]
async fn chunked_and_close_delimited_responses() {
    let (b, _h) = raw_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n",
    )
    .await;
    let lb = keepup_lb::start(&lb_for(b)).await.unwrap();
    let addr = lb.local_addr("web").unwrap();
    let t = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(
        t.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{t}"
    );
    assert!(t.ends_with("4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"), "{t}");
    let t = raw(addr, b"GET / HTTP/1.0\r\n\r\n", WAIT).await;
    assert!(!t.to_ascii_lowercase().contains("chunked"), "{t}");
    assert!(t.ends_with("\r\n\r\nWikipedia"), "{t}");

    let (b2, _h2) = raw_backend(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end").await;
    let lb2 = keepup_lb::start(&lb_for(b2)).await.unwrap();
    let t = raw(
        lb2.local_addr("web").unwrap(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(status_of(&t), 200, "{t}");
    assert!(t.to_ascii_lowercase().contains("connection: close"), "{t}");
    assert!(t.ends_with("\r\n\r\nuntil the end"), "{t}");

    // A backend answering garbage: 502, and the proxy keeps serving.
    let (b3, _h3) = raw_backend(b"SMTP ready\r\n\r\n").await;
    let lb3 = keepup_lb::start(&lb_for(b3)).await.unwrap();
    let t = raw(
        lb3.local_addr("web").unwrap(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(status_of(&t), 502, "{t}");
    lb.shutdown(Duration::from_secs(1)).await;
    lb2.shutdown(Duration::from_secs(1)).await;
    lb3.shutdown(Duration::from_secs(1)).await;
}

// A client that stops reading a long response is dropped after
// `idle_timeout_ms`, and with it the backend connection (no slow reader
// holds a backend forever).
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut head = [0u8; 4096];
        let _ = s.read(&mut head).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n")
            .await;
        let chunk = vec![b'x'; 64 * 1024];
        let start = tokio::time::Instant::now();
        while s.write_all(&chunk).await.is_ok() {}
        let _ = tx.send(start.elapsed());
    });
    let lb = keepup_lb::start(&section(&format!(
        "[[frontend]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\nidle_timeout_ms = 300\n[[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"b\"\naddress = \"{b}\"\n"
    )))
    .await
    .unwrap();
    let mut c = TcpStream::connect(lb.local_addr("web").unwrap())
        .await
        .unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_until(&mut c, b"\r\n\r\n").await;
    assert_eq!(status_of(&head), 200, "{head}");
    // Stop reading; the proxy must give up on this client.
    let stalled_for = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("backend connection still open 10 s after the client stopped reading")
        .unwrap();
    assert!(stalled_for < Duration::from_secs(10));
    drop(c);
    lb.shutdown(Duration::from_secs(1)).await;
}

// An upgraded connection that goes silent is closed after one to two
// idle_timeout_ms periods, like a TCP frontend's.
#[tokio::test]
async fn idle_websocket_tunnel_is_closed() {
    let (b, _heads) = raw_backend(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    let lb = keepup_lb::start(&section(&format!(
        "[[frontend]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\nidle_timeout_ms = 300\n[[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"b\"\naddress = \"{b}\"\n"
    )))
    .await
    .unwrap();
    let mut c = TcpStream::connect(lb.local_addr("web").unwrap())
        .await
        .unwrap();
    c.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_until(&mut c, b"\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    c.write_all(b"hello").await.unwrap();
    assert!(read_until(&mut c, b"hello").await.ends_with("hello"));
    let t0 = tokio::time::Instant::now();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "silent tunnel still open after 5 s");
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "closed too early"
    );
    lb.shutdown(Duration::from_secs(1)).await;
}
