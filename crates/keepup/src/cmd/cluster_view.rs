//! `keepup status --all`: every node's own view side by side, from any
//! node (Pacemaker's `crm_mon` for the whole cluster). The comparison is
//! [`keepup_api::cluster`]; this module finds the nodes and prints.

use keepup_api::cluster::{Answer, Comparison};

/// Asks every node in `config` for its status at once.
pub async fn fetch_all(
    client: &keepup_api::ApiClient,
    config: &keepup_config::Config,
    here: &str,
    token: &str,
) -> Vec<(String, Answer)> {
    let targets = config
        .file
        .node
        .iter()
        .map(|n| {
            let name = n.name.get_ref().clone();
            let api = if name == here {
                super::control::local_api(config)
            } else {
                super::control::api_of_node(config, &name)
            };
            (name, api.map_err(|e| e.to_string()))
        })
        .collect();
    keepup_api::cluster::fetch_all(client, targets, token).await
}

/// The comparison as text for a terminal.
pub fn render(c: &Comparison, here: &str) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let first = c
        .rows
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let widths: Vec<usize> = (0..c.nodes.len())
        .map(|i| {
            c.rows
                .iter()
                .map(|(_, cells)| cells.get(i).map_or(0, String::len))
                .chain([c.nodes[i].len()])
                .max()
                .unwrap_or(1)
        })
        .collect();
    let _ = writeln!(o, "every node's own view (asked from {here})\n");
    let _ = write!(o, "  {:<first$}", "");
    for (n, w) in c.nodes.iter().zip(&widths) {
        let _ = write!(o, "  {n:<w$}");
    }
    let _ = writeln!(o);
    for (k, cells) in &c.rows {
        let _ = write!(o, "  {k:<first$}");
        for (v, w) in cells.iter().zip(&widths) {
            let _ = write!(o, "  {v:<w$}");
        }
        let _ = writeln!(o);
    }
    if c.problems.is_empty() {
        let _ = writeln!(o, "\nPROBLEMS none: every node answered and they agree");
    } else {
        let _ = writeln!(o, "\nPROBLEMS");
        for p in &c.problems {
            let _ = writeln!(o, "  {p}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_lines_up_and_says_when_all_agree() {
        let doc = json!({"version": "1", "cluster": {"consensus": {"leader": "a", "term": 1},
            "nodes": [{"name": "a", "alive": true}], "groups": []}});
        let c = keepup_api::cluster::compare(&[("a".to_string(), Ok(doc))]);
        let text = render(&c, "a");
        assert!(text.contains("PROBLEMS none"), "{text}");
        assert!(text.contains("leader (term)  a (1)"), "{text}");
    }
}
