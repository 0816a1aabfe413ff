//! The PROXY protocol header (HAProxy's spec, versions 1 and 2): a few bytes
//! at the start of a TCP connection that say who the real client is.
//!
//! Pure codec (`encode_v1`, `encode_v2`, `decode`) plus one async reader that
//! takes exactly the header's bytes off a stream, so whatever follows (TLS,
//! HTTP) is untouched. TLVs in v2 headers are skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included (from the spec).
pub const V1_MAX: usize = 107;
/// Longest v2 header this reader accepts (addresses plus TLVs).
pub const V2_MAX: usize = 16 + 1024;

/// A decoded header. `None` addresses mean `LOCAL` (v2) or `UNKNOWN` (v1):
/// the connection is the proxy's own (e.g. a health check), use the peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address and port.
    pub source: Option<SocketAddr>,
    /// The address and port the client connected to.
    pub destination: Option<SocketAddr>,
}

/// Why a header was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyProtocolError {
    /// Neither a v1 nor a v2 signature.
    #[error("no PROXY protocol signature (first bytes {0:02x?})")]
    NoSignature(Vec<u8>),
    /// A v1 line that does not parse.
    #[error("bad PROXY v1 header {0:?}")]
    BadV1(String),
    /// A v2 header with a bad version, command, family or length.
    #[error("bad PROXY v2 header: {0}")]
    BadV2(&'static str),
    /// The stream ended or failed before the header was complete.
    #[error("reading the PROXY header: {0}")]
    Io(String),
}

fn pair(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    // Mixed families are sent as IPv6 (v4-mapped).
    match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            (src, dst)
        }
        _ => (to_v6(src), to_v6(dst)),
    }
}

fn to_v6(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    }
}

/// Appends a v1 header for a connection from `src` to `dst`.
pub fn encode_v1(src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    use std::io::Write;
    let (s, d) = pair(src, dst);
    let fam = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    let _ = write!(
        out,
        "PROXY {fam} {} {} {} {}\r\n",
        s.ip(),
        d.ip(),
        s.port(),
        d.port()
    );
}

/// Appends a v2 `PROXY` header for a connection from `src` to `dst`.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    let (s, d) = pair(src, dst);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (s.ip(), d.ip()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&a.octets());
            out.extend_from_slice(&b.octets());
        }
        (a, b) => {
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(a).octets());
            out.extend_from_slice(&v6(b).octets());
        }
    }
    out.extend_from_slice(&s.port().to_be_bytes());
    out.extend_from_slice(&d.port().to_be_bytes());
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Decodes a header at the start of `buf`. `Ok(None)`: not enough bytes yet;
/// `Ok(Some((header, n)))`: the header took the first `n` bytes.
pub fn decode(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyProtocolError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        if buf.len() < 16 {
            return Ok(None);
        }
        return decode_v2(buf);
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        if buf.len() < 6 {
            return Ok(None);
        }
        return decode_v1(buf);
    }
    Err(ProxyProtocolError::NoSignature(
        buf[..buf.len().min(16)].to_vec(),
    ))
}

fn decode_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyProtocolError> {
    let limit = buf.len().min(V1_MAX);
    let Some(end) = buf[..limit].windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(ProxyProtocolError::BadV1(
                String::from_utf8_lossy(&buf[..V1_MAX]).into_owned(),
            ));
        }
        return Ok(None);
    };
    let line = &buf[..end];
    let bad = || ProxyProtocolError::BadV1(String::from_utf8_lossy(line).into_owned());
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let parts: Vec<&str> = text.split(' ').collect();
    let header = match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => ProxyHeader {
            source: None,
            destination: None,
        },
        ["PROXY", fam @ ("TCP4" | "TCP6"), s, d, sp, dp] => {
            let s: IpAddr = s.parse().map_err(|_| bad())?;
            let d: IpAddr = d.parse().map_err(|_| bad())?;
            if s.is_ipv4() != (*fam == "TCP4") || d.is_ipv4() != (*fam == "TCP4") {
                return Err(bad());
            }
            let port = |p: &str| {
                if p.is_empty() || (p.len() > 1 && p.starts_with('0')) {
                    return Err(bad());
                }
                p.parse::<u16>().map_err(|_| bad())
            };
            ProxyHeader {
                source: Some(SocketAddr::new(s, port(sp)?)),
                destination: Some(SocketAddr::new(d, port(dp)?)),
            }
        }
        _ => return Err(bad()),
    };
    Ok(Some((header, end + 2)))
}

fn decode_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyProtocolError> {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyProtocolError::BadV2("version is not 2"));
    }
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if 16 + len > V2_MAX {
        return Err(ProxyProtocolError::BadV2("header too long"));
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let body = &buf[16..16 + len];
    let local = ProxyHeader {
        source: None,
        destination: None,
    };
    let header = match ver_cmd & 0x0f {
        0 => local,
        1 => match buf[13] {
            0x11 | 0x12 => {
                if len < 12 {
                    return Err(ProxyProtocolError::BadV2("IPv4 addresses too short"));
                }
                let s = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
                let d = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
                let sp = u16::from_be_bytes([body[8], body[9]]);
                let dp = u16::from_be_bytes([body[10], body[11]]);
                ProxyHeader {
                    source: Some(SocketAddr::new(s.into(), sp)),
                    destination: Some(SocketAddr::new(d.into(), dp)),
                }
            }
            0x21 | 0x22 => {
                if len < 36 {
                    return Err(ProxyProtocolError::BadV2("IPv6 addresses too short"));
                }
                let mut s = [0u8; 16];
                let mut d = [0u8; 16];
                s.copy_from_slice(&body[0..16]);
                d.copy_from_slice(&body[16..32]);
                let sp = u16::from_be_bytes([body[32], body[33]]);
                let dp = u16::from_be_bytes([body[34], body[35]]);
                ProxyHeader {
                    source: Some(SocketAddr::new(Ipv6Addr::from(s).into(), sp)),
                    destination: Some(SocketAddr::new(Ipv6Addr::from(d).into(), dp)),
                }
            }
            // UNSPEC or unix sockets: keep the peer address.
            0x00 | 0x31 | 0x32 => local,
            _ => return Err(ProxyProtocolError::BadV2("unknown address family")),
        },
        _ => return Err(ProxyProtocolError::BadV2("unknown command")),
    };
    Ok(Some((header, 16 + len)))
}

/// Reads exactly one header from `io` (nothing after it).
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<ProxyHeader, ProxyProtocolError> {
    let ioerr = |e: std::io::Error| ProxyProtocolError::Io(e.to_string());
    let mut buf = [0u8; V2_MAX];
    io.read_exact(&mut buf[..8]).await.map_err(ioerr)?;
    if buf[..8] == V2_SIGNATURE[..8] {
        io.read_exact(&mut buf[8..16]).await.map_err(ioerr)?;
        if buf[..12] != V2_SIGNATURE {
            return Err(ProxyProtocolError::NoSignature(buf[..16].to_vec()));
        }
        let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if 16 + len > V2_MAX {
            return Err(ProxyProtocolError::BadV2("header too long"));
        }
        io.read_exact(&mut buf[16..16 + len]).await.map_err(ioerr)?;
        return match decode(&buf[..16 + len])? {
            Some((h, _)) => Ok(h),
            None => Err(ProxyProtocolError::BadV2("truncated")),
        };
    }
    if &buf[..6] != b"PROXY " {
        return Err(ProxyProtocolError::NoSignature(buf[..8].to_vec()));
    }
    // v1: byte by byte up to CRLF so nothing after the header is consumed
    // (at most 107 small reads, only from trusted proxies).
    let mut n = 8;
    while !(n >= 2 && buf[n - 2] == b'\r' && buf[n - 1] == b'\n') {
        if n >= V1_MAX {
            return Err(ProxyProtocolError::BadV1(
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
        io.read_exact(&mut buf[n..n + 1]).await.map_err(ioerr)?;
        n += 1;
    }
    match decode(&buf[..n])? {
        Some((h, _)) => Ok(h),
        None => Err(ProxyProtocolError::BadV1(
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        )),
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(Ipv4Addr::from(ip).into(), p)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(Ipv6Addr::from(ip).into(), p)),
        ]
    }

    fn same(a: SocketAddr, b: SocketAddr) -> bool {
        to_v6(a) == to_v6(b)
    }

    proptest! {
        #[test]
        fn v1_round_trips(s in addr(), d in addr(), tail in proptest::collection::vec(any::<u8>(), 0..32)) {
            let mut buf = Vec::new();
            encode_v1(s, d, &mut buf);
            prop_assert!(buf.len() <= V1_MAX);
            let n = buf.len();
            buf.extend_from_slice(&tail);
            let (h, used) = decode(&buf).unwrap().unwrap();
            prop_assert_eq!(used, n);
            prop_assert!(same(h.source.unwrap(), s));
            prop_assert!(same(h.destination.unwrap(), d));
            // Every strict prefix is "need more", never an error or a panic.
            for i in 0..n {
                prop_assert_eq!(decode(&buf[..i]).unwrap(), None);
            }
        }

        #[test]
        fn v2_round_trips(s in addr(), d in addr()) {
            let mut buf = Vec::new();
            encode_v2(s, d, &mut buf);
            let (h, used) = decode(&buf).unwrap().unwrap();
            prop_assert_eq!(used, buf.len());
            prop_assert!(same(h.source.unwrap(), s));
            prop_assert!(same(h.destination.unwrap(), d));
            for i in 0..buf.len() {
                prop_assert_eq!(decode(&buf[..i]).unwrap(), None);
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_v2_garbage_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut buf = V2_SIGNATURE.to_vec();
            buf.extend_from_slice(&tail);
            let _ = decode(&buf);
        }

        #[test]
        fn reader_takes_only_the_header(s in addr(), d in addr(), v2 in any::<bool>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = Vec::new();
            if v2 { encode_v2(s, d, &mut buf) } else { encode_v1(s, d, &mut buf) }
            buf.extend_from_slice(&tail);
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (h, rest) = rt.block_on(async {
                let mut r = &buf[..];
                let h = read_header(&mut r).await.unwrap();
                (h, r.to_vec())
            });
            prop_assert!(same(h.source.unwrap(), s));
            prop_assert_eq!(rest, tail);
        }
    }

    #[test]
    fn spec_examples() {
        let (h, n) = decode(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /")
            .unwrap()
            .unwrap();
        assert_eq!(n, 47);
        assert_eq!(h.source, Some("192.168.0.1:56324".parse().unwrap()));
        assert_eq!(
            decode(b"PROXY UNKNOWN\r\n").unwrap().unwrap().0.source,
            None
        );
        assert!(decode(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n").is_err());
        assert!(decode(b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n").is_err());
        assert!(decode(b"GET / HTTP/1.1\r\n").is_err());
        // v2 LOCAL
        let mut b = V2_SIGNATURE.to_vec();
        b.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(decode(&b).unwrap().unwrap().0.source, None);
    }
}
