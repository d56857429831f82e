//! `ewma`: peak-EWMA latency with power of two choices (after Finagle and
//! tower's `PeakEwma`).
//!
//! An endpoint's cost is the work it is expected to have queued: its
//! peak-sensitive latency average times the requests it has in flight (plus
//! the one we would send), divided by its weight. Of two random endpoints
//! the cheaper gets the request. Comparing two instead of all keeps a pick
//! O(1) and stops every sidecar from piling onto the same "best" endpoint
//! between two load updates.
//!
//! The algorithm keeps no state of its own: latency and in-flight counts live
//! in each endpoint's [`EndpointState`](crate::upstream::EndpointState),
//! which outlives endpoint-set versions. A new endpoint starts at the neutral
//! [`DEFAULT_RTT_NS`](crate::upstream::DEFAULT_RTT_NS): even when that makes
//! it look faster than the rest, it gets at most the `2/n` share of being in
//! every pair it is drawn for until its first response sets a real figure,
//! and while it has requests in flight its cost grows with them.

use std::time::Instant;

use super::{Select, candidates::Candidates, rng::FastRng};
use crate::upstream::Endpoint;

/// Peak-EWMA power-of-two-choices over one group (stateless: load lives in
/// the endpoints).
#[derive(Debug)]
pub(crate) struct PeakEwma;

/// Expected queued work on `ep`, in weighted nanoseconds.
#[inline]
pub(crate) fn cost(ep: &Endpoint, now: Instant) -> f64 {
    let pending = ep.state.in_flight() as f64 + 1.0;
    ep.state.ewma_ns(now) * pending / f64::from(ep.weight.max(1))
}

// === impl PeakEwma ===

impl Select for PeakEwma {
    fn build(_cands: &Candidates<'_>, _rng: &mut FastRng) -> Self {
        PeakEwma
    }

    #[inline]
    fn select(&self, cands: &Candidates<'_>, _hash: u64, rng: &mut FastRng) -> Option<usize> {
        // One clock read per pick, shared by both candidates.
        let now = Instant::now();
        cands.p2c(rng, |local| cost(cands.endpoint(local), now))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::{
        BalancerType,
        test_support::{counts, set_down, uniform, weighted},
    };
    use super::cost;

    const EWMA: BalancerType = BalancerType::Ewma;
    const MS: f64 = 1_000_000.0;

    #[test]
    fn prefers_low_latency() {
        let eps = uniform(2);
        let now = Instant::now();
        eps[0].state.observe(40.0 * MS, now);
        eps[1].state.observe(2.0 * MS, now);
        assert_eq!(counts(EWMA, &eps, 1_000), vec![0, 1_000]);

        // Among ten, the fast one wins every pair it is in: 2/n - 1/n².
        let eps = uniform(10);
        for (i, ep) in eps.iter().enumerate() {
            let rtt = if i == 7 { 2.0 } else { 40.0 };
            ep.state.observe(rtt * MS, now);
        }
        let c = counts(EWMA, &eps, 20_000);
        assert!(c[7].abs_diff(3_800) < 400, "{c:?}");
    }

    #[test]
    fn avoids_endpoints_with_requests_in_flight() {
        let eps = uniform(2);
        let _busy: Vec<_> = (0..20).map(|_| eps[0].state.begin()).collect();
        assert_eq!(counts(EWMA, &eps, 1_000), vec![0, 1_000]);
    }

    #[test]
    fn weight_divides_cost() {
        let eps = weighted(&[1, 4]);
        let now = Instant::now();
        let _busy: Vec<_> = (0..2).map(|_| eps[1].state.begin()).collect();
        // 3 pending over weight 4 is cheaper than 1 over weight 1.
        assert!(cost(&eps[1], now) < cost(&eps[0], now));
        assert_eq!(counts(EWMA, &eps, 100), vec![0, 100]);
    }

    /// A new endpoint at the default latency among slow ones gets its p2c
    /// share, not everything; among equals it gets an equal share.
    #[test]
    fn new_endpoints_are_neither_starved_nor_flooded() {
        let eps = uniform(10);
        let now = Instant::now();
        eps[1..]
            .iter()
            .for_each(|ep| ep.state.observe(30.0 * MS, now));
        let c = counts(EWMA, &eps, 10_000);
        assert!((1_000..=2_100).contains(&c[0]), "{c:?}");

        let eps = uniform(10);
        let c = counts(EWMA, &eps, 10_000);
        assert!(c.iter().all(|&n| n.abs_diff(1_000) < 200), "{c:?}");
    }

    #[test]
    fn skips_down_endpoints() {
        let eps = uniform(10);
        (0..9).for_each(|i| set_down(&eps, i, true));
        assert_eq!(counts(EWMA, &eps, 100)[9], 100);
    }
}
