//! Test helpers: real backends (small hyper servers on 127.0.0.1:0), a real
//! pooled client, and raw-socket helpers for hostile inputs.

#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use keepup_lb::LbSection;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend: answers with its name, counts hits, can fail health checks or die.
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub healthy: Arc<AtomicBool>,
    /// Last request headers seen (lower-case name -> value).
    pub seen: Arc<Mutex<HashMap<String, String>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestBackend {
    /// Starts a backend on 127.0.0.1:0.
    pub async fn start(name: &str) -> TestBackend {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(name, l)
    }

    /// Starts a backend on a given listener (to bring one back on its old port).
    pub fn on(name: &str, l: TcpListener) -> TestBackend {
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let (n, h, ok, s) = (
            name.to_string(),
            hits.clone(),
            healthy.clone(),
            seen.clone(),
        );
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = l.accept().await else {
                    continue;
                };
                let (n, h, ok, s) = (n.clone(), h.clone(), ok.clone(), s.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (n, h, ok, s) = (n.clone(), h.clone(), ok.clone(), s.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            if path == "/health" {
                                let code = if ok.load(Ordering::SeqCst) { 200 } else { 503 };
                                return Ok::<_, Infallible>(
                                    hyper::Response::builder()
                                        .status(code)
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                );
                            }
                            h.fetch_add(1, Ordering::SeqCst);
                            {
                                let mut seen = s.lock().unwrap();
                                seen.clear();
                                for (k, v) in req.headers() {
                                    seen.insert(
                                        k.as_str().to_string(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    );
                                }
                            }
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let body_len = body.map(|b| b.len()).unwrap_or(0);
                            match path.as_str() {
                                "/slow" => tokio::time::sleep(Duration::from_millis(300)).await,
                                "/very-slow" => tokio::time::sleep(Duration::from_secs(5)).await,
                                _ => {}
                            }
                            let code = if path == "/fail" { 500 } else { 200 };
                            Ok(hyper::Response::builder()
                                .status(code)
                                .header("x-backend", n.as_str())
                                .header("x-body-len", body_len.to_string())
                                .body(Full::new(Bytes::from(n.clone())))
                                .unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        TestBackend {
            name: name.to_string(),
            addr,
            hits,
            healthy,
            seen,
            task: Some(task),
        }
    }

    /// Kills the server and every open connection (like a crashed process).
    pub fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts one test backend per name.
pub async fn backends<const N: usize>(names: [&str; N]) -> [TestBackend; N] {
    let mut out = Vec::with_capacity(N);
    for n in names {
        out.push(TestBackend::start(n).await);
    }
    match out.try_into() {
        Ok(a) => a,
        Err(_) => unreachable!("N backends were started"),
    }
}

/// Starts a load balancer and returns it with the address of its frontend "web".
pub async fn start_lb(section: &LbSection) -> (keepup_lb::LbHandle, SocketAddr) {
    let lb = keepup_lb::start(section).await.unwrap();
    let addr = lb.local_addr("web").unwrap();
    (lb, addr)
}

/// Backend "a" (weight 100) behind an HTTP frontend "web" with default
/// settings: the backend, the running load balancer, and its address.
pub async fn one_backend_lb() -> (TestBackend, keepup_lb::LbHandle, SocketAddr) {
    let [a] = backends(["a"]).await;
    let (lb, addr) = start_lb(&http_lb("", "", &[(&a, 100)])).await;
    (a, lb, addr)
}

/// Parses an `[lb]` section written as TOML (without the `[lb]` line prefix).
pub fn section(toml_text: &str) -> LbSection {
    let s: LbSection = toml::from_str(toml_text).unwrap();
    let p = s.problems();
    assert!(p.is_empty(), "{p:?}");
    s
}

/// TOML for a pool's backends.
pub fn backends_toml(pool: &str, bs: &[(&TestBackend, u32)]) -> String {
    let mut out = String::new();
    for (b, w) in bs {
        out.push_str(&format!(
            "[[pool.backend]]\nname = \"{}\"\naddress = \"{}\"\nweight = {w}\n",
            b.name, b.addr
        ));
    }
    let _ = pool;
    out
}

/// A section with one HTTP frontend on 127.0.0.1:0 and one pool.
pub fn http_lb(extra_frontend: &str, pool_settings: &str, bs: &[(&TestBackend, u32)]) -> LbSection {
    section(&format!(
        "workers = 1\n[[frontend]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n{extra_frontend}\n[[pool]]\nname = \"p\"\n{pool_settings}\n{}",
        backends_toml("p", bs)
    ))
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `path` from `addr`; returns status, `x-backend` and the Set-Cookie header.
pub async fn get(
    c: &TestClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String, Option<String>), String> {
    let mut b = hyper::Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::new())).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), c.request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = res.status().as_u16();
    let backend = res
        .headers()
        .get("x-backend")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let cookie = res
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    res.into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok((status, backend, cookie))
}

/// Sends raw bytes on a fresh connection and reads the answer until the
/// server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Status code of the first response in `text` (0 when none).
pub fn status_of(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Polls `f` until true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
