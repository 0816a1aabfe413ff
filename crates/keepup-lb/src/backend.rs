//! Backends and pools at run time: health, operator state, in-flight counts,
//! and the four selection algorithms.
//!
//! Health and admin state are separate switches (as in pingora): health says
//! whether the backend works, `AdminState` what the operator wants. A backend
//! takes new traffic only when both allow it; a draining backend still serves
//! its sticky clients.

use crate::stats::{BackendStatus, Counters};
use crate::AdminState;
use keepup_config::{LbAlgorithm, LbBackend, LbPool};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call (a process-wide monotonic clock that
/// fits an atomic). Never 0, so 0 can mean "unset".
pub(crate) fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The clock for one selection: read at most once, and only when a
/// backend is in slow start or passive cooldown (the common path reads none).
#[derive(Debug, Default)]
pub(crate) struct LazyNow(std::cell::Cell<u64>);

impl LazyNow {
    #[cfg(test)]
    pub(crate) fn at(ms: u64) -> LazyNow {
        LazyNow(std::cell::Cell::new(ms))
    }
    pub(crate) fn get(&self) -> u64 {
        match self.0.get() {
            0 => {
                let n = now_ms();
                self.0.set(n);
                n
            }
            n => n,
        }
    }
}

/// One backend server.
#[derive(Debug)]
pub struct Backend {
    /// Name, unique within its pool.
    pub name: String,
    /// Address.
    pub addr: SocketAddr,
    /// `http://addr` authority, built once.
    pub(crate) authority: http::uri::Authority,
    weight: AtomicU32,
    admin: AtomicU8,
    healthy: AtomicBool,
    /// In-flight requests (HTTP) or open connections (TCP).
    pub(crate) active: AtomicU64,
    /// Traffic counters.
    pub(crate) counters: Counters,
    consecutive_failures: AtomicU32,
    transitions: AtomicU64,
    /// When the backend last came up (slow start); 0: not ramping.
    up_since_ms: AtomicU64,
    /// When a passively-downed backend may be tried again (no active check).
    retry_at_ms: AtomicU64,
    last_check_error: Mutex<Option<String>>,
    /// The pool it belongs to (for health events).
    pool: String,
    /// Where its health changes are recorded.
    log: Arc<HealthLog>,
}

/// One health change of one backend: when, which, which way and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthEvent {
    /// Wall-clock time (Unix milliseconds).
    pub unix_ms: u64,
    /// The pool.
    pub pool: String,
    /// The backend.
    pub backend: String,
    /// Its address.
    pub address: String,
    /// Up (true) or down.
    pub up: bool,
    /// Why: the failed check, the passive errors, the checks passed.
    pub reason: String,
}

/// The last health changes of every backend of a load balancer (newest
/// last, at most [`HealthLog::KEEP`]), for status, the timeline and the dashboard.
#[derive(Debug, Default)]
pub struct HealthLog(Mutex<std::collections::VecDeque<HealthEvent>>);

impl HealthLog {
    /// Changes kept.
    pub const KEEP: usize = 100;

    fn push(&self, e: HealthEvent) {
        if let Ok(mut q) = self.0.lock() {
            if q.len() >= Self::KEEP {
                q.pop_front();
            }
            q.push_back(e);
        }
    }

    /// The recorded changes, oldest first.
    pub fn recent(&self) -> Vec<HealthEvent> {
        self.0
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Backend {
    /// Builds a backend from its config (the address must already be valid).
    pub(crate) fn new(
        cfg: &LbBackend,
        addr: SocketAddr,
        pool: &str,
        log: Arc<HealthLog>,
    ) -> Result<Backend, crate::LbError> {
        let authority =
            http::uri::Authority::try_from(addr.to_string().as_str()).map_err(|_| {
                crate::LbError::Config(format!("backend address {addr} is not a URI authority"))
            })?;
        Ok(Backend {
            name: cfg.name.clone(),
            addr,
            authority,
            weight: AtomicU32::new(cfg.weight.max(1)),
            admin: AtomicU8::new(AdminState::from(cfg.state) as u8),
            healthy: AtomicBool::new(true),
            active: AtomicU64::new(0),
            counters: Counters::default(),
            consecutive_failures: AtomicU32::new(0),
            transitions: AtomicU64::new(0),
            up_since_ms: AtomicU64::new(0),
            retry_at_ms: AtomicU64::new(0),
            last_check_error: Mutex::new(None),
            pool: pool.to_string(),
            log,
        })
    }

    /// Operator state.
    pub fn admin_state(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    /// Sets the operator state.
    pub fn set_admin_state(&self, s: AdminState) {
        self.admin.store(s as u8, Ordering::Relaxed);
    }

    pub(crate) fn set_weight(&self, w: u32) {
        self.weight.store(w.max(1), Ordering::Relaxed);
    }

    /// Passes its health checks (or has not failed passively).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Marks the backend up or down for `reason`; returns whether that
    /// changed anything (a change is logged and recorded with its reason).
    pub(crate) fn set_healthy(&self, up: bool, reason: &str) -> bool {
        let was = self.healthy.swap(up, Ordering::Relaxed);
        if was != up {
            self.transitions.fetch_add(1, Ordering::Relaxed);
            if up {
                self.up_since_ms.store(now_ms(), Ordering::Relaxed);
                self.consecutive_failures.store(0, Ordering::Relaxed);
                tracing::info!(pool = %self.pool, backend = %self.name, addr = %self.addr, reason, "backend up");
            } else {
                self.up_since_ms.store(0, Ordering::Relaxed);
                tracing::warn!(pool = %self.pool, backend = %self.name, addr = %self.addr, reason, "backend down");
            }
            self.log.push(HealthEvent {
                unix_ms: now_ms(),
                pool: self.pool.clone(),
                backend: self.name.clone(),
                address: self.addr.to_string(),
                up,
                reason: reason.to_string(),
            });
            true
        } else {
            false
        }
    }

    pub(crate) fn set_check_error(&self, e: Option<String>) {
        if let Ok(mut g) = self.last_check_error.lock() {
            *g = e;
        }
    }

    /// Weight in effect at `now` (ramped during slow start).
    fn effective_weight(&self, now: &LazyNow, slow_start_ms: u64) -> u64 {
        let w = u64::from(self.weight.load(Ordering::Relaxed));
        let since = self.up_since_ms.load(Ordering::Relaxed);
        if slow_start_ms == 0 || since == 0 {
            return w;
        }
        let elapsed = now.get().saturating_sub(since);
        if elapsed >= slow_start_ms {
            self.up_since_ms.store(0, Ordering::Relaxed);
            return w;
        }
        // From 10 % to 100 % linearly.
        (w * (100 + 900 * elapsed / slow_start_ms) / 1000).max(1)
    }

    fn status(&self, slow_start_ms: u64) -> BackendStatus {
        BackendStatus {
            name: self.name.clone(),
            address: self.addr.to_string(),
            weight: self.weight.load(Ordering::Relaxed),
            effective_weight: self.effective_weight(&LazyNow::default(), slow_start_ms) as u32,
            healthy: self.is_healthy(),
            admin_state: self.admin_state(),
            active: self.active.load(Ordering::Relaxed),
            health_transitions: self.transitions.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            last_check_error: self.last_check_error.lock().ok().and_then(|g| g.clone()),
            counters: self.counters.snapshot(),
        }
    }
}

/// Counts a request or connection as in flight on a backend until dropped.
#[derive(Debug)]
pub struct InFlight(pub(crate) Arc<Backend>);

impl InFlight {
    pub(crate) fn new(b: Arc<Backend>) -> InFlight {
        b.active.fetch_add(1, Ordering::Relaxed);
        InFlight(b)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Consecutive-result thresholds: `rise` successes bring a backend up,
/// `fall` failures take it down. Pure; the checker feeds it results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Current verdict.
    pub up: bool,
    /// Consecutive results that disagree with `up`.
    pub streak: u32,
}

impl Health {
    /// Feeds one check result; returns `true` when the verdict flipped.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        if ok == self.up {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let need = if ok { rise } else { fall };
        if self.streak >= need.max(1) {
            self.up = ok;
            self.streak = 0;
            true
        } else {
            false
        }
    }
}

/// What a request offers the selection algorithm.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelectKey<'a> {
    /// The client's address (after PROXY protocol).
    pub client_ip: Option<IpAddr>,
    /// The consistent-hash key, when the pool hashes on URI or a header.
    pub hash: Option<&'a [u8]>,
}

/// What `hash_key` says to hash (consistent-hash pools).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// Path and query.
    Uri,
    /// The client IP.
    SourceIp,
    /// A request header (lower-case name).
    Header(http::HeaderName),
}

/// A pool at run time.
#[derive(Debug)]
pub struct Pool {
    /// Name.
    pub name: String,
    /// The config it was built from (reload compares it).
    pub(crate) cfg: LbPool,
    /// Backends, config order.
    pub backends: Vec<Arc<Backend>>,
    pub(crate) hash_key: HashKey,
    pub(crate) sticky_name: Option<String>,
    pub(crate) has_active_check: bool,
    rr: Mutex<Vec<i64>>,
    rotate: AtomicUsize,
    ring: Vec<(u64, usize)>,
}

fn hash64(parts: &[&[u8]]) -> u64 {
    // SipHash with fixed keys: the same key maps to the same backend on every
    // node and after restarts.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

/// Ring points per 100 units of weight.
const RING_POINTS: u64 = 160;

impl Pool {
    /// Builds a pool; backends whose name and address match one in `reuse`
    /// keep their state (health, counters, admin state).
    pub(crate) fn build(
        cfg: &LbPool,
        reuse: Option<&Pool>,
        log: &Arc<HealthLog>,
    ) -> Result<Pool, crate::LbError> {
        let mut backends = Vec::with_capacity(cfg.backend.len());
        for b in &cfg.backend {
            let addr: SocketAddr = b.address.parse().map_err(|_| crate::LbError::BadAddress {
                what: format!("pool {:?} backend {:?}", cfg.name, b.name),
                value: b.address.clone(),
            })?;
            let old = reuse.and_then(|p| {
                p.backends
                    .iter()
                    .find(|o| o.name == b.name && o.addr == addr)
                    .cloned()
            });
            let backend = match old {
                Some(o) => {
                    o.set_weight(b.weight);
                    // A changed initial state in the file is an operator decision.
                    let was = reuse.and_then(|p| {
                        p.cfg
                            .backend
                            .iter()
                            .find(|x| x.name == b.name)
                            .map(|x| x.state)
                    });
                    if was != Some(b.state) {
                        o.set_admin_state(b.state.into());
                    }
                    o
                }
                None => Arc::new(Backend::new(b, addr, &cfg.name, log.clone())?),
            };
            backends.push(backend);
        }
        let hash_key = match cfg.hash_key.as_str() {
            "source-ip" => HashKey::SourceIp,
            s => match s.strip_prefix("header:") {
                Some(h) => HashKey::Header(
                    http::HeaderName::try_from(h.to_ascii_lowercase()).map_err(|_| {
                        crate::LbError::Config(format!("pool {:?}: bad hash_key {s:?}", cfg.name))
                    })?,
                ),
                None => HashKey::Uri,
            },
        };
        let mut ring = Vec::new();
        if cfg.algorithm == LbAlgorithm::ConsistentHash {
            for (i, b) in backends.iter().enumerate() {
                let points =
                    (u64::from(b.weight.load(Ordering::Relaxed)) * RING_POINTS / 100).max(1);
                for p in 0..points {
                    ring.push((hash64(&[b.name.as_bytes(), &p.to_le_bytes()]), i));
                }
            }
            ring.sort_unstable();
        }
        Ok(Pool {
            name: cfg.name.clone(),
            has_active_check: cfg.health.is_some(),
            sticky_name: cfg.sticky_cookie.clone(),
            hash_key,
            rr: Mutex::new(vec![0; backends.len()]),
            rotate: AtomicUsize::new(0),
            ring,
            backends,
            cfg: cfg.clone(),
        })
    }

    /// The backend named `name`.
    pub fn backend(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// May `b` take new traffic at `now`? `sticky`: the client was pinned to it.
    fn available(&self, b: &Backend, now: &LazyNow, sticky: bool) -> bool {
        match b.admin_state() {
            AdminState::Enabled => {}
            AdminState::Drain if sticky => {}
            _ => return false,
        }
        if b.is_healthy() {
            return true;
        }
        // Passively down without an active check: half-open after the cooldown.
        !self.has_active_check && {
            let at = b.retry_at_ms.load(Ordering::Relaxed);
            at != 0 && now.get() >= at
        }
    }

    /// The backend a sticky cookie value names, if it may still serve.
    pub(crate) fn sticky_backend(&self, value: &[u8]) -> Option<(usize, &Arc<Backend>)> {
        let now = LazyNow::default();
        self.backends
            .iter()
            .enumerate()
            .find(|(_, b)| b.name.as_bytes() == value)
            .filter(|(_, b)| self.available(b, &now, true))
    }

    /// Picks a backend not in `tried` (a bit set of indices).
    pub fn select(&self, key: SelectKey<'_>, tried: u64) -> Option<(usize, &Arc<Backend>)> {
        let now = &LazyNow::default();
        let slow = self.cfg.slow_start_ms;
        let ok = |i: usize, b: &Backend| {
            tried & (1u64 << (i % 64)) == 0 && self.available(b, now, false)
        };
        let idx = match self.cfg.algorithm {
            LbAlgorithm::RoundRobin => {
                // Smooth weighted round-robin (nginx): every pick adds each
                // weight to its current value, takes the largest, and takes
                // the total off the winner.
                let mut cw = self.rr.lock().ok()?;
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for (i, b) in self.backends.iter().enumerate() {
                    if !ok(i, b) {
                        continue;
                    }
                    let w = b.effective_weight(now, slow.ms()) as i64;
                    cw[i] += w;
                    total += w;
                    if best.is_none_or(|j| cw[i] > cw[j]) {
                        best = Some(i);
                    }
                }
                let best = best?;
                cw[best] -= total;
                Some(best)
            }
            LbAlgorithm::LeastConnections => {
                let n = self.backends.len();
                let start = self.rotate.fetch_add(1, Ordering::Relaxed) % n.max(1);
                let mut best: Option<(usize, u64, u64)> = None;
                for k in 0..n {
                    let i = (start + k) % n;
                    let b = &self.backends[i];
                    if !ok(i, b) {
                        continue;
                    }
                    let a = b.active.load(Ordering::Relaxed) + 1;
                    let w = b.effective_weight(now, slow.ms());
                    // a/w < ba/bw  <=>  a*bw < ba*w
                    if best.is_none_or(|(_, ba, bw)| a * bw < ba * w) {
                        best = Some((i, a, w));
                    }
                }
                best.map(|(i, _, _)| i)
            }
            LbAlgorithm::SourceHash => {
                let ip = key.client_ip.map(|ip| match ip {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                    IpAddr::V6(v6) => v6.octets(),
                });
                let ip = ip.unwrap_or_default();
                // Weighted rendezvous hashing: score = -w / ln(u).
                let mut best: Option<(usize, f64)> = None;
                for (i, b) in self.backends.iter().enumerate() {
                    if !ok(i, b) {
                        continue;
                    }
                    let h = hash64(&[&ip, b.name.as_bytes()]);
                    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                    let score = -(b.effective_weight(now, slow.ms()) as f64) / u.ln();
                    if best.is_none_or(|(_, s)| score > s) {
                        best = Some((i, score));
                    }
                }
                best.map(|(i, _)| i)
            }
            LbAlgorithm::ConsistentHash => {
                let h = match (&self.hash_key, key.hash, key.client_ip) {
                    (HashKey::SourceIp, _, Some(ip)) | (_, None, Some(ip)) => {
                        hash64(&[ip.to_string().as_bytes()])
                    }
                    (_, Some(k), _) => hash64(&[k]),
                    _ => 0,
                };
                if self.ring.is_empty() {
                    return None;
                }
                let start = self.ring.partition_point(|(p, _)| *p < h);
                (0..self.ring.len())
                    .map(|k| self.ring[(start + k) % self.ring.len()].1)
                    .find(|&i| ok(i, &self.backends[i]))
            }
        }?;
        Some((idx, &self.backends[idx]))
    }

    /// Passive health: a request or connection to `b` worked.
    pub(crate) fn observe_success(&self, b: &Backend) {
        if b.consecutive_failures.load(Ordering::Relaxed) != 0 {
            b.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if !b.is_healthy() && !self.has_active_check {
            b.retry_at_ms.store(0, Ordering::Relaxed);
            b.set_healthy(
                true,
                "a request to it succeeded after the cool-down (passive health)",
            );
        }
    }

    /// A connection error or timeout on `b`: counted in its errors and
    /// toward passive health.
    pub(crate) fn backend_error(&self, b: &Backend) {
        b.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.observe_failure(b);
    }

    /// Passive health: a connection error, timeout or (with `passive_5xx`) 5xx.
    pub(crate) fn observe_failure(&self, b: &Backend) {
        let n = b.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let fall = self.cfg.passive_fall;
        if fall > 0 && n >= fall {
            let reason = format!(
                "{n} errors in a row on client traffic (passive health, passive_fall = {fall})"
            );
            if b.set_healthy(false, &reason) {
                b.retry_at_ms.store(
                    now_ms() + self.cfg.passive_cooldown_ms.ms().max(1),
                    Ordering::Relaxed,
                );
            } else if !self.has_active_check && b.retry_at_ms.load(Ordering::Relaxed) != 0 {
                // A half-open try failed: wait another cooldown.
                b.retry_at_ms.store(
                    now_ms() + self.cfg.passive_cooldown_ms.ms().max(1),
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// Counts a response status passively.
    pub(crate) fn passive_5xx(&self) -> bool {
        self.cfg.passive_5xx
    }

    /// Status snapshot.
    pub(crate) fn status(&self) -> crate::stats::PoolStatus {
        crate::stats::PoolStatus {
            name: self.name.clone(),
            algorithm: match self.cfg.algorithm {
                LbAlgorithm::RoundRobin => "round-robin",
                LbAlgorithm::LeastConnections => "least-connections",
                LbAlgorithm::SourceHash => "source-hash",
                LbAlgorithm::ConsistentHash => "consistent-hash",
            }
            .to_string(),
            backends: self
                .backends
                .iter()
                .map(|b| b.status(self.cfg.slow_start_ms.ms()))
                .collect(),
        }
    }

    /// Time between two active checks (for the checker).
    pub(crate) fn check_interval(&self) -> Option<Duration> {
        self.cfg.health.as_ref().map(|h| h.interval_ms.nonzero())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn pool(alg: LbAlgorithm, weights: &[u32]) -> Pool {
        let cfg = LbPool {
            name: "p".into(),
            algorithm: alg,
            hash_key: "uri".into(),
            sticky_cookie: None,
            slow_start_ms: keepup_config::Millis(0),
            passive_fall: 3,
            passive_5xx: true,
            passive_cooldown_ms: keepup_config::Millis(10_000),
            health: None,
            backend: weights
                .iter()
                .enumerate()
                .map(|(i, w)| LbBackend {
                    name: format!("b{i}"),
                    address: format!("127.0.0.1:{}", 1000 + i),
                    weight: *w,
                    state: Default::default(),
                })
                .collect(),
        };
        Pool::build(&cfg, None, &Arc::default()).unwrap()
    }

    fn counts(p: &Pool, n: usize, key: impl Fn(usize) -> Vec<u8>) -> Vec<usize> {
        let mut c = vec![0; p.backends.len()];
        for i in 0..n {
            let k = key(i);
            let (j, _) = p
                .select(
                    SelectKey {
                        client_ip: Some(IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8])),
                        hash: Some(&k),
                    },
                    0,
                )
                .unwrap();
            c[j] += 1;
        }
        c
    }

    #[test]
    fn health_thresholds() {
        let mut h = Health {
            up: true,
            streak: 0,
        };
        assert!(!h.observe(false, 2, 3));
        assert!(!h.observe(false, 2, 3));
        assert!(!h.observe(true, 2, 3)); // streak broken
        assert!(!h.observe(false, 2, 3));
        assert!(!h.observe(false, 2, 3));
        assert!(h.observe(false, 2, 3));
        assert!(!h.up);
        assert!(!h.observe(true, 2, 3));
        assert!(h.observe(true, 2, 3));
        assert!(h.up);
    }

    #[test]
    fn smooth_round_robin_is_exact_by_weight() {
        let p = pool(LbAlgorithm::RoundRobin, &[5, 1, 1]);
        let c = counts(&p, 700, |_| vec![]);
        assert_eq!(c, vec![500, 100, 100]);
        // Smooth: the heavy backend never gets 5 in a row at the start.
        let seq: Vec<usize> = (0..7)
            .map(|_| p.select(SelectKey::default(), 0).unwrap().0)
            .collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn least_connections_prefers_idle() {
        let p = pool(LbAlgorithm::LeastConnections, &[100, 100, 100]);
        let _a = InFlight::new(p.backends[0].clone());
        let _b = InFlight::new(p.backends[1].clone());
        for _ in 0..5 {
            assert_eq!(p.select(SelectKey::default(), 0).unwrap().0, 2);
        }
    }

    #[test]
    fn source_hash_is_stable_and_spread() {
        let p = pool(LbAlgorithm::SourceHash, &[100, 100, 100]);
        let c = counts(&p, 3000, |_| vec![]);
        assert!(c.iter().all(|&n| n > 800), "{c:?}");
        let ip = SelectKey {
            client_ip: Some("10.1.2.3".parse().unwrap()),
            hash: None,
        };
        let first = p.select(ip, 0).unwrap().0;
        for _ in 0..10 {
            assert_eq!(p.select(ip, 0).unwrap().0, first);
        }
    }

    #[test]
    fn consistent_hash_moves_only_the_lost_backends_keys() {
        let p = pool(LbAlgorithm::ConsistentHash, &[100, 100, 100]);
        let keys: Vec<Vec<u8>> = (0..3000).map(|i| format!("/k{i}").into_bytes()).collect();
        let pick = |p: &Pool, k: &[u8]| {
            p.select(
                SelectKey {
                    client_ip: None,
                    hash: Some(k),
                },
                0,
            )
            .unwrap()
            .0
        };
        let before: Vec<usize> = keys.iter().map(|k| pick(&p, k)).collect();
        let mut c = [0; 3];
        for &b in &before {
            c[b] += 1;
        }
        assert!(c.iter().all(|&n| n > 600), "{c:?}");
        p.backends[1].set_admin_state(AdminState::Maintenance);
        for (k, &b) in keys.iter().zip(&before) {
            let now = pick(&p, k);
            if b != 1 {
                assert_eq!(now, b, "a key of a healthy backend moved");
            } else {
                assert_ne!(now, 1);
            }
        }
    }

    #[test]
    fn tried_backends_are_skipped_and_drain_only_sticky() {
        let p = pool(LbAlgorithm::RoundRobin, &[100, 100]);
        let (first, _) = p.select(SelectKey::default(), 0).unwrap();
        let (second, _) = p.select(SelectKey::default(), 1 << first).unwrap();
        assert_ne!(first, second);
        assert!(p.select(SelectKey::default(), 0b11).is_none());
        p.backends[0].set_admin_state(AdminState::Drain);
        for _ in 0..4 {
            assert_eq!(p.select(SelectKey::default(), 0).unwrap().0, 1);
        }
        assert!(p.sticky_backend(b"b0").is_some());
        p.backends[0].set_admin_state(AdminState::Maintenance);
        assert!(p.sticky_backend(b"b0").is_none());
    }

    #[test]
    fn passive_failures_take_down_then_cooldown_half_opens() {
        let p = pool(LbAlgorithm::RoundRobin, &[100, 100]);
        let b = p.backends[0].clone();
        p.observe_failure(&b);
        p.observe_failure(&b);
        assert!(b.is_healthy());
        p.observe_failure(&b);
        assert!(!b.is_healthy());
        for _ in 0..4 {
            assert_eq!(p.select(SelectKey::default(), 0).unwrap().0, 1);
        }
        b.retry_at_ms.store(1, Ordering::Relaxed);
        p.observe_success(&b);
        assert!(b.is_healthy());
    }

    #[test]
    fn slow_start_ramps_weight() {
        let b = Backend::new(
            &LbBackend {
                name: "x".into(),
                address: "127.0.0.1:1".into(),
                weight: 100,
                state: Default::default(),
            },
            "127.0.0.1:1".parse().unwrap(),
            "p",
            Arc::default(),
        )
        .unwrap();
        b.set_healthy(false, "test");
        b.set_healthy(true, "test");
        let since = b.up_since_ms.load(Ordering::Relaxed);
        assert_eq!(b.effective_weight(&LazyNow::at(since), 10_000), 10);
        assert_eq!(b.effective_weight(&LazyNow::at(since + 5_000), 10_000), 55);
        assert_eq!(
            b.effective_weight(&LazyNow::at(since + 10_000), 10_000),
            100
        );
    }
}
