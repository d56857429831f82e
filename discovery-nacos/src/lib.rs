//! Nacos discovery adapter: Nacos 2 push subscriptions over gRPC (with the v1
//! HTTP query as fall-back and as the poll mode) served as the `discovery.v1`
//! endpoint stream. The client is this crate's own; `docs/adapters/nacos.md`
//! says why and documents flags, watch arguments and the health mapping.

#![warn(missing_docs)]

mod config;
mod convert;
mod grpc;
mod http;
mod model;
mod pb;
mod registry;
mod target;

pub use self::{
    config::{Credentials, Mode, NacosConfig, ServerAddr},
    convert::EndpointOptions,
    registry::{ConfigError, NacosRegistry},
};
