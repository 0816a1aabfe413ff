//! TLS termination: self-signed certificates made in the test (rcgen), SNI
//! choosing between two, HTTP/2 by ALPN, HTTP/1.1 without it.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn write_cert(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key, ck.cert.der().clone())
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    sni: &str,
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .unwrap()
}

// Issue 3: TLS termination with rustls, SNI for several certificates,
// HTTP/2 from clients when TLS is on.
#[tokio::test]
async fn tls_sni_and_http2() {
    let dir = std::env::temp_dir().join(format!("keepup-lb-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (c1, k1, der1) = write_cert(&dir, "localhost");
    let (c2, k2, der2) = write_cert(&dir, "other.test");
    let a = TestBackend::start("a").await;
    let s = http_lb(
        &format!(
            "[[frontend.tls]]\ncert = {c1:?}\nkey = {k1:?}\n[[frontend.tls]]\ncert = {c2:?}\nkey = {k2:?}\n"
        ),
        "",
        &[(&a, 100)],
    );
    let lb = keepup_lb::start(&s).await.unwrap();
    let addr = lb.local_addr("web").unwrap();
    let roots = [der1.clone(), der2.clone()];

    // SNI picks the second certificate; HTTP/2 by ALPN.
    let tls = tls_connect(addr, "other.test", &roots, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], der2);
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = hyper::Request::get("https://other.test/x")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), hyper::Version::HTTP_2);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"a");
    }
    {
        let seen = a.seen.lock().unwrap();
        assert_eq!(seen.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(seen.get("host").unwrap(), "other.test");
    }

    // The default certificate for its own name; HTTP/1.1 without ALPN h2.
    let tls = tls_connect(addr, "localhost", &roots, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], der1);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/y")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), hyper::Version::HTTP_11);

    // A plain-text client on the TLS port is dropped; others keep working.
    let t = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(!t.contains("200 OK"));
    let tls = tls_connect(addr, "localhost", &roots, &[b"h2"]).await;
    assert!(tls.get_ref().1.alpn_protocol().is_some());

    // A missing certificate file is an error naming the file.
    let mut bad = s.clone();
    bad.frontend[0].tls[0].cert = dir.join("missing.crt");
    match lb.reload(&bad).await {
        Err(keepup_lb::LbError::Tls { path, .. }) => assert!(path.contains("missing.crt")),
        other => panic!("{other:?}"),
    }
    lb.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
