//! Listening sockets: `IP_FREEBIND` so a frontend can listen on the floating
//! IP before this node owns it, `SO_REUSEPORT` so each worker has its own
//! accept queue and a reload can bind next to a live listener.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;

/// A non-blocking listener on `addr`.
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv4() {
        s.set_freebind_v4(true)?;
    } else {
        s.set_freebind_v6(true)?;
        s.set_only_v6(true)?;
    }
    // Accepted sockets inherit TCP_NODELAY on Linux.
    s.set_tcp_nodelay(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(s.into())
}

#[cfg(test)]
mod test {
    #[test]
    fn freebind_allows_an_address_this_host_does_not_have() {
        // 127.0.0.0/8 is all local; TEST-NET-3 is not, and FREEBIND lets us
        // listen there anyway (no traffic is sent to it).
        let l = super::bind("203.0.113.77:0".parse().unwrap(), 16).unwrap();
        assert_eq!(l.local_addr().unwrap().ip().to_string(), "203.0.113.77");
    }

    #[test]
    fn accepted_sockets_inherit_nodelay() {
        // accept_loop relies on this instead of a setsockopt per connection.
        let l = super::bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        l.set_nonblocking(false).unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert!(s.nodelay().unwrap());
    }
}
