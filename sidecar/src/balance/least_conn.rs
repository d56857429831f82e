//! `least_conn`: weighted least active requests. An endpoint's score is
//! `(in_flight + 1) / weight`, the share of its capacity it would use with
//! one more request; the lowest score wins.
//!
//! Reading every endpoint's counter costs a cache miss or so each (the
//! counters are written by every request), so an exact scan is only cheap for
//! small groups: the `baseline` bench measures a scan of 1,000 endpoints at
//! 3–9 µs, thirty times the 100 ns budget. Up to [`SCAN_MAX`] members we
//! scan, breaking ties at random so that they spread instead of landing on
//! the first member. Above that we compare two random members (power of two
//! choices, as Envoy's least request does): O(1), tens of ns at any size,
//! and the busiest endpoint of a pair never gets the request.

use super::{
    Select,
    candidates::{Candidates, Loaded},
    rng::FastRng,
};

/// Largest group scanned exactly on every pick (a few ns per member).
pub(crate) const SCAN_MAX: usize = 8;

/// Weighted least-active-requests over one group. The counts live in the
/// endpoints' states; the group keeps each member's state pointer and
/// `1 / weight` in one compact array.
#[derive(Debug)]
pub(crate) struct LeastConn {
    loaded: Box<[Loaded]>,
}

/// Share of a member's capacity in use with one more request.
#[inline]
fn score(l: &Loaded) -> f64 {
    (l.state.in_flight() as f64 + 1.0) * l.inv_weight
}

// === impl LeastConn ===

impl Select for LeastConn {
    fn build(cands: &Candidates<'_>, _rng: &mut FastRng) -> Self {
        LeastConn {
            loaded: cands.loaded(),
        }
    }

    #[inline]
    fn select(&self, cands: &Candidates<'_>, _hash: u64, rng: &mut FastRng) -> Option<usize> {
        if cands.len() <= SCAN_MAX {
            cands.cheapest(&self.loaded, rng, score)
        } else {
            cands.p2c(&self.loaded, rng, score)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        Balancer, BalancerType, PickCtx,
        rng::FastRng,
        test_support::{counts, set_down, uniform, weighted},
    };

    const LC: BalancerType = BalancerType::LeastConn;

    #[test]
    fn picks_the_least_loaded_weighted_endpoint() {
        let eps = weighted(&[1, 3, 1, 1]);
        let _g0: Vec<_> = (0..2).map(|_| eps[0].state.begin()).collect();
        let _g1: Vec<_> = (0..5).map(|_| eps[1].state.begin()).collect();
        let _g2: Vec<_> = (0..1).map(|_| eps[2].state.begin()).collect();
        let _g3: Vec<_> = (0..3).map(|_| eps[3].state.begin()).collect();
        // Scores: 3/1, 6/3, 2/1, 4/1: endpoint 1 and 2 tie at 2, both lowest.
        let c = counts(LC, &eps, 1_000);
        assert_eq!(c[0] + c[3], 0, "{c:?}");
        assert!(c[1].abs_diff(500) < 100, "ties spread: {c:?}");
    }

    /// Sending requests and holding them open fills endpoints in proportion
    /// to weight.
    #[test]
    fn load_follows_weight() {
        let eps = weighted(&[1, 2, 5]);
        let b = Balancer::build_with(LC, &eps, &mut FastRng::seeded(3));
        let mut rng = FastRng::seeded(4);
        let held: Vec<_> = (0..80)
            .map(|_| {
                let pick = b.pick_with(&eps, &PickCtx::default(), &mut rng).unwrap();
                eps[pick.index].state.begin()
            })
            .collect();
        let in_flight: Vec<u64> = eps.iter().map(|e| e.state.in_flight()).collect();
        assert_eq!(in_flight, vec![10, 20, 50]);
        drop(held);
    }

    #[test]
    fn ties_spread_in_small_and_large_groups() {
        for n in [4, 1_000] {
            let eps = uniform(n);
            let picks = 200 * n;
            let c = counts(LC, &eps, picks);
            assert!(c.iter().all(|&k| k.abs_diff(200) < 80), "n={n}: {c:?}");
        }
    }

    /// Above the scan size, p2c still steers away from a loaded endpoint.
    #[test]
    fn large_groups_avoid_loaded_endpoints() {
        let eps = uniform(100);
        let _busy: Vec<_> = (0..10).map(|_| eps[5].state.begin()).collect();
        assert_eq!(counts(LC, &eps, 10_000)[5], 0);
    }

    #[test]
    fn skips_down_endpoints() {
        let eps = uniform(3);
        set_down(&eps, 1, true);
        assert_eq!(counts(LC, &eps, 100)[1], 0);
    }
}
