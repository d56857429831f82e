//! Consul discovery adapter: watches `/v1/health/service/<name>` with blocking
//! queries and serves it as the `discovery.v1` endpoint stream. How to run it,
//! its flags and watch arguments, and how Consul's health maps to endpoints:
//! `docs/adapters/consul.md`.

#![warn(missing_docs)]

mod args;
mod blocking;
mod client;
mod health;
mod metrics;
mod registry;
mod reply;

pub use self::{
    args::Consistency,
    client::{ClientConfig, ConfigError, Token},
    metrics::ConsulMetrics,
    registry::{ConsulRegistry, WatchOptions},
};
