//! Resources: the things that move with the active node. Each kind sits
//! behind the one [`Resource`] trait so the agent starts a group in order,
//! stops it in reverse and monitors it without knowing what it is.
//!
//! Every operation is idempotent (starting a running resource succeeds and
//! changes nothing; stopping a stopped one too), because after a crash or a
//! lost message the agent re-issues operations rather than guessing state.
//! Timeouts are enforced by the caller with [`Resource::timeout`].
//!
//! The kinds:
//! - [`vip::Vip`]: a LAN virtual IP added through netlink and announced with
//!   gratuitous ARP / unsolicited neighbour advertisements ([`announce`]).
//! - [`digitalocean::ReservedIp`]: a DigitalOcean reserved IP assigned to
//!   this droplet through the provider's API.
//! - [`exec::Exec`]: operator scripts (Heartbeat resource scripts,
//!   keepalived notify scripts).
//!
//! Operations run inside a tokio runtime with I/O and time enabled: they
//! spawn tasks (the netlink connection, the repeated announcements, the
//! drain of a script's stderr) on the current runtime.
//!
//! Nothing here knows about network namespaces: every socket is opened in
//! the namespace of the calling thread. The agent runs whole inside its
//! namespace (`ip netns exec`), and the lab tests enter one per thread.
//!
//! `unsafe` is denied workspace-wide; this crate allows it only inside the
//! few functions that call libc for raw sockets and process groups, each
//! with a SAFETY comment.

pub mod announce;
pub mod digitalocean;
pub mod exec;
pub mod vip;

use keepup_config::ResourceConfig;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so resources can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who is acting: passed to scripts and used in logs.
#[derive(Debug, Clone)]
pub struct Context {
    /// Cluster name.
    pub cluster: String,
    /// This node's name.
    pub node: String,
    /// The group the resource belongs to.
    pub group: String,
    /// The fencing epoch of the current acquisition, set by the agent before
    /// each start (exec scripts see it as `KEEPUP_EPOCH`).
    pub epoch: Epoch,
}

/// A shared cell holding a group's current fencing epoch (0: never acquired)
/// and how long this node may still act under it.
///
/// The agent's heartbeat thread keeps the grant up to date: it runs until
/// the moment the core itself would stop the group (lease end minus the
/// stop bound), and is revoked the moment a stop begins. A resource checks
/// [`Epoch::is_current`] right before it changes the outside world on its
/// own initiative (a monitor re-assigning a cloud IP, say), so a node
/// resumed after a long pause, or one whose lease has run out, cannot undo
/// the next holder's work while its stop is still on the way. The grant is
/// measured on CLOCK_MONOTONIC, which keeps running while a process is
/// stopped.
#[derive(Debug, Clone, Default)]
pub struct Epoch(std::sync::Arc<EpochCell>);

#[derive(Debug, Default)]
struct EpochCell {
    epoch: std::sync::atomic::AtomicU64,
    /// Nanoseconds after [`base`] until which this node may act; 0 revoked,
    /// `u64::MAX` unbounded (unguarded ownership has no lease).
    until: std::sync::atomic::AtomicU64,
}

/// The process-wide origin for grants (any fixed monotonic instant).
fn base() -> std::time::Instant {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(std::time::Instant::now)
}

impl Epoch {
    /// The current epoch.
    pub fn get(&self) -> u64 {
        self.0.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Sets it (the agent, before starting a group).
    pub fn set(&self, epoch: u64) {
        self.0
            .epoch
            .store(epoch, std::sync::atomic::Ordering::SeqCst)
    }
    /// This node may act for the group until `until` (`None`: with no end,
    /// for ownership without leases).
    pub fn grant(&self, until: Option<std::time::Instant>) {
        let nanos = match until {
            None => u64::MAX,
            Some(t) => (t.saturating_duration_since(base()).as_nanos() as u64).max(1),
        };
        self.0
            .until
            .store(nanos, std::sync::atomic::Ordering::SeqCst)
    }
    /// This node may no longer act for the group.
    pub fn revoke(&self) {
        self.0.until.store(0, std::sync::atomic::Ordering::SeqCst)
    }
    /// Whether this node still holds the group's lease with time to act.
    pub fn is_current(&self) -> bool {
        let until = self.0.until.load(std::sync::atomic::Ordering::SeqCst);
        until == u64::MAX || (base().elapsed().as_nanos() as u64) < until
    }
}

/// What a monitor found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Running as it should.
    Running,
    /// It had vanished and the monitor put it back (what was done, for the log).
    Restored(String),
    /// Not running and cannot be restored by the monitor: the group must fail over.
    Failed(String),
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The resource's configuration cannot work on this host.
    #[error("{resource}: bad configuration: {reason}")]
    Config {
        /// Resource description.
        resource: String,
        /// What is wrong.
        reason: String,
    },
    /// The operation ran and failed.
    #[error("{resource}: {operation} failed: {reason}")]
    Failed {
        /// Resource description.
        resource: String,
        /// start, stop or monitor.
        operation: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The operation took longer than its limit.
    #[error("{resource}: {operation} timed out after {after:?}")]
    Timeout {
        /// Resource description.
        resource: String,
        /// start, stop or monitor.
        operation: &'static str,
        /// The limit.
        after: Duration,
    },
}

/// Something that can be started on one node and stopped, and watched.
pub trait Resource: Send + Sync {
    /// Short description for logs and status (`vip 10.77.0.100/24`).
    fn describe(&self) -> String;
    /// Makes the resource active on this node. Idempotent.
    fn start(&self) -> BoxFuture<'_, Result<(), ResourceError>>;
    /// Makes it inactive on this node. Idempotent.
    fn stop(&self) -> BoxFuture<'_, Result<(), ResourceError>>;
    /// Checks it while this node owns it, repairing what it can.
    fn monitor(&self) -> BoxFuture<'_, Result<Health, ResourceError>>;
    /// How often the agent calls [`Resource::monitor`].
    fn monitor_interval(&self) -> Duration;
    /// Upper bound for one start, stop or monitor call.
    fn timeout(&self) -> Duration;
    /// The network interface the resource lives on, if any: a failure while
    /// it has no carrier is this node's link fault, not the resource's.
    fn link(&self) -> Option<String> {
        None
    }
}

/// Builds the resource described by `cfg`.
///
/// Checks what can be checked without touching the system (address syntax,
/// URLs, names); problems of the host itself (a missing interface, an
/// unreadable token file) surface on the first start or monitor, where the
/// error names the resource.
pub fn build(cfg: &ResourceConfig, ctx: &Context) -> Result<Box<dyn Resource>, ResourceError> {
    Ok(match cfg {
        ResourceConfig::Vip(v) => Box::new(vip::Vip::new(v)?),
        ResourceConfig::Digitalocean(d) => {
            Box::new(digitalocean::ReservedIp::new(d)?.with_epoch(ctx.epoch.clone()))
        }
        ResourceConfig::Exec(e) => Box::new(exec::Exec::new(e, ctx)?),
        ResourceConfig::DbPrimary(_) => {
            // Built by the agent's resource factory (the binary plugs in
            // keepup-db); this crate stays free of the database driver.
            return Err(ResourceError::Config {
                resource: cfg.describe(),
                reason: "db-primary resources are built by the agent's database extension".into(),
            });
        }
    })
}

/// Runs `op` on `res` with its timeout, mapping expiry to [`ResourceError::Timeout`].
pub async fn with_timeout<T>(
    res: &dyn Resource,
    operation: &'static str,
    fut: BoxFuture<'_, Result<T, ResourceError>>,
) -> Result<T, ResourceError> {
    let after = res.timeout();
    match tokio::time::timeout(after, fut).await {
        Ok(r) => r,
        Err(_) => Err(ResourceError::Timeout {
            resource: res.describe(),
            operation,
            after,
        }),
    }
}
