//! Eureka discovery adapter: a full fetch of `/eureka/apps`, then delta
//! fetches reconciled with the server's hash code, served as the
//! `discovery.v1` endpoint stream. The flags and watch arguments are
//! documented in `docs/adapters/eureka.md`.

#![warn(missing_docs)]

mod apps;
mod client;
mod config;
mod endpoints;
mod fetcher;
mod metrics;
mod model;
mod registry;

pub use self::{
    config::{ConfigError, Credentials, EurekaConfig, Mapping},
    metrics::EurekaMetrics,
    registry::EurekaRegistry,
};
