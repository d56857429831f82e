//! The adapter's own series, beside the runtime's: how its fetches of the
//! registry go, and how often the hash code sent it back to a full fetch.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Fetch metrics of one adapter; clones share the same series.
#[derive(Clone, Debug, Default)]
pub struct EurekaMetrics {
    fetches: Family<FetchLabels, Counter>,
    reconciliations: Counter,
    instances: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    kind: &'static str,
    result: &'static str,
}

/// Which request a fetch was.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Full,
    Delta,
}

// === impl EurekaMetrics ===

impl EurekaMetrics {
    /// Registers every series under the `eureka_` prefix.
    pub fn register(&self, reg: &mut Registry) {
        let reg = reg.sub_registry_with_prefix("eureka");
        reg.register(
            "fetches",
            "Registry fetches, by kind (full, delta) and result (ok, error)",
            self.fetches.clone(),
        );
        reg.register(
            "reconciliations",
            "Full fetches made because a delta's hash code disagreed or the delta was refused",
            self.reconciliations.clone(),
        );
        reg.register(
            "instances",
            "Instances in the adapter's copy of the registry",
            self.instances.clone(),
        );
    }

    pub(crate) fn fetched(&self, kind: Kind, ok: bool) {
        let kind = match kind {
            Kind::Full => "full",
            Kind::Delta => "delta",
        };
        let result = if ok { "ok" } else { "error" };
        self.fetches
            .get_or_create(&FetchLabels { kind, result })
            .inc();
    }

    pub(crate) fn reconciled(&self) {
        self.reconciliations.inc();
    }

    pub(crate) fn instances(&self, n: usize) {
        self.instances.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
