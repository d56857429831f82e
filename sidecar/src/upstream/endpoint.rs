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

use super::clock;
use crate::{health::HealthCell, proxy::IdleConns, telemetry::AttemptStats};

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
    /// `addr` as a URI authority, made once per set version so that
    /// requests do not format it.
    pub authority: http::uri::Authority,
    /// `addr` as a `Host` value (for `pass_host: node`, or a request
    /// without one), made with `authority`.
    pub host: http::HeaderValue,
}

/// Live state of one endpoint: load counters and health, all atomics.
#[derive(Debug)]
pub struct EndpointState {
    /// Requests sent to the endpoint and not yet complete.
    in_flight: AtomicU64,
    /// Peak-EWMA latency in nanoseconds, stored as `f64` bits.
    ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated, in nanoseconds since the process
    /// epoch of [`clock`].
    ewma_stamp_ns: AtomicU64,
    /// The registry's, the active and the passive verdicts.
    verdicts: HealthCell,
    /// Idle keep-alive HTTP/1.1 connections to the endpoint.
    pub(crate) idle: IdleConns,
    /// Attempt latency and failures, for `/metrics`.
    attempts: AttemptStats,
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
    /// The `Host` value of an authority.
    pub fn host_of(authority: &http::uri::Authority) -> http::HeaderValue {
        http::HeaderValue::from_str(authority.as_str())
            .expect("a URI authority is a valid header value")
    }

    /// The URI authority of an address (`ip:port`, `[v6]:port`).
    pub fn authority_of(addr: SocketAddr) -> http::uri::Authority {
        addr.to_string()
            .parse()
            .expect("a socket address is a valid URI authority")
    }

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
            idle: IdleConns::default(),
            attempts: AttemptStats::default(),
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

    /// The endpoint's attempt counters.
    #[inline]
    pub(crate) fn attempts(&self) -> &AttemptStats {
        &self.attempts
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
        self.ewma_at(clock::ns_since_epoch(now))
    }

    /// [`Self::ewma_ns`] at `now_ns` on the load-accounting clock: what the
    /// pick path calls, with one cheap clock reading for both candidates.
    #[inline]
    pub(crate) fn ewma_at(&self, now_ns: u64) -> f64 {
        let ewma = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let stamp = self.ewma_stamp_ns.load(Ordering::Relaxed);
        let elapsed = now_ns.saturating_sub(stamp) as f64;
        // Decay toward the neutral default while there are no samples, so a
        // once-slow endpoint gets probed again.
        let w = exp_neg(elapsed * (1.0 / EWMA_DECAY_NS));
        ewma * w + DEFAULT_RTT_NS * (1.0 - w)
    }

    /// Records a completed request's latency (peak-sensitive: a sample above
    /// the average replaces it at once; lower samples decay it).
    pub fn observe(&self, rtt_ns: f64, now: Instant) {
        let now_ns = clock::ns_since_epoch(now);
        let prev_stamp = self.ewma_stamp_ns.swap(now_ns, Ordering::Relaxed);
        let prev = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let next = if rtt_ns > prev {
            rtt_ns
        } else {
            let elapsed = now_ns.saturating_sub(prev_stamp) as f64;
            let w = exp_neg(elapsed * (1.0 / EWMA_DECAY_NS));
            prev * w + rtt_ns * (1.0 - w)
        };
        // Racing writers may lose a sample; the average stays meaningful.
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
    }
}

/// `e^-x` for `x >= 0`, to a relative error under 1e-9, in a short chain of
/// multiplies: `e^-x = 2^-(x·log2 e)`, whose exponent splits into a whole
/// part (set directly in the float's exponent bits), a sixty-fourth (a table
/// lookup) and a remainder under `ln 2 / 64` (three terms of Taylor). A
/// quarter of the latency of `f64::exp`, which matters on the pick path.
#[inline]
fn exp_neg(x: f64) -> f64 {
    if x.is_nan() || x >= 700.0 {
        return 0.0;
    }
    let t = x.max(0.0) * (64.0 * std::f64::consts::LOG2_E);
    let k = t as u64; // t >= 0: truncation is floor.
    let r = (t - k as f64) * (std::f64::consts::LN_2 / 64.0);
    // e^-r for r in [0, 0.011): error below r^4/24 < 1e-9.
    let p = 1.0 - r * (1.0 - r * (0.5 - r * (1.0 / 6.0)));
    // 2^-(k / 64) = 2^-(k % 64 / 64) · 2^-(k / 64 whole); k / 64 <= 1010
    // here, so the exponent stays normal.
    p * EXP2_NEG_64THS[(k % 64) as usize] * f64::from_bits((1023 - k / 64) << 52)
}

/// `2^(-j/64)` for `j` in `0..64`, computed at compile time.
const EXP2_NEG_64THS: [f64; 64] = {
    let mut table = [0.0; 64];
    let mut j = 0;
    while j < 64 {
        // e^-y by its series; y < ln 2, so 25 terms reach full precision.
        let y = j as f64 * (std::f64::consts::LN_2 / 64.0);
        let (mut sum, mut term, mut n) = (1.0, 1.0, 1);
        while n < 25 {
            term = term * -y / n as f64;
            sum += term;
            n += 1;
        }
        table[j] = sum;
        j += 1;
    }
    table
};

// === impl InFlight ===

impl InFlight {
    /// The endpoint's live state.
    #[inline]
    pub(crate) fn state(&self) -> &EndpointState {
        &self.state
    }

    /// When the request started.
    #[inline]
    pub fn started(&self) -> Instant {
        self.start
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_neg_matches_exp() {
        let mut x = 0.0;
        while x < 60.0 {
            let (got, want) = (exp_neg(x), (-x).exp());
            assert!((got - want).abs() <= 1e-9 * want, "e^-{x}: {got} vs {want}");
            x += 0.001_7;
        }
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(1e6), 0.0);
        assert_eq!(exp_neg(f64::INFINITY), 0.0);
        assert_eq!(exp_neg(f64::NAN), 0.0);
        assert!(exp_neg(699.0) > 0.0);
    }

    #[test]
    fn ewma_starts_neutral_and_decays_back_to_it() {
        let state = EndpointState::default();
        let now = Instant::now();
        assert!((state.ewma_ns(now) - DEFAULT_RTT_NS).abs() < 1.0);

        state.observe(50.0 * DEFAULT_RTT_NS, now);
        assert!((state.ewma_ns(now) - 50.0 * DEFAULT_RTT_NS).abs() < 1.0);
        let later = now + std::time::Duration::from_secs(60);
        assert!(state.ewma_ns(later) < 1.2 * DEFAULT_RTT_NS);
    }

    #[test]
    fn in_flight_counts_until_the_guard_ends() {
        let state = Arc::new(EndpointState::default());
        let a = state.begin();
        let b = state.begin();
        assert_eq!(state.in_flight(), 2);
        a.finish();
        drop(b);
        assert_eq!(state.in_flight(), 0);
    }
}
