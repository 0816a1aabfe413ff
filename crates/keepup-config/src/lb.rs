//! `[lb]`: the load balancer's schema (owned by the keepup-lb work).

use serde::Deserialize;

/// `[lb]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbSection {}
