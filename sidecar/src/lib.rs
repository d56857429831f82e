//! Tributary's per-pod sidecar proxy: listeners, routes and upstreams whose
//! endpoints come from static nodes and discovery adapters.

#![warn(missing_docs)]

pub mod balance;
pub mod config;
pub mod upstream;
