//! End-to-end test support for Tributary: real binaries as child processes,
//! a contract-checking `discovery.v1` subscriber, a metrics reader, the
//! `discovery-file` registry, the adapter conformance suite, and for the
//! sidecar: the sidecar and demo backends as processes and an HTTP client.
//!
//! This crate is test code: its errors are `anyhow` errors meant for a
//! person reading a failed test.

#![warn(missing_docs)]

mod backend;
mod conformance;
mod endpoint_file;
mod fault;
pub mod health_support;
mod http;
mod metrics;
mod nacos;
mod process;
mod sidecar;
mod subscriber;
mod temp_file;

pub use self::{
    backend::{Backend, closed_port, service_file},
    conformance::{
        CheckResult, Outcome, RegistryControl, Report, SuiteOptions, TestEndpoint, run_suite,
    },
    endpoint_file::{EndpointFile, FileControl, render},
    fault::{Fault, FaultStub, Rule},
    http::{
        Body, BoxError, HttpClient, Reply, empty_body, full_body, http_request, read_body,
        streamed_body,
    },
    metrics::{Metrics, scrape, wait_for_metrics},
    nacos::{Nacos, NacosControl, NacosInstance},
    process::{Adapter, Process, loopback_args, workspace_binary},
    sidecar::{ConfigFile, Sidecar, Upstreams, web_config, web_nodes},
    subscriber::{EndpointSet, Subscriber, connect, describe, refusal},
};
