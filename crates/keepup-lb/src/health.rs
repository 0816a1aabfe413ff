//! Active health checks: one task per backend on the agent's runtime, a TCP
//! connect or an HTTP `GET` every `interval_ms`, fed into [`Health`] with the
//! pool's `rise`/`fall` thresholds. Passive failures (see `Pool`) may take a
//! backend down between checks; the checks then bring it back.

use crate::backend::{Backend, Health, Pool};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use keepup_config::{LbHealthCheck, LbHealthKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Starts the checkers of every pool that has an active check.
pub(crate) fn spawn_all(
    rt: &tokio::runtime::Handle,
    pools: &[Arc<Pool>],
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut out = Vec::new();
    for p in pools {
        let (Some(check), Some(interval)) = (p.cfg.health.clone(), p.check_interval()) else {
            continue;
        };
        for b in &p.backends {
            out.push(rt.spawn(run(b.clone(), check.clone(), interval)));
        }
    }
    out
}

async fn run(b: Arc<Backend>, check: LbHealthCheck, interval: Duration) {
    let mut h = Health {
        up: b.is_healthy(),
        streak: 0,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Passive health may have flipped the backend since the last check.
        if h.up != b.is_healthy() {
            h = Health {
                up: b.is_healthy(),
                streak: 0,
            };
        }
        let timeout = check.timeout_ms.nonzero();
        let result = match tokio::time::timeout(timeout, probe(&b, &check)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", check.timeout_ms)),
        };
        let ok = result.is_ok();
        let reason = match &result {
            Ok(()) => format!(
                "{} {} checks passed in a row",
                check.rise,
                kind_name(&check)
            ),
            Err(e) => format!(
                "{} {} checks failed in a row, last: {e}",
                check.fall,
                kind_name(&check)
            ),
        };
        b.set_check_error(result.err());
        if h.observe(ok, check.rise, check.fall) {
            b.set_healthy(h.up, &reason);
        }
    }
}

fn kind_name(check: &LbHealthCheck) -> &'static str {
    match check.kind {
        LbHealthKind::Tcp => "TCP",
        LbHealthKind::Http => "HTTP",
    }
}

/// One check: `Ok` when healthy, else why not.
pub(crate) async fn probe(b: &Backend, check: &LbHealthCheck) -> Result<(), String> {
    let stream = TcpStream::connect(b.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", b.addr))?;
    if check.kind == LbHealthKind::Tcp {
        return Ok(());
    }
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let host = check.host.clone().unwrap_or_else(|| b.addr.to_string());
    let req = http::Request::get(check.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "keepup-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad check request: {e}"))?;
    let res = send.send_request(req).await;
    driver.abort();
    let res = res.map_err(|e| format!("GET {}: {e}", check.path))?;
    let code = res.status().as_u16();
    if (check.expect_status[0]..=check.expect_status[1]).contains(&code) {
        Ok(())
    } else {
        Err(format!(
            "GET {} answered {code}, expected {}..={}",
            check.path, check.expect_status[0], check.expect_status[1]
        ))
    }
}
