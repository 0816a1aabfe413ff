//! `type = "exec"`: operator scripts, in the spirit of Heartbeat's resource
//! scripts and keepalived's notify scripts.
//!
//! Each command runs as `/bin/sh -c COMMAND` in a process group of its own,
//! with stdin and stdout on `/dev/null` and stderr captured. The environment
//! carries `KEEPUP_CLUSTER`, `KEEPUP_NODE`, `KEEPUP_GROUP`, `KEEPUP_EPOCH` (the
//! fencing token of this acquisition), `KEEPUP_RESOURCE`
//! and `KEEPUP_TRANSITION` (`start`, `stop` or `status`) on top of the
//! agent's own environment and the configured `env` (the `KEEPUP_*`
//! variables win over a configured variable of the same name).
//!
//! On timeout the whole process group is killed with SIGKILL, so a script's
//! children (`sleep`, `curl`, a hung `systemctl`) die with it. A command that
//! exits in time keeps its background children: a start script may launch a
//! daemon with `&`. Their stderr is still drained and logged, so a daemon
//! writing to the inherited pipe never gets SIGPIPE.
//!
//! Idempotency is the script's job, as with Heartbeat's LSB scripts: `start`
//! on a running service and `stop` on a stopped one must exit 0.

use crate::{BoxFuture, Context, Health, Resource, ResourceError};
use keepup_config::ExecResource;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// How much of a command's stderr is kept for the error message.
const STDERR_TAIL: usize = 2048;
/// After the shell exited, how long to wait for the rest of its stderr
/// (a background child may hold the pipe open forever).
const STDERR_GRACE: Duration = Duration::from_millis(100);

/// Operator scripts run on start, stop and monitor.
#[derive(Debug)]
pub struct Exec {
    cfg: ExecResource,
    ctx: Context,
}

/// How one command ended (when it ended in time).
#[derive(Debug)]
struct Outcome {
    /// Exit code, or `None` when a signal ended it.
    code: Option<i32>,
    /// Signal number when a signal ended it.
    signal: Option<i32>,
    /// The last bytes of its stderr, trimmed.
    stderr: String,
}

impl Outcome {
    fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// "exit status 3; stderr: ..." for error messages.
    fn explain(&self) -> String {
        let how = match (self.code, self.signal) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            (None, None) => "ended without a status".to_string(),
        };
        if self.stderr.is_empty() {
            format!("{how} (no stderr)")
        } else {
            format!("{how}; stderr: {}", self.stderr)
        }
    }
}

impl Exec {
    /// Checks the configuration (non-empty name and commands, a timeout).
    pub fn new(cfg: &ExecResource, ctx: &Context) -> Result<Exec, ResourceError> {
        let bad = |reason: &str| ResourceError::Config {
            resource: format!("exec {}", cfg.name),
            reason: reason.to_string(),
        };
        if cfg.name.trim().is_empty() {
            return Err(bad("name is empty"));
        }
        if cfg.start.trim().is_empty() {
            return Err(bad("start command is empty"));
        }
        if cfg.stop.trim().is_empty() {
            return Err(bad("stop command is empty"));
        }
        if cfg.status.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err(bad(
                "status command is empty (leave it out to disable monitoring)",
            ));
        }
        if cfg.timeout_ms.ms() == 0 {
            return Err(bad("timeout_ms must be greater than 0"));
        }
        if let Some(k) = cfg
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err(bad(&format!("invalid environment variable name {k:?}")));
        }
        Ok(Exec {
            cfg: cfg.clone(),
            ctx: ctx.clone(),
        })
    }

    fn per_command(&self) -> Duration {
        self.cfg.timeout_ms.duration()
    }

    fn failed(&self, operation: &'static str, reason: String) -> ResourceError {
        ResourceError::Failed {
            resource: self.describe(),
            operation,
            reason,
        }
    }

    /// Runs `command` for `transition` with the per-command timeout.
    async fn run(
        &self,
        operation: &'static str,
        transition: &'static str,
        command: &str,
    ) -> Result<Outcome, ResourceError> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .envs(&self.cfg.env)
            .env("KEEPUP_CLUSTER", &self.ctx.cluster)
            .env("KEEPUP_NODE", &self.ctx.node)
            .env("KEEPUP_GROUP", &self.ctx.group)
            .env("KEEPUP_EPOCH", self.ctx.epoch.get().to_string())
            .env("KEEPUP_RESOURCE", &self.cfg.name)
            .env("KEEPUP_TRANSITION", transition)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout can kill the script's
            // children too, and a Ctrl-C on the agent's terminal does not
            // reach the scripts.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| self.failed(operation, format!("cannot run /bin/sh: {e}")))?;
        let pgid = child.id().and_then(|p| i32::try_from(p).ok());
        // If this future is dropped (the caller's own timeout), the group
        // must not outlive it.
        let mut guard = GroupGuard { pgid };

        let tail = Arc::new(Mutex::new(Vec::<u8>::new()));
        let reader = child.stderr.take().map(|mut stderr| {
            let tail = Arc::clone(&tail);
            let who = self.describe();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match stderr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            tracing::debug!(resource = %who, "stderr: {}", String::from_utf8_lossy(&buf[..n]).trim_end());
                            if let Ok(mut t) = tail.lock() {
                                t.extend_from_slice(&buf[..n]);
                                if t.len() > STDERR_TAIL {
                                    let cut = t.len() - STDERR_TAIL;
                                    t.drain(..cut);
                                }
                            }
                        }
                    }
                }
            })
        });

        let limit = self.per_command();
        let status = match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(status)) => {
                // The shell is reaped; its background children stay alive.
                guard.pgid = None;
                status
            }
            Ok(Err(e)) => {
                return Err(self.failed(operation, format!("cannot wait for the command: {e}")));
            }
            Err(_) => {
                guard.kill();
                let _ = child.wait().await;
                if let Some(r) = reader {
                    let _ = tokio::time::timeout(STDERR_GRACE, r).await;
                }
                let stderr = snapshot(&tail);
                tracing::warn!(
                    resource = %self.describe(),
                    transition,
                    "command timed out after {limit:?}; process group killed; stderr: {stderr}"
                );
                return Err(ResourceError::Timeout {
                    resource: self.describe(),
                    operation,
                    after: limit,
                });
            }
        };
        if let Some(r) = reader {
            // Usually EOF comes with the exit; a daemon started with `&` may
            // keep the pipe, and then the reader goes on draining it.
            let _ = tokio::time::timeout(STDERR_GRACE, r).await;
        }
        use std::os::unix::process::ExitStatusExt;
        Ok(Outcome {
            code: status.code(),
            signal: status.signal(),
            stderr: snapshot(&tail),
        })
    }

    /// Runs a start or stop command and turns a non-zero exit into an error.
    async fn transition(
        &self,
        operation: &'static str,
        command: &str,
    ) -> Result<(), ResourceError> {
        let out = self.run(operation, operation, command).await?;
        if out.success() {
            Ok(())
        } else {
            Err(self.failed(
                operation,
                format!("{operation} command failed: {}", out.explain()),
            ))
        }
    }
}

/// The last bytes of stderr as one trimmed line-ish string.
fn snapshot(tail: &Mutex<Vec<u8>>) -> String {
    let bytes = tail.lock().map(|t| t.clone()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// Kills a process group when dropped, unless disarmed (`pgid = None`).
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            kill_group(pgid);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends SIGKILL to every process of group `pgid`.
#[allow(unsafe_code)]
fn kill_group(pgid: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    // A negative pid addresses the process group; `pgid` is the id of a
    // child we spawned with `process_group(0)` and have not reaped, so the
    // group still exists and belongs to that child.
    let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if rc != 0 {
        tracing::debug!(
            "kill(-{pgid}, SIGKILL): {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Resource for Exec {
    fn describe(&self) -> String {
        format!("exec {}", self.cfg.name)
    }

    fn start(&self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(self.transition("start", &self.cfg.start))
    }

    fn stop(&self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(self.transition("stop", &self.cfg.stop))
    }

    /// Runs `status` (when configured). If it fails, runs `start` once and
    /// `status` again: a service that comes back is `Restored`, one that
    /// does not is `Failed` and the group moves. Without a `status` command
    /// there is nothing to watch: always `Running`.
    fn monitor(&self) -> BoxFuture<'_, Result<Health, ResourceError>> {
        Box::pin(async move {
            let Some(status) = self.cfg.status.as_deref() else {
                return Ok(Health::Running);
            };
            let first = self.run("monitor", "status", status).await?;
            if first.success() {
                return Ok(Health::Running);
            }
            let why = format!("status command failed: {}", first.explain());
            tracing::warn!(resource = %self.describe(), "{why}; running start");
            let started = self.run("monitor", "start", &self.cfg.start).await?;
            if !started.success() {
                return Ok(Health::Failed(format!(
                    "{why}; start command failed: {}",
                    started.explain()
                )));
            }
            let again = self.run("monitor", "status", status).await?;
            if again.success() {
                Ok(Health::Restored(format!(
                    "{why}; ran start, status is ok again"
                )))
            } else {
                Ok(Health::Failed(format!(
                    "{why}; ran start, status still failing: {}",
                    again.explain()
                )))
            }
        })
    }

    fn monitor_interval(&self) -> Duration {
        self.cfg.monitor_interval_ms.duration()
    }

    /// One command's limit plus a second of grace, times three because a
    /// monitor may run status, start and status again. Each command has its
    /// own limit, enforced here with a process-group kill.
    fn timeout(&self) -> Duration {
        (self.per_command() + Duration::from_secs(1)) * 3
    }
}
