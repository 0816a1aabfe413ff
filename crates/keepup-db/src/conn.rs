//! Connections: credentials files, connect with a timeout, and small query
//! helpers that turn driver errors into `DbError` with the server's name.

use crate::DbError;
use keepup_config::{DatabaseSection, DbServer};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, Value};
use std::path::Path;
use std::time::Duration;

/// A user and password read from a credentials file.
#[derive(Clone)]
pub struct Credentials {
    /// The account.
    pub user: String,
    /// Its password (never printed: `Debug` hides it).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <hidden> }}",
            self.user
        )
    }
}

/// Reads a MySQL option-file style credentials file: `user = NAME` and
/// `password = SECRET` lines; `[client]` headers, `#`/`;` comments and quotes
/// around values are accepted. The file must not be readable by others.
pub fn read_credentials(path: &Path) -> Result<Credentials, DbError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |reason: String| DbError::Credentials {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(err(format!(
            "readable by other users (mode {:o}); run: chmod 600 {}",
            meta.permissions().mode() & 0o777,
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let mut user = None;
    let mut password = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with(';')
            || line.starts_with('[')
        {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
        match k.trim() {
            "user" => user = Some(v),
            "password" => password = Some(v),
            _ => {}
        }
    }
    Ok(Credentials {
        user: user.ok_or_else(|| err("no `user = NAME` line".into()))?,
        password: password.unwrap_or_default(),
    })
}

/// Splits `host:port` (IPv6 as `[::1]:3306`; port defaults to 3306).
pub fn split_address(addr: &str) -> Result<(String, u16), DbError> {
    let bad = || DbError::Config(format!("{addr:?} is not host:port"));
    if let Some(rest) = addr.strip_prefix('[') {
        let (h, p) = rest.split_once(']').ok_or_else(bad)?;
        let port = match p.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None => 3306,
        };
        return Ok((h.to_string(), port));
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h.to_string(), p.parse().map_err(|_| bad())?)),
        _ if addr.is_empty() => Err(bad()),
        _ => Ok((addr.to_string(), 3306)),
    }
}

/// One admin connection to one configured server.
pub struct Db {
    /// Server name (from the config).
    pub server: String,
    /// Its `host:port`.
    pub address: String,
    conn: Conn,
}

/// Escapes a string for a single-quoted SQL literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn server_error(e: &mysql_async::Error) -> (u16, String) {
    match e {
        mysql_async::Error::Server(s) => (s.code, s.message.clone()),
        other => (0, other.to_string()),
    }
}

/// Whether a connect error is "connection refused": the host is there and
/// nothing listens on the port, so the server takes no writes. Timeouts,
/// resets, 1040 "too many connections" and local errors are not.
pub fn refused(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => {
            io.kind() == std::io::ErrorKind::ConnectionRefused
        }
        _ => false,
    }
}

/// Credentials for `server` (its own file, else the section's).
pub fn credentials_for(
    section: &DatabaseSection,
    server: &DbServer,
) -> Result<Credentials, DbError> {
    read_credentials(
        server
            .admin_credentials_file
            .as_deref()
            .unwrap_or(&section.admin_credentials_file),
    )
}

impl Db {
    /// Connects to `server` with the section's admin credentials.
    pub async fn connect(section: &DatabaseSection, server: &DbServer) -> Result<Db, DbError> {
        let creds = credentials_for(section, server)?;
        Db::connect_with(
            &server.name,
            &server.address,
            &creds,
            section.connect_timeout_ms.duration(),
        )
        .await
    }

    /// Connects to `address` as `creds`, giving up after `timeout`.
    pub async fn connect_with(
        name: &str,
        address: &str,
        creds: &Credentials,
        timeout: Duration,
    ) -> Result<Db, DbError> {
        let (host, port) = split_address(address)?;
        let opts = OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(port)
            .user(Some(creds.user.clone()))
            .pass(Some(creds.password.clone()))
            .prefer_socket(false)
            .stmt_cache_size(0);
        let unreachable = |reason: String, down: bool| DbError::Unreachable {
            server: name.to_string(),
            address: address.to_string(),
            reason,
            down,
        };
        let conn = match tokio::time::timeout(timeout, Conn::new(opts)).await {
            Err(_) => {
                return Err(unreachable(
                    format!("no answer within {} ms", timeout.as_millis()),
                    false,
                ))
            }
            Ok(Err(mysql_async::Error::Server(s)))
                if matches!(s.code, 1044 | 1045 | 1130 | 1227) =>
            {
                return Err(DbError::AccessDenied {
                    server: name.to_string(),
                    address: address.to_string(),
                    user: creds.user.clone(),
                    code: s.code,
                })
            }
            Ok(Err(e)) => {
                let down = refused(&e);
                return Err(unreachable(e.to_string(), down));
            }
            Ok(Ok(c)) => c,
        };
        Ok(Db {
            server: name.to_string(),
            address: address.to_string(),
            conn,
        })
    }

    fn err(&self, what: &str, e: mysql_async::Error) -> DbError {
        let (code, message) = server_error(&e);
        DbError::Query {
            server: self.server.clone(),
            what: what.to_string(),
            code,
            message,
        }
    }

    /// Runs statements that return nothing. `what` names the step in errors.
    pub async fn exec(&mut self, what: &str, sql: &str) -> Result<(), DbError> {
        match self.conn.query_drop(sql).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.err(what, e)),
        }
    }

    /// Runs a query and returns all rows.
    pub async fn rows(&mut self, what: &str, sql: &str) -> Result<Vec<Row>, DbError> {
        match self.conn.query::<Row, _>(sql).await {
            Ok(r) => Ok(r),
            Err(e) => Err(self.err(what, e)),
        }
    }

    /// Runs a query and returns its first row, if any.
    pub async fn row(&mut self, what: &str, sql: &str) -> Result<Option<Row>, DbError> {
        Ok(self.rows(what, sql).await?.into_iter().next())
    }

    /// First column of the first row as text (NULL and no row: `None`).
    pub async fn scalar(&mut self, what: &str, sql: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .row(what, sql)
            .await?
            .and_then(|r| r.as_ref(0).and_then(value_text)))
    }

    /// A global variable as text (`SELECT @@GLOBAL.name`).
    pub async fn global(&mut self, name: &str) -> Result<String, DbError> {
        Ok(self
            .scalar(
                &format!("reading @@{name}"),
                &format!("SELECT @@GLOBAL.{name}"),
            )
            .await?
            .unwrap_or_default())
    }

    /// A status variable (`SHOW GLOBAL STATUS LIKE 'name'`), if the server has it.
    pub async fn status_var(&mut self, name: &str) -> Result<Option<String>, DbError> {
        let row = self
            .row(
                &format!("reading status {name}"),
                &format!("SHOW GLOBAL STATUS LIKE {}", quote(name)),
            )
            .await?;
        Ok(row.and_then(|r| r.as_ref(1).and_then(value_text)))
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = self.conn.disconnect().await;
    }

    /// The connection id (for excluding ourselves when killing clients).
    pub fn connection_id(&self) -> u32 {
        self.conn.id()
    }
}

/// A value as text (numbers formatted, NULL as `None`).
pub fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(f) => Some(f.to_string()),
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

/// Column `name` of `row` as text (missing or NULL: `None`).
pub fn col(row: &Row, name: &str) -> Option<String> {
    let idx = row
        .columns_ref()
        .iter()
        .position(|c| c.name_str().eq_ignore_ascii_case(name))?;
    row.as_ref(idx).and_then(value_text)
}

/// Column `name` as a number.
pub fn col_num(row: &Row, name: &str) -> Option<i64> {
    col(row, name).and_then(|s| s.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            split_address("10.0.0.1:3307").ok(),
            Some(("10.0.0.1".to_string(), 3307))
        );
        assert_eq!(split_address("db").ok(), Some(("db".to_string(), 3306)));
        assert_eq!(
            split_address("[::1]:3310").ok(),
            Some(("::1".to_string(), 3310))
        );
        assert!(split_address("h:x").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a'b\\c"), "'a''b\\\\c'");
    }

    #[test]
    fn credentials_file_format_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("keepup-db-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let p = dir.join("c.cnf");
        std::fs::write(
            &p,
            "[client]\n# admin\nuser = root\npassword = \"s3cret\"\n",
        )
        .expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let c = read_credentials(&p).expect("parse");
        assert_eq!(c.user, "root");
        assert_eq!(c.password, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = read_credentials(&p).expect_err("world readable");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
