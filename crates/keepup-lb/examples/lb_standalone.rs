//! Runs keepup's load balancer alone from a TOML file, for benchmarks and
//! manual tests: `lb-standalone FILE` where FILE is a keepup.toml (its `[lb]`
//! table is used) or just the `[lb]` table's contents. Stops on SIGINT/SIGTERM.

use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: lb-standalone FILE.toml")?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let lb = match table.remove("lb") {
        Some(v) => v,
        None => toml::Value::Table(table),
    };
    let section: keepup_lb::LbSection = lb.try_into().map_err(|e| format!("{path}: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let lb = keepup_lb::start(&section).await?;
        for f in &section.frontend {
            if let Some(a) = lb.local_addr(&f.name) {
                println!("frontend {} listening on {a}", f.name);
            }
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        lb.shutdown(Duration::from_secs(2)).await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
