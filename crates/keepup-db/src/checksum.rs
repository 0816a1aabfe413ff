//! `keepup db checksum`: compares `CHECKSUM TABLE` of every user table across
//! servers, to find master-master divergence or a damaged replica.
//!
//! Replicas are first waited on until they applied the primary's position
//! (`MASTER_GTID_WAIT`), and tables that differ are checked again once, so
//! ordinary lag under light writes is not reported. Under heavy writes run it
//! at a quiet time: it does not lock anything.

use crate::conn::{quote, Db};
use crate::observe::{identify_primary, probe_conn, KEEPUP_SCHEMA};
use crate::setup::gtid_wait;
use crate::{check_section, DbError};
use keepup_config::DatabaseSection;
use serde::Serialize;
use std::collections::BTreeMap;

/// Result of a checksum run.
#[derive(Debug, Clone, Serialize)]
pub struct ChecksumReport {
    /// Tables compared (`schema.table`).
    pub tables: usize,
    /// Servers compared.
    pub servers: Vec<String>,
    /// Tables whose checksum differs: table and checksum per server.
    pub mismatches: Vec<(String, BTreeMap<String, String>)>,
}

async fn sums(db: &mut Db, tables: &[String]) -> Result<BTreeMap<String, String>, DbError> {
    let mut out = BTreeMap::new();
    for chunk in tables.chunks(50) {
        let rows = db
            .rows(
                "CHECKSUM TABLE",
                &format!("CHECKSUM TABLE {}", chunk.join(", ")),
            )
            .await?;
        for r in rows {
            let t = r
                .as_ref(0)
                .and_then(crate::conn::value_text)
                .unwrap_or_default();
            let c = r
                .as_ref(1)
                .and_then(crate::conn::value_text)
                .unwrap_or_else(|| "missing".into());
            out.insert(t, c);
        }
    }
    Ok(out)
}

/// Checksums every user table (system schemas and keepup's own heartbeat
/// excluded) on every reachable server and lists the tables that differ.
pub async fn checksum(section: &DatabaseSection) -> Result<ChecksumReport, DbError> {
    check_section(section)?;
    let mut conns = Vec::new();
    let mut statuses = Vec::new();
    for s in &section.server {
        let mut db = Db::connect(section, s).await?;
        statuses.push(probe_conn(section, s, &mut db).await?);
        conns.push(db);
    }
    let pidx = identify_primary(section, &statuses)
        .and_then(|p| section.server.iter().position(|s| s.name == p))
        .unwrap_or(0);
    let tables: Vec<String> = conns[pidx]
        .rows(
            "listing tables",
            &format!(
                "SELECT CONCAT('`', REPLACE(table_schema,'`','``'), '`.`', REPLACE(table_name,'`','``'), '`') FROM information_schema.tables \
                 WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('mysql','information_schema','performance_schema','sys') \
                 AND NOT (table_schema = {} AND table_name IN ('heartbeat','setup_check')) ORDER BY table_schema, table_name",
                quote(KEEPUP_SCHEMA)
            ),
        )
        .await?
        .iter()
        .filter_map(|r| r.as_ref(0).and_then(crate::conn::value_text))
        .collect();
    let mut mismatches = Vec::new();
    for attempt in 0..2 {
        let pos = conns[pidx].global("gtid_binlog_pos").await?;
        for (i, db) in conns.iter_mut().enumerate() {
            if i != pidx && statuses[i].replication.is_some() {
                let _ = gtid_wait(db, &pos, section.catchup_timeout_ms.ms()).await;
            }
        }
        let check: Vec<String> = if attempt == 0 {
            tables.clone()
        } else {
            mismatches
                .iter()
                .map(|(t, _): &(String, BTreeMap<String, String>)| {
                    let (s, n) = t.split_once('.').unwrap_or((t.as_str(), ""));
                    format!("`{}`.`{}`", s.replace('`', "``"), n.replace('`', "``"))
                })
                .collect()
        };
        if check.is_empty() {
            break;
        }
        let mut per: Vec<(String, BTreeMap<String, String>)> = Vec::new();
        for (i, db) in conns.iter_mut().enumerate() {
            per.push((section.server[i].name.clone(), sums(db, &check).await?));
        }
        mismatches.clear();
        let names: std::collections::BTreeSet<&String> =
            per.iter().flat_map(|(_, m)| m.keys()).collect();
        for t in names {
            let vals: BTreeMap<String, String> = per
                .iter()
                .map(|(s, m)| {
                    (
                        s.clone(),
                        m.get(t).cloned().unwrap_or_else(|| "missing".into()),
                    )
                })
                .collect();
            let first = vals.values().next().cloned();
            if vals.values().any(|v| Some(v) != first.as_ref()) {
                mismatches.push((t.clone(), vals));
            }
        }
        if mismatches.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let servers = section.server.iter().map(|s| s.name.clone()).collect();
    for db in conns {
        db.close().await;
    }
    Ok(ChecksumReport {
        tables: tables.len(),
        servers,
        mismatches,
    })
}
