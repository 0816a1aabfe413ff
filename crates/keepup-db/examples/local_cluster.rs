//! Starts local mariadbd servers and prints a `[database]` section for them,
//! then waits until stdin closes (servers are killed on exit). For trying
//! `keepup db ...` by hand, and as a model for `keepup demo`.
//!
//! `cargo run -p keepup-db --example local_cluster -- 3 /tmp/kdb`  (master-slave)
//! `cargo run -p keepup-db --example local_cluster -- mm /tmp/kdb` (master-master pair)

use keepup_db::local_server::{free_port, write_credentials_file, LocalServer, LocalServerOptions};
use std::io::Read;

fn main() -> Result<(), keepup_db::DbError> {
    let args: Vec<String> = std::env::args().collect();
    let mm = args.get(1).map(|s| s == "mm").unwrap_or(false);
    let n: u32 = if mm {
        2
    } else {
        args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3)
    };
    let dir = std::path::PathBuf::from(
        args.get(2)
            .cloned()
            .unwrap_or_else(|| "/tmp/keepup-db-local".into()),
    );
    std::fs::create_dir_all(&dir).map_err(|e| keepup_db::DbError::Config(e.to_string()))?;
    let mut servers = Vec::new();
    for i in 0..n {
        let mut o = LocalServerOptions::new(i + 1);
        if mm {
            // One GTID domain per writable master.
            o.gtid_domain_id = i + 1;
        }
        servers.push(LocalServer::start(
            &format!("db-{}", i + 1),
            free_port()?,
            o,
        )?);
    }
    let creds = dir.join("admin.cnf");
    write_credentials_file(&creds)?;
    println!("[database]");
    println!(
        "topology = \"{}\"",
        if mm { "master-master" } else { "master-slave" }
    );
    println!("admin_credentials_file = \"{}\"", creds.display());
    println!(
        "replication_password_file = \"{}\"",
        dir.join("repl.password").display()
    );
    for s in &servers {
        println!(
            "\n[[database.server]]\nname = \"{}\"\naddress = \"{}\"",
            s.name(),
            s.address()
        );
    }
    eprintln!("servers running; close stdin (Ctrl-D) to stop them");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}
