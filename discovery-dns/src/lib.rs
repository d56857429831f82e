//! DNS discovery adapter: SRV and A/AAAA records, refreshed when their TTL
//! runs out, served as the `discovery.v1` endpoint stream. Documented in
//! `docs/adapters/dns.md`.

#![warn(missing_docs)]

mod args;
mod metrics;
mod registry;
mod resolve;
mod select;
mod shared;
mod watch;

pub use self::{
    metrics::DnsMetrics,
    registry::{DnsRegistry, DnsSetupError},
    resolve::ResolverSettings,
};
