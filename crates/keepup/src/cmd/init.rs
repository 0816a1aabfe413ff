//! `keepup init`: the first files of a new cluster, from a few flags — the
//! shared key (32 random bytes, mode 0600) and a starting keepup.toml that
//! already passes `keepup check-config`. It never overwrites anything.
//!
//! The API tokens are derived from the key (see `keepup api-token`), so the
//! key and keepup.toml are the only two files to copy to the other nodes.

use anyhow::Context;
use clap::Args;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `keepup init`.
#[derive(Debug, Args)]
#[command(
    long_about = "Writes the first files of a new cluster into --dir: the shared \
key (32 random bytes, mode 0600) and a keepup.toml for these nodes that passes \
`keepup check-config`. Refuses to overwrite either file. Copy both to every node \
(the same files everywhere), then `systemctl enable --now keepup` on each.\n\n\
Example, two load balancers with a floating IP and the backup server as witness:\n  \
keepup init --cluster shop --host lb-1=10.0.0.1 --host lb-2=10.0.0.2 \\\n    \
--witness backup=10.0.0.9 --vip 10.0.0.100/24 --interface eth0 \\\n    \
--backend web-1=10.0.0.11:80 --backend web-2=10.0.0.12:80"
)]
pub struct InitArgs {
    /// Directory to write into.
    #[arg(long, default_value = "/etc/keepup")]
    pub dir: PathBuf,
    /// Cluster name (packets from another cluster are dropped).
    #[arg(long, default_value = "site")]
    pub cluster: String,
    /// A node that can hold the site, as NAME=ADDRESS (repeat; the first gets
    /// the highest priority).
    /// Default: this host, with its first non-loopback IPv4 address.
    #[arg(long = "host", value_name = "NAME=ADDRESS")]
    pub nodes: Vec<String>,
    /// A witness: votes, never holds the site (the backup server or a small VM).
    #[arg(long = "witness", value_name = "NAME=ADDRESS")]
    pub witnesses: Vec<String>,
    /// The floating IP with its prefix, e.g. 10.0.0.100/24.
    #[arg(long)]
    pub vip: Option<String>,
    /// Interface the floating IP goes on.
    #[arg(long, default_value = "eth0")]
    pub interface: String,
    /// A web server for the load balancer, as NAME=IP:PORT (repeat); needs --vip.
    #[arg(long = "backend", value_name = "NAME=IP:PORT")]
    pub backends: Vec<String>,
}

fn split_pair<'a>(flag: &str, s: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    s.split_once('=')
        .filter(|(n, a)| !n.is_empty() && !a.is_empty())
        .with_context(|| format!("--{flag} {s:?}: write NAME=ADDRESS, e.g. --{flag} lb-1=10.0.0.1"))
}

/// The keepup.toml text for these arguments (checked before it is written).
pub fn render(args: &InitArgs, key_file: &Path) -> anyhow::Result<String> {
    let mut nodes: Vec<(String, String)> = Vec::new();
    for n in &args.nodes {
        let (name, addr) = split_pair("host", n)?;
        nodes.push((name.to_string(), addr.to_string()));
    }
    if nodes.is_empty() {
        let addr = keepup_config::host_addresses()
            .into_iter()
            .find(|a| a.is_ipv4() && !a.is_loopback())
            .context("this host has no IPv4 address besides loopback: pass --host NAME=ADDRESS")?;
        nodes.push((keepup_config::hostname(), addr.to_string()));
    }
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Written by `keepup init`. The same file goes on every node;\n# `keepup config --example` documents every key.\n"
    );
    let _ = writeln!(
        t,
        "[cluster]\nname = {:?}\nkey_file = {:?}\n",
        args.cluster,
        key_file.display().to_string()
    );
    let _ = writeln!(
        t,
        "[api]\nlisten = \"0.0.0.0:7947\"   # `keepup status --all` asks every node here\n"
    );
    let count = nodes.len();
    for (i, (name, addr)) in nodes.iter().enumerate() {
        let _ = writeln!(
            t,
            "[[node]]\nname = {name:?}\naddresses = [{addr:?}]\npriority = {}\n",
            100 * (count - i)
        );
    }
    for w in &args.witnesses {
        let (name, addr) = split_pair("witness", w)?;
        let _ = writeln!(
            t,
            "[[node]]\nname = {name:?}\naddresses = [{addr:?}]\nrole = \"witness\"\n"
        );
    }
    match &args.vip {
        Some(vip) => {
            let _ = writeln!(
                t,
                "[[group]]\nname = \"site\"\n\n[[group.resource]]\ntype = \"vip\"\naddress = {vip:?}\ninterface = {:?}\n",
                args.interface
            );
        }
        None => {
            anyhow::ensure!(
                args.backends.is_empty(),
                "--backend needs --vip: the load balancer listens on the floating IP"
            );
            let _ = writeln!(
                t,
                "[[group]]\nname = \"site\"\n\n# What moves with the site; add a floating IP:\n# [[group.resource]]\n# type = \"vip\"\n# address = \"10.0.0.100/24\"\n# interface = \"eth0\"\n[[group.resource]]\ntype = \"exec\"\nname = \"placeholder\"\nstart = \"true\"\nstop = \"true\"\n"
            );
        }
    }
    if !args.backends.is_empty() {
        let ip = args
            .vip
            .as_deref()
            .and_then(|v| v.split('/').next())
            .unwrap_or_default();
        let bind = if ip.contains(':') {
            format!("[{ip}]:80")
        } else {
            format!("{ip}:80")
        };
        let _ = writeln!(
            t,
            "[lb]\n[[lb.frontend]]\nname = \"www\"\nbind = {bind:?}\npool = \"web\"\n\n[[lb.pool]]\nname = \"web\"\n[lb.pool.health]\ntype = \"http\"\npath = \"/\"\n"
        );
        for b in &args.backends {
            let (name, addr) = split_pair("backend", b)?;
            let _ = writeln!(
                t,
                "[[lb.pool.backend]]\nname = {name:?}\naddress = {addr:?}\n"
            );
        }
    }
    Ok(t)
}

/// `keepup init`.
pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let config = args.dir.join("keepup.toml");
    let key = args.dir.join("key");
    let existing: Vec<String> = [&config, &key]
        .iter()
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        anyhow::bail!(
            "{} already exist{}: keepup init never overwrites; move {} away first",
            existing.join(" and "),
            if existing.len() == 1 { "s" } else { "" },
            if existing.len() == 1 { "it" } else { "them" }
        );
    }
    let text = render(&args, &key)?;
    // The file must pass the same checks `keepup run` makes (but the key
    // does not exist yet, and this host need not be one of the nodes).
    keepup_config::Config::parse(&config, &text, keepup_config::HostChecks::FileOnly)
        .map_err(|e| anyhow::anyhow!("the flags give an invalid config:\n{e}"))?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("no random bytes from the kernel: {e}"))?;
    write_new(&key, &secret, 0o600)?;
    write_new(&config, text.as_bytes(), 0o640)?;
    give_to_service_user(&[&key, &config]);
    println!(
        "wrote {} (mode 0600) and {}\nnext: keepup -c {} check-config; copy both files to every node; then systemctl enable --now keepup",
        key.display(),
        config.display(),
        config.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` with `mode`, failing if it exists (no race with another writer).
fn write_new(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(())
}

/// The Debian package runs the agent as the `keepup` system user: make it
/// the owner when it exists (root keeps reading the files either way).
fn give_to_service_user(paths: &[&Path]) {
    let Some((uid, gid)) = service_user() else {
        return;
    };
    for p in paths {
        if let Err(e) = std::os::unix::fs::chown(p, Some(uid), Some(gid)) {
            eprintln!("note: cannot give {} to user keepup: {e}", p.display());
        }
    }
}

fn service_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        if f.next()? != "keepup" {
            return None;
        }
        let _password = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> InitArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: InitArgs,
        }
        let mut v = vec!["t"];
        v.extend_from_slice(extra);
        T::parse_from(v).a
    }

    #[test]
    fn the_written_config_passes_check_config() {
        let a = args(&[
            "--host",
            "lb-1=10.0.0.1",
            "--host",
            "lb-2=10.0.0.2",
            "--witness",
            "backup=10.0.0.9",
            "--vip",
            "10.0.0.100/24",
            "--backend",
            "web-1=10.0.0.11:80",
            "--backend",
            "web-2=10.0.0.12:80",
        ]);
        let text = render(&a, Path::new("/etc/keepup/key")).expect("renders");
        let c = keepup_config::Config::parse(
            Path::new("keepup.toml"),
            &text,
            keepup_config::HostChecks::FileOnly,
        )
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(c.file.node.len(), 3);
        assert!(c.file.node[2].is_witness());
        assert_eq!(c.file.lb.as_ref().map(|l| l.pool[0].backend.len()), Some(2));
        assert!(text.contains("priority = 200"));
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let e = render(&args(&["--host", "lb-1"]), Path::new("/k"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--host \"lb-1\": write NAME=ADDRESS"), "{e}");
        let e = render(
            &args(&["--host", "a=10.0.0.1", "--backend", "w=10.0.0.2:80"]),
            Path::new("/k"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--backend needs --vip"), "{e}");
    }
}
