//! HTTP/1.1 frontends: one task per client connection that reads a request
//! head, picks a backend, forwards head and body, and streams the response
//! back, with no other task, channel or per-request allocation in between.
//!
//! Why this and not hyper's server and client here (hyper still serves
//! HTTP/2): hyper drives every backend connection as a task of its own fed
//! through a channel and turns each head into `http` types and back, which
//! the benchmark measured at 2–4 µs of CPU per request more than HAProxy.
//! Parsing stays with `httparse`, the parser under hyper, so there is still
//! no hand-written HTTP parser: this module only decides framing (the
//! smuggling rules of RFC 9112 §6), rewrites headers and copies bytes, the
//! way HAProxy forwards a message.
//!
//! Framing rules, strictest reading wins: `Content-Length` with
//! `Transfer-Encoding`, two different lengths, a coding other than
//! `chunked`, bad chunk sizes, `Transfer-Encoding` in HTTP/1.0 and HTTP/1.1
//! without `Host` are all 400 and close the connection. Chunked bodies are
//! decoded and encoded again, so a backend only ever sees canonical framing.

use crate::backend::{Backend, HashKey, InFlight, Pool, SelectKey};
use crate::upstream::RawUpstream;
use crate::{FrontendRt, Settings};
use keepup_config::LbAlgorithm;
use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Bodies up to this size are read whole before sending, so the request
/// can be sent again to another backend.
pub(crate) const RETRY_BODY_MAX: u64 = 64 * 1024;
/// The most headers a head may have, whatever `max_headers` says.
const MAX_HEADERS_CAP: usize = 256;
/// A backend's response head larger than this is a bad gateway.
const RESPONSE_HEAD_MAX: usize = 64 * 1024;
/// Response buffers: one per response being relayed (taken when the
/// response starts to arrive), from a worker-local free list, so idle
/// connections and requests waiting on a backend hold none. 32 KiB takes a
/// 16 KiB body and its head in one read.
const RESPONSE_BUF: usize = 32 * 1024;
/// The client read buffer's starting size; it grows up to `max_header_bytes`.
const CLIENT_BUF: usize = 4 * 1024;
/// Chunk-size lines and trailers longer than this are refused.
const CHUNK_LINE_MAX: usize = 4 * 1024;

/// Who the client is; fixed for the connection.
#[derive(Debug)]
pub(crate) struct Client {
    /// The client's address (after a PROXY header from a trusted proxy).
    pub(crate) ip: IpAddr,
    /// `ip` as text, for `X-Forwarded-For`.
    pub(crate) ip_text: String,
    /// Our `Forwarded` element, `for=...;proto=...`.
    pub(crate) forwarded: String,
    /// Whether the client came over TLS.
    pub(crate) tls: bool,
}

/// A read buffer with a cursor.
struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    fn new(cap: usize) -> Buf {
        Buf {
            data: vec![0; cap],
            start: 0,
            end: 0,
        }
    }
    fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }
    fn len(&self) -> usize {
        self.end - self.start
    }
    fn is_empty(&self) -> bool {
        self.start == self.end
    }
    fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
    /// Makes room to read more: moves unread bytes to the front, then grows
    /// up to `max` bytes. False when the buffer is full at `max`.
    fn make_room(&mut self, max: usize) -> bool {
        if self.end < self.data.len() {
            return true;
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return true;
        }
        if self.data.len() >= max {
            return false;
        }
        let n = (self.data.len() * 2).clamp(1024, max);
        self.data.resize(n, 0);
        true
    }
    /// One read; 0 at end of stream.
    async fn read_from<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<usize> {
        let n = r.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// Buffers kept for reuse per worker thread, by kind, so a new connection
/// or request takes memory already touched instead of zeroed allocations.
struct FreeLists {
    client: Vec<Vec<u8>>,
    response: Vec<Vec<u8>>,
    out: Vec<Vec<u8>>,
}

/// Buffers of each kind kept at most (per worker): 64 response buffers are
/// 2 MiB.
const FREE_MAX: usize = 64;
/// Output buffers that grew beyond this (kept bodies) are not kept.
const OUT_KEEP_MAX: usize = 16 * 1024;

thread_local! {
    static FREE: RefCell<FreeLists> = const {
        RefCell::new(FreeLists { client: Vec::new(), response: Vec::new(), out: Vec::new() })
    };
}

/// A read buffer of `size` bytes (CLIENT_BUF or RESPONSE_BUF) from this
/// worker's free list.
fn take_buf(size: usize) -> Buf {
    let reused = FREE.with(|f| {
        let mut f = f.borrow_mut();
        match size {
            CLIENT_BUF => f.client.pop(),
            RESPONSE_BUF => f.response.pop(),
            _ => None,
        }
    });
    match reused {
        Some(data) => Buf {
            data,
            start: 0,
            end: 0,
        },
        None => Buf::new(size),
    }
}

/// Returns a read buffer to the free list unless it grew.
fn give_buf(b: Buf) {
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        let list = match b.data.len() {
            CLIENT_BUF => &mut f.client,
            RESPONSE_BUF => &mut f.response,
            _ => return,
        };
        if list.len() < FREE_MAX {
            list.push(b.data);
        }
    });
}

/// An empty output buffer from the free list.
fn take_out() -> Vec<u8> {
    FREE.with(|f| f.borrow_mut().out.pop())
        .unwrap_or_else(|| Vec::with_capacity(1024))
}

/// Returns an output buffer to the free list unless it grew large.
fn give_out(mut v: Vec<u8>) {
    if v.capacity() <= OUT_KEEP_MAX {
        v.clear();
        FREE.with(|f| {
            let mut f = f.borrow_mut();
            if f.out.len() < FREE_MAX {
                f.out.push(v);
            }
        });
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body.
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// What the request path needs of a parsed request head; the rewritten head
/// itself is in the caller's output buffer.
#[derive(Debug)]
struct RequestHead {
    head_len: usize,
    http10: bool,
    is_head: bool,
    idempotent: bool,
    framing: Framing,
    keep_alive: bool,
    upgrade: bool,
    expect_continue: bool,
    has_host: bool,
    pinned: Option<(usize, Arc<Backend>)>,
    hash: Option<Vec<u8>>,
}

/// The kinds of header this proxy treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Other,
    Connection,
    HopByHop,
    Upgrade,
    TransferEncoding,
    ContentLength,
    Host,
    Expect,
    XForwardedFor,
    XForwardedOwn,
    Cookie,
}

fn kind(name: &str) -> Kind {
    let is = |s: &str| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is("te") => Kind::HopByHop,
        4 if is("host") => Kind::Host,
        6 if is("cookie") => Kind::Cookie,
        6 if is("expect") => Kind::Expect,
        7 if is("upgrade") => Kind::Upgrade,
        7 if is("trailer") => Kind::HopByHop,
        10 if is("connection") => Kind::Connection,
        10 if is("keep-alive") => Kind::HopByHop,
        14 if is("content-length") => Kind::ContentLength,
        15 if is("x-forwarded-for") => Kind::XForwardedFor,
        16 if is("proxy-connection") => Kind::HopByHop,
        16 if is("x-forwarded-host") => Kind::XForwardedOwn,
        17 if is("transfer-encoding") => Kind::TransferEncoding,
        17 if is("x-forwarded-proto") => Kind::XForwardedOwn,
        _ => Kind::Other,
    }
}

/// The `Connection` header's tokens.
#[derive(Debug, Default)]
struct ConnectionTokens<'a> {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    /// Other headers it names (hop-by-hop, to be removed).
    named: Vec<&'a str>,
}

impl<'a> ConnectionTokens<'a> {
    fn of(headers: &[httparse::Header<'a>]) -> Self {
        let mut t = ConnectionTokens::default();
        for h in headers {
            if kind(h.name) != Kind::Connection {
                continue;
            }
            let Ok(v) = std::str::from_utf8(h.value) else {
                continue;
            };
            for tok in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if tok.eq_ignore_ascii_case("close") {
                    t.close = true;
                } else if tok.eq_ignore_ascii_case("keep-alive") {
                    t.keep_alive = true;
                } else if tok.eq_ignore_ascii_case("upgrade") {
                    t.upgrade = true;
                } else {
                    t.named.push(tok);
                }
            }
        }
        t
    }
    fn names(&self, name: &str) -> bool {
        self.named.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// A `Content-Length` value: digits only, with optional surrounding spaces.
fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Whether a `Transfer-Encoding` value is exactly `chunked` (the only coding
/// this proxy decodes; anything else in a request is refused).
fn is_chunked_only(v: &[u8]) -> bool {
    v.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// Whether a response's `Transfer-Encoding` ends in `chunked`.
fn ends_chunked(v: &[u8]) -> bool {
    v.rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The value of cookie `name` among the `Cookie` header values.
fn cookie_value<'a>(value: &'a [u8], name: &str) -> Option<&'a [u8]> {
    value.split(|&b| b == b';').find_map(|part| {
        let part = part.trim_ascii();
        let eq = part.iter().position(|&b| b == b'=')?;
        (&part[..eq] == name.as_bytes()).then(|| &part[eq + 1..])
    })
}

/// Parses a request head at the front of `buf` and writes the head to send
/// to a backend into `out` (without its final empty line, so a `Host` can
/// still be added). `Ok(None)`: the head is not complete yet. `Err(status)`:
/// answer with that status and close.
fn parse_request(
    buf: &[u8],
    max_headers: usize,
    client: &Client,
    pool: &Pool,
    out: &mut Vec<u8>,
) -> Result<Option<RequestHead>, u16> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut slots[..max_headers.clamp(1, MAX_HEADERS_CAP)],
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(400);
    };
    if method == "CONNECT" {
        return Err(405);
    }
    let http10 = version == 0;
    // Absolute form (`GET http://host/path`): the authority is the host.
    let (target, uri_host) = if target.starts_with('/') || target == "*" {
        (target, None)
    } else {
        let rest = strip_prefix_ci(target, "http://")
            .or_else(|| strip_prefix_ci(target, "https://"))
            .ok_or(400u16)?;
        let cut = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(cut);
        if authority.is_empty() {
            return Err(400);
        }
        (if path.is_empty() { "/" } else { path }, Some(authority))
    };
    let headers: &[httparse::Header<'_>] = req.headers;
    let conn = ConnectionTokens::of(headers);

    // Framing first: every smuggling-shaped head is refused before anything
    // is forwarded.
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encodings = 0;
    let mut hosts = 0;
    let mut has_upgrade = false;
    let mut expect_continue = false;
    for h in headers {
        match kind(h.name) {
            Kind::ContentLength => {
                let n = parse_length(h.value).ok_or(400u16)?;
                if length.is_some_and(|m| m != n) {
                    return Err(400);
                }
                length = Some(n);
            }
            Kind::TransferEncoding => {
                transfer_encodings += 1;
                if !is_chunked_only(h.value) {
                    return Err(400);
                }
                chunked = true;
            }
            Kind::Host => hosts += 1,
            Kind::Upgrade => has_upgrade = true,
            Kind::Expect => {
                if !h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    return Err(417);
                }
                expect_continue = true;
            }
            _ => {}
        }
    }
    if transfer_encodings > 1 || (chunked && (length.is_some() || http10)) || hosts > 1 {
        return Err(400);
    }
    if !http10 && hosts == 0 && uri_host.is_none() {
        return Err(400);
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    let upgrade = conn.upgrade && has_upgrade && !http10 && framing == Framing::Empty;

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host: Option<&[u8]> = uri_host.map(str::as_bytes);
    let mut xff_prior: Option<Vec<u8>> = None;
    let mut pinned = None;
    let mut hash = None;
    let hash_header = match (&pool.cfg.algorithm, &pool.hash_key) {
        (LbAlgorithm::ConsistentHash, HashKey::Header(n)) => Some(n.as_str()),
        _ => None,
    };
    for h in headers {
        let k = kind(h.name);
        match k {
            Kind::Connection | Kind::HopByHop | Kind::TransferEncoding | Kind::ContentLength => {
                continue
            }
            Kind::Expect | Kind::XForwardedOwn => continue,
            Kind::Upgrade if !upgrade => continue,
            Kind::XForwardedFor => {
                let v = xff_prior.get_or_insert_with(Vec::new);
                if !v.is_empty() {
                    v.extend_from_slice(b", ");
                }
                v.extend_from_slice(h.value.trim_ascii());
                continue;
            }
            Kind::Host => {
                if uri_host.is_some() {
                    continue;
                }
                host = Some(h.value);
            }
            Kind::Cookie if pinned.is_none() => {
                if let Some(name) = pool.sticky_name.as_deref() {
                    pinned = cookie_value(h.value, name)
                        .and_then(|v| pool.sticky_backend(v))
                        .map(|(i, b)| (i, b.clone()));
                }
            }
            _ => {}
        }
        if !conn.named.is_empty() && conn.names(h.name) {
            continue;
        }
        if let Some(n) = hash_header {
            if hash.is_none() && h.name.eq_ignore_ascii_case(n) {
                hash = Some(h.value.to_vec());
            }
        }
        header_line(out, h.name.as_bytes(), h.value);
    }
    if let Some(authority) = uri_host {
        header_line(out, b"Host", authority.as_bytes());
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if let Some(prior) = &xff_prior {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client.ip_text.as_bytes());
    out.extend_from_slice(b"\r\n");
    header_line(
        out,
        b"X-Forwarded-Proto",
        if client.tls { b"https" } else { b"http" },
    );
    if let Some(h) = host {
        header_line(out, b"X-Forwarded-Host", h);
    }
    header_line(out, b"Forwarded", client.forwarded.as_bytes());
    match framing {
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Empty if length == Some(0) => out.extend_from_slice(b"Content-Length: 0\r\n"),
        _ => {}
    }
    if upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
    if matches!(
        (&pool.cfg.algorithm, &pool.hash_key),
        (LbAlgorithm::ConsistentHash, HashKey::Uri)
    ) {
        hash = Some(target.as_bytes().to_vec());
    }
    Ok(Some(RequestHead {
        head_len,
        http10,
        is_head: method == "HEAD",
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        framing,
        keep_alive: if http10 {
            conn.keep_alive && !conn.close
        } else {
            !conn.close
        },
        upgrade,
        expect_continue,
        has_host: host.is_some(),
        pinned,
        hash,
    }))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// What the response path needs of a parsed response head.
#[derive(Debug)]
struct ResponseHead {
    head_len: usize,
    code: u16,
    framing: Framing,
    /// The backend connection may carry another request afterwards.
    reusable: bool,
}

/// Parses a backend's response head at the front of `buf`; writes the head
/// for the client into `out` (without the final empty line).
fn parse_response(
    buf: &[u8],
    req: &RequestHead,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, ()> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut resp = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let (Some(code), Some(version)) = (resp.code, resp.version) else {
        return Err(());
    };
    let headers: &[httparse::Header<'_>] = resp.headers;
    let conn = ConnectionTokens::of(headers);
    let mut length: Option<u64> = None;
    let mut coding: Option<bool> = None;
    for h in headers {
        match kind(h.name) {
            Kind::ContentLength => {
                let n = parse_length(h.value).ok_or(())?;
                if length.is_some_and(|m| m != n) {
                    return Err(());
                }
                length = Some(n);
            }
            Kind::TransferEncoding => coding = Some(ends_chunked(h.value)),
            _ => {}
        }
    }
    let bodiless = req.is_head || code == 204 || code == 304 || (100..200).contains(&code);
    let framing = if bodiless {
        Framing::Empty
    } else {
        match (coding, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    let keep = if version == 0 {
        conn.keep_alive && !conn.close
    } else {
        !conn.close
    };
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(code.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers {
        match kind(h.name) {
            Kind::Connection | Kind::HopByHop | Kind::TransferEncoding => continue,
            Kind::Upgrade if !(code == 101 && req.upgrade) => continue,
            Kind::ContentLength if framing == Framing::Chunked => continue,
            _ => {}
        }
        if !conn.named.is_empty() && conn.names(h.name) {
            continue;
        }
        header_line(out, h.name.as_bytes(), h.value);
    }
    Ok(Some(ResponseHead {
        head_len,
        code,
        framing,
        reusable: keep && framing != Framing::UntilClose,
    }))
}

/// Decodes `Transfer-Encoding: chunked` incrementally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// One step of chunked decoding.
#[derive(Debug, PartialEq, Eq)]
enum ChunkStep {
    /// More input needed.
    NeedMore,
    /// `consumed` bytes of framing were read; nothing to pass on.
    Framing(usize),
    /// The first `len` bytes of the input are body data.
    Data(usize),
    /// The body ended after `consumed` more bytes.
    Done(usize),
}

impl Chunked {
    fn step(&mut self, input: &[u8]) -> Result<ChunkStep, ()> {
        match *self {
            Chunked::Size => match httparse::parse_chunk_size(input) {
                Ok(httparse::Status::Complete((n, 0))) => {
                    *self = Chunked::Trailers;
                    Ok(ChunkStep::Framing(n))
                }
                Ok(httparse::Status::Complete((n, size))) => {
                    *self = Chunked::Data(size);
                    Ok(ChunkStep::Framing(n))
                }
                Ok(httparse::Status::Partial) if input.len() < CHUNK_LINE_MAX => {
                    Ok(ChunkStep::NeedMore)
                }
                _ => Err(()),
            },
            Chunked::Data(left) => {
                if input.is_empty() {
                    return Ok(ChunkStep::NeedMore);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                let left = left - n as u64;
                *self = if left == 0 {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left)
                };
                Ok(ChunkStep::Data(n))
            }
            Chunked::DataEnd => match input {
                [] | [b'\r'] => Ok(ChunkStep::NeedMore),
                [b'\r', b'\n', ..] => {
                    *self = Chunked::Size;
                    Ok(ChunkStep::Framing(2))
                }
                _ => Err(()),
            },
            Chunked::Trailers => match input.windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    *self = Chunked::Done;
                    Ok(ChunkStep::Done(2))
                }
                // A trailer field: dropped (trailers are hop-by-hop here).
                Some(i) => Ok(ChunkStep::Framing(i + 2)),
                None if input.len() < CHUNK_LINE_MAX => Ok(ChunkStep::NeedMore),
                None => Err(()),
            },
            Chunked::Done => Ok(ChunkStep::Done(0)),
        }
    }
}

/// `tokio::time::timeout` that reads the clock and arms a timer only when
/// `fut` is not ready at once, as most reads and writes here are.
async fn timed<F: Future>(dur: Duration, fut: F) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut fut = std::pin::pin!(fut);
    match std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => tokio::time::timeout(dur, fut).await,
    }
}

/// A client write bounded by `t` (the idle timeout): a client that stops
/// reading is dropped instead of holding a backend connection forever.
async fn bounded<T>(t: Duration, fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    match timed(t, fut).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Bodies up to this size are copied behind the head for a single `send`;
/// larger ones go out with `writev`.
const COPY_MAX: usize = 4 * 1024;

/// Writes `head` then `body` with one system call where the stream allows:
/// small bodies are appended to `head` (which is left holding both).
async fn write_head_and<W: AsyncWrite + Unpin>(
    w: &mut W,
    head: &mut Vec<u8>,
    body: &[u8],
) -> io::Result<()> {
    if body.len() <= COPY_MAX {
        head.extend_from_slice(body);
        return w.write_all(head).await;
    }
    write_two(w, head, body).await
}

/// Writes `a` then `b` with as few system calls as the stream allows.
async fn write_two<W: AsyncWrite + Unpin>(w: &mut W, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    while !a.is_empty() {
        if b.is_empty() {
            return w.write_all(a).await;
        }
        let n = w
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    w.write_all(b).await
}

/// Appends one chunk in chunked coding.
fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    use std::io::Write;
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// A plain-text error response.
fn error_response(out: &mut Vec<u8>, code: u16, close: bool) {
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    use std::io::Write;
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}\r\n{reason}",
        reason.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
}

/// What happens to the client connection after a request.
enum Next {
    KeepAlive,
    Close,
}

/// Why a backend exchange failed.
enum Failure {
    /// Nothing useful came back; another backend may be tried.
    Backend { unsent: bool },
    /// The client's body was malformed, cut off or too slow: 400/408.
    Client(u16),
    /// The backend did not answer in time: 504.
    Timeout,
    /// The backend's answer was not HTTP: 502.
    BadResponse,
}

/// One client connection's state.
struct Session<'a, C> {
    io: C,
    fe: &'a FrontendRt,
    client: &'a Client,
    up: &'a RawUpstream,
    inb: Buf,
    out: Vec<u8>,
    /// Bound on each write to the client (`idle_timeout_ms`).
    write_timeout: Duration,
}

/// Serves one HTTP/1.x client connection until it ends or the frontend
/// closes (then after the request in flight). `graceful_close`: shut the
/// stream down before dropping it (TLS sends close_notify; a plain socket
/// needs no extra system call, dropping it sends the FIN).
pub(crate) async fn serve<C: AsyncRead + AsyncWrite + Unpin>(
    io: C,
    graceful_close: bool,
    fe: &FrontendRt,
    client: &Client,
    up: &RawUpstream,
    closing: &mut watch::Receiver<bool>,
) {
    let mut s = Session {
        io,
        fe,
        client,
        up,
        inb: take_buf(CLIENT_BUF),
        out: take_out(),
        write_timeout: Duration::ZERO,
    };
    let mut first = true;
    loop {
        let settings = fe.settings.load_full();
        s.write_timeout = settings.cfg.idle_timeout_ms.nonzero();
        let head = match s.read_head(&settings, first, closing).await {
            Some(h) => h,
            None => break,
        };
        first = false;
        s.inb.consume(head.head_len);
        let start = Instant::now();
        fe.counters.requests.fetch_add(1, Relaxed);
        let next = s.exchange(head, &settings, closing, start).await;
        if matches!(next, Next::Close) {
            break;
        }
    }
    if graceful_close {
        let _ = s.io.shutdown().await;
    }
    give_buf(s.inb);
    give_out(s.out);
}

impl<C: AsyncRead + AsyncWrite + Unpin> Session<'_, C> {
    /// Reads and parses the next request head; None when the connection
    /// should end (closed, idle, bad head answered).
    async fn read_head(
        &mut self,
        s: &Settings,
        first: bool,
        closing: &mut watch::Receiver<bool>,
    ) -> Option<RequestHead> {
        let header_timeout = s.header_read_timeout();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if !self.inb.is_empty() {
                match parse_request(
                    self.inb.filled(),
                    s.cfg.max_headers,
                    self.client,
                    &s.pool,
                    &mut self.out,
                ) {
                    Ok(Some(h)) => return Some(h),
                    Ok(None) => {}
                    Err(code) => {
                        self.reject(code).await;
                        return None;
                    }
                }
                if !self.inb.make_room(s.cfg.max_header_bytes.max(1024)) {
                    self.reject(431).await;
                    return None;
                }
            } else {
                self.inb.make_room(CLIENT_BUF);
            }
            let r = if self.inb.is_empty() {
                let wait = if first {
                    header_timeout
                } else {
                    s.cfg.idle_timeout_ms.nonzero()
                };
                tokio::select! {
                    biased;
                    r = timed(wait, self.inb.read_from(&mut self.io)) => r,
                    _ = crate::closed(closing) => return None,
                }
            } else {
                let d =
                    *deadline.get_or_insert_with(|| tokio::time::Instant::now() + header_timeout);
                tokio::time::timeout_at(d, self.inb.read_from(&mut self.io)).await
            };
            match r {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    if !self.inb.is_empty() {
                        self.fe.counters.errors.fetch_add(1, Relaxed);
                    }
                    return None;
                }
                Ok(Ok(_)) => {
                    if deadline.is_none() && !self.inb.is_empty() {
                        deadline = Some(tokio::time::Instant::now() + header_timeout);
                    }
                }
                Err(_) => {
                    if !self.inb.is_empty() {
                        self.reject(408).await;
                    }
                    return None;
                }
            }
        }
    }

    /// Answers a request that goes no further, and closes.
    async fn reject(&mut self, code: u16) {
        self.fe.counters.requests.fetch_add(1, Relaxed);
        self.fe.counters.errors.fetch_add(1, Relaxed);
        self.fe.counters.status(code);
        error_response(&mut self.out, code, true);
        let _ = bounded(self.write_timeout, self.io.write_all(&self.out)).await;
        let _ = self.io.flush().await;
    }

    /// Sends an error response; the connection stays open when `keep`.
    async fn answer_error(&mut self, code: u16, keep: bool, start: Instant) -> Next {
        self.fe.counters.status(code);
        self.fe.counters.latency.observe(start.elapsed());
        error_response(&mut self.out, code, !keep);
        let ok = bounded(self.write_timeout, self.io.write_all(&self.out))
            .await
            .is_ok()
            && self.io.flush().await.is_ok();
        if ok && keep {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// Forwards one request (head already in `out`) and its response.
    async fn exchange(
        &mut self,
        head: RequestHead,
        s: &Settings,
        closing: &watch::Receiver<bool>,
        start: Instant,
    ) -> Next {
        let pool = &s.pool;
        let key = SelectKey {
            client_ip: Some(self.client.ip),
            hash: head.hash.as_deref(),
        };
        let first = match &head.pinned {
            Some(p) => Some(p.clone()),
            None => pool.select(key, 0).map(|(i, b)| (i, b.clone())),
        };
        let Some(first) = first else {
            return self.drain_and_error(&head, s, 503, start).await;
        };
        if !head.has_host {
            header_line(
                &mut self.out,
                b"Host",
                first.1.authority.as_str().as_bytes(),
            );
        }
        self.out.extend_from_slice(b"\r\n");
        if head.expect_continue && head.framing != Framing::Empty && !head.http10 {
            if self
                .io
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
            {
                return Next::Close;
            }
            let _ = self.io.flush().await;
        }
        let backend_timeout = s.cfg.backend_timeout_ms.nonzero();
        // A small body is read whole, after the head in `out`: one write to
        // the backend, and it can be sent again.
        let kept = match head.framing {
            Framing::Length(n) if n <= RETRY_BODY_MAX => {
                match self.read_kept_body(n as usize, backend_timeout).await {
                    Ok(()) => true,
                    Err(code) => return self.answer_error(code, false, start).await,
                }
            }
            Framing::Empty => true,
            _ => false,
        };
        let connect_timeout = s.cfg.connect_timeout_ms.nonzero();
        let attempts = 1 + s.cfg.retries as usize;
        let mut tried = 0u64;
        let mut failed = false;
        let mut choice = Some(first);
        for attempt in 0..attempts {
            let (idx, b) = match choice.take() {
                Some(c) => c,
                None => match pool.select(key, tried) {
                    Some((i, b)) => (i, b.clone()),
                    None => break,
                },
            };
            let bit = 1u64 << (idx % 64);
            tried |= bit;
            b.counters.requests.fetch_add(1, Relaxed);
            let flight = InFlight::new(b.clone());
            // Backend latency runs from the request head for the first
            // try (no second clock read), from the retry for later ones.
            let t0 = if attempt == 0 { start } else { Instant::now() };
            let (mut bc, reused) = match self.up.get(b.addr, connect_timeout, start).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(backend = %b.name, "{e}");
                    pool.backend_error(&b);
                    failed = true;
                    continue;
                }
            };
            match self
                .send_and_relay(
                    &head,
                    s,
                    &b,
                    &mut bc,
                    kept,
                    backend_timeout,
                    closing,
                    start,
                    t0,
                )
                .await
            {
                Ok((next, reusable)) => {
                    if reusable {
                        self.up.put(b.addr, bc, start);
                    }
                    drop(flight);
                    return next;
                }
                Err(Failure::Backend { unsent }) => {
                    if reused {
                        // A pooled connection the backend closed before
                        // answering (its keep-alive ran out): not a failure
                        // of the backend, and it may be picked again.
                        tried &= !bit;
                    } else {
                        pool.backend_error(&b);
                    }
                    failed = true;
                    let again = kept && (unsent || head.idempotent);
                    if !again || attempt + 1 == attempts {
                        break;
                    }
                }
                Err(Failure::Client(code)) => {
                    return self.answer_error(code, false, start).await;
                }
                Err(Failure::Timeout) => {
                    pool.backend_error(&b);
                    return self.answer_error(504, kept && head.keep_alive, start).await;
                }
                Err(Failure::BadResponse) => {
                    pool.backend_error(&b);
                    return self.answer_error(502, false, start).await;
                }
            }
        }
        let code = if failed { 502 } else { 503 };
        let keep = kept && head.keep_alive;
        self.answer_error(code, keep, start).await
    }

    /// Answers `code` to a request whose body was not read: the body is
    /// skipped when it is small, else the connection closes.
    async fn drain_and_error(
        &mut self,
        head: &RequestHead,
        s: &Settings,
        code: u16,
        start: Instant,
    ) -> Next {
        let t = s.cfg.backend_timeout_ms.nonzero();
        let keep = match head.framing {
            Framing::Empty => head.keep_alive,
            Framing::Length(n) if n <= RETRY_BODY_MAX => {
                self.out.clear();
                self.read_kept_body(n as usize, t).await.is_ok() && head.keep_alive
            }
            _ => false,
        };
        self.answer_error(code, keep, start).await
    }

    /// Moves a `Content-Length` body of `n` bytes from the client to the end of `out`.
    async fn read_kept_body(&mut self, n: usize, t: Duration) -> Result<(), u16> {
        let take = n.min(self.inb.len());
        self.out.extend_from_slice(&self.inb.filled()[..take]);
        self.inb.consume(take);
        let mut left = n - take;
        self.fe.counters.bytes_in.fetch_add(take as u64, Relaxed);
        while left > 0 {
            self.inb.make_room(CLIENT_BUF);
            match timed(t, self.inb.read_from(&mut self.io)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(400),
                Ok(Ok(_)) => {
                    let take = left.min(self.inb.len());
                    self.out.extend_from_slice(&self.inb.filled()[..take]);
                    self.inb.consume(take);
                    left -= take;
                    self.fe.counters.bytes_in.fetch_add(take as u64, Relaxed);
                }
                Err(_) => return Err(408),
            }
        }
        Ok(())
    }

    /// Sends the request to `bc` and relays the response to the client.
    /// `Ok((next, backend connection reusable))`.
    #[allow(clippy::too_many_arguments)]
    async fn send_and_relay(
        &mut self,
        head: &RequestHead,
        s: &Settings,
        b: &Arc<Backend>,
        bc: &mut TcpStream,
        kept: bool,
        t: Duration,
        closing: &watch::Receiver<bool>,
        start: Instant,
        t0: Instant,
    ) -> Result<(Next, bool), Failure> {
        match timed(t, bc.write_all(&self.out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Failure::Backend { unsent: true }),
            Err(_) => return Err(Failure::Timeout),
        }
        if !kept {
            self.stream_body(head.framing, bc, t).await?;
        }
        // The buffer is taken once the response starts to arrive, so
        // requests waiting on a slow backend hold none.
        match timed(t, bc.readable()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Failure::Backend { unsent: false }),
            Err(_) => return Err(Failure::Timeout),
        }
        let mut rb = take_buf(RESPONSE_BUF);
        let r = self
            .relay_response(head, s, b, bc, &mut rb, t, closing, start, t0)
            .await;
        give_buf(rb);
        r
    }

    /// Streams a large or chunked request body from the client to `bc`.
    async fn stream_body(
        &mut self,
        framing: Framing,
        bc: &mut TcpStream,
        t: Duration,
    ) -> Result<(), Failure> {
        let mut sent = 0u64;
        let result = match framing {
            Framing::Length(mut left) => loop {
                if left == 0 {
                    break Ok(());
                }
                if self.inb.is_empty() {
                    self.inb.make_room(CLIENT_BUF);
                    match timed(t, self.inb.read_from(&mut self.io)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break Err(Failure::Client(400)),
                        Ok(Ok(_)) => {}
                        Err(_) => break Err(Failure::Client(408)),
                    }
                }
                let n = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(self.inb.len());
                if bc.write_all(&self.inb.filled()[..n]).await.is_err() {
                    break Err(Failure::Backend { unsent: false });
                }
                self.inb.consume(n);
                left -= n as u64;
                sent += n as u64;
            },
            Framing::Chunked => {
                let mut dec = Chunked::Size;
                let mut stage: Vec<u8> = Vec::with_capacity(CLIENT_BUF + 16);
                loop {
                    match dec.step(self.inb.filled()) {
                        Err(()) => break Err(Failure::Client(400)),
                        Ok(ChunkStep::Framing(n)) => self.inb.consume(n),
                        Ok(ChunkStep::Data(n)) => {
                            encode_chunk(&mut stage, &self.inb.filled()[..n]);
                            self.inb.consume(n);
                            sent += n as u64;
                        }
                        Ok(ChunkStep::Done(n)) => {
                            self.inb.consume(n);
                            stage.extend_from_slice(b"0\r\n\r\n");
                            break match bc.write_all(&stage).await {
                                Ok(()) => Ok(()),
                                Err(_) => Err(Failure::Backend { unsent: false }),
                            };
                        }
                        Ok(ChunkStep::NeedMore) => {
                            if !stage.is_empty() {
                                if bc.write_all(&stage).await.is_err() {
                                    break Err(Failure::Backend { unsent: false });
                                }
                                stage.clear();
                            }
                            if !self.inb.make_room(CLIENT_BUF.max(CHUNK_LINE_MAX * 2)) {
                                break Err(Failure::Client(400));
                            }
                            match timed(t, self.inb.read_from(&mut self.io)).await {
                                Ok(Ok(0)) | Ok(Err(_)) => break Err(Failure::Client(400)),
                                Ok(Ok(_)) => {}
                                Err(_) => break Err(Failure::Client(408)),
                            }
                        }
                    }
                }
            }
            Framing::Empty | Framing::UntilClose => Ok(()),
        };
        self.fe.counters.bytes_in.fetch_add(sent, Relaxed);
        result
    }

    /// Reads the backend's response head (forwarding interim 1xx ones) and
    /// relays the response to the client.
    #[allow(clippy::too_many_arguments)]
    async fn relay_response(
        &mut self,
        req: &RequestHead,
        s: &Settings,
        b: &Arc<Backend>,
        bc: &mut TcpStream,
        rb: &mut Buf,
        t: Duration,
        closing: &watch::Receiver<bool>,
        start: Instant,
        t0: Instant,
    ) -> Result<(Next, bool), Failure> {
        let mut got_any = false;
        let resp = loop {
            if !rb.is_empty() {
                match parse_response(rb.filled(), req, &mut self.out) {
                    Ok(Some(r)) if (100..200).contains(&r.code) && r.code != 101 => {
                        rb.consume(r.head_len);
                        if !req.http10 {
                            self.out.extend_from_slice(b"\r\n");
                            if bounded(self.write_timeout, self.io.write_all(&self.out))
                                .await
                                .is_err()
                            {
                                return Err(Failure::Client(400));
                            }
                        }
                        continue;
                    }
                    Ok(Some(r)) => break r,
                    Ok(None) => {}
                    Err(()) => return Err(Failure::BadResponse),
                }
                if !rb.make_room(RESPONSE_HEAD_MAX) {
                    return Err(Failure::BadResponse);
                }
            }
            match timed(t, rb.read_from(bc)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return Err(if got_any {
                        Failure::BadResponse
                    } else {
                        Failure::Backend { unsent: false }
                    })
                }
                Ok(Ok(_)) => got_any = true,
                Err(_) => return Err(Failure::Timeout),
            }
        };
        rb.consume(resp.head_len);
        let pool = &s.pool;
        let now = Instant::now();
        b.counters
            .latency
            .observe(now.saturating_duration_since(t0));
        b.counters.status(resp.code);
        if resp.code >= 500 && pool.passive_5xx() {
            pool.observe_failure(b);
        } else {
            pool.observe_success(b);
        }
        self.fe.counters.status(resp.code);
        self.fe
            .counters
            .latency
            .observe(now.saturating_duration_since(start));

        if resp.code == 101 {
            if !req.upgrade {
                return Err(Failure::BadResponse);
            }
            self.out.extend_from_slice(b"Connection: upgrade\r\n\r\n");
            let _ = bounded(
                self.write_timeout,
                write_head_and(&mut self.io, &mut self.out, rb.filled()),
            )
            .await;
            rb.consume(rb.len());
            if !self.inb.is_empty() {
                if bc.write_all(self.inb.filled()).await.is_err() {
                    return Ok((Next::Close, false));
                }
                self.inb.consume(self.inb.len());
            }
            let _ = self.io.flush().await;
            // A tunnel now (WebSocket): closed after idle_timeout_ms without
            // a byte either way, like a TCP frontend's connection.
            let idle = s.cfg.idle_timeout_ms.nonzero();
            if let crate::tcp_proxy::Relayed::Closed(up, down) =
                crate::tcp_proxy::relay(&mut self.io, bc, idle).await
            {
                self.fe.counters.bytes_in.fetch_add(up, Relaxed);
                self.fe.counters.bytes_out.fetch_add(down, Relaxed);
            }
            return Ok((Next::Close, false));
        }

        // Sticky cookie for a client not (or no longer) pinned here.
        if let Some(name) = &pool.sticky_name {
            if !req.pinned.as_ref().is_some_and(|(_, p)| Arc::ptr_eq(p, b)) {
                use std::io::Write;
                let _ = write!(
                    self.out,
                    "Set-Cookie: {name}={}; Path=/; HttpOnly\r\n",
                    b.name
                );
            }
        }
        // HTTP/1.0 clients get no chunked coding: the body runs to the close.
        let to_close =
            resp.framing == Framing::UntilClose || (req.http10 && resp.framing == Framing::Chunked);
        let keep = req.keep_alive && !to_close && !*closing.borrow();
        let chunk_out = resp.framing == Framing::Chunked && !req.http10;
        if chunk_out {
            self.out
                .extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        if !keep {
            self.out.extend_from_slice(b"Connection: close\r\n");
        } else if req.http10 {
            self.out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        self.out.extend_from_slice(b"\r\n");

        let mut body_bytes = 0u64;
        let result = match resp.framing {
            Framing::Empty => match bounded(self.write_timeout, self.io.write_all(&self.out)).await
            {
                Ok(()) => Ok(true),
                Err(_) => Err(()),
            },
            Framing::Length(n) => self.relay_length(bc, rb, n, t, &mut body_bytes).await,
            Framing::UntilClose => self.relay_until_close(bc, rb, t, &mut body_bytes).await,
            Framing::Chunked => {
                self.relay_chunked(bc, rb, chunk_out, t, &mut body_bytes)
                    .await
            }
        };
        self.fe.counters.bytes_out.fetch_add(body_bytes, Relaxed);
        b.counters.bytes_out.fetch_add(body_bytes, Relaxed);
        match result {
            Ok(complete) => {
                if self.io.flush().await.is_err() {
                    return Ok((Next::Close, false));
                }
                let reusable = complete && resp.reusable && rb.is_empty();
                Ok((if keep { Next::KeepAlive } else { Next::Close }, reusable))
            }
            Err(()) => {
                b.counters.errors.fetch_add(1, Relaxed);
                Ok((Next::Close, false))
            }
        }
    }

    /// Relays a `Content-Length` body; the head is in `out`.
    async fn relay_length(
        &mut self,
        bc: &mut TcpStream,
        rb: &mut Buf,
        n: u64,
        t: Duration,
        sent: &mut u64,
    ) -> Result<bool, ()> {
        let first = usize::try_from(n).unwrap_or(usize::MAX).min(rb.len());
        bounded(
            self.write_timeout,
            write_head_and(&mut self.io, &mut self.out, &rb.filled()[..first]),
        )
        .await
        .map_err(|_| ())?;
        rb.consume(first);
        *sent += first as u64;
        let mut left = n - first as u64;
        while left > 0 {
            rb.make_room(RESPONSE_BUF);
            match timed(t, rb.read_from(bc)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Err(()),
                Ok(Ok(_)) => {}
            }
            let k = usize::try_from(left).unwrap_or(usize::MAX).min(rb.len());
            bounded(self.write_timeout, self.io.write_all(&rb.filled()[..k]))
                .await
                .map_err(|_| ())?;
            rb.consume(k);
            left -= k as u64;
            *sent += k as u64;
        }
        Ok(true)
    }

    /// Relays a body delimited by the backend closing.
    async fn relay_until_close(
        &mut self,
        bc: &mut TcpStream,
        rb: &mut Buf,
        t: Duration,
        sent: &mut u64,
    ) -> Result<bool, ()> {
        bounded(
            self.write_timeout,
            write_head_and(&mut self.io, &mut self.out, rb.filled()),
        )
        .await
        .map_err(|_| ())?;
        *sent += rb.len() as u64;
        rb.consume(rb.len());
        loop {
            rb.make_room(RESPONSE_BUF);
            match timed(t, rb.read_from(bc)).await {
                Ok(Ok(0)) => return Ok(false),
                Ok(Err(_)) | Err(_) => return Err(()),
                Ok(Ok(_)) => {}
            }
            bounded(self.write_timeout, self.io.write_all(rb.filled()))
                .await
                .map_err(|_| ())?;
            *sent += rb.len() as u64;
            rb.consume(rb.len());
        }
    }

    /// Relays a chunked body, encoded again (`chunk_out`) or plain for
    /// HTTP/1.0 clients.
    async fn relay_chunked(
        &mut self,
        bc: &mut TcpStream,
        rb: &mut Buf,
        chunk_out: bool,
        t: Duration,
        sent: &mut u64,
    ) -> Result<bool, ()> {
        let mut dec = Chunked::Size;
        loop {
            match dec.step(rb.filled())? {
                ChunkStep::Framing(n) => rb.consume(n),
                ChunkStep::Data(n) => {
                    let data = &rb.filled()[..n];
                    if chunk_out {
                        encode_chunk(&mut self.out, data);
                    } else {
                        self.out.extend_from_slice(data);
                    }
                    *sent += n as u64;
                    rb.consume(n);
                }
                ChunkStep::Done(n) => {
                    rb.consume(n);
                    if chunk_out {
                        self.out.extend_from_slice(b"0\r\n\r\n");
                    }
                    bounded(self.write_timeout, self.io.write_all(&self.out))
                        .await
                        .map_err(|_| ())?;
                    return Ok(true);
                }
                ChunkStep::NeedMore => {
                    if !self.out.is_empty() {
                        bounded(self.write_timeout, self.io.write_all(&self.out))
                            .await
                            .map_err(|_| ())?;
                        self.out.clear();
                    }
                    if !rb.make_room(RESPONSE_BUF) {
                        return Err(());
                    }
                    match timed(t, rb.read_from(bc)).await {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Err(()),
                        Ok(Ok(_)) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    fn decode(mut input: &[u8]) -> Result<Vec<u8>, ()> {
        let mut dec = Chunked::Size;
        let mut body = Vec::new();
        loop {
            match dec.step(input)? {
                ChunkStep::Framing(n) => input = &input[n..],
                ChunkStep::Data(n) => {
                    body.extend_from_slice(&input[..n]);
                    input = &input[n..];
                }
                ChunkStep::Done(_) => return Ok(body),
                ChunkStep::NeedMore => return Err(()),
            }
        }
    }

    #[test]
    fn chunked_decoding() {
        assert_eq!(
            decode(b"4\r\nRust\r\n3;ext=1\r\n ab\r\n0\r\nX-T: 1\r\n\r\n"),
            Ok(b"Rust ab".to_vec())
        );
        assert!(decode(b"zz\r\nabc\r\n0\r\n\r\n").is_err());
        assert!(decode(b"3\r\nabcd\r\n0\r\n\r\n").is_err());
        assert!(decode(b"3\r\nab").is_err());
    }

    #[test]
    fn header_kinds() {
        assert_eq!(kind("Content-Length"), Kind::ContentLength);
        assert_eq!(kind("TRANSFER-ENCODING"), Kind::TransferEncoding);
        assert_eq!(kind("x-forwarded-proto"), Kind::XForwardedOwn);
        assert_eq!(kind("Te"), Kind::HopByHop);
        assert_eq!(kind("Accept"), Kind::Other);
    }

    #[test]
    fn lengths() {
        assert_eq!(parse_length(b" 12 "), Some(12));
        assert_eq!(parse_length(b"+12"), None);
        assert_eq!(parse_length(b"1,2"), None);
        assert_eq!(parse_length(b""), None);
        assert_eq!(parse_length(b"9999999999999999999999"), None);
    }

    fn pool() -> Pool {
        let cfg = keepup_config::LbPool {
            name: "p".into(),
            algorithm: LbAlgorithm::RoundRobin,
            hash_key: "uri".into(),
            sticky_cookie: Some("SRV".into()),
            slow_start_ms: keepup_config::Millis(0),
            passive_fall: 3,
            passive_5xx: true,
            passive_cooldown_ms: keepup_config::Millis(10_000),
            health: None,
            backend: vec![keepup_config::LbBackend {
                name: "web-1".into(),
                address: "127.0.0.1:1000".into(),
                weight: 100,
                state: Default::default(),
            }],
        };
        Pool::build(&cfg, None, &Arc::default()).unwrap()
    }

    fn client() -> Client {
        Client {
            ip: IpAddr::from([10, 77, 0, 9]),
            ip_text: "10.77.0.9".into(),
            forwarded: "for=10.77.0.9;proto=http".into(),
            tls: false,
        }
    }

    /// Lower-case header names and their values.
    type Headers = Vec<(String, String)>;

    /// Parses `req` and returns the head sent to the backend, parsed again:
    /// (what the proxy decided, the headers, "METHOD target").
    fn forwarded(req: &[u8]) -> Result<(RequestHead, Headers, String), u16> {
        let mut out = Vec::new();
        let head = parse_request(req, 100, &client(), &pool(), &mut out)?.ok_or(0u16)?;
        out.extend_from_slice(b"\r\n");
        let mut hs = [httparse::EMPTY_HEADER; 128];
        let mut r = httparse::Request::new(&mut hs);
        assert!(
            r.parse(&out).unwrap().is_complete(),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let line = format!("{} {}", r.method.unwrap(), r.path.unwrap());
        let headers = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        Ok((head, headers, line))
    }

    fn values<'a>(h: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        h.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn request_head_rewrite() {
        let (head, h, line) = forwarded(
            b"GET http://example.org/a?b=1 HTTP/1.1\r\nHost: ignored\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nCookie: a=1; SRV=web-1\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        assert_eq!(line, "GET /a?b=1");
        assert_eq!(values(&h, "host"), ["example.org"]);
        assert_eq!(values(&h, "x-forwarded-for"), ["1.2.3.4, 10.77.0.9"]);
        assert_eq!(values(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&h, "x-forwarded-host"), ["example.org"]);
        assert_eq!(values(&h, "forwarded"), ["for=10.77.0.9;proto=http"]);
        for gone in ["connection", "x-private", "keep-alive", "te"] {
            assert!(values(&h, gone).is_empty(), "{gone} forwarded");
        }
        assert_eq!(values(&h, "accept"), ["*/*"]);
        assert!(head.keep_alive && head.idempotent && head.framing == Framing::Empty);
        assert_eq!(head.pinned.map(|(i, _)| i), Some(0));

        let (head, h, _) =
            forwarded(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert_eq!(values(&h, "transfer-encoding"), ["chunked"]);
        assert!(values(&h, "content-length").is_empty());

        for (bad, code) in [
            (&b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..], 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 405),
            (b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nFoo : bar\r\n\r\n", 400),
        ] {
            assert_eq!(forwarded(bad).err(), Some(code), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn response_head_rewrite() {
        let req = forwarded(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().0;
        let mut out = Vec::new();
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\nX-Keep: 1\r\n\r\n",
            &req,
            &mut out,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.framing, Framing::Chunked);
        assert!(!r.reusable);
        let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200 ok\r\n"));
        assert!(text.contains("x-keep: 1"));
        for gone in ["connection", "x-hop", "transfer-encoding", "content-length"] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            &req,
            &mut out
        )
        .is_err());
    }

    /// A header name and value that httparse accepts.
    fn header() -> impl Strategy<Value = (String, String)> {
        (
            prop_oneof![
                Just("Host".to_string()),
                Just("Content-Length".to_string()),
                Just("Transfer-Encoding".to_string()),
                Just("Connection".to_string()),
                Just("X-Forwarded-For".to_string()),
                Just("Upgrade".to_string()),
                Just("Expect".to_string()),
                Just("Cookie".to_string()),
                "[A-Za-z][A-Za-z0-9-]{0,12}",
            ],
            prop_oneof![
                Just("chunked".to_string()),
                Just("close".to_string()),
                Just("upgrade".to_string()),
                Just("5".to_string()),
                Just("0".to_string()),
                "[ -~]{0,20}",
            ],
        )
    }

    proptest! {
        // Whatever headers a request has, the head sent on is well formed,
        // carries no hop-by-hop header, and frames the body exactly as
        // decided: one Content-Length or one chunked coding, never both.
        #[test]
        fn forwarded_heads_are_canonical(
            method in prop_oneof![Just("GET"), Just("POST"), Just("HEAD"), Just("PUT")],
            headers in proptest::collection::vec(header(), 0..12),
            http10 in any::<bool>(),
        ) {
            let mut req = format!("{method} /p HTTP/1.{}\r\n", if http10 { 0 } else { 1 });
            for (n, v) in &headers {
                req.push_str(&format!("{n}: {v}\r\n"));
            }
            req.push_str("\r\n");
            if let Ok((head, h, _)) = forwarded(req.as_bytes()) {
                for hop in ["connection", "keep-alive", "te", "trailer", "proxy-connection", "expect"] {
                    prop_assert!(values(&h, hop).is_empty() || (hop == "connection" && head.upgrade));
                }
                let cl = values(&h, "content-length");
                let te = values(&h, "transfer-encoding");
                prop_assert!(cl.len() <= 1 && te.len() <= 1 && !(cl.len() == 1 && te.len() == 1));
                match head.framing {
                    Framing::Chunked => prop_assert_eq!(te, vec!["chunked"]),
                    Framing::Length(n) => {
                        let n = n.to_string();
                        prop_assert_eq!(cl, vec![n.as_str()]);
                    }
                    _ => prop_assert!(te.is_empty() && cl.iter().all(|v| *v == "0")),
                }
                prop_assert_eq!(values(&h, "x-forwarded-for").len(), 1);
                prop_assert!(values(&h, "x-forwarded-for")[0].ends_with("10.77.0.9"));
                prop_assert!(values(&h, "host").len() <= 1);
            }
        }

        // Arbitrary bytes never panic either head parser.
        #[test]
        fn heads_from_garbage_never_panic(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            if let Ok(Some(req)) = parse_request(&input, 100, &client(), &pool(), &mut out) {
                let _ = parse_response(&input, &req, &mut out);
            }
            let req = forwarded(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().0;
            let _ = parse_response(&input, &req, &mut out);
        }

        // Any split of a chunked body into reads decodes to the same bytes.
        #[test]
        fn chunked_any_split(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 0..6), cut in 0usize..400) {
            let mut wire = Vec::new();
            let mut want = Vec::new();
            for c in &chunks {
                encode_chunk(&mut wire, c);
                want.extend_from_slice(c);
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let cut = cut.min(wire.len());
            let mut dec = Chunked::Size;
            let mut body = Vec::new();
            let mut avail: Vec<u8> = wire[..cut].to_vec();
            let mut rest = &wire[cut..];
            loop {
                match dec.step(&avail).unwrap() {
                    ChunkStep::Framing(n) => { avail.drain(..n); }
                    ChunkStep::Data(n) => { body.extend_from_slice(&avail[..n]); avail.drain(..n); }
                    ChunkStep::Done(_) => break,
                    ChunkStep::NeedMore => {
                        prop_assert!(!rest.is_empty());
                        avail.push(rest[0]);
                        rest = &rest[1..];
                    }
                }
            }
            prop_assert_eq!(body, want);
        }

        // Garbage never panics the decoder.
        #[test]
        fn chunked_garbage(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&input);
        }
    }
}
