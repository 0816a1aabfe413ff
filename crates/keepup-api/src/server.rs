//! The HTTP server (hyper 1): routing, auth, JSON.

use crate::guard::{admit, AccessPolicy, Need};
use crate::types::{ControlRequest, ControlResponse};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A boxed future for the backend trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the server asks the agent.
pub trait Backend: Send + Sync + 'static {
    /// The status document as JSON.
    fn status_json(&self) -> serde_json::Value;
    /// Recent events as JSON.
    fn events_json(&self) -> serde_json::Value;
    /// Prometheus exposition text.
    fn metrics(&self) -> String;
    /// Every node's status side by side with the disagreements
    /// ([`crate::cluster::document`]); by default this node alone.
    fn cluster(&self) -> BoxFuture<'_, serde_json::Value> {
        let me = self.status_json();
        let name = me["node"].as_str().unwrap_or("this node").to_string();
        Box::pin(async move { crate::cluster::document(vec![(name, Ok(me))]) })
    }
    /// Performs a control request.
    fn control(&self, req: ControlRequest) -> BoxFuture<'_, ControlResponse>;
    /// Extra routes, served without a token (the database health checks
    /// an outside load balancer polls): `Some(response)` when handled.
    fn extra(
        &self,
        _method: &Method,
        _path: &str,
        _query: Option<&str>,
    ) -> Option<(StatusCode, &'static str, Bytes)> {
        None
    }
}

const MAX_BODY: usize = 64 * 1024;
/// A control body must arrive whole within this (a slow sender holds nothing).
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The live dashboard: one static page that polls `/v1/status` (no build step).
const DASHBOARD: &str = include_str!("dashboard.html");

/// How the server guards itself: who may do what, and how much a client may hold.
#[derive(Clone)]
pub struct ServeOptions {
    /// Tokens and the addresses `Host` may name.
    pub policy: AccessPolicy,
    /// Open connections at most, from the network and (counted apart) from
    /// loopback; more are closed at once (the agent's own file descriptors
    /// and memory stay for failover work).
    pub max_connections: usize,
    /// Time a client gets to send a request's headers, and to start the
    /// next one on a kept-alive connection.
    pub header_timeout: Duration,
    /// HTTPS (`[api.tls]`), or plain HTTP when None.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("policy", &self.policy)
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    // Loopback peers have slots of their own, so a flood from the network
    // never locks the operator's `keepup status` out.
    let remote_slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections));
    let local_slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections));
    let policy = Arc::new(options.policy);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_buf_size(64 * 1024);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    // Out of descriptors or similar: do not spin on it.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let slots = if crate::guard::is_loopback(peer.ip()) { &local_slots } else { &remote_slots };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "API connection refused: {} open already", options.max_connections);
                    drop(stream);
                    continue;
                };
                let backend = backend.clone();
                let policy = policy.clone();
                let service = hyper::service::service_fn(move |req| {
                    let backend = backend.clone();
                    let policy = policy.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(backend, &policy, peer, req).await) }
                });
                let builder = builder.clone();
                let tls = options.tls.clone();
                let handshake_timeout = options.header_timeout;
                tokio::spawn(async move {
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                        // The handshake gets the header timeout too: a
                        // client that never finishes it holds its slot no longer.
                        Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                            Ok(Err(e)) => tracing::debug!(%peer, "API TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
                        },
                    }
                    drop(slot);
                });
            }
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(v) {
        Ok(b) => reply(status, "application/json", b),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(
        status,
        &ControlResponse {
            ok: false,
            message: message.into(),
        },
    )
}

async fn handle(
    backend: Arc<dyn Backend>,
    policy: &AccessPolicy,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let need = match (&method, path.as_str()) {
        (&Method::GET, "/v1/status" | "/v1/events" | "/v1/cluster" | "/metrics") => Need::Read,
        (&Method::POST, _) => Need::Control,
        _ => Need::Open,
    };
    if let Err(r) = admit(policy, peer, req.headers(), need) {
        tracing::debug!(%peer, %method, %path, status = %r.status, "API request refused: {}", r.message);
        return error(r.status, r.message);
    }
    match (&method, path.as_str()) {
        (&Method::GET, "/v1/status") => json(StatusCode::OK, &backend.status_json()),
        (&Method::GET, "/v1/events") => json(StatusCode::OK, &backend.events_json()),
        (&Method::GET, "/v1/cluster") => json(StatusCode::OK, &backend.cluster().await),
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            backend.metrics(),
        ),
        (&Method::GET, "/" | "/dashboard") => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from_static(DASHBOARD.as_bytes()),
        ),
        (&Method::GET, "/openapi.json") => reply(
            StatusCode::OK,
            "application/json",
            Bytes::from_static(crate::OPENAPI.as_bytes()),
        ),
        (&Method::POST, p) if p.starts_with("/v1/") => {
            let request = match route_control(p) {
                Some(r) => r,
                None => {
                    let body = Limited::new(req.into_body(), MAX_BODY).collect();
                    let body = match tokio::time::timeout(BODY_TIMEOUT, body).await {
                        Ok(Ok(b)) => b.to_bytes(),
                        Ok(Err(e)) => {
                            return error(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                format!("control body over {MAX_BODY} bytes: {e}"),
                            )
                        }
                        Err(_) => {
                            return error(
                                StatusCode::REQUEST_TIMEOUT,
                                format!("control body not received within {BODY_TIMEOUT:?}"),
                            )
                        }
                    };
                    match (p, serde_json::from_slice::<ControlRequest>(&body)) {
                        ("/v1/control", Ok(r)) => r,
                        ("/v1/control", Err(e)) => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                format!("bad control request: {e}"),
                            )
                        }
                        _ => return error(StatusCode::NOT_FOUND, format!("no route POST {p}")),
                    }
                }
            };
            let resp = backend.control(request).await;
            let status = if resp.ok {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            json(status, &resp)
        }
        _ => match backend.extra(&method, &path, req.uri().query()) {
            Some((status, ct, body)) => reply(status, ct, body),
            None => error(StatusCode::NOT_FOUND, format!("no route {method} {path}")),
        },
    }
}

/// Maps REST-style paths to control requests.
fn route_control(path: &str) -> Option<ControlRequest> {
    let parts: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    match parts.as_slice() {
        ["standby"] => Some(ControlRequest::Standby),
        ["online"] => Some(ControlRequest::Online),
        ["reload"] | ["lb", "reload"] => Some(ControlRequest::Reload),
        ["lb", "backends", pool, backend, state] => Some(ControlRequest::LbBackend {
            pool: pool.to_string(),
            backend: backend.to_string(),
            state: state.to_string(),
        }),
        ["move", group, node] => Some(ControlRequest::Move {
            group: group.to_string(),
            node: node.to_string(),
        }),
        ["db", "switchover", to] => Some(ControlRequest::DbSwitchover { to: to.to_string() }),
        ["cleanup", group] => Some(ControlRequest::Cleanup {
            group: group.to_string(),
        }),
        _ => None,
    }
}
