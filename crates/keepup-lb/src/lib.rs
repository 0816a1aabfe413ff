//! keepup-lb: the load balancer that replaces HAProxy.
//!
//! It owns the `[lb]` frontends (HTTP and TCP listeners), the pools of
//! backends, their health checks, stats and reloads. It does not own the
//! floating IP (keepup-resource moves it; frontends bind with `IP_FREEBIND`
//! so they listen before this node owns the address) nor the HTTP API that
//! exposes [`LbHandle`] (keepup-agent wires it).
//!
//! # Why httparse, hyper and tokio
//! HTTP/1 heads are parsed by `httparse` (the parser inside hyper), so we
//! write no HTTP parser; the `h1` module is keepup's own connection loop
//! around it: framing decisions (the smuggling rules), header rewriting and
//! byte copying, with the backend connection driven inline. It replaced
//! hyper's HTTP/1 server and client, whose task-and-channel per backend
//! connection cost 2–4 µs of CPU per request more than HAProxy (see
//! BENCHMARKS.md). HTTP/2 from clients (TLS + ALPN `h2`) runs on hyper's
//! HTTP/2 server, the best kept HTTP/2 implementation in Rust. Timeouts,
//! graceful shutdown, PROXY protocol and TLS stay in our hands either way.

//! # Shape
//! * `workers` OS threads, each running a single-threaded tokio runtime with
//!   its own `SO_REUSEPORT` listener per frontend: no cross-thread wakeups on
//!   the request path, and the kernel spreads connections.
//! * Health checks run on the caller's runtime (the agent's).
//! * Frontend settings and pools are swapped atomically (`ArcSwap`) on
//!   [`LbHandle::reload`]; a frontend whose name, bind and mode are unchanged
//!   keeps its listening sockets, so a reload drops no connection.
//!
//! # API
//! [`start`] → [`LbHandle`]: [`LbHandle::status`], [`LbHandle::set_backend_state`],
//! [`LbHandle::reload`], [`LbHandle::shutdown`], [`LbHandle::local_addr`];
//! [`prometheus`] renders an [`LbStatus`] for `/metrics`.
//!
//! # Wiring into the agent (what `keepup lb` expects)
//! * `keepup run`: when `[lb]` is present, `start(&section).await` inside the
//!   agent's runtime; keep the [`LbHandle`]; on SIGTERM `shutdown(grace)`.
//! * `POST /v1/lb/backends/{pool}/{backend}/{state}`: `state.parse::<AdminState>()`
//!   (`enabled`, `drain`, `maintenance`; 400 otherwise), then
//!   [`LbHandle::set_backend_state`] ([`LbError::UnknownPool`] /
//!   [`LbError::UnknownBackend`] → 404).
//! * `POST /v1/lb/reload`: load keepup.toml again and [`LbHandle::reload`]
//!   with its `[lb]` ([`LbError::Config`], [`LbError::Tls`], [`LbError::Bind`] → 422;
//!   nothing changed then).
//! * Status document: `"lb": serde_json::to_value(handle.status())`, which
//!   `keepup status` renders; `/metrics`: [`prometheus`].
//! * `keepup check-config` can report `LbSection::problems()` with the file.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod backend;
mod h1;
mod health;
mod http_proxy;
mod listener;
pub mod proxy_protocol;
mod stats;
mod tcp_proxy;
mod tls;
mod upstream;

pub use backend::{Backend, Health, HealthEvent, HealthLog, Pool, SelectKey};
pub use keepup_config::LbSection;
pub use stats::{
    prometheus, BackendStatus, CountersSnapshot, FrontendStatus, HistogramSnapshot, LbStatus,
    PoolStatus, LATENCY_BUCKETS,
};
pub use tls::{api_acceptor, pair_problem, tls_problems};

use arc_swap::ArcSwap;
use keepup_config::{LbBackendState, LbFrontend, LbMode};
use serde::Serialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};

/// Load-balancer errors. Each carries the value that caused it.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// The `[lb]` section is inconsistent (messages from `LbSection::problems`).
    #[error("invalid [lb] config: {0}")]
    Config(String),
    /// An address that does not parse.
    #[error("{what}: {value:?} is not IP:port")]
    BadAddress {
        /// Which setting.
        what: String,
        /// The offending text.
        value: String,
    },
    /// A listening socket could not be set up.
    #[error("frontend {frontend:?}: cannot listen on {addr}: {source}")]
    Bind {
        /// Frontend name.
        frontend: String,
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// A certificate or key file is missing or bad.
    #[error("TLS {path}: {reason}")]
    Tls {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// No pool has that name.
    #[error("no pool {0:?}")]
    UnknownPool(String),
    /// The pool has no backend of that name.
    #[error("pool {pool:?} has no backend {backend:?}")]
    UnknownBackend {
        /// Pool name.
        pool: String,
        /// Backend name.
        backend: String,
    },
    /// A worker thread could not be started.
    #[error("cannot start worker thread: {0}")]
    Worker(std::io::Error),
    /// `start` was called outside a tokio runtime.
    #[error("keepup_lb::start must run inside a tokio runtime")]
    NoRuntime,
}

/// What the operator wants of a backend, separate from its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum AdminState {
    /// Takes traffic when healthy.
    Enabled = 0,
    /// No new clients; sticky clients and in-flight requests finish.
    Drain = 1,
    /// No new traffic at all; in-flight requests finish.
    Maintenance = 2,
}

impl AdminState {
    fn from_u8(v: u8) -> AdminState {
        match v {
            1 => AdminState::Drain,
            2 => AdminState::Maintenance,
            _ => AdminState::Enabled,
        }
    }
}

impl From<LbBackendState> for AdminState {
    fn from(s: LbBackendState) -> Self {
        match s {
            LbBackendState::Enabled => AdminState::Enabled,
            LbBackendState::Drain => AdminState::Drain,
            LbBackendState::Maintenance => AdminState::Maintenance,
        }
    }
}

impl std::str::FromStr for AdminState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enabled" | "enable" => Ok(AdminState::Enabled),
            "drain" => Ok(AdminState::Drain),
            "maintenance" => Ok(AdminState::Maintenance),
            other => Err(format!(
                "{other:?} is not a backend state (enabled, drain, maintenance)"
            )),
        }
    }
}

/// Per-frontend settings that a reload may replace.
pub(crate) struct Settings {
    pub(crate) cfg: LbFrontend,
    pub(crate) pool: Arc<Pool>,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) trusted: Vec<(IpAddr, u8)>,
    pub(crate) limit: Arc<Semaphore>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("frontend", &self.cfg.name)
            .field("pool", &self.pool.name)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Settings {
    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|&(net, len)| in_cidr(ip, net, len))
    }
    pub(crate) fn header_read_timeout(&self) -> Duration {
        self.cfg
            .header_read_timeout_ms
            .min(self.cfg.idle_timeout_ms)
            .nonzero()
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// A frontend at run time: listeners live in the workers, this is what they share.
#[derive(Debug)]
pub(crate) struct FrontendRt {
    pub(crate) name: String,
    pub(crate) local: SocketAddr,
    pub(crate) mode: LbMode,
    pub(crate) settings: ArcSwap<Settings>,
    pub(crate) counters: stats::Counters,
    pub(crate) active: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) closing: watch::Sender<bool>,
}

impl FrontendRt {
    fn status(&self) -> FrontendStatus {
        let s = self.settings.load();
        FrontendStatus {
            name: self.name.clone(),
            bind: self.local.to_string(),
            mode: match self.mode {
                LbMode::Http => "http",
                LbMode::Tcp => "tcp",
            }
            .to_string(),
            tls: s.tls.is_some(),
            pool: s.pool.name.clone(),
            active_connections: self.active.load(Ordering::Relaxed),
            connections_total: self.accepted.load(Ordering::Relaxed),
            counters: self.counters.snapshot(),
        }
    }
}

/// Counts an open client connection until dropped.
pub(crate) struct ConnGuard(pub(crate) Arc<FrontendRt>);

impl ConnGuard {
    pub(crate) fn new(fe: Arc<FrontendRt>) -> ConnGuard {
        fe.active.fetch_add(1, Ordering::Relaxed);
        fe.accepted.fetch_add(1, Ordering::Relaxed);
        ConnGuard(fe)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

enum WorkerCmd {
    Serve(Arc<FrontendRt>, std::net::TcpListener),
}

struct Worker {
    tx: mpsc::UnboundedSender<WorkerCmd>,
    thread: std::thread::JoinHandle<()>,
}

fn spawn_worker(i: usize) -> Result<Worker, LbError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<WorkerCmd>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LbError::Worker)?;
    let thread = std::thread::Builder::new()
        .name(format!("keepup-lb-{i}"))
        .spawn(move || {
            rt.block_on(async move {
                while let Some(cmd) = rx.recv().await {
                    match cmd {
                        WorkerCmd::Serve(fe, l) => {
                            tokio::spawn(accept_loop(fe, l));
                        }
                    }
                }
            });
            // Dropping the runtime ends whatever connections are left.
        })
        .map_err(LbError::Worker)?;
    Ok(Worker { tx, thread })
}

/// Resolves once the frontend starts closing.
pub(crate) async fn closed(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

async fn accept_loop(fe: Arc<FrontendRt>, l: std::net::TcpListener) {
    let listener = match tokio::net::TcpListener::from_std(l) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(frontend = %fe.name, "cannot register listener: {e}");
            return;
        }
    };
    let mut closing = fe.closing.subscribe();
    let up = http_proxy::Upstreams::new();
    loop {
        if *closing.borrow() {
            break;
        }
        let settings = fe.settings.load_full();
        let permit = tokio::select! {
            p = settings.limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = closing.changed() => continue,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(frontend = %fe.name, "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = closing.changed() => continue,
        };
        // TCP_NODELAY is inherited from the listening socket (listener.rs).
        let guard = ConnGuard::new(fe.clone());
        match fe.mode {
            LbMode::Http => {
                // Boxed before spawning: the 2 KiB future is copied once
                // into place instead of through every layer of the spawn.
                tokio::spawn(Box::pin(http_proxy::serve(
                    guard,
                    settings,
                    stream,
                    peer,
                    up.clone(),
                    closing.clone(),
                    permit,
                )));
            }
            LbMode::Tcp => {
                tokio::spawn(tcp_proxy::serve(guard, settings, stream, peer, permit));
            }
        }
    }
    tracing::debug!(frontend = %fe.name, "listener closed");
}

struct State {
    section: LbSection,
    checkers: Vec<tokio::task::JoinHandle<()>>,
}

struct Inner {
    health_log: Arc<HealthLog>,
    workers: std::sync::Mutex<Vec<Worker>>,
    pools: ArcSwap<Vec<Arc<Pool>>>,
    frontends: ArcSwap<Vec<Arc<FrontendRt>>>,
    state: tokio::sync::Mutex<State>,
    runtime: tokio::runtime::Handle,
}

/// A running load balancer. Cheap to clone; all clones control the same one.
#[derive(Clone)]
pub struct LbHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LbHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LbHandle")
            .field("frontends", &self.inner.frontends.load().len())
            .finish()
    }
}

fn check(section: &LbSection) -> Result<(), LbError> {
    let p = section.problems();
    if p.is_empty() {
        Ok(())
    } else {
        Err(LbError::Config(p.join("; ")))
    }
}

fn build_pools(
    section: &LbSection,
    old: &[Arc<Pool>],
    log: &Arc<HealthLog>,
) -> Result<Vec<Arc<Pool>>, LbError> {
    section
        .pool
        .iter()
        .map(|p| {
            let reuse = old.iter().find(|o| o.name == p.name).map(|o| &**o);
            Pool::build(p, reuse, log).map(Arc::new)
        })
        .collect()
}

fn build_settings(
    f: &LbFrontend,
    pools: &[Arc<Pool>],
    old: Option<&Settings>,
) -> Result<Settings, LbError> {
    let pool = pools
        .iter()
        .find(|p| p.name == f.pool)
        .cloned()
        .ok_or_else(|| LbError::UnknownPool(f.pool.clone()))?;
    let tls = if f.tls.is_empty() {
        None
    } else {
        Some(tls::acceptor(&f.tls)?)
    };
    let trusted = f
        .trusted_proxies
        .iter()
        .map(|t| {
            keepup_config::parse_cidr(t).map_err(|_| LbError::BadAddress {
                what: format!("frontend {:?} trusted_proxies", f.name),
                value: t.clone(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let limit = match old {
        Some(o) if o.cfg.max_connections == f.max_connections => o.limit.clone(),
        _ => Arc::new(Semaphore::new(
            f.max_connections.min(Semaphore::MAX_PERMITS),
        )),
    };
    Ok(Settings {
        cfg: f.clone(),
        pool,
        tls,
        trusted,
        limit,
    })
}

/// Binds one listener per worker (all on the same port, `SO_REUSEPORT`).
fn bind_frontend(
    f: &LbFrontend,
    workers: usize,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>), LbError> {
    let addr: SocketAddr = f.bind.parse().map_err(|_| LbError::BadAddress {
        what: format!("frontend {:?} bind", f.name),
        value: f.bind.clone(),
    })?;
    let err = |source| LbError::Bind {
        frontend: f.name.clone(),
        addr,
        source,
    };
    let first = listener::bind(addr, f.backlog).map_err(err)?;
    let local = first.local_addr().map_err(err)?;
    let mut all = vec![first];
    for _ in 1..workers {
        all.push(listener::bind(local, f.backlog).map_err(err)?);
    }
    Ok((local, all))
}

/// Binds every frontend (with `IP_FREEBIND`), starts the worker threads and
/// the health checks. Must be called inside a tokio runtime; health checks
/// run there.
pub async fn start(section: &LbSection) -> Result<LbHandle, LbError> {
    check(section)?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| LbError::NoRuntime)?;
    let health_log = Arc::new(HealthLog::default());
    let pools = build_pools(section, &[], &health_log)?;
    let mut bound = Vec::new();
    for f in &section.frontend {
        let settings = build_settings(f, &pools, None)?;
        let (local, listeners) = bind_frontend(f, section.workers)?;
        bound.push((f, settings, local, listeners));
    }
    let workers = (0..section.workers)
        .map(spawn_worker)
        .collect::<Result<Vec<_>, _>>()?;
    let mut fronts = Vec::new();
    for (f, settings, local, listeners) in bound {
        let fe = new_frontend(f, settings, local);
        for (w, l) in workers.iter().zip(listeners) {
            let _ = w.tx.send(WorkerCmd::Serve(fe.clone(), l));
        }
        fronts.push(fe);
    }
    let checkers = health::spawn_all(&runtime, &pools);
    Ok(LbHandle {
        inner: Arc::new(Inner {
            health_log,
            workers: std::sync::Mutex::new(workers),
            pools: ArcSwap::from_pointee(pools),
            frontends: ArcSwap::from_pointee(fronts),
            state: tokio::sync::Mutex::new(State {
                section: section.clone(),
                checkers,
            }),
            runtime,
        }),
    })
}

fn new_frontend(f: &LbFrontend, settings: Settings, local: SocketAddr) -> Arc<FrontendRt> {
    Arc::new(FrontendRt {
        name: f.name.clone(),
        local,
        mode: f.mode,
        settings: ArcSwap::from_pointee(settings),
        counters: stats::Counters::default(),
        active: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        closing: watch::channel(false).0,
    })
}

impl LbHandle {
    /// The last backend health changes, oldest first, each with its reason.
    pub fn health_events(&self) -> Vec<HealthEvent> {
        self.inner.health_log.recent()
    }

    /// A snapshot of every frontend, pool and backend.
    pub fn status(&self) -> LbStatus {
        LbStatus {
            frontends: self
                .inner
                .frontends
                .load()
                .iter()
                .map(|f| f.status())
                .collect(),
            pools: self.inner.pools.load().iter().map(|p| p.status()).collect(),
        }
    }

    /// The address a frontend actually listens on (useful with port 0).
    pub fn local_addr(&self, frontend: &str) -> Option<SocketAddr> {
        self.inner
            .frontends
            .load()
            .iter()
            .find(|f| f.name == frontend)
            .map(|f| f.local)
    }

    /// Sets a backend's operator state: `Drain` stops new clients (sticky
    /// ones and in-flight requests finish), `Maintenance` stops all new
    /// traffic, `Enabled` returns it. Lasts until changed or until a reload
    /// changes that backend's `state` in the file.
    pub fn set_backend_state(
        &self,
        pool: &str,
        backend: &str,
        state: AdminState,
    ) -> Result<(), LbError> {
        let pools = self.inner.pools.load();
        let p = pools
            .iter()
            .find(|p| p.name == pool)
            .ok_or_else(|| LbError::UnknownPool(pool.to_string()))?;
        let b = p.backend(backend).ok_or_else(|| LbError::UnknownBackend {
            pool: pool.to_string(),
            backend: backend.to_string(),
        })?;
        tracing::info!(pool, backend, ?state, "backend admin state");
        b.set_admin_state(state);
        Ok(())
    }

    /// Applies a new `[lb]` section without dropping a connection: frontends
    /// whose name, bind and mode are unchanged keep their sockets and get the
    /// new settings; backends whose name and address are unchanged keep their
    /// health, counters and admin state. New frontends are bound first, so a
    /// failed bind changes nothing. A changed `workers` needs a restart.
    pub async fn reload(&self, section: &LbSection) -> Result<(), LbError> {
        check(section)?;
        let mut state = self.inner.state.lock().await;
        let old_pools = self.inner.pools.load_full();
        let pools = build_pools(section, &old_pools, &self.inner.health_log)?;
        let old_fronts = self.inner.frontends.load_full();
        let workers = state.section.workers;

        enum Plan {
            Keep(Arc<FrontendRt>, Box<Settings>),
            New(Arc<FrontendRt>, Vec<std::net::TcpListener>),
        }
        let mut plan = Vec::new();
        for f in &section.frontend {
            let same = old_fronts.iter().find(|o| {
                o.name == f.name && o.mode == f.mode && {
                    let s = o.settings.load();
                    s.cfg.bind == f.bind && s.cfg.backlog == f.backlog
                }
            });
            match same {
                Some(o) => {
                    let s = build_settings(f, &pools, Some(&o.settings.load()))?;
                    plan.push(Plan::Keep(o.clone(), Box::new(s)));
                }
                None => {
                    let s = build_settings(f, &pools, None)?;
                    let (local, listeners) = bind_frontend(f, workers)?;
                    plan.push(Plan::New(new_frontend(f, s, local), listeners));
                }
            }
        }
        // Nothing can fail from here on.
        self.inner.pools.store(Arc::new(pools));
        let mut fronts = Vec::new();
        {
            let ws = self.inner.workers.lock().map_err(|_| {
                LbError::Config("worker list poisoned by an earlier panic".to_string())
            })?;
            for p in plan {
                match p {
                    Plan::Keep(fe, s) => {
                        fe.settings.store(Arc::from(s));
                        fronts.push(fe);
                    }
                    Plan::New(fe, listeners) => {
                        for (w, l) in ws.iter().zip(listeners) {
                            let _ = w.tx.send(WorkerCmd::Serve(fe.clone(), l));
                        }
                        fronts.push(fe);
                    }
                }
            }
        }
        for o in old_fronts.iter() {
            if !fronts.iter().any(|f| Arc::ptr_eq(f, o)) {
                tracing::info!(frontend = %o.name, "frontend removed; finishing its connections");
                let _ = o.closing.send(true);
            }
        }
        self.inner.frontends.store(Arc::new(fronts));
        for c in state.checkers.drain(..) {
            c.abort();
        }
        state.checkers = health::spawn_all(&self.inner.runtime, &self.inner.pools.load());
        state.section = section.clone();
        Ok(())
    }

    /// Stops accepting, lets open connections finish for up to `grace`
    /// (HTTP keep-alive connections close after their current request), then
    /// ends the rest and the worker threads.
    pub async fn shutdown(self, grace: Duration) {
        let fronts = self.inner.frontends.load_full();
        for f in fronts.iter() {
            let _ = f.closing.send(true);
        }
        let deadline = tokio::time::Instant::now() + grace;
        while fronts.iter().any(|f| f.active.load(Ordering::Relaxed) > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        {
            let mut state = self.inner.state.lock().await;
            for c in state.checkers.drain(..) {
                c.abort();
            }
        }
        let workers: Vec<Worker> = match self.inner.workers.lock() {
            Ok(mut w) => w.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                drop(w.tx);
                let _ = w.thread.join();
            }
        })
        .await;
    }

    /// Frontend and pool names by kind, for the CLI and API (pool → backends).
    pub fn backends(&self) -> HashMap<String, Vec<String>> {
        self.inner
            .pools
            .load()
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.backends.iter().map(|b| b.name.clone()).collect(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn cidr_matching() {
        let n: IpAddr = "10.1.0.0".parse().unwrap();
        assert!(in_cidr("10.1.2.3".parse().unwrap(), n, 16));
        assert!(!in_cidr("10.2.2.3".parse().unwrap(), n, 16));
        assert!(in_cidr("::ffff:10.1.2.3".parse().unwrap(), n, 16));
        assert!(in_cidr("1.2.3.4".parse().unwrap(), n, 0));
        let v6: IpAddr = "fd00::".parse().unwrap();
        assert!(in_cidr("fd00::1".parse().unwrap(), v6, 64));
        assert!(!in_cidr("fd01::1".parse().unwrap(), v6, 64));
    }

    #[test]
    fn admin_state_parses() {
        assert_eq!("drain".parse::<AdminState>(), Ok(AdminState::Drain));
        assert!("off".parse::<AdminState>().is_err());
    }
}
