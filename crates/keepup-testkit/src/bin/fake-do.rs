//! `fake-do`: the fake DigitalOcean API and metadata service as a program,
//! for the namespace lab's end-to-end tests. It runs inside a lab namespace
//! (`ip netns exec NS fake-do ...`), answers `/metadata/v1/id` with the
//! droplet id mapped to the requester's source address, and on an assign
//! really moves the reserved IP between the lab's namespaces with
//! `ip -n NEW addr add IP/PREFIX dev DEV`, then `ip -n OLD addr del ...`.
//! A droplet `power_off` (a fence) sets the droplet's link down in its
//! namespace, as cutting its power would. It sends nothing else anywhere.

use anyhow::{bail, Context, Result};
use clap::Parser;
use keepup_testkit::fake_do::{FakeDo, Options};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// A fake DigitalOcean API for keepup's namespace lab.
///
/// Serves GET /metadata/v1/id (droplet id chosen by the requester's source
/// address), GET /v2/reserved_ips/{ip}, POST /v2/reserved_ips/{ip}/actions
/// ({"type":"assign","droplet_id":N} or {"type":"unassign"}) and
/// GET /v2/actions/{id}. /v2 requests need "Authorization: Bearer TOKEN"
/// with the token from --token-file. An assign runs
/// `ip -n NS addr add IP/PREFIX dev DEV` for the new droplet's namespace,
/// then `ip -n OLD_NS addr del IP/PREFIX dev OLD_DEV` for the previous
/// holder, and only then answers; an unassign only changes the record.
/// GET /v2/droplets/{id} and POST /v2/droplets/{id}/actions
/// ({"type":"power_off"} or "power_on") serve the droplets given with
/// --droplet; a power_off runs `ip -n NS link set DEV down`.
/// Nothing is sent anywhere else.
///
/// Example, inside a lab namespace:
///   ip netns exec LAB-api fake-do --listen 10.77.0.250:8080
///     --token-file /tmp/token --reserved-ip 10.77.0.200
///     --droplet 10.77.0.1=1001:LAB-a:eth0 --droplet 10.77.0.2=1002:LAB-b:eth0
#[derive(Debug, Parser)]
#[command(name = "fake-do", version, verbatim_doc_comment)]
struct Cli {
    /// Address and port to listen on (e.g. 10.77.0.250:8080, or 127.0.0.1:0
    /// to pick a port; the bound address is printed on stdout as
    /// "listening on ADDR").
    #[arg(long)]
    listen: SocketAddr,

    /// File holding the API token that /v2 requests must present.
    #[arg(long)]
    token_file: PathBuf,

    /// A reserved IP of the account, optionally with its initial holder:
    /// IP or IP=DROPLET_ID. Repeatable. The initial placement is only
    /// recorded; put the address in the holder's namespace yourself.
    #[arg(long = "reserved-ip", value_name = "IP[=DROPLET_ID]", required = true)]
    reserved_ips: Vec<String>,

    /// A droplet: the source address its requests come from, its id, the
    /// namespace and interface that receive the reserved IP:
    /// SRC_IP=ID:NAMESPACE:DEV. Repeatable.
    #[arg(long = "droplet", value_name = "SRC_IP=ID:NS:DEV")]
    droplets: Vec<String>,

    /// Prefix length used when adding/removing the reserved IP.
    #[arg(long, default_value_t = 24)]
    prefix: u8,

    /// New actions answer "in-progress" this many times before "completed".
    #[arg(long, default_value_t = 1)]
    polls: u32,
}

#[derive(Debug, Clone)]
struct Droplet {
    id: u64,
    ns: String,
    dev: String,
}

fn parse_droplet(s: &str) -> Result<(IpAddr, Droplet)> {
    let (src, rest) = s.split_once('=').context("expected SRC_IP=ID:NS:DEV")?;
    let mut it = rest.splitn(3, ':');
    let (Some(id), Some(ns), Some(dev)) = (it.next(), it.next(), it.next()) else {
        bail!("{s:?}: expected SRC_IP=ID:NS:DEV");
    };
    let src: IpAddr = src
        .parse()
        .with_context(|| format!("{s:?}: bad source address"))?;
    let id: u64 = id
        .parse()
        .with_context(|| format!("{s:?}: bad droplet id"))?;
    if ns.is_empty() || dev.is_empty() {
        bail!("{s:?}: empty namespace or device");
    }
    Ok((
        src,
        Droplet {
            id,
            ns: ns.to_string(),
            dev: dev.to_string(),
        },
    ))
}

/// Runs `ip -n NS addr ACTION IP/PREFIX dev DEV`; "already there" on add
/// and "not there" on delete count as success.
fn ip_addr(action: &str, d: &Droplet, ip: &str, prefix: u8) -> Result<(), String> {
    let cidr = format!("{ip}/{prefix}");
    let out = std::process::Command::new("ip")
        .args(["-n", &d.ns, "addr", action, &cidr, "dev", &d.dev])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let benign = (action == "add" && err.contains("File exists"))
        || (action == "del" && err.contains("Cannot assign requested address"));
    if benign {
        Ok(())
    } else {
        Err(format!(
            "ip -n {} addr {action} {cidr} dev {}: {err}",
            d.ns, d.dev
        ))
    }
}

/// Stands in for the provider's network: on DigitalOcean the reserved IP is
/// routed to the new droplet by the provider, with no ARP from the droplet.
/// In the lab the hosts share a bridge, so the fake announces the move with
/// a gratuitous ARP from the new holder (iputils `arping -U`), or clients
/// would keep sending to the old holder's MAC.
fn announce(d: &Droplet, ip: &str) {
    if ip.contains(':') {
        return;
    }
    // In the background: arping waits for answers that never come to an
    // unsolicited ARP, and the move must not wait for it.
    let res = std::process::Command::new("ip")
        .args([
            "netns", "exec", &d.ns, "arping", "-q", "-U", "-c", "1", "-w", "1", "-I", &d.dev, ip,
        ])
        .stdin(std::process::Stdio::null())
        .spawn();
    if res.is_err() {
        eprintln!(
            "fake-do: could not announce {ip} from {} (is iputils-arping installed?)",
            d.ns
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let token = std::fs::read_to_string(&cli.token_file)
        .with_context(|| format!("cannot read {}", cli.token_file.display()))?
        .trim()
        .to_string();
    if token.is_empty() {
        bail!("{} is empty", cli.token_file.display());
    }
    let mut reserved = BTreeMap::new();
    for r in &cli.reserved_ips {
        let (ip, holder) = match r.split_once('=') {
            Some((ip, id)) => (
                ip,
                Some(
                    id.parse::<u64>()
                        .with_context(|| format!("{r:?}: bad droplet id"))?,
                ),
            ),
            None => (r.as_str(), None),
        };
        ip.parse::<IpAddr>()
            .with_context(|| format!("{r:?}: bad IP"))?;
        reserved.insert(ip.to_string(), holder);
    }
    let mut by_peer = HashMap::new();
    let mut by_id: HashMap<u64, Droplet> = HashMap::new();
    for d in &cli.droplets {
        let (src, droplet) = parse_droplet(d)?;
        by_peer.insert(src, droplet.id);
        by_id.insert(droplet.id, droplet);
    }
    let by_id = Arc::new(by_id);
    let prefix = cli.prefix;
    let hook_ids = Arc::clone(&by_id);
    let opts = Options {
        token,
        reserved_ips: reserved,
        droplets_by_peer: by_peer,
        default_droplet: None,
        droplets: by_id.keys().map(|id| (*id, "active".to_string())).collect(),
        on_power: None,
        on_assign: Some(Arc::new(move |ip: &str, from: Option<u64>, to: u64| {
            let new = hook_ids
                .get(&to)
                .ok_or_else(|| format!("unknown droplet {to}"))?;
            ip_addr("add", new, ip, prefix)?;
            if let Some(old) = from.filter(|f| *f != to).and_then(|f| hook_ids.get(&f)) {
                ip_addr("del", old, ip, prefix)?;
            }
            announce(new, ip);
            eprintln!(
                "fake-do: {ip} moved to droplet {to} ({}:{})",
                new.ns, new.dev
            );
            Ok(())
        })),
    };
    // A power-off cuts the droplet's network, as pulling its power would:
    // its link goes down in its namespace (power_on brings it back).
    let power_ids = Arc::clone(&by_id);
    let opts = Options {
        on_power: Some(Arc::new(move |id: u64, to: &str| {
            let d = power_ids
                .get(&id)
                .ok_or_else(|| format!("unknown droplet {id}"))?;
            let state = if to == "off" { "down" } else { "up" };
            let out = std::process::Command::new("ip")
                .args(["-n", &d.ns, "link", "set", &d.dev, state])
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| format!("cannot run ip: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "ip -n {} link set {} {state}: {}",
                    d.ns,
                    d.dev,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            eprintln!("fake-do: droplet {id} is {to} ({}:{} {state})", d.ns, d.dev);
            Ok(())
        })),
        ..opts
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let fake = FakeDo::serve(listener, opts)?;
    fake.set_polls_before_complete(cli.polls);
    println!("listening on {}", fake.addr());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for a signal")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_droplet_mapping() {
        let (src, d) = parse_droplet("10.77.0.1=1001:kuL1x0-a:eth0").expect("valid");
        assert_eq!(src, "10.77.0.1".parse::<IpAddr>().expect("literal"));
        assert_eq!(
            (d.id, d.ns.as_str(), d.dev.as_str()),
            (1001, "kuL1x0-a", "eth0")
        );
        for bad in [
            "10.77.0.1",
            "10.77.0.1=x:ns:eth0",
            "nope=1:ns:eth0",
            "10.77.0.1=1:ns",
            "10.77.0.1=1::eth0",
        ] {
            assert!(parse_droplet(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_parses() {
        let cli = Cli::try_parse_from([
            "fake-do",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            "/tmp/t",
            "--reserved-ip",
            "10.77.0.200=1001",
            "--droplet",
            "10.77.0.1=1001:a:eth0",
        ])
        .expect("parses");
        assert_eq!(cli.reserved_ips, ["10.77.0.200=1001"]);
        assert_eq!(cli.prefix, 24);
        assert!(Cli::try_parse_from(["fake-do", "--listen", "127.0.0.1:0"]).is_err());
    }
}
