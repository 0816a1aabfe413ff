//! The HTTP server (hyper 1): routing, auth, JSON.

use crate::types::{ControlRequest, ControlResponse};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
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
    /// Performs a control request.
    fn control(&self, req: ControlRequest) -> BoxFuture<'_, ControlResponse>;
    /// The bearer token control requests need (None: loopback only, no token).
    fn token(&self) -> Option<String>;
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

/// The live dashboard: one static page that polls `/v1/status` (no build step).
const DASHBOARD: &str = include_str!("dashboard.html");

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let backend = backend.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let backend = backend.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(backend, peer, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
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

fn authorized(backend: &dyn Backend, peer: SocketAddr, req: &Request<Incoming>) -> bool {
    match backend.token() {
        None => peer.ip().is_loopback(),
        Some(token) => req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn handle(
    backend: Arc<dyn Backend>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let read_ok = peer.ip().is_loopback() || authorized(backend.as_ref(), peer, &req);
    match (&method, path.as_str()) {
        (&Method::GET, "/v1/status") if read_ok => json(StatusCode::OK, &backend.status_json()),
        (&Method::GET, "/v1/events") if read_ok => json(StatusCode::OK, &backend.events_json()),
        (&Method::GET, "/metrics") if read_ok => reply(
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
        (&Method::GET, "/v1/status" | "/v1/events" | "/metrics") => error(
            StatusCode::UNAUTHORIZED,
            "status from outside loopback needs Authorization: Bearer <token>",
        ),
        (&Method::POST, p) if p.starts_with("/v1/") => {
            if !authorized(backend.as_ref(), peer, &req) {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "control requests need Authorization: Bearer <token from api.token_file> (or loopback when no token file is set)",
                );
            }
            let request = match route_control(p) {
                Some(r) => r,
                None => {
                    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                        Ok(b) => b.to_bytes(),
                        Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
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
