//! `[database]`: MariaDB replication's schema (owned by the keepup-db work).

use serde::Deserialize;

/// `[database]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {}
