//! `chash`: consistent hashing on a ketama-style ring.
//!
//! Each endpoint owns points on a 32-bit ring, as many as its weight times
//! [`points_per_weight`]; a key belongs to the first point at or after its
//! hash, clockwise. A point's position depends only on the endpoint's id and
//! the point's number, so when an endpoint joins or leaves, only the keys on
//! its own arcs move and no key moves between two endpoints that both stay.
//!
//! A key whose owner this pass does not admit (down, or tried by this
//! request) walks on clockwise to the next point's owner, so a down
//! endpoint's keys spread over the others in proportion to weight and come
//! back to it when it recovers, and retries visit a fixed fail-over order.
//!
//! The ring is two sorted arrays (hashes, owners) built once per version,
//! plus a table from a hash's top bits to where that range starts. A lookup
//! reads one table entry and binary-searches the few points (about four) of
//! its range: two or three cache misses instead of the dozen or so of a
//! binary search over 2^17 points.

use super::{
    Select,
    candidates::Candidates,
    hash::{hash_key, mix64},
    rng::{self, FastRng},
};

/// Ring size aimed for: accuracy grows with points per endpoint (an endpoint
/// with `k` points gets its share ± about `1/sqrt(k)`), memory with the
/// total; 2^17 points is 1 MiB of ring.
const RING_POINTS: u64 = 1 << 17;

/// Most points per unit of weight. Small sets get this many (ketama's usual
/// 160 leaves a share ±8% off; 8,192 brings it to about ±1%).
const MAX_POINTS_PER_WEIGHT: f64 = 8_192.0;

/// Ring points walked before falling back to a scan of the members.
const MAX_WALK: usize = 128;

/// A consistent-hash ring over one group.
#[derive(Debug)]
pub(crate) struct Ring {
    /// Point positions, ascending.
    hashes: Box<[u32]>,
    /// The global index (into the endpoint slice) owning each point.
    owners: Box<[u32]>,
    /// `starts[b]`: the first point whose hash is at least `b << shift`;
    /// one more entry at the end holds the ring's length.
    starts: Box<[u32]>,
    /// 32 minus the number of top bits that index `starts`.
    shift: u32,
}

/// Points per unit of weight for a group of total weight `total`: the largest
/// power of two (possibly below one) keeping the ring within [`RING_POINTS`].
///
/// A power of two, not `RING_POINTS / total` exactly: that would give every
/// endpoint a new point count whenever any weight changed, moving keys
/// between endpoints that stayed. Powers of two change only when the total
/// weight doubles or halves.
pub(crate) fn points_per_weight(total: u64) -> f64 {
    let mut p = MAX_POINTS_PER_WEIGHT;
    while total as f64 * p > RING_POINTS as f64 {
        p /= 2.0;
    }
    p
}

/// The range table of a sorted ring: about four points per range.
fn range_starts(hashes: &[u32]) -> (Box<[u32]>, u32) {
    let len = hashes.len();
    let bits = len.checked_ilog2().unwrap_or(0).saturating_sub(2).min(24);
    let shift = 32 - bits;
    let mut starts = Vec::with_capacity((1 << bits) + 1);
    let mut pos = 0;
    for range in 0..1u64 << bits {
        let lower = range << shift;
        while pos < len && u64::from(hashes[pos]) < lower {
            pos += 1;
        }
        starts.push(pos as u32);
    }
    starts.push(len as u32);
    (starts.into(), shift)
}

/// Where the `n`-th point of the endpoint with id hash `id` sits.
#[inline]
fn point(id: u64, n: u64) -> u32 {
    (mix64(id ^ (n + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 32) as u32
}

// === impl Ring ===

impl Ring {
    /// The first point at or after `key`; the ring's length if none is.
    #[inline]
    fn successor(&self, key: u32) -> usize {
        let range = (u64::from(key) >> self.shift) as usize;
        let (lo, hi) = (self.starts[range] as usize, self.starts[range + 1] as usize);
        lo + self.hashes[lo..hi].partition_point(|&h| h < key)
    }
}

impl Select for Ring {
    fn build(cands: &Candidates<'_>, _rng: &mut FastRng) -> Self {
        let ids: Vec<u64> = (0..cands.len())
            .map(|local| hash_key(cands.endpoint(local).id.as_bytes()))
            .collect();
        let weights: Vec<u64> = (0..cands.len())
            .map(|local| u64::from(cands.endpoint(local).weight))
            .collect();
        let per_weight = points_per_weight(weights.iter().sum());
        let counts: Vec<u64> = weights
            .iter()
            .map(|&w| ((w as f64 * per_weight).round() as u64).max(1))
            .collect();

        // Position in the high half, owner in the low: one sort orders both.
        let mut packed: Vec<u64> = Vec::with_capacity(counts.iter().sum::<u64>() as usize);
        for (local, (&id, &count)) in ids.iter().zip(&counts).enumerate() {
            packed.extend((0..count).map(|n| u64::from(point(id, n)) << 32 | local as u64));
        }
        packed.sort_unstable();
        // Two endpoints on one position (a few per full ring): the lower id
        // hash keeps it, whatever the set's order, so it stays consistent.
        packed.dedup_by(|later, kept| {
            if *later >> 32 != *kept >> 32 {
                return false;
            }
            if ids[*later as u32 as usize] < ids[*kept as u32 as usize] {
                *kept = *later;
            }
            true
        });
        let hashes: Box<[u32]> = packed.iter().map(|&p| (p >> 32) as u32).collect();
        let (starts, shift) = range_starts(&hashes);
        Ring {
            owners: packed
                .iter()
                .map(|&p| cands.global(p as u32 as usize) as u32)
                .collect(),
            hashes,
            starts,
            shift,
        }
    }

    #[inline]
    fn select(&self, cands: &Candidates<'_>, hash: u64, _rng: &mut FastRng) -> Option<usize> {
        let len = self.hashes.len();
        if len == 0 {
            return None;
        }
        // Mixed again so that a caller passing a raw number (a port, an IPv4
        // address) still lands all over the ring; a no-op for distribution
        // when the hash came from `hash_key`.
        let key = (mix64(hash) >> 32) as u32;
        let mut pos = self.successor(key);
        for _ in 0..len.min(MAX_WALK) {
            if pos == len {
                pos = 0;
            }
            let owner = self.owners[pos] as usize;
            if cands.admits_global(owner) {
                return Some(owner);
            }
            pos += 1;
        }
        // Most of the group is out: a fixed start keeps the answer the same
        // for the same key.
        cands.first_admitted_from(rng::below(hash, cands.len()))
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Arc};

    use super::super::{
        Balancer, BalancerType, PickCtx,
        rng::FastRng,
        test_support::{endpoint, set_down, uniform, weighted},
    };
    use super::points_per_weight;
    use crate::upstream::Endpoint;

    const KEYS: usize = 100_000;

    fn keys() -> Vec<u64> {
        let mut rng = FastRng::seeded(0x5eed);
        (0..KEYS).map(|_| rng.next_u64()).collect()
    }

    /// The id of the endpoint each key maps to.
    fn owners(eps: &[Arc<Endpoint>], keys: &[u64]) -> Vec<Arc<str>> {
        let b = Balancer::build_with(BalancerType::Chash, eps, &mut FastRng::seeded(1));
        let mut rng = FastRng::seeded(2);
        keys.iter()
            .map(|&hash| {
                let ctx = PickCtx { hash, tried: &[] };
                let pick = b.pick_with(eps, &ctx, &mut rng).unwrap();
                eps[pick.index].id.clone()
            })
            .collect()
    }

    #[test]
    fn shares_follow_weights() {
        let weights = [1, 2, 3, 4, 1, 1, 5, 2, 1, 3];
        let eps = weighted(&weights);
        let mut share: HashMap<Arc<str>, usize> = HashMap::new();
        for id in owners(&eps, &keys()) {
            *share.entry(id).or_default() += 1;
        }
        let total: u32 = weights.iter().sum();
        for (ep, &w) in eps.iter().zip(&weights) {
            let want = f64::from(w) / f64::from(total);
            let got = share[&ep.id] as f64 / KEYS as f64;
            assert!(
                (got - want).abs() <= 0.05 * want,
                "{}: {got} vs {want}",
                ep.id
            );
        }
    }

    /// Leaving moves only the leaver's keys; joining moves keys only to the
    /// joiner; each about 1/N of them.
    #[test]
    fn membership_changes_move_few_keys() {
        let keys = keys();
        let ten = uniform(10);
        let before = owners(&ten, &keys);

        let nine: Vec<_> = ten.iter().filter(|e| &*e.id != "ep-3").cloned().collect();
        let after = owners(&nine, &keys);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a);
        assert!(
            moved.clone().all(|(b, _)| &**b == "ep-3"),
            "a key moved between stayers"
        );
        assert!(moved.count() <= KEYS * 15 / 100);

        let mut eleven = ten.clone();
        eleven.insert(4, endpoint(10, 1, 0));
        let after = owners(&eleven, &keys);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a);
        assert!(
            moved.clone().all(|(_, a)| &**a == "ep-10"),
            "a key moved between stayers"
        );
        assert!(moved.count() <= KEYS * 15 / 100);
    }

    #[test]
    fn same_key_same_endpoint() {
        let keys = &keys()[..1_000];
        let eps = uniform(7);
        assert_eq!(owners(&eps, keys), owners(&eps, keys));
        // Built in another order, the ring is the same.
        let mut reversed = eps.clone();
        reversed.reverse();
        assert_eq!(owners(&eps, keys), owners(&reversed, keys));
    }

    #[test]
    fn down_endpoints_are_walked_past_and_get_their_keys_back() {
        let keys = &keys()[..20_000];
        let eps = uniform(5);
        let before = owners(&eps, keys);
        set_down(&eps, 2, true);
        let during = owners(&eps, keys);
        for (b, d) in before.iter().zip(&during) {
            assert_ne!(&**d, "ep-2");
            if &**b != "ep-2" {
                assert_eq!(b, d, "a key of a healthy endpoint moved");
            }
        }
        set_down(&eps, 2, false);
        assert_eq!(owners(&eps, keys), before);
    }

    /// Retries walk a fixed fail-over order of distinct endpoints.
    #[test]
    fn tried_endpoints_are_skipped() {
        let eps = uniform(4);
        let b = Balancer::build_with(BalancerType::Chash, &eps, &mut FastRng::seeded(1));
        let mut rng = FastRng::seeded(2);
        let mut tried = Vec::new();
        for _ in 0..4 {
            let ctx = PickCtx {
                hash: 42,
                tried: &tried,
            };
            let pick = b.pick_with(&eps, &ctx, &mut rng).unwrap();
            assert!(!tried.contains(&pick.index));
            tried.push(pick.index);
        }
        // All tried: allowed again, starting over with the key's owner.
        let ctx = PickCtx {
            hash: 42,
            tried: &tried,
        };
        assert_eq!(b.pick_with(&eps, &ctx, &mut rng).unwrap().index, tried[0]);
    }

    /// The range table finds what a plain binary search finds.
    #[test]
    fn successor_matches_binary_search() {
        let mut rng = FastRng::seeded(9);
        for len in [0usize, 1, 3, 8, 100, 4_097, 70_000] {
            let mut hashes: Vec<u32> = (0..len).map(|_| rng.next_u64() as u32).collect();
            hashes.sort_unstable();
            let (starts, shift) = super::range_starts(&hashes);
            let ring = super::Ring {
                hashes: hashes.clone().into(),
                owners: vec![0; len].into(),
                starts,
                shift,
            };
            let probes = (0..2_000).map(|_| rng.next_u64() as u32);
            for key in probes
                .chain([0, 1, u32::MAX])
                .chain(hashes.iter().copied().take(50))
            {
                let want = hashes.partition_point(|&h| h < key);
                assert_eq!(ring.successor(key), want, "len {len} key {key}");
            }
        }
    }

    #[test]
    fn ring_size_is_bounded() {
        assert_eq!(points_per_weight(10), 8_192.0);
        assert_eq!(points_per_weight(1_000), 128.0);
        assert_eq!(points_per_weight(1_000_000), 0.125);
        for total in [1u64, 7, 100, 10_000, 123_456] {
            assert!(total as f64 * points_per_weight(total) <= f64::from(1 << 17));
        }
    }
}
