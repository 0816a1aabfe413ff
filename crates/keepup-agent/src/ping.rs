//! Split-brain protection: a node that reaches none of its ping targets
//! (typically the gateway) for `fail_count` rounds in a row tells the core
//! it is cut off, and gives up its groups; one good round restores it.

use crate::heartbeat::{Command, HeartbeatHandle};
use std::net::IpAddr;
use std::time::Duration;
use surge_ping::{Client, Config, PingIdentifier, PingSequence, ICMP};

/// Pings `targets` every `interval` forever.
pub(crate) async fn run(
    targets: Vec<IpAddr>,
    interval: Duration,
    fail_count: u32,
    hb: HeartbeatHandle,
) {
    let v4 = Client::new(
        &Config::builder()
            .kind(ICMP::V4)
            .sock_type_hint(socket2::Type::RAW)
            .build(),
    );
    let v6 = Client::new(
        &Config::builder()
            .kind(ICMP::V6)
            .sock_type_hint(socket2::Type::RAW)
            .build(),
    );
    let (v4, v6) = match (v4, v6) {
        (Ok(a), b) => (a, b.ok()),
        (Err(e), _) => {
            tracing::error!(
                "cannot open an ICMP socket for ping targets ({e}); split-brain protection is OFF"
            );
            return;
        }
    };
    let mut failures = 0u32;
    let mut connected = true;
    let mut seq: u16 = 0;
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        seq = seq.wrapping_add(1);
        let mut any = false;
        for (i, t) in targets.iter().enumerate() {
            let client = match t {
                IpAddr::V4(_) => &v4,
                IpAddr::V6(_) => match &v6 {
                    Some(c) => c,
                    None => continue,
                },
            };
            let mut pinger = client
                .pinger(*t, PingIdentifier(std::process::id() as u16 ^ i as u16))
                .await;
            pinger.timeout(interval);
            if pinger.ping(PingSequence(seq), &[0u8; 16]).await.is_ok() {
                any = true;
                break;
            }
        }
        if any {
            failures = 0;
            if !connected {
                connected = true;
                hb.send(Command::Connected(true));
            }
        } else {
            failures += 1;
            if connected && failures >= fail_count {
                connected = false;
                tracing::warn!("no ping target answered {failures} rounds in a row");
                hb.send(Command::Connected(false));
            }
        }
    }
}
