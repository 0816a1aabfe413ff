//! Keep-alive connections to backends, one small pool per worker: raw
//! streams for the HTTP/1 engine (`h1`, which drives each connection itself),
//! and hyper connection-level HTTP/1.1 senders for HTTP/2 clients.
//!
//! Why not hyper-util's pooled `Client`: it hashes a scheme+authority key,
//! spawns a task per request to hand the connection back, and on failure
//! gives no way to learn whether the request left. `SendRequest::try_send_request`
//! returns an unsent request, so a dead pooled connection costs a retry, not
//! an error. A worker runs on one thread, so the locks here are never contended.

use crate::http_proxy::ProxyBody;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Idle connections kept per backend.
const MAX_IDLE: usize = 1024;
/// Idle connections older than this are closed (backends commonly close
/// keep-alive connections after 60 s or more).
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect {0}: timed out")]
    Timeout(SocketAddr),
    #[error("connect {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("handshake with {0}: {1}")]
    Handshake(SocketAddr, hyper::Error),
}

/// A new TCP connection to a backend, with `TCP_NODELAY`.
async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Io(addr, e)),
        Err(_) => return Err(ConnectError::Timeout(addr)),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Idle connections of one kind, by backend address, most recent last.
#[derive(Debug)]
struct IdlePool<T> {
    idle: Mutex<HashMap<SocketAddr, Vec<(T, Instant)>>>,
}

impl<T> IdlePool<T> {
    fn new() -> IdlePool<T> {
        IdlePool {
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// The most recent idle connection to `addr` that `prefer` likes, else
    /// the most recent one, if it is `alive` and younger than the idle
    /// timeout at `now`; the others met on the way are dropped (closed).
    fn take(
        &self,
        addr: SocketAddr,
        now: Instant,
        prefer: impl Fn(&T) -> bool,
        alive: impl Fn(&T) -> bool,
    ) -> Option<T> {
        let mut g = self.idle.lock().ok()?;
        let v = g.get_mut(&addr)?;
        loop {
            let i = v
                .iter()
                .rposition(|(t, _)| prefer(t))
                .or_else(|| v.len().checked_sub(1))?;
            let (t, since) = v.swap_remove(i);
            if now.saturating_duration_since(since) < IDLE_TIMEOUT && alive(&t) {
                return Some(t);
            }
        }
    }

    /// Keeps a connection whose last response was read to the end; `now`
    /// is a recent clock reading of the caller's.
    fn put(&self, addr: SocketAddr, t: T, now: Instant) {
        if let Ok(mut g) = self.idle.lock() {
            let v = g.entry(addr).or_default();
            if v.len() < MAX_IDLE {
                v.push((t, now));
            }
        }
    }
}

type Sender = SendRequest<ProxyBody>;

/// A per-worker pool of hyper senders (the HTTP/2 path).
#[derive(Debug)]
pub(crate) struct Upstream {
    pool: IdlePool<Sender>,
}

impl Upstream {
    pub(crate) fn new() -> Arc<Upstream> {
        Arc::new(Upstream {
            pool: IdlePool::new(),
        })
    }

    /// Returns a connection whose last response was read to the end.
    pub(crate) fn checkin(&self, addr: SocketAddr, s: Sender) {
        if !s.is_closed() {
            self.pool.put(addr, s, Instant::now());
        }
    }

    /// A connection ready to take a request: a pooled one if any is alive,
    /// else a new one. `Ok((sender, reused))`.
    pub(crate) async fn get(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<(Sender, bool), ConnectError> {
        // Prefer one that is ready now over one still finishing its last
        // response.
        while let Some(mut s) = self
            .pool
            .take(addr, Instant::now(), Sender::is_ready, |s| !s.is_closed())
        {
            // A connection checked in at the end of a body may still be
            // finishing that response; ready() waits for that, or fails if
            // the backend closed it meanwhile.
            if s.is_ready() || s.ready().await.is_ok() {
                return Ok((s, true));
            }
        }
        let stream = connect(addr, connect_timeout).await?;
        let (s, conn) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Handshake(addr, e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((s, false))
    }
}

/// A connection lent to one response; goes back to the pool when the body
/// was read to the end, and is closed otherwise.
#[derive(Debug)]
pub(crate) struct Lent {
    pub(crate) up: Arc<Upstream>,
    pub(crate) addr: SocketAddr,
    pub(crate) sender: Option<Sender>,
    pub(crate) done: bool,
}

impl Drop for Lent {
    fn drop(&mut self) {
        if self.done {
            if let Some(s) = self.sender.take() {
                self.up.checkin(self.addr, s);
            }
        }
    }
}

/// A per-worker pool of idle backend streams for the HTTP/1 engine (`h1`),
/// which drives each connection itself: no task, no channel.
#[derive(Debug)]
pub(crate) struct RawUpstream {
    pool: IdlePool<TcpStream>,
}

impl RawUpstream {
    pub(crate) fn new() -> Arc<RawUpstream> {
        Arc::new(RawUpstream {
            pool: IdlePool::new(),
        })
    }

    /// An idle connection to `addr` that the backend has not closed, else a
    /// new one. `now` is the caller's clock reading (no second one).
    /// `Ok((stream, reused))`.
    pub(crate) async fn get(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        now: Instant,
    ) -> Result<(TcpStream, bool), ConnectError> {
        // Nothing to read on an idle connection: WouldBlock means alive; end
        // of stream, stray bytes or an error mean it is unusable.
        let alive = |s: &TcpStream| {
            let mut probe = [0u8; 1];
            matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        };
        if let Some(s) = self.pool.take(addr, now, |_| true, alive) {
            return Ok((s, true));
        }
        Ok((connect(addr, connect_timeout).await?, false))
    }

    /// Keeps a connection whose last response was read to the end; `now`
    /// is a recent clock reading of the caller's.
    pub(crate) fn put(&self, addr: SocketAddr, s: TcpStream, now: Instant) {
        self.pool.put(addr, s, now);
    }
}
