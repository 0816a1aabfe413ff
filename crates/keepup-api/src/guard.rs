//! Who may do what: the API's admission rules as one pure function, so
//! each attack (a web page's form POST, DNS rebinding, a load balancer
//! pointed at the API, a missing token) is a table row in the tests.
//!
//! The rules, in order:
//! 1. `Host`, when sent, must be this API's own address: an IP literal or
//!    `localhost` on the listening port, or a name listed in `api.hosts`. A
//!    page served from a rebound DNS name therefore never reaches a handler
//!    (browsers always send `Host`; health checkers may not).
//! 2. An `Origin` (or `Sec-Fetch-Site: cross-site`) from anywhere but the
//!    API itself is refused: only the dashboard, served here, is same-origin.
//! 3. Reads (status, events, metrics) are open to loopback peers that are
//!    not relaying for someone else (no `Forwarded` / `X-Forwarded-For`);
//!    from elsewhere they need the read token or the control token.
//! 4. Control (every POST) needs the control token, from loopback too, and
//!    a JSON body type, so a browser cannot send one without a CORS
//!    preflight this server never grants.

use hyper::header::{HeaderMap, HeaderValue};
use hyper::StatusCode;
use std::net::{IpAddr, SocketAddr};

/// The tokens and addresses requests are checked against.
#[derive(Clone)]
pub struct AccessPolicy {
    /// The bearer token every control request must carry.
    pub control_token: String,
    /// A token that allows reads only (the dashboard from another host).
    pub read_token: Option<String>,
    /// The port the API listens on (`Host` must name it).
    pub port: u16,
    /// Host names besides IP literals and `localhost` that name this API.
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token.
        f.debug_struct("AccessPolicy")
            .field("port", &self.port)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing beyond a right `Host`/`Origin` (the dashboard page, health checks).
    Open,
    /// Status, events, metrics.
    Read,
    /// A control request.
    Control,
}

/// Why a request was refused: the status and the sentence sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// What is wrong and what to do, in plain words.
    pub message: String,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// Decides whether a request from `peer` with `headers` may use a route
/// that needs `need`.
pub fn admit(
    policy: &AccessPolicy,
    peer: SocketAddr,
    headers: &HeaderMap,
    need: Need,
) -> Result<(), Refusal> {
    // A browser always sends Host; a request without one (HTTP/1.0, as
    // HAProxy's `option httpchk` sends) cannot come from a web page.
    let host = match headers.get(hyper::header::HOST) {
        None => None,
        Some(v) => Some(v.to_str().unwrap_or("")),
    };
    if let Some(host) = host.filter(|h| !host_is_ours(policy, h)) {
        return Err(refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {host:?} is not this API's address: use an IP address or localhost with port {}, or list the name in api.hosts",
                policy.port
            ),
        ));
    }
    if let Some(origin) = headers.get(hyper::header::ORIGIN) {
        let same = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://").or(o.strip_prefix("https://")))
            .is_some_and(|o| host.is_some_and(|h| o.eq_ignore_ascii_case(h)));
        if !same {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "requests from another web origin ({}) are refused",
                    origin.to_str().unwrap_or("?")
                ),
            ));
        }
    }
    if header_is(headers, "sec-fetch-site", "cross-site") {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "requests from another web site are refused",
        ));
    }
    let bearer = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let is = |token: &str| bearer.is_some_and(|b| constant_time_eq(b.as_bytes(), token.as_bytes()));
    let control = is(&policy.control_token);
    match need {
        Need::Open => Ok(()),
        Need::Read => {
            let read = control || policy.read_token.as_deref().is_some_and(is);
            let relayed =
                headers.contains_key("forwarded") || headers.contains_key("x-forwarded-for");
            if read || (is_loopback(peer.ip()) && !relayed) {
                Ok(())
            } else {
                Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "status from outside loopback needs Authorization: Bearer <token> (keepup api-token --read-only prints one)",
                ))
            }
        }
        Need::Control => {
            if !control {
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "control requests need Authorization: Bearer <control token> (keepup api-token prints it; the keepup commands send it)",
                ));
            }
            let json = headers
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
            if json {
                Ok(())
            } else {
                Err(refuse(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "control requests need Content-Type: application/json (the body may be {})",
                ))
            }
        }
    }
}

/// Loopback, IPv4-mapped IPv6 loopback (`::ffff:127.0.0.1`) included.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

fn header_is(headers: &HeaderMap, name: &str, want: &str) -> bool {
    headers
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// `Host` names this API: `localhost`, an IP literal or a listed name, on
/// the listening port (no port only when that port is 80).
fn host_is_ours(policy: &AccessPolicy, host: &str) -> bool {
    let (name, port) = split_host(host);
    let port_ok = match port {
        Some(p) => p == policy.port,
        None => policy.port == 80,
    };
    if !port_ok || name.is_empty() {
        return false;
    }
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok()
        || policy.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// `name:port`, `[v6]:port`, `name`, `[v6]` → (name, port).
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return ("", None);
        };
        return match after.strip_prefix(':') {
            Some(p) => (inner, p.parse().ok().or(Some(0))),
            None if after.is_empty() => (inner, None),
            None => ("", None),
        };
    }
    match host.rsplit_once(':') {
        Some((n, p)) => (n, p.parse().ok().or(Some(0))),
        None => (host, None),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AccessPolicy {
        AccessPolicy {
            control_token: "control-token-0123456789".into(),
            read_token: Some("read-token-0123456789".into()),
            port: 7947,
            hosts: vec!["lb1.example.net".into()],
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const LOCAL: &str = "127.0.0.1:40000";
    const MAPPED: &str = "[::ffff:127.0.0.1]:40000";
    const REMOTE: &str = "10.77.0.9:40000";
    const CONTROL: &str = "Bearer control-token-0123456789";
    const READ: &str = "Bearer read-token-0123456789";
    const JSON: &str = "application/json";

    // Each row: peer, headers, what the route needs, the status expected
    // (None: admitted).
    #[rustfmt::skip]
    #[test]
    fn admission_table() {
        type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], Need, Option<u16>);
        let rows: &[Row] = &[
            // Local reads, as `keepup status` does them.
            (LOCAL, &[("host", "127.0.0.1:7947")], Need::Read, None),
            (MAPPED, &[("host", "[::1]:7947")], Need::Read, None),
            (LOCAL, &[("host", "localhost:7947")], Need::Read, None),
            // Reads from another host need a token; either token does.
            (REMOTE, &[("host", "10.77.0.1:7947")], Need::Read, Some(401)),
            (REMOTE, &[("host", "10.77.0.1:7947"), ("authorization", READ)], Need::Read, None),
            (REMOTE, &[("host", "10.77.0.1:7947"), ("authorization", CONTROL)], Need::Read, None),
            (REMOTE, &[("host", "lb1.example.net:7947"), ("authorization", READ)], Need::Read, None),
            // A load balancer on this host relaying to the API is not loopback.
            (LOCAL, &[("host", "127.0.0.1:7947"), ("x-forwarded-for", "192.0.2.1")], Need::Read, Some(401)),
            (LOCAL, &[("host", "127.0.0.1:7947"), ("forwarded", "for=192.0.2.1")], Need::Read, Some(401)),
            // DNS rebinding: a foreign name, or the right name on another port.
            (LOCAL, &[("host", "evil.example:7947")], Need::Read, Some(421)),
            (LOCAL, &[("host", "127.0.0.1:80")], Need::Open, Some(421)),
            (LOCAL, &[("host", "127.0.0.1")], Need::Open, Some(421)),
            (LOCAL, &[], Need::Open, None),
            (LOCAL, &[], Need::Read, None),
            (LOCAL, &[("origin", "http://127.0.0.1:7947")], Need::Read, Some(403)),
            (LOCAL, &[("host", "[::1")], Need::Open, Some(421)),
            // The browser attack: a form POST from a foreign page.
            (LOCAL, &[("host", "127.0.0.1:7947"), ("origin", "http://evil.example"), ("content-type", "text/plain")], Need::Control, Some(403)),
            (LOCAL, &[("host", "127.0.0.1:7947"), ("origin", "null")], Need::Control, Some(403)),
            (LOCAL, &[("host", "127.0.0.1:7947"), ("sec-fetch-site", "cross-site")], Need::Read, Some(403)),
            (LOCAL, &[("host", "127.0.0.1:7947"), ("origin", "http://evil.example")], Need::Read, Some(403)),
            // The dashboard itself is same-origin.
            (REMOTE, &[("host", "10.77.0.1:7947"), ("origin", "http://10.77.0.1:7947"), ("authorization", READ)], Need::Read, None),
            // Control: the token always, from loopback too, and JSON.
            (LOCAL, &[("host", "127.0.0.1:7947"), ("content-type", JSON)], Need::Control, Some(401)),
            (LOCAL, &[("host", "127.0.0.1:7947"), ("authorization", READ), ("content-type", JSON)], Need::Control, Some(401)),
            (LOCAL, &[("host", "127.0.0.1:7947"), ("authorization", CONTROL)], Need::Control, Some(415)),
            (LOCAL, &[("host", "127.0.0.1:7947"), ("authorization", CONTROL), ("content-type", "text/plain")], Need::Control, Some(415)),
            (LOCAL, &[("host", "127.0.0.1:7947"), ("authorization", CONTROL), ("content-type", "application/json; charset=utf-8")], Need::Control, None),
            (REMOTE, &[("host", "10.77.0.1:7947"), ("authorization", CONTROL), ("content-type", JSON)], Need::Control, None),
            (REMOTE, &[("host", "10.77.0.1:7947"), ("authorization", "Bearer control-token-012345678X"), ("content-type", JSON)], Need::Control, Some(401)),
            // Open routes still check Host and Origin, nothing else.
            (REMOTE, &[("host", "10.77.0.1:7947")], Need::Open, None),
        ];
        for (i, (peer, hs, need, want)) in rows.iter().enumerate() {
            let got = admit(&policy(), peer.parse().unwrap(), &headers(hs), *need)
                .err()
                .map(|r| r.status.as_u16());
            assert_eq!(got, *want, "row {i}: {peer} {hs:?} {need:?}");
        }
    }

    #[test]
    fn port_80_allows_a_host_without_port() {
        let mut p = policy();
        p.port = 80;
        let h = headers(&[("host", "10.77.0.1")]);
        assert_eq!(admit(&p, REMOTE.parse().unwrap(), &h, Need::Open), Ok(()));
    }
}
