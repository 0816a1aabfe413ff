//! The whole cluster from one place: every node's own status document side
//! by side, and every disagreement between them named (a node cut off, two
//! owners of one group, a link cut one way, mixed versions). `keepup status
//! --all` and the dashboard's cluster panel (`GET /v1/cluster`) both use it.
//!
//! Fetching is at the edge ([`fetch_all`]); comparing is [`compare`], a
//! pure function over the documents, tested on its own.

use serde_json::Value;
use std::collections::BTreeMap;

/// The timeout to give the client [`fetch_all`] uses.
pub const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// One node's answer: its status document, or why there is none.
pub type Answer = Result<Value, String>;

/// Asks every `(node, host:port)` for `/v1/status` at once with `token`
/// through `client` (give it a short timeout), so a node that is cut off
/// costs one timeout, not one per node.
pub async fn fetch_all(
    client: &crate::ApiClient,
    targets: Vec<(String, Result<String, String>)>,
    token: &str,
) -> Vec<(String, Answer)> {
    let asks = targets.into_iter().map(|(name, api)| async move {
        let answer = match api {
            Err(e) => Err(e),
            Ok(api) => ask(client, &api, token).await,
        };
        (name, answer)
    });
    futures_util::future::join_all(asks).await
}

async fn ask(client: &crate::ApiClient, api: &str, token: &str) -> Answer {
    client.get_json(api, "/v1/status", Some(token)).await
}

/// The side-by-side table: one row per fact, one column per node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Comparison {
    /// Column heads: node names in config order.
    pub nodes: Vec<String>,
    /// (fact, one cell per node).
    pub rows: Vec<(String, Vec<String>)>,
    /// What is wrong, one sentence each.
    pub problems: Vec<String>,
}

/// Lines up the nodes' answers and names every disagreement.
pub fn compare(answers: &[(String, Answer)]) -> Comparison {
    let nodes: Vec<String> = answers.iter().map(|(n, _)| n.clone()).collect();
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut problems = Vec::new();
    let cell = |f: &dyn Fn(&Value) -> String| -> Vec<String> {
        answers
            .iter()
            .map(|(_, a)| match a {
                Ok(doc) => f(doc),
                Err(_) => "-".to_string(),
            })
            .collect()
    };
    rows.push((
        "answers".into(),
        answers
            .iter()
            .map(|(_, a)| if a.is_ok() { "yes" } else { "NO" }.to_string())
            .collect(),
    ));
    for (n, a) in answers {
        if let Err(e) = a {
            problems.push(format!("{n}: {e}"));
        }
    }
    rows.push((
        "version".into(),
        cell(&|d| d["version"].as_str().unwrap_or("?").to_string()),
    ));
    rows.push((
        "leader (term)".into(),
        cell(&|d| match d["cluster"]["consensus"].as_object() {
            Some(c) => format!(
                "{} ({})",
                c.get("leader").and_then(Value::as_str).unwrap_or("none"),
                c.get("term").and_then(Value::as_u64).unwrap_or(0)
            ),
            None => "unguarded".to_string(),
        }),
    ));
    rows.push((
        "sees up".into(),
        cell(&|d| {
            let up: Vec<&str> = d["cluster"]["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| n["alive"].as_bool() == Some(true))
                .filter_map(|n| n["name"].as_str())
                .collect();
            up.join(",")
        }),
    ));

    let ok: Vec<(&String, &Value)> = answers
        .iter()
        .filter_map(|(n, a)| a.as_ref().ok().map(|d| (n, d)))
        .collect();

    // Versions: a mix is fine during a rolling upgrade, but say so.
    let versions: BTreeMap<&str, Vec<&str>> = group_by(&ok, |d| d["version"].as_str());
    if versions.len() > 1 {
        problems.push(format!(
            "nodes run different versions ({}): finish the rolling upgrade",
            describe(&versions)
        ));
    }
    // Leaders: among nodes that see one, it must be the same for one term.
    let leaders: BTreeMap<&str, Vec<&str>> =
        group_by(&ok, |d| d["cluster"]["consensus"]["leader"].as_str());
    if leaders.len() > 1 {
        problems.push(format!(
            "nodes name different raft leaders ({}): an election is under way or a node is cut off",
            describe(&leaders)
        ));
    }
    for (n, d) in &ok {
        if d["cluster"]["consensus"].is_object()
            && d["cluster"]["consensus"]["leader"].as_str().is_none()
        {
            problems.push(format!(
                "{n} sees no raft leader (no majority of voters reachable from it)"
            ));
        }
    }
    // Liveness: one node's "down" is another's "up" only when a link is cut.
    for (n, d) in &ok {
        for peer in d["cluster"]["nodes"].as_array().into_iter().flatten() {
            let (Some(name), Some(false)) = (peer["name"].as_str(), peer["alive"].as_bool()) else {
                continue;
            };
            let others_see_up: Vec<&str> = ok
                .iter()
                .filter(|(m, _)| *m != *n && m.as_str() != name)
                .filter(|(_, e)| {
                    e["cluster"]["nodes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["name"] == name && p["alive"].as_bool() == Some(true))
                })
                .map(|(m, _)| m.as_str())
                .collect();
            if !others_see_up.is_empty() {
                problems.push(format!(
                    "{n} sees {name} down but {} see{} it up: a link between {n} and {name} is cut",
                    others_see_up.join(", "),
                    if others_see_up.len() == 1 { "s" } else { "" }
                ));
            }
        }
    }
    // Groups: one owner per group across every answering node.
    let mut groups: Vec<String> = Vec::new();
    for (_, d) in &ok {
        for g in d["cluster"]["groups"].as_array().into_iter().flatten() {
            if let Some(name) = g["name"].as_str() {
                if !groups.iter().any(|x| x == name) {
                    groups.push(name.to_string());
                }
            }
        }
    }
    for g in &groups {
        let owner_in = |d: &Value| -> Option<String> {
            d["cluster"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["name"] == g.as_str())
                .map(|x| x["owner"].as_str().unwrap_or("nobody").to_string())
        };
        rows.push((
            format!("group {g} owner"),
            cell(&|d| owner_in(d).unwrap_or_else(|| "?".into())),
        ));
        let owners: BTreeMap<String, Vec<&str>> = ok
            .iter()
            .filter_map(|(n, d)| owner_in(d).map(|o| (o, n.as_str())))
            .fold(BTreeMap::new(), |mut m, (o, n)| {
                m.entry(o).or_insert_with(Vec::new).push(n);
                m
            });
        if owners.len() > 1 {
            let said: Vec<String> = owners
                .iter()
                .map(|(o, ns)| {
                    format!(
                        "{} say{} {o}",
                        ns.join(", "),
                        if ns.len() == 1 { "s" } else { "" }
                    )
                })
                .collect();
            problems.push(format!(
                "group {g}: nodes disagree on its owner ({})",
                said.join("; ")
            ));
        }
        let here_running: Vec<&str> = ok
            .iter()
            .filter(|(_, d)| {
                d["cluster"]["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|x| {
                        x["name"] == g.as_str()
                            && matches!(
                                x["local_state"].as_str(),
                                Some("owned" | "starting" | "stopping" | "stop-failed")
                            )
                    })
            })
            .map(|(n, _)| n.as_str())
            .collect();
        if here_running.len() > 1 {
            problems.push(format!(
                "group {g} is running on {} at once",
                here_running.join(" and ")
            ));
        }
    }
    // The database primary, when nodes report one.
    let primaries: BTreeMap<&str, Vec<&str>> = group_by(&ok, |d| d["db"]["primary"].as_str());
    if !primaries.is_empty() {
        rows.push((
            "db primary".into(),
            cell(&|d| d["db"]["primary"].as_str().unwrap_or("-").to_string()),
        ));
    }
    if primaries.len() > 1 {
        problems.push(format!(
            "nodes name different database primaries ({})",
            describe(&primaries)
        ));
    }
    Comparison {
        nodes,
        rows,
        problems,
    }
}

fn group_by<'a>(
    ok: &[(&'a String, &'a Value)],
    key: impl Fn(&'a Value) -> Option<&'a str>,
) -> BTreeMap<&'a str, Vec<&'a str>> {
    let mut m: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (n, d) in ok {
        if let Some(k) = key(d) {
            m.entry(k).or_default().push(n.as_str());
        }
    }
    m
}

fn describe(m: &BTreeMap<&str, Vec<&str>>) -> String {
    m.iter()
        .map(|(k, ns)| format!("{}: {k}", ns.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The comparison and the answers as one JSON document (`/v1/cluster`,
/// `keepup status --all --json`).
pub fn document(answers: Vec<(String, Answer)>) -> Value {
    let cmp = compare(&answers);
    let nodes: serde_json::Map<String, Value> = answers
        .into_iter()
        .map(|(n, a)| (n, a.unwrap_or_else(|e| serde_json::json!({"error": e}))))
        .collect();
    serde_json::json!({"nodes": nodes, "problems": cmp.problems, "table": {"nodes": cmp.nodes, "rows": cmp.rows}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(version: &str, leader: &str, up: &[&str], owner: &str, here_state: &str) -> Value {
        let nodes: Vec<Value> = ["a", "b", "c"]
            .iter()
            .map(|n| json!({"name": n, "alive": up.contains(n)}))
            .collect();
        json!({
            "version": version,
            "cluster": {
                "consensus": {"leader": leader, "term": 3},
                "nodes": nodes,
                "groups": [{"name": "web", "owner": owner, "local_state": here_state}],
            },
        })
    }

    #[test]
    fn agreeing_nodes_have_no_problems() {
        let answers = vec![
            (
                "a".to_string(),
                Ok(doc("1", "a", &["a", "b", "c"], "a", "owned")),
            ),
            (
                "b".to_string(),
                Ok(doc("1", "a", &["a", "b", "c"], "a", "released")),
            ),
            (
                "c".to_string(),
                Ok(doc("1", "a", &["a", "b", "c"], "a", "released")),
            ),
        ];
        let c = compare(&answers);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(
            c.rows[0],
            ("answers".to_string(), vec!["yes".to_string(); 3])
        );
        let owner = c.rows.iter().find(|(k, _)| k == "group web owner").unwrap();
        assert_eq!(owner.1, vec!["a", "a", "a"]);
    }

    #[test]
    fn a_cut_off_node_and_disagreements_are_named() {
        let answers = vec![
            (
                "a".to_string(),
                Ok(doc("1", "a", &["a", "b"], "a", "owned")),
            ),
            (
                "b".to_string(),
                Ok(doc("2", "a", &["a", "b", "c"], "b", "owned")),
            ),
            (
                "c".to_string(),
                Err("no answer from 10.77.0.3:7947 within 2 s".to_string()),
            ),
        ];
        let c = compare(&answers);
        let all = c.problems.join("\n");
        assert!(all.contains("c: no answer from 10.77.0.3:7947"), "{all}");
        assert!(all.contains("different versions (a: 1; b: 2)"), "{all}");
        assert!(all.contains("a sees c down but b sees it up"), "{all}");
        assert!(
            all.contains("group web: nodes disagree on its owner (a says a; b says b)"),
            "{all}"
        );
        assert!(
            all.contains("group web is running on a and b at once"),
            "{all}"
        );
        assert_eq!(c.rows[0].1, vec!["yes", "yes", "NO"]);
    }
}
