//! The runtime every Tributary discovery adapter shares.
//!
//! An adapter implements [`Registry`] (watch one service, yield full endpoint
//! sets) and hands it to [`Adapter`], which serves `discovery.v1` over gRPC:
//! one registry watch per distinct target shared by all its subscribers,
//! snapshot-to-delta diffing with versions, stale status on registry errors,
//! validation of every endpoint, an optional guard against sudden emptying,
//! `grpc.health.v1`, server reflection, Prometheus metrics, and OpenTelemetry
//! spans of every published update when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

#![warn(missing_docs)]

mod adapter;
mod backoff;
mod diff;
mod endpoint;
mod hub;
mod metrics;
mod registry;
mod server;
mod telemetry;
mod watch;

pub use self::{
    adapter::{
        Adapter, CommonArgs, LogFormat, ServeError, exit_with, init_logging, parse_duration,
    },
    backoff::Backoff,
    endpoint::{Answer, Endpoint, Health, InvalidEndpoint},
    metrics::{RegistryMetrics, RegistryRequest},
    registry::{InvalidTarget, ListError, Registry, RegistryError, Target},
};

#[cfg(test)]
mod tests;
