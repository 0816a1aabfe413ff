//! The TCP (layer 4) frontend: pick a backend by the client address, connect
//! (trying the next backend when a connect fails), optionally send a PROXY
//! header, then copy bytes both ways until either side closes or the
//! connection is idle for `idle_timeout_ms` (closed between one and two
//! timeouts after the last byte).

use crate::backend::{InFlight, SelectKey};
use crate::{proxy_protocol, ConnGuard, Settings};
use keepup_config::ProxyProtocolVersion;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// Serves one client connection.
pub(crate) async fn serve(
    guard: ConnGuard,
    s: Arc<Settings>,
    mut client: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let fe = guard.0.clone();
    let start = Instant::now();
    fe.counters.requests.fetch_add(1, Relaxed);
    let mut src = peer;
    // getsockname only when a PROXY header will need it.
    let mut dst = if s.cfg.send_proxy_protocol == ProxyProtocolVersion::None {
        fe.local
    } else {
        client.local_addr().unwrap_or(fe.local)
    };
    if !s.trusted.is_empty() && s.is_trusted(peer.ip()) {
        match tokio::time::timeout(
            s.header_read_timeout(),
            proxy_protocol::read_header(&mut client),
        )
        .await
        {
            Ok(Ok(h)) => {
                if let (Some(a), Some(b)) = (h.source, h.destination) {
                    src = a;
                    dst = b;
                }
            }
            _ => {
                fe.counters.errors.fetch_add(1, Relaxed);
                return;
            }
        }
    }
    let pool = s.pool.clone();
    let key = SelectKey {
        client_ip: Some(src.ip()),
        hash: None,
    };
    let connect_timeout = s.cfg.connect_timeout_ms.nonzero();
    let mut tried = 0u64;
    let mut upstream = None;
    for _ in 0..=s.cfg.retries {
        let Some((i, b)) = pool.select(key, tried) else {
            break;
        };
        tried |= 1u64 << (i % 64);
        let b = b.clone();
        b.counters.requests.fetch_add(1, Relaxed);
        let t0 = Instant::now();
        match tokio::time::timeout(connect_timeout, TcpStream::connect(b.addr)).await {
            Ok(Ok(conn)) => {
                b.counters.latency.observe(t0.elapsed());
                pool.observe_success(&b);
                upstream = Some((conn, b));
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(backend = %b.name, "connect: {e}");
                pool.backend_error(&b);
            }
            Err(_) => {
                pool.backend_error(&b);
            }
        }
    }
    let Some((mut conn, b)) = upstream else {
        fe.counters.errors.fetch_add(1, Relaxed);
        fe.counters.status(503);
        return;
    };
    let flight = InFlight::new(b.clone());
    let _ = conn.set_nodelay(true);
    fe.counters.latency.observe(start.elapsed());
    let mut header = Vec::new();
    match s.cfg.send_proxy_protocol {
        ProxyProtocolVersion::None => {}
        ProxyProtocolVersion::V1 => proxy_protocol::encode_v1(src, dst, &mut header),
        ProxyProtocolVersion::V2 => proxy_protocol::encode_v2(src, dst, &mut header),
    }
    if !header.is_empty() && conn.write_all(&header).await.is_err() {
        b.counters.errors.fetch_add(1, Relaxed);
        fe.counters.errors.fetch_add(1, Relaxed);
        return;
    }
    let idle = s.cfg.idle_timeout_ms.nonzero();
    match relay(&mut client, &mut conn, idle).await {
        Relayed::Closed(up, down) => {
            fe.counters.bytes_in.fetch_add(up, Relaxed);
            fe.counters.bytes_out.fetch_add(down, Relaxed);
            b.counters.bytes_in.fetch_add(up, Relaxed);
            b.counters.bytes_out.fetch_add(down, Relaxed);
            fe.counters.status(200);
        }
        Relayed::Failed => {
            fe.counters.errors.fetch_add(1, Relaxed);
        }
        Relayed::Idle => {
            tracing::debug!(frontend = %fe.name, "idle TCP connection closed");
        }
    }
    drop(flight);
    drop(guard);
}

/// How a relay ended.
pub(crate) enum Relayed {
    /// Both sides closed: bytes client → backend, backend → client.
    Closed(u64, u64),
    /// A read or write failed.
    Failed,
    /// No byte either way for an idle period.
    Idle,
}

/// Copies bytes both ways between `a` (the client) and `z` (the backend)
/// until both close, one fails, or nothing moves for one to two `idle`
/// periods (the copy loop reads no clock: a watchdog counts reads). Used by
/// TCP frontends and by HTTP connections after `101 Switching Protocols`.
pub(crate) async fn relay<A, Z>(a: &mut A, z: &mut Z, idle: Duration) -> Relayed
where
    A: AsyncRead + AsyncWrite + Unpin,
    Z: AsyncRead + AsyncWrite + Unpin,
{
    let reads = AtomicU64::new(0);
    let mut a = Activity {
        inner: a,
        reads: &reads,
    };
    let mut z = Activity {
        inner: z,
        reads: &reads,
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut z, 16 * 1024, 16 * 1024);
    tokio::pin!(copy);
    let watchdog = async {
        loop {
            let before = reads.load(Relaxed);
            tokio::time::sleep(idle).await;
            if reads.load(Relaxed) == before {
                return;
            }
        }
    };
    tokio::select! {
        biased;
        r = &mut copy => match r {
            Ok((up, down)) => Relayed::Closed(up, down),
            Err(_) => Relayed::Failed,
        },
        _ = watchdog => Relayed::Idle,
    }
}

/// Counts reads that brought bytes, on either side.
struct Activity<'a, T> {
    inner: &'a mut T,
    reads: &'a AtomicU64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.reads.fetch_add(1, Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
