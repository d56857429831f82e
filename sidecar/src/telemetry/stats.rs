//! Request-path counters and latency histograms: plain atomics, resolved
//! once per route, upstream and endpoint when those are built, so a request
//! pays a few relaxed `fetch_add`s and no lookup, lock or allocation. The
//! scrape reads them into [`HistogramSnapshot`]s.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

/// Upper bounds of the latency buckets, in seconds (loopback hops take tens
/// of microseconds, slow upstreams seconds).
pub(crate) const BUCKETS_S: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// [`BUCKETS_S`] in nanoseconds, for the integer comparison on the request path.
const BUCKETS_NS: [u64; 14] = {
    let mut ns = [0; 14];
    let mut i = 0;
    while i < 14 {
        ns[i] = (BUCKETS_S[i] * 1e9) as u64;
        i += 1;
    }
    ns
};

/// A latency histogram of atomics: one counter per bucket (the last is
/// `+Inf`) and the sum in nanoseconds; the count is the buckets' sum.
#[derive(Debug, Default)]
pub(crate) struct LatencyHistogram {
    buckets: [AtomicU64; 15],
    sum_ns: AtomicU64,
}

/// A histogram read at scrape time.
#[derive(Clone, Debug, Default)]
pub(crate) struct HistogramSnapshot {
    /// Per-bucket (not cumulative) counts, `+Inf` last.
    counts: [u64; 15],
    sum_ns: u64,
}

/// Responses by status class (`1xx`..`5xx`).
pub(crate) const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One route's counters.
#[derive(Debug, Default)]
pub(crate) struct RouteStats {
    /// Responses by status class.
    pub(crate) responses: [AtomicU64; 5],
    /// Time from the request's arrival to its response head.
    pub(crate) duration: LatencyHistogram,
    /// Requests being served now.
    pub(crate) in_flight: AtomicI64,
}

/// One upstream's counters (kept across reloads that change it).
#[derive(Debug, Default)]
pub(crate) struct UpstreamStats {
    /// Attempts after the first one of a request.
    pub(crate) retries: AtomicU64,
    /// Attempt counts of endpoints that left the set, so that sums over the
    /// upstream never go down.
    pub(crate) departed: AttemptStats,
    /// Connections of the upstream's keep-alive pools.
    pub(crate) connections: Arc<crate::proxy::ConnectionStats>,
}

/// One endpoint's attempts: their latency to the response head (or the
/// failure) and how many failed.
#[derive(Debug, Default)]
pub(crate) struct AttemptStats {
    /// Every attempt's time to its response head or failure.
    pub(crate) duration: LatencyHistogram,
    /// Attempts that got no response (connect failure, timeout, error).
    pub(crate) failures: AtomicU64,
    /// Health state changes of the endpoint, by any check.
    pub(crate) health_transitions: AtomicU64,
}

/// Keeps each route's counters by name across reloads.
#[derive(Debug, Default)]
pub(crate) struct RouteStatsStore {
    routes: std::sync::Mutex<HashMap<String, Arc<RouteStats>>>,
}

// === impl LatencyHistogram ===

impl LatencyHistogram {
    /// Counts one observation: two relaxed atomic adds.
    #[inline]
    pub(crate) fn observe(&self, d: Duration) {
        let ns = d.as_nanos().min(u128::from(u64::MAX)) as u64;
        let i = BUCKETS_NS.iter().position(|&b| ns <= b).unwrap_or(14);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// The current counts.
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut s = HistogramSnapshot::default();
        self.add_to(&mut s);
        s
    }

    /// Adds the current counts to `s`.
    pub(crate) fn add_to(&self, s: &mut HistogramSnapshot) {
        for (c, b) in s.counts.iter_mut().zip(&self.buckets) {
            *c += b.load(Relaxed);
        }
        s.sum_ns += self.sum_ns.load(Relaxed);
    }

    /// Adds `s` into this histogram (an endpoint leaving folds into its upstream).
    fn absorb(&self, s: &HistogramSnapshot) {
        for (b, c) in self.buckets.iter().zip(s.counts) {
            b.fetch_add(c, Relaxed);
        }
        self.sum_ns.fetch_add(s.sum_ns, Relaxed);
    }
}

// === impl HistogramSnapshot ===

impl HistogramSnapshot {
    /// Observations counted.
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl TypedMetric for HistogramSnapshot {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for HistogramSnapshot {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = BUCKETS_S
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(
            self.sum_ns as f64 / 1e9,
            self.count(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

// === impl RouteStats ===

impl RouteStats {
    /// Counts a response of `status` after `elapsed`.
    #[inline]
    pub(crate) fn record(&self, status: u16, elapsed: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.responses[class].fetch_add(1, Relaxed);
        self.duration.observe(elapsed);
    }
}

// === impl UpstreamStats ===

impl UpstreamStats {
    /// Folds the counts of an endpoint that left the set.
    pub(crate) fn absorb(&self, gone: &AttemptStats) {
        self.departed.duration.absorb(&gone.duration.snapshot());
        self.departed
            .failures
            .fetch_add(gone.failures.load(Relaxed), Relaxed);
        self.departed
            .health_transitions
            .fetch_add(gone.health_transitions.load(Relaxed), Relaxed);
    }
}

// === impl AttemptStats ===

impl AttemptStats {
    /// Counts one attempt that took `elapsed`; `failed` when it got no response.
    #[inline]
    pub(crate) fn record(&self, elapsed: Duration, failed: bool) {
        self.duration.observe(elapsed);
        if failed {
            self.failures.fetch_add(1, Relaxed);
        }
    }
}

// === impl RouteStatsStore ===

impl RouteStatsStore {
    /// The counters of route `name`, made on first use.
    pub(crate) fn get(&self, name: &str) -> Arc<RouteStats> {
        let mut routes = self.routes.lock().expect("route stats lock poisoned");
        routes.entry(name.to_owned()).or_default().clone()
    }

    /// Forgets routes not in `names` (a reload removed them).
    pub(crate) fn retain(&self, names: &[&str]) {
        let mut routes = self.routes.lock().expect("route stats lock poisoned");
        routes.retain(|n, _| names.contains(&n.as_str()));
    }

    /// Every route's counters, sorted by name.
    pub(crate) fn all(&self) -> Vec<(String, Arc<RouteStats>)> {
        let routes = self.routes.lock().expect("route stats lock poisoned");
        let mut all: Vec<_> = routes.iter().map(|(n, s)| (n.clone(), s.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_sum() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count(), 4);
        assert_eq!(s.counts[0], 2, "<= 100 µs: {s:?}");
        assert_eq!(s.counts[5], 1, "<= 5 ms: {s:?}");
        assert_eq!(s.counts[14], 1, "+Inf: {s:?}");
        assert_eq!(s.sum_ns, 60_003_150_000);
    }

    #[test]
    fn departed_endpoints_keep_upstream_sums_growing() {
        let up = UpstreamStats::default();
        let ep = AttemptStats::default();
        ep.record(Duration::from_millis(1), true);
        ep.record(Duration::from_millis(2), false);
        up.absorb(&ep);
        assert_eq!(up.departed.duration.snapshot().count(), 2);
        assert_eq!(up.departed.failures.load(Relaxed), 1);
    }

    #[test]
    fn status_classes() {
        let r = RouteStats::default();
        for s in [101, 200, 204, 302, 404, 503, 999] {
            r.record(s, Duration::ZERO);
        }
        let counts: Vec<u64> = r.responses.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(counts, [1, 2, 1, 1, 2]);
    }
}
