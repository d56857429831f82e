//! DNS as a [`Registry`]: every watch target is a DNS name, resolved in a
//! loop shared by every watch of that name and lookup.

use std::{sync::Arc, time::Duration};

use discovery_core::{Answer, InvalidTarget, Registry, RegistryError, Target};
use futures_util::stream::BoxStream;

use crate::{
    args::Query,
    metrics::DnsMetrics,
    resolve::{Resolver, ResolverSettings},
    shared::Loops,
    watch::Refresh,
};

/// A registry that reads endpoints from DNS records.
pub struct DnsRegistry {
    loops: Loops,
    metrics: DnsMetrics,
}

/// The DNS registry could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DnsSetupError(String);

// === impl DnsRegistry ===

impl DnsRegistry {
    /// A registry asking the servers of `settings`, refreshing each name when
    /// its TTL runs out, kept within `[min_ttl, max_ttl]`.
    pub fn new(
        settings: &ResolverSettings,
        min_ttl: Duration,
        max_ttl: Duration,
    ) -> Result<Self, DnsSetupError> {
        if min_ttl.is_zero() {
            return Err(DnsSetupError("--min-ttl must be above 0".into()));
        }
        if max_ttl < min_ttl {
            return Err(DnsSetupError(format!(
                "--max-ttl {max_ttl:?} is below --min-ttl {min_ttl:?}"
            )));
        }
        let resolver = Arc::new(Resolver::new(settings).map_err(DnsSetupError)?);
        let metrics = DnsMetrics::default();
        Ok(Self {
            loops: Loops::new(resolver, metrics.clone(), Refresh { min_ttl, max_ttl }),
            metrics,
        })
    }

    /// The registry's own metrics, to register with the adapter's.
    pub fn metrics(&self) -> DnsMetrics {
        self.metrics.clone()
    }
}

impl Registry for DnsRegistry {
    fn validate(&self, target: &Target) -> Result<(), InvalidTarget> {
        Query::parse(target).map(drop)
    }

    fn watch(&self, target: &Target) -> BoxStream<'static, Result<Answer, RegistryError>> {
        let query = match Query::parse(target) {
            Ok(q) => q,
            // validate() refused it already; a stream that says why.
            Err(e) => {
                return Box::pin(futures_util::stream::once(async move {
                    Err(RegistryError::new(e.0))
                }));
            }
        };
        self.loops.watch(&target.service, query)
    }
}
