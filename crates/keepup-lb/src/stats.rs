//! Counters, latency histograms, the serializable status snapshot and the
//! Prometheus text rendering.
//!
//! Everything on the request path is a relaxed atomic add: no lock, no
//! allocation. Snapshots read the atomics without stopping traffic, so a
//! snapshot's numbers are each exact but not taken at one instant.

use serde::Serialize;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets; the last bucket
/// (`+Inf`) is implicit.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Same bounds in microseconds, for the hot path.
const BUCKET_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A cumulative latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 15],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKET_US.iter().position(|&b| us <= b).unwrap_or(14);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// A snapshot: per-bucket (not cumulative) counts, and the sum in seconds.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: LATENCY_BUCKETS.to_vec(),
            counts: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            sum_seconds: self.sum_us.load(Relaxed) as f64 / 1e6,
        }
    }
}

/// A histogram snapshot. `counts[i]` counts observations `<= bounds[i]` and
/// above the previous bound; the extra last count is above the last bound.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistogramSnapshot {
    /// Bucket upper bounds in seconds.
    pub bounds: Vec<f64>,
    /// Observations per bucket (one more entry than `bounds`: the overflow).
    pub counts: Vec<u64>,
    /// Sum of all observations in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Traffic counters shared by frontends and backends.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests (HTTP) or connections (TCP) handled.
    pub requests: AtomicU64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub status: [AtomicU64; 5],
    /// Bytes received from clients (frontend) or sent to the backend.
    pub bytes_in: AtomicU64,
    /// Bytes sent to clients (frontend) or received from the backend.
    pub bytes_out: AtomicU64,
    /// Connection errors, timeouts, protocol errors.
    pub errors: AtomicU64,
    /// Response-header latency.
    pub latency: Histogram,
}

impl Counters {
    /// Counts one response status.
    pub fn status(&self, code: u16) {
        let class = (code / 100).clamp(1, 5) as usize - 1;
        self.status[class].fetch_add(1, Relaxed);
    }

    /// Snapshot.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            requests: self.requests.load(Relaxed),
            status_1xx: self.status[0].load(Relaxed),
            status_2xx: self.status[1].load(Relaxed),
            status_3xx: self.status[2].load(Relaxed),
            status_4xx: self.status[3].load(Relaxed),
            status_5xx: self.status[4].load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            errors: self.errors.load(Relaxed),
            latency: self.latency.snapshot(),
        }
    }
}

/// A snapshot of one set of traffic counters.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CountersSnapshot {
    /// Requests (HTTP) or connections (TCP).
    pub requests: u64,
    /// 1xx responses.
    pub status_1xx: u64,
    /// 2xx responses.
    pub status_2xx: u64,
    /// 3xx responses.
    pub status_3xx: u64,
    /// 4xx responses.
    pub status_4xx: u64,
    /// 5xx responses.
    pub status_5xx: u64,
    /// Bytes in (from clients / to the backend).
    pub bytes_in: u64,
    /// Bytes out (to clients / from the backend).
    pub bytes_out: u64,
    /// Errors.
    pub errors: u64,
    /// Latency to response headers (HTTP) or to the backend connect (TCP).
    pub latency: HistogramSnapshot,
}

/// Everything the load balancer knows, for `keepup status`, the API and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct LbStatus {
    /// Frontends in config order.
    pub frontends: Vec<FrontendStatus>,
    /// Pools in config order.
    pub pools: Vec<PoolStatus>,
}

/// One frontend.
#[derive(Debug, Clone, Serialize)]
pub struct FrontendStatus {
    /// Name.
    pub name: String,
    /// Address it is bound to.
    pub bind: String,
    /// `"http"` or `"tcp"`.
    pub mode: String,
    /// Whether it terminates TLS.
    pub tls: bool,
    /// Pool it sends to.
    pub pool: String,
    /// Client connections open now.
    pub active_connections: u64,
    /// Client connections accepted since start.
    pub connections_total: u64,
    /// Counters.
    pub counters: CountersSnapshot,
}

/// One pool.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    /// Name.
    pub name: String,
    /// Algorithm (config spelling).
    pub algorithm: String,
    /// Backends in config order.
    pub backends: Vec<BackendStatus>,
}

/// One backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    /// Name.
    pub name: String,
    /// `IP:port`.
    pub address: String,
    /// Configured weight.
    pub weight: u32,
    /// Weight in effect now (lower during slow start).
    pub effective_weight: u32,
    /// Health: up or down.
    pub healthy: bool,
    /// Operator state.
    pub admin_state: crate::AdminState,
    /// In-flight requests (HTTP) or open connections (TCP).
    pub active: u64,
    /// Times the backend went from up to down or back.
    pub health_transitions: u64,
    /// Consecutive passive failures now.
    pub consecutive_failures: u32,
    /// Last health-check failure, if any.
    pub last_check_error: Option<String>,
    /// Counters.
    pub counters: CountersSnapshot,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    let mut cum = 0;
    for (i, b) in h.bounds.iter().enumerate() {
        cum += h.counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cum}");
    }
    cum += h.counts.get(h.bounds.len()).copied().unwrap_or(0);
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_seconds);
    let _ = writeln!(out, "{name}_count{{{labels}}} {cum}");
}

/// One line per backend of a single-valued metric, with its HELP and TYPE.
fn per_backend(
    out: &mut String,
    status: &LbStatus,
    name: &str,
    help: &str,
    kind: &str,
    value: impl Fn(&BackendStatus) -> u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for p in &status.pools {
        for b in &p.backends {
            let _ = writeln!(
                out,
                "{name}{{pool=\"{}\",backend=\"{}\"}} {}",
                esc(&p.name),
                esc(&b.name),
                value(b)
            );
        }
    }
}

/// Renders `status` as Prometheus text exposition (appends to `out`).
pub fn prometheus(status: &LbStatus, out: &mut String) {
    out.push_str("# HELP keepup_lb_requests_total Requests (HTTP) or connections (TCP) by frontend and status class.\n# TYPE keepup_lb_requests_total counter\n");
    for f in &status.frontends {
        let c = &f.counters;
        for (class, n) in [
            ("1xx", c.status_1xx),
            ("2xx", c.status_2xx),
            ("3xx", c.status_3xx),
            ("4xx", c.status_4xx),
            ("5xx", c.status_5xx),
        ] {
            let _ = writeln!(
                out,
                "keepup_lb_requests_total{{frontend=\"{}\",code_class=\"{class}\"}} {n}",
                esc(&f.name)
            );
        }
    }
    out.push_str("# HELP keepup_lb_frontend_connections Open client connections.\n# TYPE keepup_lb_frontend_connections gauge\n");
    for f in &status.frontends {
        let _ = writeln!(
            out,
            "keepup_lb_frontend_connections{{frontend=\"{}\"}} {}",
            esc(&f.name),
            f.active_connections
        );
    }
    out.push_str("# HELP keepup_lb_frontend_bytes_total Bytes from (in) and to (out) clients.\n# TYPE keepup_lb_frontend_bytes_total counter\n");
    for f in &status.frontends {
        let n = esc(&f.name);
        let _ = writeln!(
            out,
            "keepup_lb_frontend_bytes_total{{frontend=\"{n}\",direction=\"in\"}} {}",
            f.counters.bytes_in
        );
        let _ = writeln!(
            out,
            "keepup_lb_frontend_bytes_total{{frontend=\"{n}\",direction=\"out\"}} {}",
            f.counters.bytes_out
        );
    }
    out.push_str("# HELP keepup_lb_frontend_errors_total Client-side errors.\n# TYPE keepup_lb_frontend_errors_total counter\n");
    for f in &status.frontends {
        let _ = writeln!(
            out,
            "keepup_lb_frontend_errors_total{{frontend=\"{}\"}} {}",
            esc(&f.name),
            f.counters.errors
        );
    }
    out.push_str("# HELP keepup_lb_request_duration_seconds Time to response headers, by frontend.\n# TYPE keepup_lb_request_duration_seconds histogram\n");
    for f in &status.frontends {
        let labels = format!("frontend=\"{}\"", esc(&f.name));
        histogram(
            out,
            "keepup_lb_request_duration_seconds",
            &labels,
            &f.counters.latency,
        );
    }
    per_backend(
        out,
        status,
        "keepup_lb_backend_up",
        "1 when the backend passes its health checks.",
        "gauge",
        |b| u64::from(b.healthy),
    );
    per_backend(
        out,
        status,
        "keepup_lb_backend_active",
        "In-flight requests or open connections per backend.",
        "gauge",
        |b| b.active,
    );
    out.push_str("# HELP keepup_lb_backend_requests_total Requests per backend and status class.\n# TYPE keepup_lb_backend_requests_total counter\n");
    for p in &status.pools {
        for b in &p.backends {
            let c = &b.counters;
            for (class, n) in [
                ("1xx", c.status_1xx),
                ("2xx", c.status_2xx),
                ("3xx", c.status_3xx),
                ("4xx", c.status_4xx),
                ("5xx", c.status_5xx),
            ] {
                let _ = writeln!(
                    out,
                    "keepup_lb_backend_requests_total{{pool=\"{}\",backend=\"{}\",code_class=\"{class}\"}} {n}",
                    esc(&p.name),
                    esc(&b.name)
                );
            }
        }
    }
    out.push_str("# HELP keepup_lb_backend_bytes_total Bytes to (in) and from (out) backends.\n# TYPE keepup_lb_backend_bytes_total counter\n");
    for p in &status.pools {
        for b in &p.backends {
            let (pn, bn) = (esc(&p.name), esc(&b.name));
            let _ = writeln!(
                out,
                "keepup_lb_backend_bytes_total{{pool=\"{pn}\",backend=\"{bn}\",direction=\"in\"}} {}",
                b.counters.bytes_in
            );
            let _ = writeln!(
                out,
                "keepup_lb_backend_bytes_total{{pool=\"{pn}\",backend=\"{bn}\",direction=\"out\"}} {}",
                b.counters.bytes_out
            );
        }
    }
    per_backend(
        out,
        status,
        "keepup_lb_backend_errors_total",
        "Connection errors and timeouts per backend.",
        "counter",
        |b| b.counters.errors,
    );
    per_backend(
        out,
        status,
        "keepup_lb_backend_health_transitions_total",
        "Up/down changes per backend.",
        "counter",
        |b| b.health_transitions,
    );
    out.push_str("# HELP keepup_lb_backend_request_duration_seconds Time to response headers, by backend.\n# TYPE keepup_lb_backend_request_duration_seconds histogram\n");
    for p in &status.pools {
        for b in &p.backends {
            let labels = format!("pool=\"{}\",backend=\"{}\"", esc(&p.name), esc(&b.name));
            histogram(
                out,
                "keepup_lb_backend_request_duration_seconds",
                &labels,
                &b.counters.latency,
            );
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn histogram_buckets_are_per_bucket_and_cumulative_in_text() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[14], 1);
        assert_eq!(s.count(), 3);
        let mut out = String::new();
        histogram(&mut out, "x", "a=\"b\"", &s);
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.001\"} 2"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3"), "{out}");
    }

    #[test]
    fn status_classes() {
        let c = Counters::default();
        c.status(200);
        c.status(503);
        c.status(99);
        let s = c.snapshot();
        assert_eq!((s.status_1xx, s.status_2xx, s.status_5xx), (1, 1, 1));
    }
}
