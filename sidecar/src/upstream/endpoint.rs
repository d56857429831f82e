//! An upstream endpoint as the request path sees it: its identity, address
//! and weight (fixed for one endpoint-set version) and its live state (load
//! counters and health), which is shared across versions by address so
//! that a weight change or a re-subscribe keeps counters and health.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use crate::health::HealthCell;

/// One endpoint of an upstream, immutable for one version of the set.
#[derive(Debug)]
pub struct Endpoint {
    /// Stable identity (the adapter's endpoint id, or `ip:port` for static nodes).
    pub id: Arc<str>,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Relative share of traffic; 0 means no traffic.
    pub weight: u32,
    /// APISIX node priority: a higher value is served first; lower priorities
    /// get traffic only when every endpoint above them is unavailable.
    pub priority: i32,
    /// Failure domain, empty if unknown.
    pub zone: Arc<str>,
    /// Which source gave the endpoint (`static` or the adapter name).
    pub source: Arc<str>,
    /// Live counters and health, shared by every version holding this id.
    pub state: Arc<EndpointState>,
}

/// Live state of one endpoint: load counters and health, all atomics.
#[derive(Debug)]
pub struct EndpointState {
    /// Requests sent to the endpoint and not yet complete.
    in_flight: AtomicU64,
    /// Peak-EWMA latency in nanoseconds, stored as `f64` bits.
    ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated, in nanoseconds since `epoch`.
    ewma_stamp_ns: AtomicU64,
    /// The registry's, the active and the passive verdicts.
    verdicts: HealthCell,
    epoch: Instant,
}

/// Whether an endpoint may take new requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Takes traffic.
    Healthy = 0,
    /// Takes no traffic (the registry, active or passive checks say so).
    Unhealthy = 1,
    /// Takes no new requests; requests in flight finish.
    Draining = 2,
}

/// Counts one request in flight on an endpoint until dropped or finished.
#[must_use = "dropping the guard at once ends the request's accounting"]
#[derive(Debug)]
pub struct InFlight {
    state: Arc<EndpointState>,
    start: Instant,
    done: bool,
}

/// Initial EWMA latency for an endpoint that has none yet: a neutral guess so
/// that a new endpoint is neither starved nor flooded.
pub const DEFAULT_RTT_NS: f64 = 1_000_000.0;

/// Decay window of the EWMA (time for an old sample to lose ~63% of its weight).
pub const EWMA_DECAY_NS: f64 = 10_000_000_000.0;

// === impl Endpoint ===

impl Endpoint {
    /// Whether the endpoint may take a new request now.
    #[inline]
    pub fn is_available(&self) -> bool {
        self.weight > 0 && self.state.health() == Health::Healthy
    }
}

// === impl EndpointState ===

impl Default for EndpointState {
    fn default() -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            ewma_ns: AtomicU64::new(DEFAULT_RTT_NS.to_bits()),
            ewma_stamp_ns: AtomicU64::new(0),
            verdicts: HealthCell::default(),
            epoch: Instant::now(),
        }
    }
}

impl EndpointState {
    /// Requests in flight now.
    #[inline]
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The current health, combining the registry's view and the active
    /// and passive checks' verdicts: draining if the registry says so,
    /// unhealthy if any says so, healthy otherwise. One relaxed load.
    #[inline]
    pub fn health(&self) -> Health {
        self.verdicts.health()
    }

    /// Sets the registry's view of the endpoint; returns the previous one.
    /// The checks' verdicts are kept apart and still count.
    pub fn set_registry_health(&self, h: Health) -> Health {
        self.verdicts.set_registry(h)
    }

    /// Each verdict apart, and the checks' counters.
    pub(crate) fn verdicts(&self) -> &HealthCell {
        &self.verdicts
    }

    /// Starts counting a request; the returned guard ends it.
    #[inline]
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            state: self.clone(),
            start: Instant::now(),
            done: false,
        }
    }

    /// The peak-EWMA latency in nanoseconds, decayed to `now`.
    pub fn ewma_ns(&self, now: Instant) -> f64 {
        let ewma = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let stamp = self.ewma_stamp_ns.load(Ordering::Relaxed);
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let elapsed = now_ns.saturating_sub(stamp) as f64;
        // Decay toward the neutral default while there are no samples, so a
        // once-slow endpoint gets probed again.
        let w = (-elapsed / EWMA_DECAY_NS).exp();
        ewma * w + DEFAULT_RTT_NS * (1.0 - w)
    }

    /// Records a completed request's latency (peak-sensitive: a sample above
    /// the average replaces it at once; lower samples decay it).
    pub fn observe(&self, rtt_ns: f64, now: Instant) {
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let prev_stamp = self.ewma_stamp_ns.swap(now_ns, Ordering::Relaxed);
        let prev = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let next = if rtt_ns > prev {
            rtt_ns
        } else {
            let elapsed = now_ns.saturating_sub(prev_stamp) as f64;
            let w = (-elapsed / EWMA_DECAY_NS).exp();
            prev * w + rtt_ns * (1.0 - w)
        };
        // Racing writers may lose a sample; the average stays meaningful.
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
    }
}

// === impl InFlight ===

impl InFlight {
    /// Ends the request, recording its latency for EWMA.
    pub fn finish(mut self) {
        self.complete(true);
    }

    fn complete(&mut self, record: bool) {
        if self.done {
            return;
        }
        self.done = true;
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        if record {
            let now = Instant::now();
            let rtt = now.saturating_duration_since(self.start).as_nanos() as f64;
            self.state.observe(rtt, now);
        }
    }
}

impl Drop for InFlight {
    /// A request dropped before it finished (cancelled, or failed) still ends,
    /// and its time so far counts as latency: a hanging endpoint looks slow.
    fn drop(&mut self) {
        self.complete(true);
    }
}
