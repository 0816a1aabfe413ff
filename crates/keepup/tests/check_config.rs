//! `keepup check-config` against broken files (issue #11: "check-config
//! catches everything ... a test holds each case"). Each case edits one
//! valid file; the line that must be named carries a `#!` comment, so the
//! expected `file:line:` comes from the case itself. Every case must exit 78
//! (EX_CONFIG) with a line `FILE:LINE: message` at the start of a stderr
//! line, in plain words (no Rust type names, no "os error").

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const BASE: &str = r#"[cluster]
name = "t"
key_file = "{dir}/key"

[timing]
heartbeat_ms = 100
dead_ms = 500

[api]
listen = "127.0.0.1:7947"

[[node]]
name = "a"
addresses = ["10.0.0.1"]

[[node]]
name = "b"
addresses = ["10.0.0.2"]

[[node]]
name = "w"
addresses = ["10.0.0.3"]
role = "witness"

[[group]]
name = "site"
[[group.resource]]
type = "vip"
address = "10.0.0.100/24"
interface = "eth0"

[lb]
[[lb.frontend]]
name = "web"
bind = "10.0.0.100:80"
pool = "web"

[[lb.pool]]
name = "web"
[[lb.pool.backend]]
name = "web-1"
address = "10.0.0.11:8080"
[[lb.pool.backend]]
name = "web-2"
address = "10.0.0.12:8080"
"#;

const DB: &str = r#"
[database]
admin_credentials_file = "{dir}/db.cnf"
[[database.server]]
name = "a"
address = "10.0.0.1:3306"
[[database.server]]
name = "b"
address = "10.0.0.2:3306"
"#;

/// How a case changes the valid file.
enum Edit {
    /// Replace the first occurrence of the text.
    Swap(&'static str, &'static str),
    /// Add the text at the end.
    Add(&'static str),
    /// Add the `[database]` section, then make these replacements in it.
    Db(&'static [(&'static str, &'static str)]),
    /// Replace in the file, and in the added `[database]` section.
    Both(&'static str, &'static str, &'static str, &'static str),
}
use Edit::{Add, Both, Db, Swap};

/// (case, edit, what the message must say)
const CASES: &[(&str, Edit, &str)] = &[
    // Syntax and types.
    ("unterminated string", Swap("name = \"t\"", "name = \"t #!"), "invalid"),
    ("unknown key", Swap("name = \"t\"", "name = \"t\"\nnmae = \"x\" #!"), "unknown field `nmae`"),
    ("string for a number", Swap("heartbeat_ms = 100", "heartbeat_ms = \"100\" #!"), "expected a whole number"),
    ("negative number", Swap("heartbeat_ms = 100", "heartbeat_ms = -5 #!"), "negative"),
    ("status over 65535", Add("[lb.pool.health]\ntype = \"http\"\nexpect_status = [200, 70000] #!\n"), "from 0 to 65535"),
    ("string for a boolean", Db(&[("[database]", "[database]\nsemi_sync = \"yes\" #!")]), "true or false"),
    ("unknown resource type", Swap("type = \"vip\"", "type = \"vipp\" #!"), "unknown variant `vipp`"),
    ("empty cluster name", Swap("name = \"t\"", "name = \"\" #!"), "cluster name must be 1 to 32 bytes"),
    ("missing key file", Swap("key_file = \"{dir}/key\"", "key_file = \"{dir}/nokey\" #!"), "does not exist"),
    ("key file readable by others", Swap("key_file = \"{dir}/key\"", "key_file = \"{dir}/key-open\" #!"), "readable by other users"),
    ("key file too short", Swap("key_file = \"{dir}/key\"", "key_file = \"{dir}/key-short\" #!"), "at least 16"),
    // [timing]
    ("heartbeat 0", Swap("heartbeat_ms = 100", "heartbeat_ms = 0 #!"), "heartbeat_ms must be above 0"),
    ("dead below twice heartbeat", Swap("dead_ms = 500", "dead_ms = 150 #!"), "dead_ms (150) must be at least twice"),
    ("warn outside range", Swap("dead_ms = 500", "dead_ms = 500\nwarn_ms = 900 #!"), "warn_ms (900) must lie between"),
    ("lease too short", Swap("dead_ms = 500", "dead_ms = 500\nlease_ms = 150 #!"), "lease_ms (150) must be at least twice"),
    ("stop bound too long", Swap("dead_ms = 500", "dead_ms = 500\nstop_bound_ms = 400 #!"), "stop_bound_ms (400) must be at most half"),
    // [[node]]
    ("duplicate node", Swap("name = \"b\"", "name = \"a\" #!"), "duplicate node \"a\""),
    ("node without addresses", Swap("addresses = [\"10.0.0.2\"]", "addresses = []"), "has no addresses"),
    ("address count differs", Swap("addresses = [\"10.0.0.2\"]", "addresses = [\"10.0.0.2\", \"10.1.0.2\"]"), "has 2 addresses but the first node has 1"),
    ("address not an IP", Swap("addresses = [\"10.0.0.2\"]", "addresses = [\"10.0.0.2:99\"] #!"), "is not an IP address"),
    ("same address twice", Swap("addresses = [\"10.0.0.2\"]", "addresses = [\"10.0.0.1\"] #!"), "address 10.0.0.1 is given twice"),
    ("IPv4 and IPv6 on one link", Swap("addresses = [\"10.0.0.2\"]", "addresses = [\"fd00::2\"] #!"), "mixes IPv4"),
    ("unknown node role", Swap("role = \"witness\"", "role = \"wittness\" #!"), "unknown variant `wittness`"),
    // [[group]]
    ("duplicate group", Add("[[group]]\nname = \"site\" #!\n[[group.resource]]\ntype = \"exec\"\nname = \"x\"\nstart = \"true\"\nstop = \"true\"\n"), "duplicate group \"site\""),
    ("group names unknown node", Swap("name = \"site\"", "name = \"site\"\nnodes = [\"a\", \"zz\"] #!"), "names unknown node \"zz\""),
    ("group names a witness", Swap("name = \"site\"", "name = \"site\"\nnodes = [\"a\", \"w\"] #!"), "a witness"),
    ("group without resources", Add("[[group]]\nname = \"empty\" #!\n"), "has no resources"),
    ("VIP prefix too long", Swap("address = \"10.0.0.100/24\"", "address = \"10.0.0.100/33\" #!"), "from 0 to 32"),
    ("same VIP in two groups", Add("[[group]]\nname = \"other\"\n[[group.resource]]\ntype = \"vip\"\naddress = \"10.0.0.100/24\" #!\ninterface = \"eth0\"\n"), "floating IP 10.0.0.100 is in group \"site\" already"),
    ("db-primary without [database]", Add("[[group]]\nname = \"db\" #!\n[[group.resource]]\ntype = \"db-primary\"\n"), "no [database] section"),
    ("db-primary unknown server", Db(&[("[database]", "[[group]]\nname = \"db\"\n[[group.resource]]\ntype = \"db-primary\"\nserver = \"zz\" #!\n[database]")]), "unknown server \"zz\""),
    ("db-primary unguarded", Both("name = \"t\"", "name = \"t\"\nquorum = \"none\"", "[database]", "[[group]]\nname = \"db\" #!\n[[group.resource]]\ntype = \"db-primary\"\n[database]"), "ownership is unguarded"),
    // [api]
    ("API listen unparsable", Swap("listen = \"127.0.0.1:7947\"", "listen = \"localhost\" #!"), "is not an address: write IP:PORT"),
    ("API hosts with a port", Swap("listen = \"127.0.0.1:7947\"", "listen = \"127.0.0.1:7947\"\nhosts = [\"lb1:80\"] #!"), "must be a bare host name"),
    ("API max_connections 0", Swap("listen = \"127.0.0.1:7947\"", "listen = \"127.0.0.1:7947\"\nmax_connections = 0 #!"), "max_connections must be between 1 and 65536"),
    ("API token file missing", Swap("listen = \"127.0.0.1:7947\"", "listen = \"127.0.0.1:7947\"\ntoken_file = \"{dir}/nothing\" #!"), "API token file"),
    ("API TLS certificate missing", Swap("listen = \"127.0.0.1:7947\"", "listen = \"127.0.0.1:7947\"\n[api.tls]\ncert = \"{dir}/nocert.pem\" #!\nkey = \"{dir}/key.pem\""), "[api] TLS cert"),
    ("API TLS key of another certificate", Swap("listen = \"127.0.0.1:7947\"", "listen = \"127.0.0.1:7947\"\n[api.tls]\ncert = \"{dir}/cert.pem\"\nkey = \"{dir}/other-key.pem\" #!"), "does not belong to the certificate"),
    // [split_brain]
    ("ping target not an IP", Swap("[api]", "[split_brain]\nping_targets = [\"gateway\"] #!\n\n[api]"), "ping target \"gateway\" is not an IP address"),
    // [lb]
    ("lb workers 0", Swap("[lb]", "[lb]\nworkers = 0 #!"), "workers = 0 must be between 1 and 256"),
    ("lb nodes unknown", Swap("[lb]", "[lb]\nnodes = [\"zz\"] #!"), "nodes names unknown node \"zz\""),
    ("frontend bind not IP:port", Swap("bind = \"10.0.0.100:80\"", "bind = \"10.0.0.100\" #!"), "is not IP:port"),
    ("frontend unknown pool", Swap("pool = \"web\"", "pool = \"wbe\" #!"), "unknown pool \"wbe\" (pools: web)"),
    ("two frontends on one address", Add("[[lb.frontend]]\nname = \"web2\"\nbind = \"10.0.0.100:80\" #!\npool = \"web\"\n"), "overlaps frontend \"web\""),
    ("frontend overlaps a wildcard", Add("[[lb.frontend]]\nname = \"any\"\nbind = \"0.0.0.0:80\" #!\npool = \"web\"\n"), "split the traffic at random"),
    ("duplicate frontend", Add("[[lb.frontend]]\nname = \"web\" #!\nbind = \"10.0.0.100:81\"\npool = \"web\"\n"), "duplicate [[lb.frontend]] \"web\""),
    ("duplicate pool", Add("[[lb.pool]]\nname = \"web\" #!\n[[lb.pool.backend]]\nname = \"x\"\naddress = \"10.0.0.13:80\"\n"), "duplicate [[lb.pool]] \"web\""),
    ("pool without backends", Add("[[lb.pool]]\nname = \"empty\" #!\n"), "pool \"empty\" has no backends"),
    ("backend address bad", Swap("address = \"10.0.0.12:8080\"", "address = \"web-2:8080\" #!"), "is not IP:port"),
    ("backend address twice", Swap("address = \"10.0.0.12:8080\"", "address = \"10.0.0.11:8080\" #!"), "has the address 10.0.0.11:8080 of another backend"),
    ("backend weight 0", Swap("address = \"10.0.0.12:8080\"", "address = \"10.0.0.12:8080\"\nweight = 0 #!"), "weight 0 must be between 1 and 1000"),
    ("duplicate backend", Swap("name = \"web-2\"", "name = \"web-1\" #!"), "duplicate backend \"web-1\""),
    ("health status range reversed", Add("[lb.pool.health]\ntype = \"http\"\nexpect_status = [399, 200] #!\n"), "expect_status [399, 200]"),
    ("health path without slash", Add("[lb.pool.health]\ntype = \"http\"\npath = \"health\" #!\n"), "must start with /"),
    ("proxy protocol on HTTP", Swap("pool = \"web\"", "pool = \"web\"\nsend_proxy_protocol = \"v2\" #!"), "send_proxy_protocol needs mode = \"tcp\""),
    ("TLS certificate missing", Swap("pool = \"web\"", "pool = \"web\"\n[[lb.frontend.tls]]\ncert = \"{dir}/nocert.pem\" #!\nkey = \"{dir}/key.pem\""), "no such file"),
    ("TLS key of another certificate", Swap("pool = \"web\"", "pool = \"web\"\n[[lb.frontend.tls]]\ncert = \"{dir}/cert.pem\"\nkey = \"{dir}/other-key.pem\" #!"), "does not belong to the certificate"),
    // [database]
    ("one database server", Db(&[("[[database.server]]\nname = \"b\"\naddress = \"10.0.0.2:3306\"\n", "")]), "needs at least two"),
    ("unknown preferred_primary", Db(&[("[database]", "[database]\npreferred_primary = \"c\" #!")]), "preferred_primary \"c\" is not a [[database.server]] (servers: a, b)"),
    ("master-master with three", Db(&[("[database]", "[database]\ntopology = \"master-master\" #!"), ("address = \"10.0.0.2:3306\"\n", "address = \"10.0.0.2:3306\"\n[[database.server]]\nname = \"w\"\naddress = \"10.0.0.3:3306\"\n")]), "needs exactly two servers, found 3"),
    ("writer group missing", Db(&[("address = \"10.0.0.2:3306\"\n", "address = \"10.0.0.2:3306\"\n[database.writer]\ngroup = \"nope\" #!\n")]), "writer group \"nope\" is not a [[group]]"),
    ("writer frontend missing", Db(&[("address = \"10.0.0.2:3306\"\n", "address = \"10.0.0.2:3306\"\n[database.writer]\nlb_frontend = \"mysql\" #!\n")]), "writer lb_frontend \"mysql\" is not a [[lb.frontend]]"),
    ("server node missing", Db(&[("name = \"b\"\naddress", "name = \"b\"\nnode = \"zz\" #!\naddress")]), "runs on node \"zz\", which is not a [[node]]"),
    ("server address twice", Db(&[("address = \"10.0.0.2:3306\"", "address = \"10.0.0.1:3306\" #!")]), "address \"10.0.0.1:3306\" is used twice"),
    ("server address bad", Db(&[("address = \"10.0.0.2:3306\"", "address = \"10.0.0.2:port\" #!")]), "is not host:port"),
    ("credentials readable by others", Db(&[("admin_credentials_file = \"{dir}/db.cnf\"", "admin_credentials_file = \"{dir}/db-open.cnf\" #!")]), "readable by other users"),
    ("credentials missing", Db(&[("admin_credentials_file = \"{dir}/db.cnf\"", "admin_credentials_file = \"{dir}/none.cnf\" #!")]), "does not exist"),
];

fn keepup() -> &'static str {
    env!("CARGO_BIN_EXE_keepup")
}

fn write(p: &Path, data: &[u8], mode: u32) {
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn setup(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keepup-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir.join("key"), &[7u8; 32], 0o600);
    write(&dir.join("key-open"), &[7u8; 32], 0o644);
    write(&dir.join("key-short"), b"abcd", 0o600);
    write(&dir.join("db.cnf"), b"[client]\nuser=root\n", 0o600);
    write(&dir.join("db-open.cnf"), b"[client]\nuser=root\n", 0o644);
    let cert = rcgen::generate_simple_self_signed(vec!["site.test".to_string()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["other.test".to_string()]).unwrap();
    write(&dir.join("cert.pem"), cert.cert.pem().as_bytes(), 0o644);
    write(
        &dir.join("key.pem"),
        cert.signing_key.serialize_pem().as_bytes(),
        0o600,
    );
    write(
        &dir.join("other-key.pem"),
        other.signing_key.serialize_pem().as_bytes(),
        0o600,
    );
    dir
}

fn check(dir: &Path, name: &str, text: &str) -> (i32, String, String) {
    let file = dir.join(format!("{}.toml", name.replace([' ', '/'], "-")));
    std::fs::write(&file, text).unwrap();
    let out = Command::new(keepup())
        .args(["-c", file.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
        file.display().to_string(),
    )
}

#[test]
fn the_valid_file_passes() {
    let dir = setup("valid-config");
    for (what, text) in [
        ("base", BASE.to_string()),
        ("base-db", format!("{BASE}{DB}")),
    ] {
        let text = text.replace("{dir}", dir.to_str().unwrap());
        let (code, err, _) = check(&dir, what, &text);
        assert_eq!(code, 0, "{what} must pass:\n{err}");
    }
}

#[test]
fn every_broken_file_is_refused_with_its_line_in_plain_words() {
    let dir = setup("broken-configs");
    let d = dir.to_str().unwrap();
    let mut failures = Vec::new();
    for (name, edit, want) in CASES {
        let text = match edit {
            Swap(from, to) => {
                assert!(BASE.contains(from), "case {name}: base lacks {from:?}");
                BASE.replacen(from, to, 1)
            }
            Add(more) => format!("{BASE}{more}"),
            Db(swaps) => {
                let mut db = DB.to_string();
                for (from, to) in *swaps {
                    assert!(
                        db.contains(from),
                        "case {name}: database part lacks {from:?}"
                    );
                    db = db.replacen(from, to, 1);
                }
                format!("{BASE}{db}")
            }
            Both(bf, bt, df, dt) => {
                assert!(BASE.contains(bf) && DB.contains(df), "case {name}");
                format!("{}{}", BASE.replacen(bf, bt, 1), DB.replacen(df, dt, 1))
            }
        }
        .replace("{dir}", d);
        let line = text.lines().position(|l| l.contains("#!")).map(|i| i + 1);
        let (code, err, file) = check(&dir, name, &text);
        let found = err.lines().any(|l| {
            let at = match line {
                Some(n) => format!("{file}:{n}: "),
                None => format!("{file}:"),
            };
            l.starts_with(&at) && l.contains(want)
        });
        let jargon = ["os error", "expected u", "expected i", "..="]
            .iter()
            .find(|j| err.contains(*j));
        if code != 78 || !found || jargon.is_some() || err.contains("keepup: ") {
            failures.push(format!(
                "case {name:?}: exit {code}, wanted line {line:?} saying {want:?}{}\n{err}",
                jargon
                    .map(|j| format!(" (jargon {j:?})"))
                    .unwrap_or_default()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
    eprintln!("{} broken files, each refused at its line", CASES.len());
    let _ = std::fs::remove_dir_all(&dir);
}
