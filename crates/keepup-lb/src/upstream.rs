//! Keep-alive connections to backends, one small pool per worker and
//! frontend, built on hyper's connection-level HTTP/1.1 client.
//!
//! Why not hyper-util's pooled `Client`: it hashes a scheme+authority key,
//! spawns a task per request to hand the connection back, and on failure
//! gives no way to learn whether the request left. `SendRequest::try_send_request`
//! returns an unsent request, so a dead pooled connection costs a retry, not
//! an error. A worker runs on one thread, so the lock here is never contended.

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

type Sender = SendRequest<ProxyBody>;

/// A per-worker pool of backend connections.
#[derive(Debug)]
pub(crate) struct Upstream {
    idle: Mutex<HashMap<SocketAddr, Vec<(Sender, Instant)>>>,
}

impl Upstream {
    pub(crate) fn new() -> Arc<Upstream> {
        Arc::new(Upstream {
            idle: Mutex::new(HashMap::new()),
        })
    }

    /// A live idle connection to `addr`: the most recently used one that is
    /// ready now, else the most recent one still finishing its last response.
    fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        let mut g = self.idle.lock().ok()?;
        let v = g.get_mut(&addr)?;
        loop {
            let i = v
                .iter()
                .rposition(|(s, _)| s.is_ready())
                .or_else(|| v.len().checked_sub(1))?;
            let (s, since) = v.swap_remove(i);
            if !s.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(s);
            }
        }
    }

    /// Returns a connection whose last response was read to the end.
    pub(crate) fn checkin(&self, addr: SocketAddr, s: Sender) {
        if s.is_closed() {
            return;
        }
        if let Ok(mut g) = self.idle.lock() {
            let v = g.entry(addr).or_default();
            if v.len() < MAX_IDLE {
                v.push((s, Instant::now()));
            }
        }
    }

    async fn connect(&self, addr: SocketAddr, timeout: Duration) -> Result<Sender, ConnectError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Io(addr, e)),
            Err(_) => return Err(ConnectError::Timeout(addr)),
        };
        let _ = stream.set_nodelay(true);
        let (s, conn) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Handshake(addr, e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(s)
    }

    /// A connection ready to take a request: a pooled one if any is alive,
    /// else a new one. `Ok((sender, reused))`.
    pub(crate) async fn get(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<(Sender, bool), ConnectError> {
        while let Some(mut s) = self.checkout(addr) {
            // A connection checked in at the end of a body may still be
            // finishing that response; ready() waits for that, or fails if
            // the backend closed it meanwhile.
            if s.is_ready() || s.ready().await.is_ok() {
                return Ok((s, true));
            }
        }
        Ok((self.connect(addr, connect_timeout).await?, false))
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

/// A per-worker pool of idle backend connections for the HTTP/1 engine
/// (`h1`), which drives each connection itself: no task, no channel.
#[derive(Debug)]
pub(crate) struct RawUpstream {
    idle: Mutex<HashMap<SocketAddr, Vec<(TcpStream, Instant)>>>,
}

impl RawUpstream {
    pub(crate) fn new() -> Arc<RawUpstream> {
        Arc::new(RawUpstream {
            idle: Mutex::new(HashMap::new()),
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
        while let Some(s) = self.checkout(addr, now) {
            // Nothing to read on an idle connection: WouldBlock means alive;
            // end of stream, stray bytes or an error mean it is unusable.
            let mut probe = [0u8; 1];
            if matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            {
                return Ok((s, true));
            }
        }
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Io(addr, e)),
            Err(_) => return Err(ConnectError::Timeout(addr)),
        };
        let _ = stream.set_nodelay(true);
        Ok((stream, false))
    }

    fn checkout(&self, addr: SocketAddr, now: Instant) -> Option<TcpStream> {
        let mut g = self.idle.lock().ok()?;
        let v = g.get_mut(&addr)?;
        while let Some((s, since)) = v.pop() {
            if now.saturating_duration_since(since) < IDLE_TIMEOUT {
                return Some(s);
            }
        }
        None
    }

    /// Keeps a connection whose last response was read to the end; `now`
    /// is a recent clock reading of the caller's.
    pub(crate) fn put(&self, addr: SocketAddr, s: TcpStream, now: Instant) {
        if let Ok(mut g) = self.idle.lock() {
            let v = g.entry(addr).or_default();
            if v.len() < MAX_IDLE {
                v.push((s, now));
            }
        }
    }
}
