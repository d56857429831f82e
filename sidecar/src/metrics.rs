//! The admin API's `/metrics`: the state of every upstream and endpoint in
//! Prometheus text format, read from the live atomics at scrape time, so
//! that nothing is counted twice and the request path pays nothing.
//!
//! Request counters and latency histograms are atomics kept per route,
//! upstream and endpoint (see `telemetry::stats`); the scrape lists them.

use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
    },
    registry::Registry,
};

use crate::{
    app::App,
    health::Passive,
    telemetry::CLASSES,
    upstream::{Health, Upstream},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    route: String,
    upstream: String,
    code_class: &'static str,
}

/// Attempt series' labels: `upstream`, and `endpoint` unless it is off.
type AttemptLabels = Vec<(&'static str, String)>;

/// Series listed at scrape time from the live atomics.
#[derive(Debug)]
struct Listed<L, M> {
    name: &'static str,
    help: &'static str,
    rows: Vec<(L, M)>,
}

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
    register_requests(r, app);
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
    Ok(prometheus_text(&out))
}

/// Rewrites prometheus-client's OpenMetrics text as the Prometheus text
/// format 0.0.4, which `promtool check metrics` and every Prometheus read:
/// a counter family's `HELP` and `TYPE` lines name it with its `_total`
/// suffix, as its samples are named, and the `# EOF` and `# UNIT` lines go.
pub(crate) fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((tag, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(tag);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The request, attempt, discovery-version and export series.
fn register_requests(r: &mut Registry, app: &App) {
    let current = app.current();
    let upstream_of = |route: &str| {
        current
            .config
            .routes
            .iter()
            .find(|c| c.name == route)
            .map(|c| c.upstream.clone())
            .unwrap_or_default()
    };
    let mut classes = Vec::new();
    let mut durations = Vec::new();
    let mut in_flight = Vec::new();
    for (route, stats) in app.telemetry.routes.all() {
        let upstream = upstream_of(&route);
        for (i, code_class) in CLASSES.iter().enumerate() {
            let labels = ClassLabels {
                route: route.clone(),
                upstream: upstream.clone(),
                code_class,
            };
            classes.push((labels, ConstCounter::new(stats.responses[i].load(Relaxed))));
        }
        let labels = RouteLabels { route, upstream };
        durations.push((labels.clone(), stats.duration.snapshot()));
        in_flight.push((labels, ConstGauge::new(stats.in_flight.load(Relaxed))));
    }
    listed(
        r,
        "requests",
        "Responses by route, upstream and status class",
        classes,
    );
    listed(
        r,
        "request_duration_seconds",
        "Time from a request's arrival to its response head",
        durations,
    );
    listed(r, "requests_in_flight", "Requests being served", in_flight);

    let per_endpoint = app.telemetry.endpoint_metrics();
    let mut attempts = Vec::new();
    let mut failures = Vec::new();
    let mut transitions = Vec::new();
    let mut retries = Vec::new();
    let mut versions = Vec::new();
    let mut opened = Vec::new();
    let mut open = Vec::new();
    for u in &current.upstreams {
        let upstream = u.name.to_string();
        let state = u.state();
        let up = UpstreamLabels {
            upstream: upstream.clone(),
        };
        retries.push((up.clone(), ConstCounter::new(u.stats.retries.load(Relaxed))));
        let conns = &u.stats.connections;
        opened.push((up.clone(), ConstCounter::new(conns.opened.load(Relaxed))));
        open.push((up, ConstGauge::new(conns.open.load(Relaxed))));
        let departed = &u.stats.departed;
        let mut sum = departed.duration.snapshot();
        let mut failed = departed.failures.load(Relaxed);
        let mut changed = departed.health_transitions.load(Relaxed);
        for e in &state.endpoints {
            let a = e.state.attempts();
            if per_endpoint {
                let labels: AttemptLabels = vec![
                    ("upstream", upstream.clone()),
                    ("endpoint", e.addr.to_string()),
                ];
                attempts.push((labels.clone(), a.duration.snapshot()));
                failures.push((labels.clone(), ConstCounter::new(a.failures.load(Relaxed))));
                transitions.push((
                    labels,
                    ConstCounter::new(a.health_transitions.load(Relaxed)),
                ));
            } else {
                a.duration.add_to(&mut sum);
                failed += a.failures.load(Relaxed);
                changed += a.health_transitions.load(Relaxed);
            }
        }
        if !per_endpoint {
            let labels: AttemptLabels = vec![("upstream", upstream.clone())];
            attempts.push((labels.clone(), sum));
            failures.push((labels.clone(), ConstCounter::new(failed)));
            transitions.push((labels, ConstCounter::new(changed)));
        }
        for src in &state.sources {
            let labels = SourceLabels {
                upstream: upstream.clone(),
                source: src.name.clone(),
            };
            versions.push((labels, ConstGauge::new(src.version as i64)));
        }
    }
    listed(
        r,
        "upstream_attempt_duration_seconds",
        "Time of each upstream attempt to its response head or failure",
        attempts,
    );
    listed(
        r,
        "upstream_attempt_failures",
        "Upstream attempts that got no response (connect error, timeout, reset)",
        failures,
    );
    listed(
        r,
        "endpoint_health_transitions",
        "Changes of an endpoint's health verdicts (registry, active, passive)",
        transitions,
    );
    listed(
        r,
        "upstream_retries",
        "Attempts after the first of a request",
        retries,
    );
    listed(
        r,
        "upstream_connections_opened",
        "Connections the upstream's keep-alive pools opened",
        opened,
    );
    listed(
        r,
        "upstream_connections",
        "Connections of the upstream's pools open now, in use or idle",
        open,
    );
    listed(
        r,
        "discovery_source_version",
        "The endpoint-set version last received from the source",
        versions,
    );

    let export = &app.telemetry.export;
    let one = |n: u64| vec![(Vec::<(String, String)>::new(), ConstCounter::new(n))];
    listed(
        r,
        "trace_spans_dropped",
        "Spans dropped: the export queue was full, or export was failing",
        one(export.dropped.load(Relaxed)),
    );
    listed(
        r,
        "trace_spans_exported",
        "Spans the trace collector accepted",
        one(export.exported.load(Relaxed)),
    );
    listed(
        r,
        "trace_shedding",
        "1 while the span queue is full or export fails: new requests are not traced",
        vec![(
            Vec::<(String, String)>::new(),
            ConstGauge::new(i64::from(export.shedding.load(Relaxed))),
        )],
    );
    listed(
        r,
        "trace_spans_rejected",
        "Spans the trace collector rejected in accepted exports (partial success)",
        one(export.rejected.load(Relaxed)),
    );
    listed(
        r,
        "trace_requests_untraced",
        "Requests not traced because the sidecar was shedding",
        one(export.untraced.load(Relaxed)),
    );
    listed(
        r,
        "trace_shed_episodes",
        "Times the span queue overflowed or export failed and tracing of new requests paused",
        one(export.shed_episodes.load(Relaxed)),
    );
    listed(
        r,
        "trace_spans_failed",
        "Spans lost to failed or timed-out exports",
        one(export.failed.load(Relaxed)),
    );
}

fn listed<L, M>(r: &mut Registry, name: &'static str, help: &'static str, rows: Vec<(L, M)>)
where
    L: EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    M: EncodeMetric + std::fmt::Debug + Send + Sync + 'static,
{
    r.register_collector(Box::new(Listed { name, help, rows }));
}

// === impl Listed ===

impl<L, M> Collector for Listed<L, M>
where
    L: EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    M: EncodeMetric + std::fmt::Debug + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some((_, first)) = self.rows.first() else {
            return Ok(());
        };
        let ty: MetricType = first.metric_type();
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, ty)?;
        for (labels, value) in &self.rows {
            value.encode(metric.encode_family(labels)?)?;
        }
        Ok(())
    }
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
