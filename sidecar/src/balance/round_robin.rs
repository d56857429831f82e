//! `roundrobin`: smooth weighted round robin. The cycle is computed once per
//! endpoint-set version (see [`sequence`](super::sequence)); a pick is one
//! relaxed `fetch_add` on a shared cursor and one read of the cycle, O(1)
//! whatever the set size.
//!
//! When the cursor lands on an endpoint this pass does not admit (down, or
//! tried), the pick probes random places of the cycle instead: the cycle
//! holds each endpoint in proportion to its weight, so the missing
//! endpoint's turns spread over the others in proportion to theirs. (Walking
//! forward would hand them all to whichever endpoint follows it in the
//! cycle.) After [`MAX_PROBES`] misses most of the group is out, and a scan
//! of the members answers instead (O(n), degraded mode only).

use std::sync::atomic::{AtomicU32, Ordering};

use super::{Select, candidates::Candidates, rng::FastRng, sequence::smooth_cycle};

/// Random cycle positions probed before falling back to a scan of the
/// members: with half the weight out, about one pick in 130,000 scans.
const MAX_PROBES: usize = 16;

/// Smooth weighted round robin over one group.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    /// One cycle, as global indexes (saving the member lookup per pick).
    cycle: Box<[u32]>,
    /// `u64::MAX / cycle.len() + 1`, so that `turn % len` is two multiplies
    /// (Lemire's fastmod) rather than a division on every pick.
    magic: u64,
    cursor: Cursor,
}

/// The shared count of turns, alone on its cache line so that every pick's
/// increment does not evict the read-only fields next to it from the other
/// cores' caches. 32 bits: wrapping around skips part of one cycle once
/// every four billion picks.
#[derive(Debug)]
#[repr(align(64))]
struct Cursor(AtomicU32);

// === impl RoundRobin ===

impl Select for RoundRobin {
    fn build(cands: &Candidates<'_>, rng: &mut FastRng) -> Self {
        let weights: Vec<u32> = (0..cands.len())
            .map(|local| cands.endpoint(local).weight)
            .collect();
        let cycle: Box<[u32]> = smooth_cycle(&weights)
            .into_iter()
            .map(|local| cands.global(local as usize) as u32)
            .collect();
        // Start each version at a random place, so that sidecars started
        // together (or a set that just changed everywhere) do not all send
        // their first requests to the same endpoint.
        let len = cycle.len().max(1) as u64;
        let start = rng.below(len as usize) as u32;
        Self {
            cycle,
            magic: (u64::MAX / len).wrapping_add(1),
            cursor: Cursor(AtomicU32::new(start)),
        }
    }

    #[inline]
    fn select(&self, cands: &Candidates<'_>, _hash: u64, rng: &mut FastRng) -> Option<usize> {
        let len = self.cycle.len();
        if len == 0 {
            return None;
        }
        let turn = self.cursor.0.fetch_add(1, Ordering::Relaxed);
        let turn = fastmod(turn, self.magic, len);
        let global = self.cycle[turn] as usize;
        if cands.admits_global(global) {
            return Some(global);
        }
        for _ in 0..MAX_PROBES {
            let global = self.cycle[rng.below(len)] as usize;
            if cands.admits_global(global) {
                return Some(global);
            }
        }
        cands.first_admitted_from(rng.below(cands.len()))
    }
}

/// `a % n` for `magic = u64::MAX / n + 1` (Lemire, Kaser and Kurz, "Faster
/// remainder by direct computation", 2019): exact for 32-bit `a` and `n`.
#[inline]
fn fastmod(a: u32, magic: u64, n: usize) -> usize {
    let low = magic.wrapping_mul(u64::from(a));
    ((u128::from(low) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::super::{
        Balancer, BalancerType, PickCtx,
        rng::FastRng,
        test_support::{counts, set_down, uniform, weighted},
    };
    use proptest::prelude::*;

    const RR: BalancerType = BalancerType::RoundRobin;

    proptest! {
        #[test]
        fn fastmod_is_remainder(a: u32, n in 1usize..=1 << 20) {
            let magic = (u64::MAX / n as u64).wrapping_add(1);
            prop_assert_eq!(super::fastmod(a, magic, n), a as usize % n);
        }
    }

    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 { a } else { gcd(b, a % b) }
    }

    proptest! {
        /// Over any whole number of cycles, from wherever the cursor
        /// starts, each endpoint gets exactly its weight's share; over any
        /// window, at most one pick more than its share rounded up.
        #[test]
        fn honours_weights(weights in prop::collection::vec(1u32..12, 1..7), seed: u64) {
            let eps = weighted(&weights);
            let g = weights.iter().fold(0, |g, &w| gcd(g, w));
            let cycle: u32 = weights.iter().map(|w| w / g).sum();
            let b = Balancer::build_with(RR, &eps, &mut FastRng::seeded(seed));
            let mut rng = FastRng::seeded(seed);
            let picks: Vec<usize> = (0..3 * cycle)
                .map(|_| b.pick_with(&eps, &PickCtx::default(), &mut rng).unwrap().index)
                .collect();
            for (i, &w) in weights.iter().enumerate() {
                for whole in picks.chunks_exact(cycle as usize) {
                    let got = whole.iter().filter(|&&p| p == i).count() as u32;
                    prop_assert_eq!(got, w / g);
                }
                let total: u32 = weights.iter().sum();
                let mut prefix = vec![0u32; picks.len() + 1];
                for (k, &p) in picks.iter().enumerate() {
                    prefix[k + 1] = prefix[k] + u32::from(p == i);
                }
                for len in 1..=picks.len() {
                    let bound = (len as u32 * w).div_ceil(total) + 1;
                    for start in 0..=picks.len() - len {
                        let got = prefix[start + len] - prefix[start];
                        prop_assert!(got <= bound, "endpoint {i}: {got} of {len}");
                    }
                }
            }
        }
    }

    #[test]
    fn weight_zero_gets_nothing() {
        let eps = weighted(&[3, 0, 1]);
        assert_eq!(counts(RR, &eps, 400), vec![300, 0, 100]);
    }

    /// A down endpoint's turns go to the others, in proportion to weight.
    #[test]
    fn skips_unavailable_endpoints() {
        let eps = weighted(&[4, 2, 2]);
        set_down(&eps, 0, true);
        let c = counts(RR, &eps, 800);
        assert_eq!(c[0], 0);
        assert!(
            c[1].abs_diff(400) <= 100 && c[2].abs_diff(400) <= 100,
            "{c:?}"
        );

        set_down(&eps, 0, false);
        assert_eq!(counts(RR, &eps, 800), vec![400, 200, 200]);
    }

    /// With most of a big group down the walk gives up and the scan finds
    /// the one endpoint left.
    #[test]
    fn finds_the_last_endpoint_up() {
        let eps = uniform(1_000);
        (0..1_000)
            .filter(|&i| i != 777)
            .for_each(|i| set_down(&eps, i, true));
        let c = counts(RR, &eps, 50);
        assert_eq!(c[777], 50);
    }
}
