//! The HTTP frontend's entry (PROXY header, TLS, ALPN) and its HTTP/2 path:
//! hyper's HTTP/2 server connection on one side, a pooled hyper HTTP/1
//! client per worker on the other, and the request path between. HTTP/1
//! clients go to the `h1` engine.
//!
//! Request path, in order: reject smuggling-shaped requests hyper would
//! accept (both `Content-Length` and `Transfer-Encoding`), drop hop-by-hop
//! headers, add `X-Forwarded-*` and `Forwarded`, honour the sticky cookie,
//! pick a backend, send, and on failure try another backend when the request
//! never reached one or is idempotent (bodies up to 64 KiB are kept for that).

use crate::backend::{HashKey, InFlight, SelectKey};
use crate::h1::{self, RETRY_BODY_MAX};
use crate::upstream::{Lent, RawUpstream, Upstream};
use crate::{ConnGuard, FrontendRt, Settings};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Per client connection.
struct Conn {
    fe: Arc<FrontendRt>,
    up: Arc<Upstream>,
    client_ip: IpAddr,
    tls: bool,
    xff: HeaderValue,
    forwarded: HeaderValue,
}

/// The backend connection pools of one worker: raw streams for the
/// HTTP/1 engine, hyper senders for HTTP/2 clients.
#[derive(Debug)]
pub(crate) struct Upstreams {
    pub(crate) h1: Arc<RawUpstream>,
    pub(crate) h2: Arc<Upstream>,
}

impl Upstreams {
    pub(crate) fn new() -> Arc<Upstreams> {
        Arc::new(Upstreams {
            h1: RawUpstream::new(),
            h2: Upstream::new(),
        })
    }
}

/// Serves one accepted client connection until it ends or the frontend closes.
pub(crate) async fn serve(
    guard: ConnGuard,
    settings: Arc<Settings>,
    mut stream: TcpStream,
    peer: SocketAddr,
    up: Arc<Upstreams>,
    mut closing: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let fe = guard.0.clone();
    let mut client_addr = peer;
    let hrt = settings.header_read_timeout();
    if !settings.trusted.is_empty() && settings.is_trusted(peer.ip()) {
        match tokio::time::timeout(hrt, crate::proxy_protocol::read_header(&mut stream)).await {
            Ok(Ok(h)) => {
                if let Some(src) = h.source {
                    client_addr = src;
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(frontend = %fe.name, %peer, "PROXY header: {e}");
                fe.counters.errors.fetch_add(1, Relaxed);
                return;
            }
            Err(_) => {
                fe.counters.errors.fetch_add(1, Relaxed);
                return;
            }
        }
    }
    let ip = client_addr.ip();
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let tls = settings.tls.is_some();
    let ip_text = ip.to_string();
    let proto = if tls { "https" } else { "http" };
    let forwarded = match ip {
        IpAddr::V4(_) => format!("for={ip_text};proto={proto}"),
        IpAddr::V6(_) => format!("for=\"[{ip_text}]\";proto={proto}"),
    };
    let client = h1::Client {
        ip,
        ip_text,
        forwarded,
        tls,
    };
    match &settings.tls {
        None => h1::serve(stream, false, &fe, &client, &up.h1, &mut closing).await,
        // Boxed: the TLS and HTTP/2 states are large, and would otherwise
        // make every plain connection's task as large (and copied on spawn).
        Some(acceptor) => {
            Box::pin(serve_tls(
                acceptor.clone(),
                stream,
                &fe,
                &client,
                &up,
                &settings,
                &mut closing,
            ))
            .await
        }
    }
    drop(guard);
}

/// A TLS client: handshake, then HTTP/2 or HTTP/1 as ALPN chose.
async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    fe: &Arc<FrontendRt>,
    client: &h1::Client,
    up: &Upstreams,
    settings: &Settings,
    closing: &mut watch::Receiver<bool>,
) {
    let hrt = settings.header_read_timeout();
    let tls_stream = match tokio::time::timeout(hrt, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        _ => {
            fe.counters.errors.fetch_add(1, Relaxed);
            return;
        }
    };
    if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        let (Ok(xff), Ok(fwd)) = (
            HeaderValue::from_str(&client.ip_text),
            HeaderValue::from_str(&client.forwarded),
        ) else {
            return;
        };
        let conn = Arc::new(Conn {
            fe: fe.clone(),
            up: up.h2.clone(),
            client_ip: client.ip,
            tls: true,
            xff,
            forwarded: fwd,
        });
        serve_h2(TokioIo::new(tls_stream), conn, settings, closing).await
    } else {
        h1::serve(tls_stream, true, fe, client, &up.h1, closing).await
    }
}

async fn serve_h2<I>(
    io: TokioIo<I>,
    conn: Arc<Conn>,
    settings: &Settings,
    closing: &mut watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.cfg.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let svc = service_fn(move |req| {
        let c = conn.clone();
        async move { Ok::<_, Infallible>(handle(c, req).await) }
    });
    drive(b.serve_connection(io, svc), closing, "client h2 connection").await;
}

/// Serves a client connection (HTTP/2) until it ends, or until
/// the frontend starts closing, then lets its in-flight requests finish.
async fn drive<C>(c: C, closing: &mut watch::Receiver<bool>, what: &str)
where
    C: hyper_util::server::graceful::GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(c);
    tokio::select! {
        r = c.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("{what}: {e}");
            }
        }
        _ = crate::closed(closing) => {
            c.as_mut().graceful_shutdown();
            let _ = c.await;
        }
    }
}

async fn handle(c: Arc<Conn>, req: Request<Incoming>) -> Response<ProxyBody> {
    let start = Instant::now();
    let settings = c.fe.settings.load_full();
    c.fe.counters.requests.fetch_add(1, Relaxed);
    let resp = proxy(&c, &settings, req).await;
    c.fe.counters.status(resp.status().as_u16());
    c.fe.counters.latency.observe(start.elapsed());
    resp
}

/// A plain-text error response; `close` also ends the client connection.
fn error(status: StatusCode, close: bool) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("error");
    let mut r = Response::new(ProxyBody::Full(Some(Bytes::from_static(reason.as_bytes()))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Removes headers that belong to one connection, not to the message.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if let Some(v) = h.get(header::CONNECTION) {
        if let Ok(s) = v.to_str() {
            let named: Vec<HeaderName> = s
                .split(',')
                .map(str::trim)
                .filter(|t| {
                    !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive")
                })
                .filter_map(|t| HeaderName::try_from(t).ok())
                .collect();
            for n in named {
                h.remove(n);
            }
        }
        h.remove(header::CONNECTION);
    }
    for n in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        if h.contains_key(n) {
            h.remove(n);
        }
    }
}

/// The value of cookie `name` in the request, if any.
fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    for v in h.get_all(header::COOKIE) {
        for part in v.as_bytes().split(|&b| b == b';') {
            let part = part.trim_ascii();
            if let Some(eq) = part.iter().position(|&b| b == b'=') {
                if &part[..eq] == name.as_bytes() {
                    return Some(&part[eq + 1..]);
                }
            }
        }
    }
    None
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

enum ReqBody {
    /// Kept in memory: can be sent again.
    Kept(Option<Bytes>),
    /// Streamed from the client: one try only.
    Stream(Option<Incoming>),
}

async fn proxy(c: &Conn, s: &Settings, req: Request<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let h = &mut parts.headers;

    // hyper takes Transfer-Encoding over Content-Length when both are sent
    // (RFC 9112 6.1 allows it); a proxy is safer rejecting the message.
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return error(StatusCode::BAD_REQUEST, true);
    }
    let content_length = match h.get(header::CONTENT_LENGTH) {
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => return error(StatusCode::BAD_REQUEST, true),
        },
        None => None,
    };
    strip_hop_by_hop(h);
    if h.contains_key(header::EXPECT) {
        // hyper answers `100 Continue` itself when the body is read.
        h.remove(header::EXPECT);
    }
    if !h.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                h.insert(header::HOST, v);
            }
        }
    }
    // X-Forwarded-For: append to what an upstream proxy already wrote.
    if h.contains_key(&X_FORWARDED_FOR) {
        let mut all: Vec<u8> = Vec::new();
        for v in h.get_all(&X_FORWARDED_FOR) {
            if !all.is_empty() {
                all.extend_from_slice(b", ");
            }
            all.extend_from_slice(v.as_bytes());
        }
        all.extend_from_slice(b", ");
        all.extend_from_slice(c.xff.as_bytes());
        match HeaderValue::from_bytes(&all) {
            Ok(v) => {
                h.insert(&X_FORWARDED_FOR, v);
            }
            Err(_) => return error(StatusCode::BAD_REQUEST, false),
        }
    } else {
        h.insert(&X_FORWARDED_FOR, c.xff.clone());
    }
    h.insert(
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(if c.tls { "https" } else { "http" }),
    );
    if let Some(host) = h.get(header::HOST).cloned() {
        h.insert(&X_FORWARDED_HOST, host);
    }
    h.append(header::FORWARDED, c.forwarded.clone());

    let pool = s.pool.clone();
    let pinned = pool
        .sticky_name
        .as_deref()
        .and_then(|name| cookie(h, name))
        .and_then(|v| pool.sticky_backend(v))
        .map(|(i, b)| (i, b.clone()));
    let hash: Option<Vec<u8>> = match (&pool.cfg.algorithm, &pool.hash_key) {
        (keepup_config::LbAlgorithm::ConsistentHash, HashKey::Uri) => parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().as_bytes().to_vec()),
        (keepup_config::LbAlgorithm::ConsistentHash, HashKey::Header(n)) => {
            h.get(n).map(|v| v.as_bytes().to_vec())
        }
        _ => None,
    };
    let key = SelectKey {
        client_ip: Some(c.client_ip),
        hash: hash.as_deref(),
    };

    let mut body = if body.is_end_stream() {
        ReqBody::Kept(None)
    } else if content_length.is_some_and(|n| n <= RETRY_BODY_MAX) {
        let t = s.cfg.backend_timeout_ms.nonzero();
        match tokio::time::timeout(
            t,
            http_body_util::Limited::new(body, RETRY_BODY_MAX as usize).collect(),
        )
        .await
        {
            Ok(Ok(b)) => {
                let b = b.to_bytes();
                c.fe.counters.bytes_in.fetch_add(b.len() as u64, Relaxed);
                ReqBody::Kept(Some(b))
            }
            Ok(Err(_)) => return error(StatusCode::BAD_REQUEST, true),
            Err(_) => return error(StatusCode::REQUEST_TIMEOUT, true),
        }
    } else {
        ReqBody::Stream(Some(body))
    };

    let idempotent = is_idempotent(&parts.method);
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let backend_timeout = s.cfg.backend_timeout_ms.nonzero();
    let connect_timeout = s.cfg.connect_timeout_ms.nonzero();
    let attempts = 1 + s.cfg.retries as usize;
    let mut tried = 0u64;
    let mut failed = false;
    let client_failed = Arc::new(AtomicBool::new(false));
    let kept = matches!(body, ReqBody::Kept(_));
    // A request that never left (connect failed, pooled connection found
    // dead) is reused as it is for the next try.
    let mut unsent: Option<Request<ProxyBody>> = None;
    for attempt in 0..attempts {
        let (idx, b) = match (&pinned, attempt) {
            (Some((i, b)), 0) => (*i, b.clone()),
            _ => match pool.select(key, tried) {
                Some((i, b)) => (i, b.clone()),
                None => break,
            },
        };
        tried |= 1u64 << (idx % 64);
        let mut r = match unsent.take() {
            Some(r) => r,
            None => {
                let req_body = match &mut body {
                    ReqBody::Kept(b) => ProxyBody::Full(b.clone()),
                    ReqBody::Stream(inc) => match inc.take() {
                        Some(inner) => ProxyBody::Client {
                            inner,
                            fe: c.fe.clone(),
                            failed: client_failed.clone(),
                        },
                        None => break,
                    },
                };
                let mut r = Request::new(req_body);
                *r.method_mut() = parts.method.clone();
                *r.uri_mut() = Uri::from(path.clone());
                *r.version_mut() = Version::HTTP_11;
                // Keep a copy of the headers only while a sent request may
                // still be retried (idempotent, body in memory, tries left).
                *r.headers_mut() = if kept && idempotent && attempt + 1 < attempts {
                    parts.headers.clone()
                } else {
                    std::mem::take(&mut parts.headers)
                };
                r
            }
        };
        if !r.headers().contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(b.authority.as_str()) {
                r.headers_mut().insert(header::HOST, v);
            }
        }
        b.counters.requests.fetch_add(1, Relaxed);
        let flight = InFlight::new(b.clone());
        let t0 = Instant::now();
        let (mut sender, reused) = match c.up.get(b.addr, connect_timeout).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(backend = %b.name, "{e}");
                pool.backend_error(&b);
                failed = true;
                unsent = Some(r);
                continue;
            }
        };
        match tokio::time::timeout(backend_timeout, sender.try_send_request(r)).await {
            Ok(Ok(resp)) => {
                let code = resp.status().as_u16();
                b.counters.latency.observe(t0.elapsed());
                b.counters.status(code);
                if code >= 500 && pool.passive_5xx() {
                    pool.observe_failure(&b);
                } else {
                    pool.observe_success(&b);
                }
                let set_cookie = match (&pool.sticky_name, &pinned) {
                    (Some(name), p) if p.as_ref().map(|(i, _)| *i) != Some(idx) => {
                        HeaderValue::from_str(&format!("{name}={}; Path=/; HttpOnly", b.name)).ok()
                    }
                    _ => None,
                };
                let (mut rp, inner) = resp.into_parts();
                strip_hop_by_hop(&mut rp.headers);
                if let Some(v) = set_cookie {
                    rp.headers.append(header::SET_COOKIE, v);
                }
                let lent = Lent {
                    up: c.up.clone(),
                    addr: b.addr,
                    done: inner.is_end_stream(),
                    sender: Some(sender),
                };
                return Response::from_parts(
                    rp,
                    ProxyBody::Backend {
                        inner,
                        fe: c.fe.clone(),
                        flight,
                        lent,
                    },
                );
            }
            Ok(Err(mut e)) => {
                if client_failed.load(Relaxed) {
                    // The client's body broke (bad chunking, cut off): not the backend's fault.
                    c.fe.counters.errors.fetch_add(1, Relaxed);
                    return error(StatusCode::BAD_REQUEST, true);
                }
                let never_left = e.take_message();
                tracing::debug!(backend = %b.name, reused, sent = never_left.is_none(), "backend request failed: {:?}", e.error());
                if never_left.is_some() && reused {
                    // A pooled connection the backend had closed: not a
                    // failure of the backend, and it may be picked again.
                    tried &= !(1u64 << (idx % 64));
                } else {
                    pool.backend_error(&b);
                }
                failed = true;
                match never_left {
                    Some(r) => unsent = Some(r),
                    None if kept && idempotent && !parts.headers.is_empty() => {}
                    None => break,
                }
            }
            Err(_) => {
                pool.backend_error(&b);
                return error(StatusCode::GATEWAY_TIMEOUT, false);
            }
        }
    }
    if failed {
        error(StatusCode::BAD_GATEWAY, false)
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, false)
    }
}

/// The one body type on both sides of the proxy, so nothing is boxed.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    /// A body held in memory (error pages, bodies kept for retries).
    Full(Option<Bytes>),
    /// A client's request body streamed to a backend.
    Client {
        /// The client's body.
        inner: Incoming,
        /// Counts bytes in.
        fe: Arc<FrontendRt>,
        /// Set when the client's body was malformed or cut off, so the
        /// failure is answered 400 and not blamed on the backend.
        failed: Arc<AtomicBool>,
    },
    /// A backend's response body streamed to the client.
    Backend {
        /// The backend's body.
        inner: Incoming,
        /// Counts bytes out.
        fe: Arc<FrontendRt>,
        /// Keeps the request counted as in flight until the body ends.
        flight: InFlight,
        /// The backend connection, pooled again once the body is read.
        lent: Lent,
    },
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Client { inner, fe, failed } => {
                let r = std::task::ready!(Pin::new(inner).poll_frame(cx));
                match &r {
                    Some(Ok(f)) => {
                        if let Some(d) = f.data_ref() {
                            fe.counters.bytes_in.fetch_add(d.len() as u64, Relaxed);
                        }
                    }
                    Some(Err(_)) => failed.store(true, Relaxed),
                    None => {}
                }
                Poll::Ready(r)
            }
            ProxyBody::Backend {
                inner,
                fe,
                flight,
                lent,
            } => {
                let r = std::task::ready!(Pin::new(&mut *inner).poll_frame(cx));
                match &r {
                    Some(Ok(f)) => {
                        if let Some(d) = f.data_ref() {
                            let n = d.len() as u64;
                            fe.counters.bytes_out.fetch_add(n, Relaxed);
                            flight.0.counters.bytes_out.fetch_add(n, Relaxed);
                        }
                    }
                    Some(Err(_)) => {
                        flight.0.counters.errors.fetch_add(1, Relaxed);
                    }
                    None => lent.done = true,
                }
                // hyper stops polling once is_end_stream() says so, so the
                // end may never be seen as `None`.
                if !lent.done && inner.is_end_stream() {
                    lent.done = true;
                }
                Poll::Ready(r)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Client { inner, .. } | ProxyBody::Backend { inner, .. } => {
                inner.is_end_stream()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Client { inner, .. } | ProxyBody::Backend { inner, .. } => inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_including_connection_named_ones() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn cookie_lookup() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; SRV=web-2;b=3"),
        );
        assert_eq!(cookie(&h, "SRV"), Some(&b"web-2"[..]));
        assert_eq!(cookie(&h, "b"), Some(&b"3"[..]));
        assert_eq!(cookie(&h, "SR"), None);
    }
}
