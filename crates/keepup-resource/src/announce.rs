//! Telling the LAN that an address moved: gratuitous ARP for IPv4 and
//! unsolicited neighbour advertisements for IPv6, so hosts and switches
//! update their caches at once instead of sending to the old owner's MAC
//! until their entries expire.
//!
//! - IPv4: an ARP *request* whose sender and target protocol address are
//!   both the VIP, broadcast on an `AF_PACKET` raw socket (RFC 5227 §3
//!   "ARP Announcement"; Linux treats `sip == tip` as gratuitous and
//!   overrides an existing neighbour entry, see `arp_is_garp` in
//!   net/ipv4/arp.c).
//! - IPv6: an ICMPv6 Neighbor Advertisement (RFC 4861 §4.4, §7.2.6) to
//!   ff02::1 with hop limit 255, Solicited flag clear, Override flag set and
//!   a Target Link-Layer Address option, on an ICMPv6 raw socket (the
//!   kernel fills in the checksum).
//!
//! The sockets are opened in the network namespace of the calling thread.
//! These are the only functions of the crate that need `unsafe`, each
//! allowed at function scope with its SAFETY comment.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A MAC address.
pub type Mac = [u8; 6];

/// The bytes of a gratuitous ARP request announcing `ip` at `mac`: an
/// Ethernet header to the broadcast address and an ARP request with sender
/// = target = `ip` and a zero target hardware address (RFC 5227 §2.3).
pub fn garp_frame(mac: Mac, ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    // Ethernet: destination broadcast, source our MAC, type ARP.
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&(libc::ETH_P_ARP as u16).to_be_bytes());
    // ARP: Ethernet / IPv4, 6-byte and 4-byte addresses, request.
    f[14..16].copy_from_slice(&1u16.to_be_bytes());
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // f[32..38]: target hardware address, zero.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// The ICMPv6 part of an unsolicited Neighbor Advertisement for `target`
/// at `mac`: type 136, checksum left 0 (the kernel computes it on ICMPv6
/// raw sockets), flags R=0 S=0 O=1, the target, and a Target Link-Layer
/// Address option (type 2, length 1 = 8 bytes).
pub fn na_message(mac: Mac, target: Ipv6Addr) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = 136;
    m[1] = 0;
    m[4] = 0x20; // Override
    m[8..24].copy_from_slice(&target.octets());
    m[24] = 2;
    m[25] = 1;
    m[26..32].copy_from_slice(&mac);
    m
}

/// An open socket that sends gratuitous ARPs for one address on one
/// interface.
#[derive(Debug)]
pub struct GarpSender {
    fd: OwnedFd,
    ifindex: i32,
    frame: [u8; 42],
}

impl GarpSender {
    /// Opens an `AF_PACKET` raw socket for interface `ifindex` (needs
    /// CAP_NET_RAW).
    #[allow(unsafe_code)]
    pub fn open(ifindex: u32, mac: Mac, ip: Ipv4Addr) -> io::Result<GarpSender> {
        let ifindex =
            i32::try_from(ifindex).map_err(|_| io::Error::other("interface index out of range"))?;
        let proto = (libc::ETH_P_ARP as u16).to_be() as libc::c_int;
        // SAFETY: socket(2) takes plain integers and touches no memory.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2), is valid and owned
        // by nobody else; OwnedFd closes it exactly once.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(GarpSender {
            fd,
            ifindex,
            frame: garp_frame(mac, ip),
        })
    }

    /// Sends one gratuitous ARP.
    #[allow(unsafe_code)]
    pub fn send(&self) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: the buffer pointer and length describe `self.frame`,
        // which lives across the call; the address pointer and length
        // describe `sll`, a properly initialised sockaddr_ll on the stack.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                self.frame.as_ptr().cast(),
                self.frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// An open socket that sends unsolicited neighbour advertisements for one
/// address on one interface.
#[derive(Debug)]
pub struct NaSender {
    fd: OwnedFd,
    ifindex: u32,
    message: [u8; 32],
}

impl NaSender {
    /// Opens an ICMPv6 raw socket sending on interface `ifindex` with hop
    /// limit 255 (receivers drop neighbour discovery with any other). The
    /// source is `target` itself when it can be bound (it is on the
    /// interface, added without DAD), else the kernel's choice (the
    /// link-local address).
    #[allow(unsafe_code)]
    pub fn open(ifindex: u32, mac: Mac, target: Ipv6Addr) -> io::Result<NaSender> {
        // SAFETY: socket(2) takes plain integers and touches no memory.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET6,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMPV6,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2), is valid and owned
        // by nobody else; OwnedFd closes it exactly once.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        let int_opt = |name: libc::c_int, value: libc::c_int| -> io::Result<()> {
            // SAFETY: the option value points at a c_int that lives across
            // the call, and the length is its size.
            let rc = unsafe {
                libc::setsockopt(
                    raw,
                    libc::IPPROTO_IPV6,
                    name,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        int_opt(libc::IPV6_MULTICAST_HOPS, 255)?;
        int_opt(libc::IPV6_UNICAST_HOPS, 255)?;
        int_opt(libc::IPV6_MULTICAST_LOOP, 0)?;
        int_opt(libc::IPV6_MULTICAST_IF, ifindex as libc::c_int)?;
        let scope = if target.is_unicast_link_local() {
            ifindex
        } else {
            0
        };
        let src = sockaddr_in6(target, scope);
        // SAFETY: the address pointer and length describe `src`, an
        // initialised sockaddr_in6 on the stack.
        let rc = unsafe {
            libc::bind(
                raw,
                (&src as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            tracing::debug!(
                "cannot use {target} as the source of neighbour advertisements ({}); the kernel picks one",
                io::Error::last_os_error()
            );
        }
        Ok(NaSender {
            fd,
            ifindex,
            message: na_message(mac, target),
        })
    }

    /// Sends one unsolicited neighbour advertisement to ff02::1.
    #[allow(unsafe_code)]
    pub fn send(&self) -> io::Result<()> {
        let dst = sockaddr_in6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), self.ifindex);
        // SAFETY: the buffer pointer and length describe `self.message`,
        // which lives across the call; the address pointer and length
        // describe `dst`, an initialised sockaddr_in6 on the stack.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                self.message.as_ptr().cast(),
                self.message.len(),
                0,
                (&dst as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[allow(unsafe_code)]
fn sockaddr_in6(ip: Ipv6Addr, scope_id: u32) -> libc::sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_addr.s6_addr = ip.octets();
    sa.sin6_scope_id = scope_id;
    sa
}

/// Either kind of announcer, for code that does not care which.
#[derive(Debug)]
pub enum Announcer {
    /// Gratuitous ARP (IPv4).
    Garp(GarpSender),
    /// Unsolicited neighbour advertisement (IPv6).
    Na(NaSender),
}

impl Announcer {
    /// Opens the right socket for `ip` on interface `ifindex` with `mac`.
    pub fn open(ifindex: u32, mac: Mac, ip: std::net::IpAddr) -> io::Result<Announcer> {
        Ok(match ip {
            std::net::IpAddr::V4(v4) => Announcer::Garp(GarpSender::open(ifindex, mac, v4)?),
            std::net::IpAddr::V6(v6) => Announcer::Na(NaSender::open(ifindex, mac, v6)?),
        })
    }

    /// Sends one announcement.
    pub fn send(&self) -> io::Result<()> {
        match self {
            Announcer::Garp(g) => g.send(),
            Announcer::Na(n) => n.send(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 5227 §2.3/§3: ARP announcement = request, SPA = TPA = address,
    // THA zero, broadcast.
    #[test]
    fn garp_frame_layout() {
        let mac = [0x02, 0, 0, 0, 0, 0x01];
        let f = garp_frame(mac, Ipv4Addr::new(10, 77, 0, 100));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[14..22], &[0, 1, 0x08, 0, 6, 4, 0, 1]);
        assert_eq!(&f[22..28], &mac);
        assert_eq!(&f[28..32], &[10, 77, 0, 100]);
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[10, 77, 0, 100]);
    }

    // RFC 4861 §4.4: type 136, code 0, O flag, target, TLLA option.
    #[test]
    fn na_message_layout() {
        let mac = [0x02, 0, 0, 0, 0, 0x02];
        let t: Ipv6Addr = "fd00::100".parse().expect("literal");
        let m = na_message(mac, t);
        assert_eq!(m[0], 136);
        assert_eq!(m[1], 0);
        assert_eq!(&m[4..8], &[0x20, 0, 0, 0], "only Override set");
        assert_eq!(&m[8..24], &t.octets());
        assert_eq!(&m[24..26], &[2, 1]);
        assert_eq!(&m[26..32], &mac);
    }
}
