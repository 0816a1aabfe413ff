//! Config parsing and validation: every bad input names its file and line.

#![allow(clippy::unwrap_used)]

use keepup_config::{Config, HostChecks, ResourceConfig, EXAMPLE};
use std::path::Path;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(Path::new("keepup.toml"), text, HostChecks::FileOnly).map_err(|e| e.to_string())
}

#[test]
fn example_parses_and_documents_every_resource_type() {
    let c = parse(EXAMPLE).expect("example must parse");
    assert_eq!(c.file.node.len(), 3);
    assert!(c.file.node[2].is_witness());
    assert!(matches!(
        c.file.group[0].resource[0],
        ResourceConfig::Vip(_)
    ));
    // The commented resources must parse too once uncommented.
    // (The [database] block at the end has its own test in keepup-db.)
    let before_db = &EXAMPLE[..EXAMPLE.find("# [database]").unwrap_or(EXAMPLE.len())];
    let uncommented: String = before_db
        .lines()
        .map(|l| {
            if l.starts_with("# [[group.resource]]")
                || l.starts_with("# [group.fence]")
                || l.starts_with("# command")
                || l.starts_with("# type")
                || l.starts_with("# reserved_ip")
                || l.starts_with("# token_file = \"/etc/keepup/do")
                || l.starts_with("# api_url")
                || l.starts_with("# metadata_url")
                || l.starts_with("# timeout_ms")
                || l.starts_with("# monitor_interval_ms")
                || l.starts_with("# name = \"nginx")
                || l.starts_with("# start")
                || l.starts_with("# stop")
                || l.starts_with("# status")
                || l.starts_with("# env")
            {
                l.trim_start_matches("# ").to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let c = parse(&uncommented).expect("uncommented example must parse");
    assert_eq!(c.file.group[0].resource.len(), 3);
    assert!(c.file.group[0].fence.is_some());
}

#[test]
fn db_primary_refuses_unguarded_ownership_and_names_the_fix() {
    let db = "\n[database]\nadmin_credentials_file = \"/x\"\nreplication_password_file = \"/y\"\n[[database.server]]\nname = \"db-a\"\naddress = \"10.0.0.1:3306\"\nnode = \"a\"\n[[database.server]]\nname = \"db-b\"\naddress = \"10.0.0.2:3306\"\nnode = \"b\"\n";
    let group = "\n[[group]]\nname = \"db\"\n[[group.resource]]\ntype = \"db-primary\"\n";
    let two = format!("{MIN}\n[[node]]\nname = \"b\"\naddresses = [\"10.0.0.2\"]\n{group}{db}");
    let e = parse(&two).unwrap_err();
    assert!(e.contains("keepup.toml:15"), "{e}");
    assert!(e.contains("witness"), "{e}");
    let with_witness = format!(
        "{MIN}\n[[node]]\nname = \"b\"\naddresses = [\"10.0.0.2\"]\n[[node]]\nname = \"w\"\naddresses = [\"10.0.0.3\"]\nrole = \"witness\"\n{group}{db}"
    );
    parse(&with_witness).expect("a witness makes it safe");
}

#[test]
fn a_witness_may_not_hold_a_group_and_the_stop_bound_must_fit_the_lease() {
    let text = format!(
        "{MIN}\n[[node]]\nname = \"w\"\naddresses = [\"10.0.0.3\"]\nrole = \"witness\"\n\n[[group]]\nname = \"g\"\nnodes = [\"w\"]\n[[group.resource]]\ntype = \"exec\"\nname = \"x\"\nstart = \"true\"\nstop = \"true\"\n"
    );
    let e = parse(&text).unwrap_err();
    assert!(e.contains("a witness"), "{e}");
    let e = parse(&format!("{MIN}\n[timing]\nstop_bound_ms = 200\n")).unwrap_err();
    assert!(e.contains("stop_bound_ms"), "{e}");
}

#[test]
fn a_digitalocean_fence_needs_every_holders_droplet() {
    let three = format!(
        "{MIN}\n[[node]]\nname = \"b\"\naddresses = [\"10.0.0.2\"]\n[[node]]\nname = \"w\"\naddresses = [\"10.0.0.3\"]\nrole = \"witness\"\n\n[[group]]\nname = \"g\"\n[[group.resource]]\ntype = \"exec\"\nname = \"x\"\nstart = \"true\"\nstop = \"true\"\n[group.fence]\ntype = \"digitalocean\"\ntoken_file = \"/t\"\n"
    );
    let e = parse(&format!("{three}droplets = {{ a = 11 }}\n")).unwrap_err();
    assert!(
        e.contains("keepup.toml:19") && e.contains("no droplet id for node \"b\""),
        "{e}"
    );
    let e = parse(&format!("{three}droplets = {{ a = 11, b = 12, w = 13 }}\n")).unwrap_err();
    assert!(e.contains("\"w\", which cannot hold"), "{e}");
    let c = parse(&format!("{three}droplets = {{ a = 11, b = 12 }}\n")).expect("complete");
    assert!(matches!(
        c.file.group[0].fence,
        Some(keepup_config::FenceConfig::Digitalocean {
            timeout_ms: keepup_config::Millis(60_000),
            ..
        })
    ));
}

const MIN: &str = r#"
[cluster]
name = "c"
key_file = "/nonexistent"

[[node]]
name = "a"
addresses = ["10.0.0.1"]
"#;

#[test]
fn unknown_key_is_an_error_with_line() {
    let e = parse(&format!("{MIN}\nprioritty = 3\n")).unwrap_err();
    assert!(e.contains("keepup.toml:10"), "{e}");
    assert!(e.contains("prioritty"), "{e}");
}

#[test]
fn duplicate_node_names_line() {
    let e = parse(&format!(
        "{MIN}\n[[node]]\nname = \"a\"\naddresses = [\"10.0.0.2\"]\n"
    ))
    .unwrap_err();
    assert!(e.contains("keepup.toml:11: duplicate node \"a\""), "{e}");
}

#[test]
fn bad_address_and_link_count() {
    let e = parse(&format!(
        "{MIN}\n[[node]]\nname = \"b\"\naddresses = [\"10.0.0.2\", \"nope\"]\n"
    ))
    .unwrap_err();
    assert!(
        e.contains("has 2 addresses but the first node has 1"),
        "{e}"
    );
    assert!(e.contains(":12: \"nope\" is not an IP address"), "{e}");
}

#[test]
fn timing_rules() {
    let e = parse(&format!(
        "{MIN}\n[timing]\nheartbeat_ms = 100\ndead_ms = 150\n"
    ))
    .unwrap_err();
    assert!(e.contains("dead_ms (150) must be at least twice"), "{e}");
}

#[test]
fn missing_key_file_is_reported_with_line() {
    let e = Config::parse(Path::new("k.toml"), MIN, HostChecks::Full)
        .unwrap_err()
        .to_string();
    assert!(e.contains("k.toml:4: key file /nonexistent"), "{e}");
}

#[test]
fn world_readable_key_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("keepup-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = MIN.replace("/nonexistent", key.to_str().unwrap());
    let e = Config::parse(Path::new("k.toml"), &text, HostChecks::Full)
        .unwrap_err()
        .to_string();
    assert!(e.contains("readable by other users (mode 644)"), "{e}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    Config::parse(Path::new("k.toml"), &text, HostChecks::Full).expect("0600 key is fine");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn address_not_on_host() {
    let c = parse(MIN).unwrap();
    let e = c
        .check_local_addresses(&c.file.node[0])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("keepup.toml:8: address 10.0.0.1 of node \"a\" is not on any interface"),
        "{e}"
    );
    let lo = parse(&MIN.replace("10.0.0.1", "127.0.0.1")).unwrap();
    lo.check_local_addresses(&lo.file.node[0])
        .expect("loopback is local");
}

#[test]
fn unknown_resource_type_and_group_node() {
    let e = parse(&format!(
        "{MIN}\n[[group]]\nname = \"g\"\nnodes = [\"zz\"]\n[[group.resource]]\ntype = \"floppy\"\n"
    ))
    .unwrap_err();
    assert!(e.contains("floppy"), "{e}");
    let e = parse(&format!(
        "{MIN}\n[[group]]\nname = \"g\"\nnodes = [\"zz\"]\n[[group.resource]]\ntype = \"exec\"\nname=\"x\"\nstart=\"true\"\nstop=\"true\"\n"
    ))
    .unwrap_err();
    assert!(
        e.contains(":12: group \"g\" names unknown node \"zz\""),
        "{e}"
    );
}
