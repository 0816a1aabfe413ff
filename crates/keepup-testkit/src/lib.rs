//! Test harness shared by keepup's integration tests and benchmarks:
//! network-namespace labs (`lab`), a fake DigitalOcean API (`fake_do`), and
//! the skip policy (`require`). Used as a dev-dependency only, never shipped.

pub mod fake_do;
pub mod lab;
pub mod require;
