//! `type = "vip"`: a LAN virtual IP, what keepalived's `virtual_ipaddress`
//! and Heartbeat's `IPaddr` do.
//!
//! - start: adds the address to the interface through rtnetlink (present
//!   already = fine), then announces it: one gratuitous ARP / unsolicited NA
//!   at once, the other `garp_count - 1` every `garp_interval_ms` in a
//!   background task, so failover is not delayed by the repeats.
//! - stop: stops any announcements still queued, then removes the address
//!   (absent = fine).
//! - monitor: the interface must be up with carrier, else `Failed` (the VIP
//!   is unreachable here, the group should move); an address that vanished
//!   (`ip addr del`, a DHCP client, a network restart) is put back and
//!   announced again: `Restored`.
//!
//! IPv6 VIPs are added with `IFA_F_NODAD` (as keepalived does): a moving
//! address must be usable at once, and a duplicate-address probe would only
//! find the previous owner that is about to drop it.
//!
//! Everything happens in the calling thread's network namespace; the
//! announcement sockets are opened before `start` returns, so the
//! background repeats stay in that namespace whichever thread runs them.

use crate::announce::{Announcer, Mac};
use crate::{BoxFuture, Health, Resource, ResourceError};
use futures_util::TryStreamExt;
use keepup_config::VipResource;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Netlink calls answer in microseconds; this bounds a stuck kernel or a
/// huge address table, not normal work.
const VIP_TIMEOUT: Duration = Duration::from_secs(5);

/// A virtual IP on a local interface.
#[derive(Debug)]
pub struct Vip {
    cfg: VipResource,
    ip: IpAddr,
    prefix: u8,
    /// Background announcements of the last start or restore.
    repeats: Mutex<Option<JoinHandle<()>>>,
}

/// What netlink says about the interface.
struct Link {
    index: u32,
    mac: Option<Mac>,
    up: bool,
    lower_up: bool,
}

/// Parses `10.77.0.100/24`, `fd00::100/64` or a bare address (host prefix).
pub fn parse_address(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("prefix length {p:?} is not a number from 0 to {max}"))?,
        None => max,
    };
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return Err(format!(
            "{ip} cannot be a virtual IP (unspecified, multicast or loopback)"
        ));
    }
    Ok((ip, prefix))
}

impl Vip {
    /// Checks the address syntax and the interface name.
    pub fn new(cfg: &VipResource) -> Result<Vip, ResourceError> {
        let bad = |reason: String| ResourceError::Config {
            resource: format!("vip {}", cfg.address),
            reason,
        };
        let (ip, prefix) = parse_address(&cfg.address).map_err(bad)?;
        if cfg.interface.is_empty()
            || cfg.interface.len() > 15
            || cfg.interface.contains(['/', ' '])
        {
            return Err(bad(format!(
                "{:?} is not a valid interface name",
                cfg.interface
            )));
        }
        Ok(Vip {
            cfg: cfg.clone(),
            ip,
            prefix,
            repeats: Mutex::new(None),
        })
    }

    /// The address without its prefix.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    fn failed(&self, operation: &'static str, reason: impl Into<String>) -> ResourceError {
        ResourceError::Failed {
            resource: self.describe(),
            operation,
            reason: reason.into(),
        }
    }

    /// Stops background announcements, if any.
    fn cancel_repeats(&self) {
        if let Ok(mut slot) = self.repeats.lock() {
            if let Some(task) = slot.take() {
                task.abort();
            }
        }
    }

    /// Sends the first announcement now and schedules the rest.
    fn announce(&self, operation: &'static str, link: &Link) -> Result<(), ResourceError> {
        self.cancel_repeats();
        if self.cfg.garp_count == 0 {
            return Ok(());
        }
        let Some(mac) = link.mac else {
            tracing::warn!(
                resource = %self.describe(),
                "{} has no Ethernet address; not announcing",
                self.cfg.interface
            );
            return Ok(());
        };
        let kind = if self.ip.is_ipv4() {
            "gratuitous ARP"
        } else {
            "neighbour advertisement"
        };
        let sender = Announcer::open(link.index, mac, self.ip).map_err(|e| {
            self.failed(
                operation,
                format!(
                    "cannot open a socket for {kind}s on {}: {e}",
                    self.cfg.interface
                ),
            )
        })?;
        sender.send().map_err(|e| {
            self.failed(
                operation,
                format!("cannot send {kind} on {}: {e}", self.cfg.interface),
            )
        })?;
        let rest = self.cfg.garp_count - 1;
        if rest > 0 {
            let interval = self.cfg.garp_interval_ms.duration();
            let who = self.describe();
            let task = tokio::spawn(async move {
                for _ in 0..rest {
                    tokio::time::sleep(interval).await;
                    if let Err(e) = sender.send() {
                        tracing::warn!(resource = %who, "cannot send {kind}: {e}");
                    }
                }
            });
            if let Ok(mut slot) = self.repeats.lock() {
                *slot = Some(task);
            }
        }
        Ok(())
    }

    async fn link(
        &self,
        handle: &rtnetlink::Handle,
        operation: &'static str,
    ) -> Result<Link, ResourceError> {
        let mut links = handle
            .link()
            .get()
            .match_name(self.cfg.interface.clone())
            .execute();
        let msg = match links.try_next().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(self.failed(
                    operation,
                    format!("interface {} not found", self.cfg.interface),
                ))
            }
            Err(e) if errno(&e) == Some(libc::ENODEV) => {
                return Err(self.failed(
                    operation,
                    format!("interface {} not found", self.cfg.interface),
                ))
            }
            Err(e) => {
                return Err(self.failed(
                    operation,
                    format!("cannot look up interface {}: {e}", self.cfg.interface),
                ))
            }
        };
        let mac = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(b) if b.len() == 6 => <[u8; 6]>::try_from(b.as_slice()).ok(),
            _ => None,
        });
        Ok(Link {
            index: msg.header.index,
            mac,
            up: msg.header.flags.contains(LinkFlags::Up),
            lower_up: msg.header.flags.contains(LinkFlags::LowerUp),
        })
    }

    /// Our address as the kernel has it on the interface, if it is there.
    async fn find(
        &self,
        handle: &rtnetlink::Handle,
        index: u32,
        operation: &'static str,
    ) -> Result<Option<AddressMessage>, ResourceError> {
        let mut addrs = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(self.ip)
            .execute();
        addrs.try_next().await.map_err(|e| {
            self.failed(
                operation,
                format!("cannot list addresses of {}: {e}", self.cfg.interface),
            )
        })
    }

    async fn add(
        &self,
        handle: &rtnetlink::Handle,
        index: u32,
        operation: &'static str,
    ) -> Result<(), ResourceError> {
        let mut req = handle.address().add(index, self.ip, self.prefix);
        if self.ip.is_ipv6() {
            let msg = req.message_mut();
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(self.failed(
                operation,
                format!(
                    "cannot add {} to {}: {e}",
                    self.cfg.address, self.cfg.interface
                ),
            )),
        }
    }

    /// Adds the address if missing; returns the link and whether it was added.
    async fn ensure(&self, operation: &'static str) -> Result<(Link, bool), ResourceError> {
        let (handle, conn) = connect(self, operation)?;
        let link = self.link(&handle, operation).await?;
        let present = self.find(&handle, link.index, operation).await?.is_some();
        if !present {
            self.add(&handle, link.index, operation).await?;
        }
        drop(handle);
        conn.abort();
        Ok((link, !present))
    }
}

/// Opens an rtnetlink connection in the calling thread's namespace and
/// drives it on the current tokio runtime.
fn connect(
    vip: &Vip,
    operation: &'static str,
) -> Result<(rtnetlink::Handle, AbortOnDrop), ResourceError> {
    let (conn, handle, _) = rtnetlink::new_connection()
        .map_err(|e| vip.failed(operation, format!("cannot open a netlink socket: {e}")))?;
    Ok((handle, AbortOnDrop(tokio::spawn(conn))))
}

/// Ends the netlink connection task with the operation that opened it.
struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    fn abort(&self) {
        self.0.abort();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The errno of a netlink error answer (`EEXIST`, `EADDRNOTAVAIL`, ...).
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

impl Resource for Vip {
    fn describe(&self) -> String {
        format!("vip {}", self.cfg.address)
    }

    fn start(&self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async move {
            let (link, added) = self.ensure("start").await?;
            if added {
                tracing::info!(resource = %self.describe(), "added to {}", self.cfg.interface);
            }
            // Announce even when it was already there: start means this node
            // is taking over, and caches elsewhere may point at the old owner.
            self.announce("start", &link)
        })
    }

    fn stop(&self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async move {
            // A node that let go must not keep announcing the address.
            self.cancel_repeats();
            let (handle, _conn) = connect(self, "stop")?;
            let link = match self.link(&handle, "stop").await {
                Ok(l) => l,
                // No interface, no address: stopped.
                Err(_) if !interface_exists(&handle, &self.cfg.interface).await => return Ok(()),
                Err(e) => return Err(e),
            };
            let Some(msg) = self.find(&handle, link.index, "stop").await? else {
                return Ok(());
            };
            match handle.address().del(msg).execute().await {
                Ok(()) => {
                    tracing::info!(resource = %self.describe(), "removed from {}", self.cfg.interface);
                    Ok(())
                }
                Err(e)
                    if matches!(
                        errno(&e),
                        Some(libc::EADDRNOTAVAIL) | Some(libc::ENOENT) | Some(libc::ENODEV)
                    ) =>
                {
                    Ok(())
                }
                Err(e) => Err(self.failed(
                    "stop",
                    format!(
                        "cannot remove {} from {}: {e}",
                        self.cfg.address, self.cfg.interface
                    ),
                )),
            }
        })
    }

    fn monitor(&self) -> BoxFuture<'_, Result<Health, ResourceError>> {
        Box::pin(async move {
            let (handle, _conn) = connect(self, "monitor")?;
            let link = match self.link(&handle, "monitor").await {
                Ok(l) => l,
                Err(ResourceError::Failed { reason, .. }) if reason.ends_with("not found") => {
                    return Ok(Health::Failed(reason))
                }
                Err(e) => return Err(e),
            };
            if !link.up {
                return Ok(Health::Failed(format!(
                    "interface {} is down",
                    self.cfg.interface
                )));
            }
            if !link.lower_up {
                return Ok(Health::Failed(format!(
                    "interface {} has no carrier",
                    self.cfg.interface
                )));
            }
            if self.find(&handle, link.index, "monitor").await?.is_some() {
                return Ok(Health::Running);
            }
            self.add(&handle, link.index, "monitor").await?;
            self.announce("monitor", &link)?;
            let what = format!(
                "{} had vanished from {}; re-added and announced",
                self.cfg.address, self.cfg.interface
            );
            tracing::warn!(resource = %self.describe(), "{what}");
            Ok(Health::Restored(what))
        })
    }

    fn monitor_interval(&self) -> Duration {
        self.cfg.monitor_interval_ms.duration()
    }

    /// Netlink is quick; the announcement repeats run after start returns.
    fn timeout(&self) -> Duration {
        VIP_TIMEOUT
    }

    fn link(&self) -> Option<String> {
        Some(self.cfg.interface.clone())
    }
}

impl Drop for Vip {
    fn drop(&mut self) {
        self.cancel_repeats();
    }
}

async fn interface_exists(handle: &rtnetlink::Handle, name: &str) -> bool {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    matches!(links.try_next().await, Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            parse_address("10.77.0.100/24"),
            Ok(("10.77.0.100".parse().expect("literal"), 24))
        );
        assert_eq!(
            parse_address("fd00::100/64"),
            Ok(("fd00::100".parse().expect("literal"), 64))
        );
        assert_eq!(
            parse_address("10.0.0.1"),
            Ok(("10.0.0.1".parse().expect("literal"), 32))
        );
        assert!(parse_address("10.0.0.1/33").is_err());
        assert!(parse_address("fd00::1/129").is_err());
        assert!(parse_address("nonsense/24").is_err());
        assert!(parse_address("224.0.0.1/32").is_err());
        assert!(parse_address("10.0.0.1/x").is_err());
    }
}
