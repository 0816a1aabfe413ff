//! keepup.toml: the one config file, identical on every node.
//!
//! The pipeline is `keepup.toml -> File* (serde, deny_unknown_fields, Spanned)
//! -> validate -> Config`. Raw structs mirror the file exactly; validation
//! checks what serde cannot (duplicate names, key-file permissions, addresses
//! that are not on this host) and reports `path:line: message`.
//!
//! This crate owns the schema and nothing else: it never opens sockets or
//! starts anything. The commented template printed by `keepup config
//! --example` lives in `example.toml` next to this file and is parsed by a
//! test, so the documentation cannot drift from the schema.

#![forbid(unsafe_code)]

mod database;
mod error;
mod lb;
pub mod locate;
mod model;
mod validate;

pub use database::*;
pub use error::{ConfigError, ConfigErrors};
pub use lb::*;
pub use model::*;
pub use validate::{consensus_id, host_addresses, line_of, parse_cidr};

use std::path::{Path, PathBuf};

/// The commented example configuration (`keepup config --example`).
pub const EXAMPLE: &str = include_str!("example.toml");

/// A loaded, validated configuration plus where it came from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Path the configuration was read from (for error messages and reloads).
    pub path: PathBuf,
    /// The validated file contents.
    pub file: FileConfig,
    /// The raw text, kept to point later errors at lines.
    pub text: String,
}

/// What validation checks against the host it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostChecks {
    /// Check the key file exists with mode 0600 and that this node's link
    /// addresses are configured on some interface (`keepup run`, `check-config`).
    Full,
    /// Only check what the file says (syntax, names, references); for `status`
    /// and tests that read a config meant for another host.
    FileOnly,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path, checks: HostChecks) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::single(ConfigError::new(
                path,
                None,
                format!(
                    "cannot read the config file: {}",
                    validate::plain_io(&e).to_lowercase()
                ),
            ))
        })?;
        Self::parse(path, &text, checks)
    }

    /// Parses and validates `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str, checks: HostChecks) -> Result<Config, ConfigErrors> {
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            ConfigErrors::single(ConfigError::new(path, line, plain_serde(e.message())))
        })?;
        validate::validate(path, text, &file, checks)?;
        Ok(Config {
            path: path.to_path_buf(),
            file,
            text: text.to_string(),
        })
    }

    /// An error at the line of the value `at` leads to (for checks made
    /// outside this crate, e.g. the load balancer's TLS files).
    pub fn error_at(
        &self,
        at: impl AsRef<[locate::Step]>,
        message: impl Into<String>,
    ) -> ConfigError {
        let line = locate::offset_of(&self.text, at.as_ref()).map(|o| line_of(&self.text, o));
        ConfigError::new(&self.path, line, message)
    }

    /// Checks that every heartbeat address of `node` is configured on this host.
    pub fn check_local_addresses(&self, node: &NodeConfig) -> Result<(), ConfigErrors> {
        validate::check_node_addresses(&self.path, &self.text, node)
    }

    /// Names of all nodes, in file order.
    pub fn node_names(&self) -> Vec<String> {
        self.file
            .node
            .iter()
            .map(|n| n.name.get_ref().clone())
            .collect()
    }

    /// The node named `name`, if configured.
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.file.node.iter().find(|n| n.name.get_ref() == name)
    }

    /// Picks this host's node: `explicit` if given, else the host name.
    pub fn local_node(&self, explicit: Option<&str>) -> Result<&NodeConfig, ConfigError> {
        let name = match explicit {
            Some(n) => n.to_string(),
            None => hostname(),
        };
        self.node(&name).ok_or_else(|| {
            ConfigError::new(
                &self.path,
                None,
                format!(
                    "this host is {name:?} but no [[node]] has that name; pass --node NAME or add it (nodes: {})",
                    self.file
                        .node
                        .iter()
                        .map(|n| n.name.get_ref().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    }
}

/// A serde message in plain words: Rust type names (`u16`, `usize`) become
/// what the value must be.
fn plain_serde(message: &str) -> String {
    let mut m = message.to_string();
    for (rust, plain) in [
        ("expected u8", "expected a whole number from 0 to 255"),
        (
            "expected u16",
            "expected a whole number from 0 to 65535 (a port, a status)",
        ),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected usize", "expected a whole number of 0 or more"),
        ("expected i64", "expected a whole number"),
        ("expected a string", "expected a string in double quotes"),
        ("expected a boolean", "expected true or false"),
        (
            "invalid value: integer `-",
            "a negative number is not allowed here: `-",
        ),
    ] {
        m = m.replace(rust, plain);
    }
    m.trim_end().to_string()
}

/// This host's name as the kernel reports it (what Heartbeat's `uname -n` gave).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
