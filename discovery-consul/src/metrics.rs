//! The adapter's own series about its Consul calls, next to the runtime's
//! `discovery_*` ones: calls by endpoint and outcome, calls in flight (one
//! blocking query per watch), and index resets.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// The adapter's Consul call metrics; clones share the same series.
#[derive(Clone, Debug, Default)]
pub struct ConsulMetrics {
    requests: Family<CallLabels, Counter>,
    in_flight: Family<EndpointLabel, Gauge>,
    index_resets: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    endpoint: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

/// Counts a call in flight until dropped.
pub(crate) struct InFlight {
    gauge: Gauge,
}

// === impl ConsulMetrics ===

impl ConsulMetrics {
    /// Registers every series under the `consul_` prefix: calls by endpoint
    /// and outcome, calls in flight, index resets.
    pub fn register(&self, reg: &mut Registry) {
        let reg = reg.sub_registry_with_prefix("consul");
        reg.register(
            "requests",
            "Calls to Consul that ended, by endpoint and outcome (ok or error)",
            self.requests.clone(),
        );
        reg.register(
            "requests_in_flight",
            "Calls to Consul under way (blocking queries wait here), by endpoint",
            self.in_flight.clone(),
        );
        reg.register(
            "index_resets",
            "Blocking queries whose X-Consul-Index went backwards or was 0",
            self.index_resets.clone(),
        );
    }

    /// Marks a call to `endpoint` as started.
    pub(crate) fn start(&self, endpoint: &'static str) -> InFlight {
        let gauge = self
            .in_flight
            .get_or_create(&EndpointLabel { endpoint })
            .clone();
        gauge.inc();
        InFlight { gauge }
    }

    /// Counts an ended call.
    pub(crate) fn ended(&self, endpoint: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.requests
            .get_or_create(&CallLabels { endpoint, outcome })
            .inc();
    }

    /// Counts an index reset.
    pub(crate) fn index_reset(&self) {
        self.index_resets.inc();
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The metric label of a call to `/v1/<segments…>`: its endpoint without
/// the service name.
pub(crate) fn endpoint_label(segments: &[&str]) -> &'static str {
    match segments {
        ["health", "service", ..] => "/v1/health/service",
        ["catalog", "services", ..] => "/v1/catalog/services",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_endpoint() {
        let m = ConsulMetrics::default();
        let mut reg = Registry::default();
        m.register(&mut reg);
        let ep = endpoint_label(&["health", "service", "web"]);
        let call = m.start(ep);
        m.ended(ep, true);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(
            text.contains(r#"consul_requests_in_flight{endpoint="/v1/health/service"} 1"#),
            "{text}"
        );
        drop(call);
        m.index_reset();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains(r#"consul_requests_in_flight{endpoint="/v1/health/service"} 0"#));
        assert!(
            text.contains(r#"consul_requests_total{endpoint="/v1/health/service",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains("consul_index_resets_total 1"), "{text}");
        assert_eq!(
            endpoint_label(&["catalog", "services"]),
            "/v1/catalog/services"
        );
    }
}
