//! The DNS adapter's own metrics, next to the runtime's `discovery_*` series.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// The adapter's `discovery_dns_*` series; clones share them.
#[derive(Clone, Default)]
pub struct DnsMetrics {
    dropped: Family<NameLabels, Counter>,
    refresh: Family<NameLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    loops: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    service: String,
}

// === impl DnsMetrics ===

impl DnsMetrics {
    /// Registers the series under the `discovery_dns_` prefix.
    pub fn register(&self, reg: &mut Registry) {
        let reg = reg.sub_registry_with_prefix("discovery_dns");
        reg.register(
            "dropped_targets",
            "SRV targets left out of an answer because they did not resolve, per round",
            self.dropped.clone(),
        );
        reg.register(
            "loops",
            "Resolution loops running, one per watched name and lookup",
            self.loops.clone(),
        );
        reg.register(
            "refresh_seconds",
            "Wait before the next query of a watched name (its TTL, clamped, with jitter)",
            self.refresh.clone(),
        );
    }

    pub(crate) fn dropped_targets(&self, service: &str, n: usize) {
        if n > 0 {
            self.dropped
                .get_or_create(&labels(service))
                .inc_by(n as u64);
        }
    }

    pub(crate) fn loop_opened(&self) {
        self.loops.inc();
    }

    pub(crate) fn loop_closed(&self) {
        self.loops.dec();
    }

    pub(crate) fn refresh_in(&self, service: &str, wait: Duration) {
        self.refresh
            .get_or_create(&labels(service))
            .set(wait.as_secs_f64());
    }
}

fn labels(service: &str) -> NameLabels {
    NameLabels {
        service: service.to_string(),
    }
}
