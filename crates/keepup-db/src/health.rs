//! Health answers for outside load balancers and monitors, as Patroni's
//! `/primary`, `/replica` and `/health`: the agent serves `GET /db/primary`,
//! `/db/replica[?max_lag_ms=N]` and `/db/health`, 200 when the check holds
//! for this node's server, 503 otherwise, each with the reason. An HAProxy
//! in front of the servers then sends writes only to the lease-holding
//! writable primary, and reads to replicas that are caught up.
//!
//! The decision is a pure function of the last observation, so it is
//! table-tested; a stale observation answers 503.

use crate::{DbStatus, Role};

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheck {
    /// The lease-holding, writable primary.
    Primary,
    /// A replicating, read-only server, optionally within a lag bound.
    Replica {
        /// Largest acceptable lag, ms.
        max_lag_ms: Option<u64>,
    },
    /// The server answers.
    Health,
}

impl HealthCheck {
    /// Parses a request path (`/db/primary`, ...) and its query string.
    /// `Err` names what is wrong with the query; `Ok(None)` is not a health path.
    pub fn parse(path: &str, query: Option<&str>) -> Result<Option<HealthCheck>, String> {
        Ok(Some(match path {
            "/db/primary" => HealthCheck::Primary,
            "/db/health" => HealthCheck::Health,
            "/db/replica" => {
                let mut max_lag_ms = None;
                for kv in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
                    match kv.split_once('=') {
                        Some(("max_lag_ms", v)) => {
                            max_lag_ms = Some(v.parse::<u64>().map_err(|_| {
                                format!("max_lag_ms={v:?} is not a number of milliseconds")
                            })?)
                        }
                        _ => return Err(format!("unknown query parameter {kv:?} (max_lag_ms=N)")),
                    }
                }
                HealthCheck::Replica { max_lag_ms }
            }
            _ => return Ok(None),
        }))
    }
}

/// Observations older than this answer 503 (the watcher observes every second; one observation may take up to 3 s when a server hangs).
pub const STALE_AFTER_MS: u64 = 5000;

/// Whether `server` passes `check`: `(true, why)` for 200, `(false, why)` for 503.
/// `holds_lease`: this node holds a db-primary group (committed lease,
/// resources running).
pub fn health(
    status: Option<&DbStatus>,
    server: &str,
    check: HealthCheck,
    holds_lease: bool,
    now_ms: u64,
) -> (bool, String) {
    let Some(st) = status else {
        return (false, "no observation yet".into());
    };
    let age = now_ms.saturating_sub(st.observed_at_unix_ms);
    if age > STALE_AFTER_MS {
        return (false, format!("last observation is {age} ms old"));
    }
    let Some(s) = st.server(server) else {
        return (false, format!("no server {server} in the observation"));
    };
    if !s.up {
        return (
            false,
            format!(
                "{server} does not answer: {}",
                s.error.as_deref().unwrap_or("unknown")
            ),
        );
    }
    match check {
        HealthCheck::Health => (true, format!("{server} answers ({:?})", s.role)),
        HealthCheck::Primary => {
            if s.role != Role::Primary || s.read_only {
                (
                    false,
                    format!("{server} is not the writable primary ({:?})", s.role),
                )
            } else if !holds_lease {
                (
                    false,
                    format!("{server} is writable but this node holds no db-primary lease"),
                )
            } else {
                (
                    true,
                    format!("{server} is the writable primary under this node's lease"),
                )
            }
        }
        HealthCheck::Replica { max_lag_ms } => {
            let Some(r) = s.replication.as_ref() else {
                return (false, format!("{server} does not replicate"));
            };
            if s.role != Role::Replica || !s.read_only {
                return (
                    false,
                    format!("{server} is not a read-only replica ({:?})", s.role),
                );
            }
            if r.io_running != "Yes" || r.sql_running != "Yes" {
                return (
                    false,
                    format!(
                        "{server}: replication threads io={} sql={}",
                        r.io_running, r.sql_running
                    ),
                );
            }
            match (max_lag_ms, s.lag_seconds) {
                (Some(_), None) => (false, format!("{server}: lag unknown")),
                (Some(max), Some(lag)) if lag * 1000.0 > max as f64 => (
                    false,
                    format!("{server} lags {:.0} ms (more than {max} ms)", lag * 1000.0),
                ),
                (_, lag) => (
                    true,
                    format!(
                        "{server} replicates{}",
                        lag.map(|l| format!(", lag {:.0} ms", l * 1000.0))
                            .unwrap_or_default()
                    ),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ReplicationThreads, ServerStatus};

    fn server(name: &str, role: Role, read_only: bool, lag: Option<f64>) -> ServerStatus {
        let mut s = ServerStatus::blank(name);
        s.up = role != Role::Down;
        s.refused = role == Role::Down;
        s.error = (role == Role::Down).then(|| "connection refused".to_string());
        s.role = role;
        s.read_only = read_only;
        s.lag_seconds = lag;
        s.replication = (role == Role::Replica).then(|| ReplicationThreads {
            io_running: "Yes".into(),
            sql_running: "Yes".into(),
            ..ReplicationThreads::default()
        });
        s
    }

    fn status(servers: Vec<ServerStatus>, at: u64) -> DbStatus {
        DbStatus::for_test(None, servers, at)
    }

    #[test]
    fn answers_by_role_lease_lag_and_age() {
        let now = 1_000_000;
        let st = status(
            vec![
                server("p", Role::Primary, false, None),
                server("r", Role::Replica, true, Some(0.2)),
                server("x", Role::Down, false, None),
                server("ro", Role::Primary, true, None),
            ],
            now - 500,
        );
        let max = |ms| HealthCheck::Replica {
            max_lag_ms: Some(ms),
        };
        let any = HealthCheck::Replica { max_lag_ms: None };
        use HealthCheck::{Health, Primary};
        // (server, check, holds lease, expected)
        let table = [
            ("p", Primary, true, true),
            ("p", Primary, false, false), // writable but no lease: never 200
            ("ro", Primary, true, false), // read-only (fenced) primary
            ("r", Primary, true, false),
            ("r", any, false, true),
            ("r", max(500), false, true),
            ("r", max(100), false, false), // lags 200 ms
            ("p", any, true, false),
            ("x", Health, false, false),
            ("p", Health, false, true),
            ("r", Health, false, true),
            ("nope", Health, false, false),
        ];
        for (srv, check, lease, want) in table {
            let (ok, why) = health(Some(&st), srv, check, lease, now);
            assert_eq!(ok, want, "{srv} {check:?} lease={lease}: {why}");
        }
        // Stale or missing observations never answer 200.
        assert!(!health(Some(&st), "p", Primary, true, now + STALE_AFTER_MS + 1).0);
        assert!(!health(None, "p", Health, true, now).0);
        // Unknown lag with a bound asked: 503.
        let st2 = status(vec![server("r", Role::Replica, true, None)], now);
        assert!(!health(Some(&st2), "r", max(1000), false, now).0);
    }

    #[test]
    fn parses_paths_and_queries() {
        assert_eq!(
            HealthCheck::parse("/db/primary", None),
            Ok(Some(HealthCheck::Primary))
        );
        assert_eq!(
            HealthCheck::parse("/db/replica", Some("max_lag_ms=250")),
            Ok(Some(HealthCheck::Replica {
                max_lag_ms: Some(250)
            }))
        );
        assert!(HealthCheck::parse("/db/replica", Some("max_lag_ms=abc"))
            .unwrap_err()
            .contains("abc"));
        assert!(HealthCheck::parse("/db/replica", Some("lag=1")).is_err());
        assert_eq!(HealthCheck::parse("/v1/status", None), Ok(None));
    }
}
