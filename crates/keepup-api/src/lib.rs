//! The agent's HTTP API: one vocabulary (serde types in [`types`]) shared by
//! `keepup status`, the control commands, `/metrics` and the dashboard.
//!
//! Routes:
//! - `GET /v1/status` — [`types::StatusReport`] as JSON (open on loopback; token elsewhere)
//! - `GET /v1/events` — recent [`types::EventRecord`]s as JSON
//! - `GET /v1/cluster` — every node's status side by side ([`cluster`])
//! - `GET /metrics` — Prometheus text format
//! - `GET /` — the live dashboard; `GET /openapi.json` — this API's description
//! - `POST /v1/...` — control requests ([`types::ControlRequest`]): the control
//!   token and a JSON body type, always ([`guard`] has every rule)
//!
//! The server takes an already-bound listener and a shutdown future, so
//! tests bind port 0 and never guess ports.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod client;
pub mod cluster;
pub mod guard;
pub mod schema;
mod server;
pub mod tokens;
pub mod types;

pub use client::ApiClient;
pub use guard::AccessPolicy;
pub use server::{serve, Backend, BoxFuture, ServeOptions};
pub use tokens::ApiTokens;
/// The TLS acceptor [`ServeOptions::tls`] takes.
pub use tokio_rustls::TlsAcceptor;
/// The HTTP types [`Backend::extra`] takes and returns.
pub use {bytes::Bytes, hyper::Method, hyper::StatusCode};

/// The OpenAPI 3 description of every route (served at `/openapi.json`;
/// a test checks it against the server).
pub const OPENAPI: &str = include_str!("../openapi.json");
