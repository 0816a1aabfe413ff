//! A fake DigitalOcean API (and metadata service) for tests: a small HTTP/1
//! server on a tokio task that records every request (method, path,
//! headers, JSON body, peer) so tests can assert the exact requests the
//! provider documents, and that can be told to fail the next N requests
//! with 429 or 5xx.
//!
//! Routes (the shapes of the DigitalOcean API v2 reference):
//! - `GET /metadata/v1/id`: the requester's droplet id, plain text, chosen
//!   by its source address ([`Options::droplets_by_peer`]) or
//!   [`Options::default_droplet`]; no token needed, as on a droplet.
//! - `GET /v2/reserved_ips/{ip}` → `{"reserved_ip": {"ip", "droplet":
//!   {"id", "name"} | null, "region", "locked"}}`.
//! - `POST /v2/reserved_ips/{ip}/actions` with `{"type": "assign",
//!   "droplet_id": N}` or `{"type": "unassign"}` → `201 {"action": {...}}`.
//! - `GET /v2/droplets/{id}` → `{"droplet": {"id", "name", "status"}}` for
//!   the droplets in [`Options::droplets`].
//! - `POST /v2/droplets/{id}/actions` with `{"type": "power_off" | "shutdown"
//!   | "power_on"}` → `201 {"action": {...}}`; the droplet's status changes
//!   when the action completes.
//! - `GET /v2/actions/{id}` → `{"action": {...}}`; an action answers
//!   `in-progress` for [`FakeDo::set_polls_before_complete`] polls, then
//!   `completed` (or `errored`, see [`FakeDo::error_next_action`]).
//!
//! `/v2/*` requires `Authorization: Bearer <token>` (401 otherwise). Every
//! answer carries `ratelimit-*` headers like the real API. An assign calls
//! the [`AssignHook`] first (the `fake-do` binary moves the address between
//! lab namespaces there) and only then records the new holder.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Called on every accepted assign: `(reserved_ip, previous holder, new
/// holder)`. An `Err` makes the action `errored` and leaves the holder.
pub type AssignHook = Arc<dyn Fn(&str, Option<u64>, u64) -> Result<(), String> + Send + Sync>;

/// Called on every accepted droplet power action: `(droplet, new status)`
/// (`off` or `active`). An `Err` makes the action `errored`.
pub type PowerHook = Arc<dyn Fn(u64, &str) -> Result<(), String> + Send + Sync>;

/// How the fake starts.
#[derive(Clone, Default)]
pub struct Options {
    /// The token `/v2/*` requests must carry.
    pub token: String,
    /// Reserved IPs the account has, with their holder.
    pub reserved_ips: BTreeMap<String, Option<u64>>,
    /// Droplet id per requester address, for `/metadata/v1/id`.
    pub droplets_by_peer: HashMap<IpAddr, u64>,
    /// Droplet id for requesters not in `droplets_by_peer`.
    pub default_droplet: Option<u64>,
    /// Runs on assign before the holder changes.
    pub on_assign: Option<AssignHook>,
    /// Droplets with their status (`active`, `off`), for the droplet routes.
    pub droplets: BTreeMap<u64, String>,
    /// Runs on a power action before the droplet's status changes.
    pub on_power: Option<PowerHook>,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path with query, e.g. `/v2/reserved_ips/10.0.0.1/actions`.
    pub path: String,
    /// Headers, names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (`None`: empty or not JSON).
    pub json: Option<Value>,
    /// The raw body.
    pub body: String,
    /// Who sent it.
    pub peer: SocketAddr,
    /// The status the fake answered.
    pub status: u16,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
struct Action {
    id: u64,
    kind: &'static str,
    ip: String,
    /// A droplet action: the droplet and the status it gets on completion.
    droplet: Option<(u64, &'static str)>,
    polls_left: u32,
    outcome: &'static str,
    started: u64,
}

/// An injected failure: the next `remaining` matching requests get it.
#[derive(Debug, Clone)]
struct Failure {
    method: Option<Method>,
    path_contains: Option<String>,
    remaining: u32,
    status: u16,
    retry_after: Option<u64>,
    message: Option<String>,
}

impl Failure {
    fn matches(&self, method: &Method, path: &str) -> bool {
        self.remaining > 0
            && self.method.as_ref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
    }
}

#[derive(Default)]
struct State {
    opts: Options,
    requests: Vec<Recorded>,
    actions: BTreeMap<u64, Action>,
    next_action: u64,
    failures: Vec<Failure>,
    polls_before_complete: u32,
    error_next: bool,
}

impl State {
    /// A new action, answered `201` with its first status (in-progress for
    /// `polls_before_complete` polls); a droplet action that completes at
    /// once changes the droplet's status now.
    fn record_action(
        &mut self,
        kind: &'static str,
        ip: String,
        droplet: Option<(u64, &'static str)>,
        outcome: &'static str,
    ) -> Answer {
        let id = self.next_action;
        self.next_action += 1;
        let a = Action {
            id,
            kind,
            ip,
            droplet,
            polls_left: self.polls_before_complete,
            outcome,
            started: now(),
        };
        let first = if a.polls_left > 0 {
            "in-progress"
        } else {
            a.outcome
        };
        if let (Some((d, to)), "completed") = (droplet, first) {
            self.opts.droplets.insert(d, to.to_string());
        }
        let body = action_json(&a, first);
        self.actions.insert(id, a);
        reply(StatusCode::CREATED, body)
    }
}

/// A running fake; the server stops when this is dropped.
pub struct FakeDo {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl FakeDo {
    /// Starts a fake on 127.0.0.1 with a free port (inside a tokio runtime).
    pub async fn start(opts: Options) -> std::io::Result<FakeDo> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        FakeDo::serve(listener, opts)
    }

    /// Serves on an already bound listener (the `fake-do` binary binds the
    /// address it is told).
    pub fn serve(listener: TcpListener, opts: Options) -> std::io::Result<FakeDo> {
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            opts,
            next_action: 1_000_001,
            ..State::default()
        }));
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = Arc::clone(&st);
                        async move { Ok::<_, std::convert::Infallible>(handle(req, peer, st).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(FakeDo { addr, state, task })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL for `api_url` (`http://127.0.0.1:PORT`).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Base URL for `metadata_url` (`http://127.0.0.1:PORT/metadata/v1`).
    pub fn metadata_url(&self) -> String {
        format!("http://{}/metadata/v1", self.addr)
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Answers the next `n` requests (any route) with `status` (429, 500,
    /// 503...) before looking at them.
    pub fn fail_next(&self, n: u32, status: u16) {
        self.lock().failures.push(Failure {
            method: None,
            path_contains: None,
            remaining: n,
            status,
            retry_after: None,
            message: None,
        });
    }

    /// Like [`FakeDo::fail_next`], with a `Retry-After: secs` header.
    pub fn fail_next_with_retry_after(&self, n: u32, status: u16, secs: u64) {
        self.lock().failures.push(Failure {
            method: None,
            path_contains: None,
            remaining: n,
            status,
            retry_after: Some(secs),
            message: None,
        });
    }

    /// Answers the next `n` requests with `method` whose path contains
    /// `path_contains` with `status` and the error `message` (e.g. the
    /// API's 422 "The reserved IP already has a pending event.").
    pub fn fail_next_request(
        &self,
        method: &str,
        path_contains: &str,
        n: u32,
        status: u16,
        message: &str,
    ) {
        self.lock().failures.push(Failure {
            method: Method::from_bytes(method.as_bytes()).ok(),
            path_contains: Some(path_contains.to_string()),
            remaining: n,
            status,
            retry_after: None,
            message: Some(message.to_string()),
        });
    }

    /// New actions answer `in-progress` to this many polls before finishing.
    pub fn set_polls_before_complete(&self, n: u32) {
        self.lock().polls_before_complete = n;
    }

    /// The next action ends `errored` (and does not move the IP).
    pub fn error_next_action(&self) {
        self.lock().error_next = true;
    }

    /// Sets who holds `ip` (adds it to the account if new).
    pub fn set_holder(&self, ip: &str, droplet: Option<u64>) {
        self.lock()
            .opts
            .reserved_ips
            .insert(ip.to_string(), droplet);
    }

    /// The status of droplet `id` (`None`: no such droplet).
    pub fn droplet_status(&self, id: u64) -> Option<String> {
        self.lock().opts.droplets.get(&id).cloned()
    }

    /// Who holds `ip` (`None` for unassigned or unknown).
    pub fn holder(&self, ip: &str) -> Option<u64> {
        self.lock().opts.reserved_ips.get(ip).copied().flatten()
    }
}

impl Drop for FakeDo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking test thread must not hide the recorded requests.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

type Answer = (StatusCode, Vec<(&'static str, String)>, String);

fn reply(status: StatusCode, body: Value) -> Answer {
    (status, Vec::new(), body.to_string())
}

fn error(status: StatusCode, id: &str, message: &str) -> Answer {
    reply(status, json!({"id": id, "message": message}))
}

fn action_json(a: &Action, status: &str) -> Value {
    json!({"action": {
        "id": a.id,
        "status": status,
        "type": a.kind,
        "started_at": a.started,
        "completed_at": if status == "in-progress" { Value::Null } else { json!(now()) },
        "resource_id": a.droplet.map_or(ip_resource_id(&a.ip), |(d, _)| d),
        "resource_type": if a.droplet.is_some() { "droplet" } else { "reserved_ip" },
        "region_slug": "lab1",
    }})
}

/// The API reports an IPv4 reserved IP's resource id as the address as a
/// number.
fn ip_resource_id(ip: &str) -> u64 {
    ip.parse::<std::net::Ipv4Addr>()
        .map(|a| u64::from(u32::from(a)))
        .unwrap_or(0)
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    st: Arc<Mutex<State>>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let mut rec = Recorded {
        method: method.to_string(),
        path: path.clone(),
        headers,
        json: serde_json::from_str(&body).ok(),
        body,
        peer,
        status: 0,
    };
    let (status, extra, text) = route(&method, &path, &rec, &st).await;
    rec.status = status.as_u16();
    let remaining = {
        let mut s = lock(&st);
        s.requests.push(rec);
        5000u64.saturating_sub(s.requests.len() as u64)
    };
    let mut resp = Response::builder()
        .status(status)
        .header(
            "content-type",
            if path.starts_with("/metadata/") {
                "text/plain; charset=utf-8"
            } else {
                "application/json; charset=utf-8"
            },
        )
        .header("ratelimit-limit", "5000")
        .header("ratelimit-remaining", remaining.to_string())
        .header("ratelimit-reset", (now() + 60).to_string());
    for (k, v) in extra {
        resp = resp.header(k, v);
    }
    resp.body(Full::new(Bytes::from(text)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::from_static(b"internal fake error"))))
}

async fn route(method: &Method, path: &str, rec: &Recorded, st: &Arc<Mutex<State>>) -> Answer {
    // Injected failures come first, whatever the route.
    {
        let mut s = lock(st);
        s.failures.retain(|f| f.remaining > 0);
        if let Some(f) = s.failures.iter_mut().find(|f| f.matches(method, path)) {
            f.remaining -= 1;
            let status =
                StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut extra = Vec::new();
            if let Some(secs) = f.retry_after {
                extra.push(("retry-after", secs.to_string()));
            }
            let id = match status.as_u16() {
                429 => "too_many_requests",
                422 => "unprocessable_entity",
                s if s >= 500 => "server_error",
                _ => "error",
            };
            let msg = f.message.clone().unwrap_or_else(|| {
                if status == StatusCode::TOO_MANY_REQUESTS {
                    "API Rate limit exceeded.".to_string()
                } else {
                    "Unexpected server-side error".to_string()
                }
            });
            return (status, extra, json!({"id": id, "message": msg}).to_string());
        }
    }
    let path_only = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path_only.trim_matches('/').split('/').collect();

    if parts == ["metadata", "v1", "id"] && method == Method::GET {
        let s = lock(st);
        let id = s
            .opts
            .droplets_by_peer
            .get(&rec.peer.ip())
            .copied()
            .or(s.opts.default_droplet);
        return match id {
            Some(id) => (StatusCode::OK, Vec::new(), id.to_string()),
            None => (
                StatusCode::NOT_FOUND,
                Vec::new(),
                "not a droplet\n".to_string(),
            ),
        };
    }
    if parts.first() != Some(&"v2") {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "The resource you were accessing could not be found.",
        );
    }
    {
        let s = lock(st);
        let want = format!("Bearer {}", s.opts.token);
        if s.opts.token.is_empty() || rec.header("authorization") != Some(want.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unable to authenticate you.",
            );
        }
    }
    match (method, parts.as_slice()) {
        (&Method::GET, ["v2", "reserved_ips", ip]) => {
            let s = lock(st);
            match s.opts.reserved_ips.get(*ip) {
                None => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "The resource you were accessing could not be found.",
                ),
                Some(holder) => {
                    let droplet = match holder {
                        Some(id) => {
                            json!({"id": id, "name": format!("droplet-{id}"), "status": "active"})
                        }
                        None => Value::Null,
                    };
                    reply(
                        StatusCode::OK,
                        json!({"reserved_ip": {
                            "ip": ip,
                            "droplet": droplet,
                            "region": {"name": "Lab 1", "slug": "lab1"},
                            "locked": false,
                            "project_id": "746c6152-2fa2-11ed-92d3-27aaa54e4988",
                        }}),
                    )
                }
            }
        }
        (&Method::POST, ["v2", "reserved_ips", ip, "actions"]) => post_action(ip, rec, st).await,
        (&Method::GET, ["v2", "droplets", id]) => {
            let s = lock(st);
            match id
                .parse::<u64>()
                .ok()
                .and_then(|i| Some((i, s.opts.droplets.get(&i)?)))
            {
                None => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "The resource you were accessing could not be found.",
                ),
                Some((i, status)) => reply(
                    StatusCode::OK,
                    json!({"droplet": {
                        "id": i,
                        "name": format!("droplet-{i}"),
                        "status": status,
                        "locked": false,
                        "region": {"name": "Lab 1", "slug": "lab1"},
                    }}),
                ),
            }
        }
        (&Method::POST, ["v2", "droplets", id, "actions"]) => droplet_action(id, rec, st).await,
        (&Method::GET, ["v2", "actions", id]) => {
            let Ok(id) = id.parse::<u64>() else {
                return error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "The resource you were accessing could not be found.",
                );
            };
            let mut s = lock(st);
            match s.actions.get_mut(&id) {
                None => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "The resource you were accessing could not be found.",
                ),
                Some(a) => {
                    let status = if a.polls_left > 0 {
                        a.polls_left -= 1;
                        "in-progress"
                    } else {
                        a.outcome
                    };
                    let body = action_json(a, status);
                    let done = (status == "completed").then_some(a.droplet).flatten();
                    if let Some((d, to)) = done {
                        s.opts.droplets.insert(d, to.to_string());
                    }
                    reply(StatusCode::OK, body)
                }
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "The resource you were accessing could not be found.",
        ),
    }
}

async fn droplet_action(id: &str, rec: &Recorded, st: &Arc<Mutex<State>>) -> Answer {
    let known = {
        let s = lock(st);
        id.parse::<u64>()
            .ok()
            .filter(|i| s.opts.droplets.contains_key(i))
            .map(|i| (i, s.opts.on_power.clone()))
    };
    let Some((id, hook)) = known else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "The resource you were accessing could not be found.",
        );
    };
    let kind = rec
        .json
        .as_ref()
        .and_then(|b| b.get("type"))
        .and_then(Value::as_str);
    let (kind, to) = match kind {
        Some("power_off") => ("power_off", "off"),
        Some("shutdown") => ("shutdown", "off"),
        Some("power_on") => ("power_on", "active"),
        _ => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable_entity",
                "type is not a supported droplet action.",
            )
        }
    };
    let hooked = match hook {
        Some(h) => tokio::task::spawn_blocking(move || h(id, to))
            .await
            .unwrap_or_else(|e| Err(format!("hook panicked: {e}"))),
        None => Ok(()),
    };
    if let Err(e) = &hooked {
        eprintln!("fake-do: {kind} of droplet {id} failed: {e}");
    }
    let mut s = lock(st);
    let errored = std::mem::take(&mut s.error_next) || hooked.is_err();
    let outcome = if errored { "errored" } else { "completed" };
    s.record_action(kind, String::new(), Some((id, to)), outcome)
}

async fn post_action(ip: &str, rec: &Recorded, st: &Arc<Mutex<State>>) -> Answer {
    let Some(body) = rec.json.as_ref() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The request body is not JSON.",
        );
    };
    let kind = body.get("type").and_then(Value::as_str);
    let target = body.get("droplet_id").and_then(Value::as_u64);
    let (previous, hook, error_now) = {
        let mut s = lock(st);
        let Some(prev) = s.opts.reserved_ips.get(ip).copied() else {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "The resource you were accessing could not be found.",
            );
        };
        let e = std::mem::take(&mut s.error_next);
        // Like the provider, the new holder is what reads see from the moment
        // the assign is accepted; a failed move restores the previous one.
        if let (false, Some("assign"), Some(to)) = (
            e,
            body.get("type").and_then(Value::as_str),
            body.get("droplet_id").and_then(Value::as_u64),
        ) {
            s.opts.reserved_ips.insert(ip.to_string(), Some(to));
        }
        (prev, s.opts.on_assign.clone(), e)
    };
    let (kind, outcome) = match (kind, target) {
        (Some("assign"), Some(to)) => {
            let mut outcome = "completed";
            if error_now {
                outcome = "errored";
            } else {
                if let Some(h) = hook {
                    let ip_owned = ip.to_string();
                    let moved = tokio::task::spawn_blocking(move || h(&ip_owned, previous, to))
                        .await
                        .unwrap_or_else(|e| Err(format!("hook panicked: {e}")));
                    if let Err(e) = moved {
                        eprintln!("fake-do: moving {ip} to droplet {to} failed: {e}");
                        outcome = "errored";
                        lock(st).opts.reserved_ips.insert(ip.to_string(), previous);
                    }
                }
                if outcome == "completed" {
                    lock(st).opts.reserved_ips.insert(ip.to_string(), Some(to));
                }
            }
            ("assign_ip", outcome)
        }
        (Some("assign"), None) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable_entity",
                "droplet_id is required to assign.",
            );
        }
        (Some("unassign"), _) => {
            let outcome = if error_now { "errored" } else { "completed" };
            if outcome == "completed" {
                lock(st).opts.reserved_ips.insert(ip.to_string(), None);
            }
            ("unassign_ip", outcome)
        }
        _ => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable_entity",
                "type must be assign or unassign.",
            );
        }
    };
    lock(st).record_action(kind, ip.to_string(), None, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.0 request by hand; returns (status, body).
    async fn call(
        fake: &FakeDo,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(fake.addr())
            .await
            .expect("connect");
        let mut req = format!(
            "{method} {path} HTTP/1.0\r\nhost: x\r\ncontent-length: {}\r\n",
            body.len()
        );
        if let Some(a) = auth {
            req.push_str(&format!("authorization: Bearer {a}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    #[tokio::test]
    async fn answers_like_the_api() {
        let mut ips = BTreeMap::new();
        ips.insert("203.0.113.5".to_string(), None);
        let moved = Arc::new(Mutex::new(Vec::new()));
        let m = Arc::clone(&moved);
        let fake = FakeDo::start(Options {
            token: "t0k".to_string(),
            reserved_ips: ips,
            droplets_by_peer: [("127.0.0.1".parse().expect("literal"), 7u64)]
                .into_iter()
                .collect(),
            default_droplet: None,
            on_assign: Some(Arc::new(move |ip: &str, from: Option<u64>, to: u64| {
                lock_vec(&m).push((ip.to_string(), from, to));
                Ok(())
            })),
            droplets: BTreeMap::new(),
            on_power: None,
        })
        .await
        .expect("start");

        assert_eq!(
            call(&fake, "GET", "/metadata/v1/id", None, "").await,
            (200, "7".to_string())
        );
        assert_eq!(
            call(&fake, "GET", "/v2/reserved_ips/203.0.113.5", None, "")
                .await
                .0,
            401
        );
        assert_eq!(
            call(
                &fake,
                "GET",
                "/v2/reserved_ips/203.0.113.5",
                Some("bad"),
                ""
            )
            .await
            .0,
            401
        );
        assert_eq!(
            call(
                &fake,
                "GET",
                "/v2/reserved_ips/198.51.100.1",
                Some("t0k"),
                ""
            )
            .await
            .0,
            404
        );
        let (st, body) = call(
            &fake,
            "GET",
            "/v2/reserved_ips/203.0.113.5",
            Some("t0k"),
            "",
        )
        .await;
        assert_eq!(st, 200);
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["reserved_ip"]["droplet"], Value::Null);

        let (st, body) = call(
            &fake,
            "POST",
            "/v2/reserved_ips/203.0.113.5/actions",
            Some("t0k"),
            r#"{"type":"assign","droplet_id":7}"#,
        )
        .await;
        assert_eq!(st, 201, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["action"]["status"], "completed");
        assert_eq!(v["action"]["type"], "assign_ip");
        assert_eq!(fake.holder("203.0.113.5"), Some(7));
        assert_eq!(*lock_vec(&moved), [("203.0.113.5".to_string(), None, 7)]);
        let id = v["action"]["id"].as_u64().expect("id");
        let (st, body) = call(&fake, "GET", &format!("/v2/actions/{id}"), Some("t0k"), "").await;
        assert_eq!(st, 200);
        assert!(body.contains("\"completed\""), "{body}");

        let (st, _) = call(
            &fake,
            "POST",
            "/v2/reserved_ips/203.0.113.5/actions",
            Some("t0k"),
            r#"{"type":"explode"}"#,
        )
        .await;
        assert_eq!(st, 422);

        fake.fail_next(2, 429);
        assert_eq!(call(&fake, "GET", "/metadata/v1/id", None, "").await.0, 429);
        assert_eq!(call(&fake, "GET", "/metadata/v1/id", None, "").await.0, 429);
        assert_eq!(call(&fake, "GET", "/metadata/v1/id", None, "").await.0, 200);
        let reqs = fake.requests();
        assert_eq!(reqs.len(), 11);
        assert_eq!(reqs[1].header("Authorization"), None);
        assert_eq!(reqs[2].header("authorization"), Some("Bearer bad"));
    }

    fn lock_vec<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }
}
