//! `DbError`: every way a database operation can fail, each carrying the
//! offending server, address or MariaDB error code and saying how to fix it.

use std::path::PathBuf;

/// Errors of keepup-db. No variant ever carries a password.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The `[database]` section is inconsistent.
    #[error("[database]: {0}")]
    Config(String),

    /// A credentials or password file cannot be used.
    #[error("credentials file {path}: {reason}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// No connection could be made.
    #[error("server {server} ({address}) is unreachable: {reason}; check that mariadbd runs there and that the address and firewall allow keepup in")]
    Unreachable {
        /// Server name.
        server: String,
        /// `host:port`.
        address: String,
        /// The connection error.
        reason: String,
        /// Positively down: the host answered that nothing listens there
        /// (connection refused). Anything else (a timeout, 1040 too many
        /// connections, a local error such as EMFILE) says nothing about
        /// whether the server still takes writes.
        down: bool,
    },

    /// The server refused the admin credentials.
    #[error("server {server} ({address}) refused user {user:?} (MariaDB error {code}): fix the admin credentials file, or create that account with all privileges for keepup's host")]
    AccessDenied {
        /// Server name.
        server: String,
        /// `host:port`.
        address: String,
        /// The user keepup tried.
        user: String,
        /// MariaDB error code (1045 access denied, 1044/1227 no privilege).
        code: u16,
    },

    /// A statement failed.
    #[error("server {server}: {what} failed (MariaDB error {code}: {message})")]
    Query {
        /// Server name.
        server: String,
        /// What keepup was doing.
        what: String,
        /// MariaDB error code, 0 when not from the server.
        code: u16,
        /// The server's message.
        message: String,
    },

    /// A precondition does not hold; nothing was changed.
    #[error("refused, nothing was changed:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Refused {
        /// Every problem found, each with its fix.
        problems: Vec<crate::Problem>,
    },

    /// A wait ran out.
    #[error("server {server}: timed out after {after_ms} ms waiting for {what}")]
    Timeout {
        /// Server name.
        server: String,
        /// What keepup waited for.
        what: String,
        /// How long it waited.
        after_ms: u64,
    },

    /// Seeding a replica with mariadb-dump failed.
    #[error("seeding {server} from {source_server} failed: {reason}")]
    Seed {
        /// The replica.
        server: String,
        /// The server dumped.
        source_server: String,
        /// What went wrong (stderr of mariadb-dump / mariadb).
        reason: String,
    },

    /// Starting or stopping a local mariadbd (the test and demo launcher).
    #[error("local mariadbd {name}: {reason}")]
    Launcher {
        /// The server's name.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

impl DbError {
    /// Whether the error proves the server is down (takes no writes):
    /// only a refused connection does. See [`DbError::Unreachable`].
    pub fn positively_down(&self) -> bool {
        matches!(self, DbError::Unreachable { down: true, .. })
    }

    /// The MariaDB error code when the error came from the server.
    pub fn code(&self) -> Option<u16> {
        match self {
            DbError::Query { code, .. } | DbError::AccessDenied { code, .. } if *code != 0 => {
                Some(*code)
            }
            _ => None,
        }
    }
}
