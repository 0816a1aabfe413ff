//! The load balancer and the database plugged into the agent as extensions:
//! their status in `keepup status` and the dashboard, their metrics in
//! `/metrics`, and the control requests they own.

use keepup_agent::Extension;
use keepup_api::types::{ControlRequest, ControlResponse};
use keepup_api::BoxFuture;
use keepup_config::{Config, HostChecks};
use keepup_lb::{AdminState, LbHandle};
use std::path::PathBuf;
use std::sync::Arc;

/// The running load balancer.
pub struct LbExtension {
    /// The handle from `keepup_lb::start`.
    pub handle: Arc<LbHandle>,
    /// The config file, re-read on reload.
    pub config_path: PathBuf,
}

impl LbExtension {
    /// Re-reads keepup.toml and applies its `[lb]` section without dropping connections.
    pub async fn reload(&self) -> ControlResponse {
        let cfg = match Config::load(&self.config_path, HostChecks::FileOnly) {
            Ok(c) => c,
            Err(e) => {
                return ControlResponse {
                    ok: false,
                    message: format!("reload refused, the running config stays: {e}"),
                }
            }
        };
        let Some(section) = cfg.file.lb else {
            return ControlResponse {
                ok: false,
                message: "reload refused: the new config has no [lb] section (removing the load balancer needs a restart)".into(),
            };
        };
        match self.handle.reload(&section).await {
            Ok(()) => {
                tracing::info!("load balancer reloaded from {}", self.config_path.display());
                ControlResponse {
                    ok: true,
                    message: "reloaded [lb]; open connections kept (cluster settings apply at the next restart)".into(),
                }
            }
            Err(e) => ControlResponse {
                ok: false,
                message: format!("reload refused, the running config stays: {e}"),
            },
        }
    }
}

impl Extension for LbExtension {
    fn status(&self) -> (&'static str, serde_json::Value) {
        (
            "lb",
            serde_json::to_value(self.handle.status()).unwrap_or_default(),
        )
    }

    fn metrics(&self, out: &mut String) {
        keepup_lb::prometheus(&self.handle.status(), out);
    }

    fn control(&self, req: &ControlRequest) -> Option<BoxFuture<'_, ControlResponse>> {
        match req {
            ControlRequest::LbBackend {
                pool,
                backend,
                state,
            } => {
                let state = match state.as_str() {
                    "enabled" | "enable" => AdminState::Enabled,
                    "drain" => AdminState::Drain,
                    "maintenance" => AdminState::Maintenance,
                    other => {
                        let message = format!(
                            "unknown backend state {other:?}: use enabled, drain or maintenance"
                        );
                        return Some(Box::pin(
                            async move { ControlResponse { ok: false, message } },
                        ));
                    }
                };
                let r = self.handle.set_backend_state(pool, backend, state);
                let resp = match r {
                    Ok(()) => ControlResponse {
                        ok: true,
                        message: format!("{pool}/{backend} is now {state:?}").to_lowercase(),
                    },
                    Err(e) => ControlResponse {
                        ok: false,
                        message: e.to_string(),
                    },
                };
                Some(Box::pin(async move { resp }))
            }
            ControlRequest::Reload => Some(Box::pin(self.reload())),
            _ => None,
        }
    }
}
