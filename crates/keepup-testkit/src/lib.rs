//! The lab kit shared by keepup's integration tests, benchmarks and
//! `keepup demo`: network-namespace labs (`lab`), a fake DigitalOcean API
//! (`fake_do`), small web servers that answer with their name (`web`), an
//! HTTP probe that measures service gaps (`probe`), a checker over recorded
//! holding intervals (`history`), the database fault-injection run's
//! recorders (`dbclient`) and checker (`dbcheck`), and the skip policy
//! (`require`). Nothing here runs in a production agent.

pub mod dbcheck;
pub mod dbclient;
pub mod fake_do;
pub mod history;
pub mod lab;
pub mod probe;
pub mod require;
pub mod web;

/// CLOCK_MONOTONIC in ns: one clock for every namespace of the machine, so
/// recorders in different lab hosts stamp events on one timeline.
pub fn monotonic_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}
