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
//! The algorithm keeps no load of its own: latency and in-flight counts live
//! in each endpoint's [`EndpointState`](crate::upstream::EndpointState),
//! which outlives endpoint-set versions. A new endpoint starts at the neutral
//! [`DEFAULT_RTT_NS`](crate::upstream::DEFAULT_RTT_NS): even when that makes
//! it look faster than the rest, it gets at most the `2/n` share of being in
//! every pair it is drawn for until its first response sets a real figure,
//! and while it has requests in flight its cost grows with them.

use super::{
    Select,
    candidates::{Candidates, Loaded},
    rng::FastRng,
};
use crate::upstream::now_ns;

/// Peak-EWMA power-of-two-choices over one group. Load lives in the
/// endpoints' states; the group keeps each member's state pointer and
/// `1 / weight` in one compact array.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    loaded: Box<[Loaded]>,
}

/// Expected queued work on a member at `now_ns` (load-accounting clock), in
/// nanoseconds per unit of weight.
#[inline]
fn cost(l: &Loaded, now_ns: u64) -> f64 {
    let pending = l.state.in_flight() as f64 + 1.0;
    l.state.ewma_at(now_ns) * pending * l.inv_weight
}

// === impl PeakEwma ===

impl Select for PeakEwma {
    fn build(cands: &Candidates<'_>, _rng: &mut FastRng) -> Self {
        PeakEwma {
            loaded: cands.loaded(),
        }
    }

    #[inline]
    fn select(&self, cands: &Candidates<'_>, _hash: u64, rng: &mut FastRng) -> Option<usize> {
        // One (coarse, cheap) clock read per pick, shared by both candidates.
        let now = now_ns();
        cands.p2c(&self.loaded, rng, |l| cost(l, now))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::{
        BalancerType,
        test_support::{counts, set_down, uniform, weighted},
    };
    use super::{Loaded, cost};
    use crate::upstream::now_ns;

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
        let _busy: Vec<_> = (0..2).map(|_| eps[1].state.begin()).collect();
        // 3 pending over weight 4 is cheaper than 1 over weight 1.
        let now = now_ns();
        let loaded = |i: usize, inv_weight| Loaded {
            state: eps[i].state.clone(),
            inv_weight,
        };
        assert!(cost(&loaded(1, 0.25), now) < cost(&loaded(0, 1.0), now));
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
