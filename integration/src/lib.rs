//! End-to-end test support for Tributary: real binaries as child processes,
//! a contract-checking `discovery.v1` subscriber, a metrics reader, the
//! `discovery-file` registry, the adapter conformance suite, and for the
//! sidecar: the sidecar and demo backends as processes and an HTTP client.
//!
//! This crate is test code: its errors are `anyhow` errors meant for a
//! person reading a failed test.

#![warn(missing_docs)]

mod backend;
mod bind;
mod conformance;
mod consul;
mod endpoint_file;
mod eureka;
mod fault;
pub mod health_support;
mod http;
mod metrics;
mod nacos;
mod otel;
mod process;
mod sidecar;
mod subscriber;
mod temp_file;

pub use self::{
    backend::{Backend, closed_port, service_file},
    bind::{Bind, DNS_CONTROL_RECORDS, DnsControl, ZONE, start_dns_adapter, wait_for_status},
    conformance::{
        CheckResult, Outcome, RegistryControl, Report, SuiteOptions, TestEndpoint, run_suite,
    },
    consul::{CONSUL_NODE, Consul, ConsulControl, ConsulPorts, consul_binary},
    endpoint_file::{EndpointFile, FileControl, render},
    eureka::{EurekaControl, EurekaInstance, EurekaServer, eureka_jar},
    fault::{Fault, FaultStub, Rule},
    http::{
        Body, BoxError, HttpClient, Reply, empty_body, full_body, http_request, read_body,
        streamed_body,
    },
    metrics::{Metrics, scrape, wait_for_metrics},
    nacos::{Nacos, NacosControl, NacosInstance},
    otel::{Collector, ExportedSpan, promtool_check},
    process::{Adapter, Process, install_tool, loopback_args, workspace_binary},
    sidecar::{ConfigFile, Sidecar, Upstreams, web_config, web_nodes},
    subscriber::{EndpointSet, Subscriber, connect, describe, refusal},
};
