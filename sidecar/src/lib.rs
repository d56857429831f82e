//! Tributary's per-pod sidecar proxy: listeners, routes and upstreams whose
//! endpoints come from static nodes and discovery adapters.

#![warn(missing_docs)]

mod admin;
mod app;
pub mod balance;
pub mod config;
mod discovery;
mod health;
mod logging;
mod metrics;
mod proxy;
mod telemetry;
pub mod upstream;

pub use self::{
    admin::serve_admin, app::App, config::Config, logging::init_logging, telemetry::Telemetry,
};
