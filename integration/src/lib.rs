//! End-to-end test support for Tributary: real binaries as child processes,
//! a contract-checking `discovery.v1` subscriber, a metrics reader, the
//! `discovery-file` registry, and the adapter conformance suite.
//!
//! This crate is test code: its errors are `anyhow` errors meant for a
//! person reading a failed test.

#![warn(missing_docs)]

mod conformance;
mod endpoint_file;
pub mod health_support;
mod metrics;
mod process;
mod subscriber;

pub use self::{
    conformance::{
        CheckResult, Outcome, RegistryControl, Report, SuiteOptions, TestEndpoint, run_suite,
    },
    endpoint_file::{EndpointFile, FileControl, render},
    metrics::{Metrics, scrape, wait_for_metrics},
    process::{Adapter, Process, loopback_args, workspace_binary},
    subscriber::{EndpointSet, Subscriber, connect, describe, refusal},
};
