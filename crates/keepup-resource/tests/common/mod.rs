//! Running resource code inside a lab namespace.
//!
//! Network namespaces belong to threads, not processes, on Linux: one
//! thread may `setns(CLONE_NEWNET)` while the rest of the test process stays
//! in the root namespace. [`NsThread`] is a dedicated OS thread that enters
//! the namespace first, then runs a current-thread tokio runtime that
//! executes jobs sent to it, one after the other. Every socket the resource
//! opens (rtnetlink, the raw ARP/NA sockets, reqwest's TCP connections) is
//! opened on that thread and therefore lives in that namespace, and tasks
//! the resource spawns (the repeated gratuitous ARPs, the netlink
//! connection) run on that same runtime between jobs.
//!
//! This is more robust than spawning a helper binary through
//! `ip netns exec` (no extra build target, no serialising resources across
//! a process boundary), and the production agent needs none of it: it runs
//! entirely inside its namespace.

#![allow(dead_code)]

use anyhow::{Context, Result};
use std::future::Future;
use std::pin::Pin;

type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A thread living in one network namespace and running async jobs there.
pub struct NsThread {
    tx: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    name: String,
}

/// Moves the calling thread into the network namespace `ns`
/// (`/run/netns/NS`, as made by `ip netns add`).
#[allow(unsafe_code)]
fn enter(ns: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("cannot open namespace {ns}"))?;
    // SAFETY: setns(2) takes a file descriptor we keep open across the call
    // and a flag; it only changes this thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("setns into {ns}"));
    }
    Ok(())
}

impl NsThread {
    /// Starts the thread and enters namespace `ns`.
    pub fn enter(ns: &str) -> Result<NsThread> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let name = ns.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("ns-{ns}"))
            .spawn(move || {
                let setup = enter(&name).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("cannot build runtime")
                });
                let rt = match setup {
                    Ok(rt) => {
                        let _ = ready_tx.send(Ok(()));
                        rt
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    while let Some(job) = rx.recv().await {
                        job().await;
                    }
                });
            })
            .context("cannot spawn namespace thread")?;
        ready_rx
            .recv()
            .context("namespace thread died during setup")??;
        Ok(NsThread {
            tx: Some(tx),
            thread: Some(thread),
            name: ns.to_string(),
        })
    }

    /// Runs `f()` to completion on the namespace thread and returns its
    /// output.
    pub fn run<T, F, Fut>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let (otx, orx) = std::sync::mpsc::channel::<T>();
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let _ = otx.send(f().await);
            })
        });
        let sent = self
            .tx
            .as_ref()
            .map(|tx| tx.send(job).is_ok())
            .unwrap_or(false);
        assert!(sent, "namespace thread {} is gone", self.name);
        match orx.recv() {
            Ok(v) => v,
            Err(_) => panic!("job on namespace thread {} panicked", self.name),
        }
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes.
pub fn eventually(timeout: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The MAC address of `dev` in namespace `ns`.
pub fn mac_of(ns: &str, dev: &str) -> Result<String> {
    let out = keepup_testkit::lab::sh("ip", &["-n", ns, "-br", "link", "show", "dev", dev])?;
    out.split_whitespace()
        .nth(2)
        .map(|s| s.to_string())
        .with_context(|| format!("no MAC in {out:?}"))
}

/// The link-layer address of `ip` in `ns`'s neighbour table, if any.
pub fn neigh_mac(ns: &str, ip: &str) -> Option<String> {
    let out = keepup_testkit::lab::sh("ip", &["-n", ns, "neigh", "show", ip]).ok()?;
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "lladdr" {
            return words.next().map(|s| s.to_string());
        }
    }
    None
}
