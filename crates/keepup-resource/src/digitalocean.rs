//! `type = "digitalocean"`: a DigitalOcean reserved (floating) IP, moved to
//! this droplet through the provider's API.
//!
//! Requests (DigitalOcean API v2 reference, "Reserved IP Actions",
//! "Reserved IPs", "Actions", and the Droplet Metadata API):
//!
//! - this droplet's id: `GET {metadata_url}/id`, plain-text number, no
//!   token (Metadata API, "Droplet Properties": `/metadata/v1/id`);
//! - who holds the IP: `GET {api_url}/v2/reserved_ips/{ip}` →
//!   `{"reserved_ip": {"ip": ..., "droplet": {"id": N, ...} | null, ...}}`;
//! - assign: `POST {api_url}/v2/reserved_ips/{ip}/actions` with
//!   `{"type": "assign", "droplet_id": N}` → `201 {"action": {"id": ...,
//!   "status": "in-progress", ...}}` (the unassign type is never used);
//! - wait: `GET {api_url}/v2/actions/{action_id}` → `{"action": {"status":
//!   "in-progress" | "completed" | "errored", ...}}`.
//!
//! Every API request carries `Authorization: Bearer <token>`. The token is
//! read from `token_file` on each operation (so it can be rotated), lives
//! in a [`Token`] whose Debug and Display print `<redacted>`, and every
//! error text is scrubbed of it before it leaves this module.
//!
//! Retries: 429 and 5xx answers and transport errors are retried with
//! exponential backoff and full jitter, within the operation's deadline.
//! A `Retry-After` header (seconds; the API sends it with 429 since 2023)
//! wins; otherwise `ratelimit-remaining: 0` with `ratelimit-reset` (Unix
//! time) waits for the reset. A 422 "already has a pending event" (an
//! earlier action still running) is retried too. Other 4xx answers fail at
//! once.
//!
//! Fencing: the resource is tied to its group's [`Epoch`]. The assign, the
//! only request that changes anything, is sent only while this node's
//! grant is current, so a monitor that wakes after the lease ran out (a
//! SIGSTOPped agent resumed, a stop still on its way) reports an error
//! instead of moving the IP back from the next holder. The API has no
//! compare-and-set on the holder, so this check is local; the lease's stop
//! bound covers the request in flight. The module also holds [`PowerOff`],
//! the `type = "digitalocean"` fence.
//!
//! `stop` does nothing, on purpose: the next owner's assign moves the IP
//! atomically, while an unassign would only open a window in which the IP
//! reaches no droplet at all (and fails anyway when this node is cut off,
//! the very case failover is for).

use crate::{BoxFuture, Epoch, Health, Resource, ResourceError};
use keepup_config::DigitalOceanResource;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// The API token: never printed, never put into an error.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Reads and trims the token from `path`.
    pub fn read(path: &Path) -> Result<Token, String> {
        let raw = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
        let t = raw.trim();
        if t.is_empty() {
            return Err(format!("token file {} is empty", path.display()));
        }
        if t.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!(
                "token file {} holds more than one token-like word",
                path.display()
            ));
        }
        Ok(Token(t.to_string()))
    }

    /// Wraps a token given directly (tests, other callers).
    pub fn new(token: impl Into<String>) -> Token {
        Token(token.into())
    }

    /// Replaces every occurrence of the token in `text`.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.0, "<redacted>")
        }
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How requests are retried and actions polled. The defaults suit the real
/// API; tests shorten them.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// First backoff after a 429/5xx/transport error; doubles each time.
    pub base: Duration,
    /// Largest backoff of our own (a server-asked wait is not capped, only
    /// bounded by the operation's deadline).
    pub max: Duration,
    /// Pause between two polls of an in-progress action.
    pub poll_interval: Duration,
    /// Limit for one HTTP request.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(500),
            max: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The HTTP side shared by the reserved IP and the power-off fence: the
/// client, the token file, retries and action polling.
#[derive(Debug)]
struct Api {
    label: String,
    base: String,
    token_file: PathBuf,
    policy: RetryPolicy,
    client: reqwest::Client,
}

/// One failed attempt, and whether trying again may help.
struct Attempt {
    retry: bool,
    wait: Option<Duration>,
    reason: String,
}

/// Checks `url` is an http(s) URL.
fn check_url(what: &str, url: &str) -> Result<(), String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("{what} {url:?}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{what} {url:?} is not http or https"));
    }
    Ok(())
}

impl Api {
    fn new(label: String, api_url: &str, token_file: &Path) -> Result<Api, ResourceError> {
        let bad = |reason: String| ResourceError::Config {
            resource: label.clone(),
            reason,
        };
        check_url("api_url", api_url).map_err(bad)?;
        // No proxy from the environment: the metadata service is link-local
        // and must never go through one, and a failover path should not
        // depend on an extra hop (droplets reach the API directly).
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("keepup/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(format!("cannot build the HTTP client: {e}")))?;
        Ok(Api {
            base: api_url.trim_end_matches('/').to_string(),
            token_file: token_file.to_path_buf(),
            policy: RetryPolicy::default(),
            client,
            label,
        })
    }

    fn failed(&self, operation: &'static str, reason: String) -> ResourceError {
        ResourceError::Failed {
            resource: self.label.clone(),
            operation,
            reason,
        }
    }

    fn token(&self, operation: &'static str) -> Result<Token, ResourceError> {
        Token::read(&self.token_file).map_err(|r| self.failed(operation, r))
    }

    /// One request with retries until it succeeds, fails for good, or the
    /// deadline comes. `token` is `None` for the metadata service.
    async fn request(
        &self,
        operation: &'static str,
        method: Method,
        url: &str,
        token: Option<&Token>,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<String, ResourceError> {
        let mut tries: u32 = 0;
        loop {
            tries += 1;
            let attempt = self.attempt(method.clone(), url, token, body).await;
            let fail = match attempt {
                Ok(text) => return Ok(text),
                Err(a) => a,
            };
            let reason = match token {
                Some(t) => t.scrub(&fail.reason),
                None => fail.reason,
            };
            let what = format!("{method} {}", strip_query(url));
            if !fail.retry {
                return Err(self.failed(operation, format!("{what}: {reason}")));
            }
            // The server's own wait is honoured as given; only the
            // deadline bounds it.
            let wait = fail.wait.unwrap_or_else(|| backoff(&self.policy, tries));
            if Instant::now() + wait >= deadline {
                return Err(self.failed(
                    operation,
                    format!("{what}: {reason}; gave up after {tries} tries (deadline)"),
                ));
            }
            tracing::warn!(
                resource = %self.label,
                "{what}: {reason}; retrying in {} ms (try {tries})",
                wait.as_millis()
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(
        &self,
        method: Method,
        url: &str,
        token: Option<&Token>,
        body: Option<&Value>,
    ) -> Result<String, Attempt> {
        let mut req = self
            .client
            .request(method, url)
            .timeout(self.policy.request_timeout)
            .header(ACCEPT, "application/json");
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, t.bearer());
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| Attempt {
            retry: true,
            wait: None,
            reason: format!("request failed: {}", error_chain(&e)),
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.map_err(|e| Attempt {
            retry: true,
            wait: None,
            reason: format!("reading the answer failed: {}", error_chain(&e)),
        })?;
        if status.is_success() {
            return Ok(text);
        }
        let message = api_message(&text);
        // 422 "... already has a pending event" means an earlier action on
        // the IP or the droplet (the previous owner's assign, our own
        // monitor) is still running: it clears by itself, so wait and retry
        // (seen in doctl#493 and terraform-provider-digitalocean#1034).
        let pending =
            status == StatusCode::UNPROCESSABLE_ENTITY && message.contains("pending event");
        let retry = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() || pending;
        Err(Attempt {
            retry,
            wait: if retry { server_wait(&headers) } else { None },
            reason: format!("HTTP {status}{message}"),
        })
    }

    /// POSTs an action to `url` and polls it until it completes.
    async fn run_action(
        &self,
        operation: &'static str,
        token: &Token,
        url: &str,
        body: &Value,
        what: &str,
        deadline: Instant,
    ) -> Result<(), ResourceError> {
        let text = self
            .request(
                operation,
                Method::POST,
                url,
                Some(token),
                Some(body),
                deadline,
            )
            .await?;
        let (id, mut status) =
            parse_action(&text).map_err(|r| self.failed(operation, format!("POST {url}: {r}")))?;
        let action_url = format!("{}/v2/actions/{id}", self.base);
        loop {
            match status.as_str() {
                "completed" => return Ok(()),
                "errored" => {
                    return Err(self.failed(operation, format!("{what} action {id} errored")))
                }
                _ => {}
            }
            if Instant::now() + self.policy.poll_interval >= deadline {
                return Err(self.failed(
                    operation,
                    format!("{what} action {id} still {status:?} at the deadline"),
                ));
            }
            tokio::time::sleep(self.policy.poll_interval).await;
            let text = self
                .request(
                    operation,
                    Method::GET,
                    &action_url,
                    Some(token),
                    None,
                    deadline,
                )
                .await?;
            let (_, s) = parse_action(&text)
                .map_err(|r| self.failed(operation, format!("GET {action_url}: {r}")))?;
            status = s;
        }
    }

    /// GETs `url` and parses the answer as JSON.
    async fn get_json(
        &self,
        operation: &'static str,
        token: &Token,
        url: &str,
        deadline: Instant,
    ) -> Result<Value, ResourceError> {
        let text = self
            .request(operation, Method::GET, url, Some(token), None, deadline)
            .await?;
        serde_json::from_str(&text)
            .map_err(|e| self.failed(operation, format!("GET {url}: answer is not JSON: {e}")))
    }
}

/// A DigitalOcean reserved IP assigned to this droplet.
#[derive(Debug)]
pub struct ReservedIp {
    cfg: DigitalOceanResource,
    api: Api,
    metadata: String,
    droplet_id: OnceCell<u64>,
    /// The group's grant (None: standalone use, always allowed).
    epoch: Option<Epoch>,
}

impl ReservedIp {
    /// Checks the configuration (IP syntax, URLs) and builds the HTTP client.
    pub fn new(cfg: &DigitalOceanResource) -> Result<ReservedIp, ResourceError> {
        let label = format!("digitalocean {}", cfg.reserved_ip);
        let bad = |reason: String| ResourceError::Config {
            resource: label.clone(),
            reason,
        };
        cfg.reserved_ip
            .parse::<std::net::IpAddr>()
            .map_err(|_| bad(format!("{:?} is not an IP address", cfg.reserved_ip)))?;
        check_url("metadata_url", &cfg.metadata_url).map_err(bad)?;
        if cfg.timeout_ms.ms() == 0 {
            return Err(bad("timeout_ms must be greater than 0".to_string()));
        }
        Ok(ReservedIp {
            api: Api::new(label.clone(), &cfg.api_url, &cfg.token_file)?,
            metadata: cfg.metadata_url.trim_end_matches('/').to_string(),
            cfg: cfg.clone(),
            droplet_id: OnceCell::new(),
            epoch: None,
        })
    }

    /// Replaces the retry and polling policy (tests use short waits).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> ReservedIp {
        self.api.policy = policy;
        self
    }

    /// Ties the resource to its group's fencing epoch: the IP is assigned
    /// only while this node's grant is current (see [`Epoch`]), so a node
    /// whose lease ran out never moves it back from the next holder.
    pub fn with_epoch(mut self, epoch: Epoch) -> ReservedIp {
        self.epoch = Some(epoch);
        self
    }

    /// This droplet's id from the metadata service (asked once, then kept).
    async fn droplet_id(
        &self,
        operation: &'static str,
        deadline: Instant,
    ) -> Result<u64, ResourceError> {
        let id = self
            .droplet_id
            .get_or_try_init(|| async {
                let url = format!("{}/id", self.metadata);
                let text = self
                    .api
                    .request(operation, Method::GET, &url, None, None, deadline)
                    .await?;
                text.trim().parse::<u64>().map_err(|_| {
                    self.api.failed(
                        operation,
                        format!(
                            "metadata {url} answered {:?}, not a droplet id",
                            shorten(text.trim())
                        ),
                    )
                })
            })
            .await?;
        Ok(*id)
    }

    /// The droplet currently holding the IP (`None`: unassigned).
    async fn holder(
        &self,
        operation: &'static str,
        token: &Token,
        deadline: Instant,
    ) -> Result<Option<u64>, ResourceError> {
        let url = format!("{}/v2/reserved_ips/{}", self.api.base, self.cfg.reserved_ip);
        let v = self.api.get_json(operation, token, &url, deadline).await?;
        let ip = v.get("reserved_ip").ok_or_else(|| {
            self.api.failed(
                operation,
                format!("GET {url}: answer has no reserved_ip object"),
            )
        })?;
        match ip.get("droplet") {
            None | Some(Value::Null) => Ok(None),
            Some(d) => d
                .get("id")
                .and_then(Value::as_u64)
                .map(Some)
                .ok_or_else(|| {
                    self.api.failed(
                        operation,
                        format!("GET {url}: reserved_ip.droplet has no numeric id"),
                    )
                }),
        }
    }

    /// Makes the IP ours; returns the previous holder when it moved.
    async fn make_ours(
        &self,
        operation: &'static str,
    ) -> Result<Option<Option<u64>>, ResourceError> {
        let deadline = Instant::now() + self.cfg.timeout_ms.duration();
        let token = self.api.token(operation)?;
        let me = self.droplet_id(operation, deadline).await?;
        let holder = self.holder(operation, &token, deadline).await?;
        if holder == Some(me) {
            return Ok(None);
        }
        // Checked as late as possible: right before the one request that
        // changes anything.
        if let Some(e) = self.epoch.as_ref().filter(|e| !e.is_current()) {
            return Err(self.api.failed(
                operation,
                format!(
                    "the IP is on {}; not assigning it here: this node's lease of the group (epoch {}) has run out or is being given up",
                    holder.map_or("no droplet".to_string(), |h| format!("droplet {h}")),
                    e.get()
                ),
            ));
        }
        let url = format!(
            "{}/v2/reserved_ips/{}/actions",
            self.api.base, self.cfg.reserved_ip
        );
        let body = json!({"type": "assign", "droplet_id": me});
        self.api
            .run_action(
                operation,
                &token,
                &url,
                &body,
                &format!("assign (to droplet {me})"),
                deadline,
            )
            .await?;
        tracing::info!(
            resource = %self.describe(),
            epoch = self.epoch.as_ref().map(Epoch::get),
            "assigned to droplet {me} (was {})",
            holder.map_or("unassigned".to_string(), |h| format!("droplet {h}"))
        );
        Ok(Some(holder))
    }
}

/// `type = "digitalocean"` fence: powers a droplet off (the documented
/// `power_off` droplet action: a hard power cut, as STONITH needs; the
/// graceful `shutdown` may never finish on a wedged machine), then reads
/// the droplet back until it reports `status: "off"`.
///
/// Requests (DigitalOcean API v2 reference, "Droplet Actions" and
/// "Droplets"): `POST {api_url}/v2/droplets/{id}/actions` with
/// `{"type": "power_off"}` → `201 {"action": {...}}`, polled at
/// `GET /v2/actions/{action_id}`; then `GET /v2/droplets/{id}` →
/// `{"droplet": {"id": N, "status": "new" | "active" | "off" | "archive"}}`.
#[derive(Debug)]
pub struct PowerOff {
    api: Api,
    droplets: std::collections::BTreeMap<String, u64>,
    timeout: Duration,
}

impl PowerOff {
    /// Checks the URL and builds the HTTP client.
    pub fn new(
        api_url: &str,
        token_file: &Path,
        droplets: std::collections::BTreeMap<String, u64>,
        timeout: Duration,
    ) -> Result<PowerOff, ResourceError> {
        Ok(PowerOff {
            api: Api::new("digitalocean fence".into(), api_url, token_file)?,
            droplets,
            timeout,
        })
    }

    /// Replaces the retry and polling policy (tests use short waits).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> PowerOff {
        self.api.policy = policy;
        self
    }

    /// Powers off `node`'s droplet and waits until the API reports it off.
    /// A droplet already off succeeds at once (fencing is idempotent).
    pub async fn fence(&self, node: &str) -> Result<u64, ResourceError> {
        const OP: &str = "fence";
        let deadline = Instant::now() + self.timeout;
        let Some(&id) = self.droplets.get(node) else {
            return Err(self.api.failed(
                OP,
                format!("no droplet id for node {node:?} in [group.fence] droplets"),
            ));
        };
        let token = self.api.token(OP)?;
        let droplet_url = format!("{}/v2/droplets/{id}", self.api.base);
        if self.status(&token, &droplet_url, deadline).await? == "off" {
            return Ok(id);
        }
        let url = format!("{droplet_url}/actions");
        self.api
            .run_action(
                OP,
                &token,
                &url,
                &json!({"type": "power_off"}),
                &format!("power_off (droplet {id}, node {node})"),
                deadline,
            )
            .await?;
        // The action's "completed" is the provider's word; the droplet's own
        // status is what we act on.
        loop {
            let status = self.status(&token, &droplet_url, deadline).await?;
            if status == "off" {
                tracing::warn!(node, droplet = id, "fenced: droplet powered off");
                return Ok(id);
            }
            if Instant::now() + self.api.policy.poll_interval >= deadline {
                return Err(self.api.failed(
                    OP,
                    format!("droplet {id} (node {node}) still {status:?} after power_off, at the deadline"),
                ));
            }
            tokio::time::sleep(self.api.policy.poll_interval).await;
        }
    }

    async fn status(
        &self,
        token: &Token,
        url: &str,
        deadline: Instant,
    ) -> Result<String, ResourceError> {
        let v = self.api.get_json("fence", token, url, deadline).await?;
        v.get("droplet")
            .and_then(|d| d.get("status"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                self.api
                    .failed("fence", format!("GET {url}: answer has no droplet.status"))
            })
    }
}

/// `{"action": {"id": N, "status": "..."}}` → (N, status).
fn parse_action(text: &str) -> Result<(u64, String), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("answer is not JSON: {e}"))?;
    let a = v.get("action").ok_or("answer has no action object")?;
    let id = a
        .get("id")
        .and_then(Value::as_u64)
        .ok_or("action has no numeric id")?;
    let status = a
        .get("status")
        .and_then(Value::as_str)
        .ok_or("action has no status")?
        .to_string();
    Ok((id, status))
}

/// The wait the server asked for: `Retry-After` seconds, else the time to
/// `ratelimit-reset` when `ratelimit-remaining` is 0.
fn server_wait(h: &HeaderMap) -> Option<Duration> {
    let num = |name: &str| -> Option<u64> { h.get(name)?.to_str().ok()?.trim().parse().ok() };
    if let Some(s) = h
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_secs(s));
    }
    if num("ratelimit-remaining") == Some(0) {
        let reset = num("ratelimit-reset")?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    None
}

/// Exponential backoff with full jitter: uniform in [d/2, d] where
/// d = base * 2^(tries-1), capped at `max`.
fn backoff(p: &RetryPolicy, tries: u32) -> Duration {
    let exp = p
        .base
        .saturating_mul(1u32 << tries.saturating_sub(1).min(16))
        .min(p.max);
    let half = exp / 2;
    let span = (exp - half).as_nanos() as u64;
    half + Duration::from_nanos(if span == 0 { 0 } else { jitter() % (span + 1) })
}

/// A cheap pseudo-random number (no need for cryptographic quality: it only
/// keeps nodes from retrying in lockstep).
fn jitter() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id()).rotate_left(32);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ seed;
    // splitmix64 finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `": message"` from a DigitalOcean error body `{"id": ..., "message": ...}`.
fn api_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(Value::as_str)
                .map(|m| format!(": {}", shorten(m)))
        })
        .unwrap_or_default()
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 200 {
        format!("{}...", s.chars().take(200).collect::<String>())
    } else {
        s.to_string()
    }
}

fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Resource for ReservedIp {
    fn describe(&self) -> String {
        format!("digitalocean {}", self.cfg.reserved_ip)
    }

    /// Assigns the IP to this droplet unless it already is.
    fn start(&self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async move { self.make_ours("start").await.map(|_| ()) })
    }

    /// Deliberately nothing: see the module doc. The next owner's assign
    /// moves the IP in one step; unassigning first would only create a gap.
    fn stop(&self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async { Ok(()) })
    }

    /// Checks the IP still points at this droplet and re-assigns it if not.
    /// An API that cannot be reached is an error (unknown), not `Failed`:
    /// moving the group would need the same API.
    fn monitor(&self) -> BoxFuture<'_, Result<Health, ResourceError>> {
        Box::pin(async move {
            Ok(match self.make_ours("monitor").await? {
                None => Health::Running,
                Some(prev) => Health::Restored(format!(
                    "{} was assigned to {}; re-assigned to this droplet",
                    self.cfg.reserved_ip,
                    prev.map_or("no droplet".to_string(), |p| format!("droplet {p}"))
                )),
            })
        })
    }

    fn monitor_interval(&self) -> Duration {
        self.cfg.monitor_interval_ms.duration()
    }

    /// The configured limit for one assignment, plus a second so the
    /// module's own deadline (with its clearer message) fires first.
    fn timeout(&self) -> Duration {
        self.cfg.timeout_ms.duration() + Duration::from_secs(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_never_printed() {
        let t = Token::new("dop_v1_secret");
        assert!(!format!("{t:?}").contains("secret"));
        assert!(!format!("{t}").contains("secret"));
        assert_eq!(t.scrub("x dop_v1_secret y"), "x <redacted> y");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_millis(800),
            ..RetryPolicy::default()
        };
        for _ in 0..50 {
            let b1 = backoff(&p, 1);
            assert!(
                b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100),
                "{b1:?}"
            );
            let b3 = backoff(&p, 3);
            assert!(
                b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400),
                "{b3:?}"
            );
            let b9 = backoff(&p, 9);
            assert!(
                b9 >= Duration::from_millis(400) && b9 <= Duration::from_millis(800),
                "{b9:?}"
            );
        }
    }

    #[test]
    fn server_wait_reads_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(server_wait(&h), None);
        h.insert("ratelimit-remaining", "0".parse().expect("literal"));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        h.insert(
            "ratelimit-reset",
            (now + 3).to_string().parse().expect("number"),
        );
        let w = server_wait(&h).expect("waits for reset");
        assert!(
            w >= Duration::from_secs(2) && w <= Duration::from_secs(3),
            "{w:?}"
        );
        h.insert(RETRY_AFTER, "7".parse().expect("literal"));
        assert_eq!(server_wait(&h), Some(Duration::from_secs(7)));
    }

    #[test]
    fn parses_actions() {
        assert_eq!(
            parse_action(r#"{"action":{"id":5,"status":"in-progress","type":"assign_ip"}}"#),
            Ok((5, "in-progress".to_string()))
        );
        assert!(parse_action(r#"{"id":"not_found"}"#).is_err());
    }
}
