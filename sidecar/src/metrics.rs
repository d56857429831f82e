//! The admin API's `/metrics`: the state of every upstream and endpoint in
//! Prometheus text format, read from the live atomics at scrape time, so
//! that nothing is counted twice and the request path pays nothing.
//!
//! Request counters and latency histograms come with the observability work;
//! this is the discovery and health state.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    app::App,
    health::Passive,
    upstream::{Health, Upstream},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    upstream: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    upstream: String,
    endpoint: String,
    check: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    upstream: String,
    source: String,
}

/// The series of one scrape.
#[derive(Default)]
struct Snapshot {
    endpoints: Family<UpstreamLabels, Gauge>,
    available: Family<UpstreamLabels, Gauge>,
    panic: Family<UpstreamLabels, Gauge>,
    panic_episodes: Family<UpstreamLabels, Counter>,
    panic_requests: Family<UpstreamLabels, Counter>,
    healthy: Family<CheckLabels, Gauge>,
    ejections: Family<EndpointLabels, Gauge>,
    in_flight: Family<EndpointLabels, Gauge>,
    source_stale: Family<SourceLabels, Gauge>,
    source_synced: Family<SourceLabels, Gauge>,
}

/// Renders every series in Prometheus text format.
pub(crate) fn render(app: &App) -> Result<String, std::fmt::Error> {
    let s = Snapshot::default();
    for u in &app.current().upstreams {
        s.record(u);
    }
    let mut reg = Registry::default();
    let r = reg.sub_registry_with_prefix("sidecar");
    r.register(
        "upstream_endpoints",
        "Endpoints in the upstream's current set",
        s.endpoints,
    );
    r.register(
        "upstream_available_endpoints",
        "Endpoints that may take new requests (weight above 0, healthy)",
        s.available,
    );
    r.register(
        "upstream_panic",
        "1 while every endpoint is unavailable and all are used",
        s.panic,
    );
    r.register(
        "upstream_panic_episodes",
        "Times the upstream entered panic mode",
        s.panic_episodes,
    );
    r.register(
        "upstream_panic_requests",
        "Requests balanced in panic mode",
        s.panic_requests,
    );
    r.register(
        "endpoint_healthy",
        "1 if the endpoint is healthy by this check (combined, registry, active, passive)",
        s.healthy,
    );
    r.register(
        "endpoint_passive_ejections",
        "Passive ejections in a row (drives the ejection back-off)",
        s.ejections,
    );
    r.register(
        "endpoint_in_flight",
        "Requests in flight to the endpoint",
        s.in_flight,
    );
    r.register(
        "discovery_source_stale",
        "1 while the source's endpoints may be out of date",
        s.source_stale,
    );
    r.register(
        "discovery_source_synced",
        "1 once the source delivered its first snapshot",
        s.source_synced,
    );
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

// === impl Snapshot ===

impl Snapshot {
    fn record(&self, u: &Upstream) {
        let state = u.state();
        let up = UpstreamLabels {
            upstream: u.name.to_string(),
        };
        self.endpoints
            .get_or_create(&up)
            .set(state.endpoints.len() as i64);
        let available = state.endpoints.iter().filter(|e| e.is_available()).count();
        self.available.get_or_create(&up).set(available as i64);
        self.panic
            .get_or_create(&up)
            .set(i64::from(u.panic.is_active()));
        self.panic_episodes
            .get_or_create(&up)
            .inc_by(u.panic.episodes());
        self.panic_requests
            .get_or_create(&up)
            .inc_by(u.panic.picks());
        let checks = u.cfg.checks.as_ref();
        let (active, passive) = (
            checks.is_some_and(|c| c.active.is_some()),
            checks.is_some_and(|c| c.passive.is_some()),
        );
        for e in &state.endpoints {
            let endpoint = e.addr.to_string();
            let cell = e.state.verdicts();
            let check = |check: &'static str, ok: bool| {
                let labels = CheckLabels {
                    upstream: up.upstream.clone(),
                    endpoint: endpoint.clone(),
                    check,
                };
                self.healthy.get_or_create(&labels).set(i64::from(ok));
            };
            check("combined", e.state.health() == Health::Healthy);
            check("registry", cell.registry() == Health::Healthy);
            if active {
                check("active", !cell.active_down());
            }
            let labels = EndpointLabels {
                upstream: up.upstream.clone(),
                endpoint: endpoint.clone(),
            };
            if passive {
                check("passive", cell.passive() != Passive::Ejected);
                self.ejections
                    .get_or_create(&labels)
                    .set(i64::from(cell.ejections()));
            }
            self.in_flight
                .get_or_create(&labels)
                .set(e.state.in_flight() as i64);
        }
        for src in &state.sources {
            let labels = SourceLabels {
                upstream: up.upstream.clone(),
                source: src.name.clone(),
            };
            self.source_stale
                .get_or_create(&labels)
                .set(i64::from(src.stale));
            self.source_synced
                .get_or_create(&labels)
                .set(i64::from(src.synced));
        }
    }
}
