//! One cycle of smooth weighted round robin, computed at build time so that a
//! pick is one atomic increment and one array read.
//!
//! "Smooth" means no bursts: after any number of picks, each endpoint's count
//! is less than one pick away from its exact share (its lag is in (-1, 1)),
//! so of any `n` consecutive picks endpoint `i` gets at most
//! `ceil(n * w_i / W) + 1`. Two constructions give that:
//!
//! - nginx's algorithm, exactly (each step: every endpoint's `current` grows
//!   by its weight, the largest wins and pays back the total). It is O(n) per
//!   step, so it runs when `n * cycle` is small, which is most upstreams, and
//!   matches nginx and APISIX pick for pick there.
//! - earliest eligible deadline first (as in EEVDF): endpoint `i`'s `k`-th
//!   pick is due by virtual time `k / w_i` and may not run before
//!   `(k - 1) / w_i`; two heaps make it O(log n) per step, for big sets.
//!
//! The cycle is `sum(w) / gcd(w)` picks. When that exceeds [`MAX_LEN`] (and
//! the endpoint count), weights are scaled down to fit: each share is then
//! off by at most about one part in `MAX_LEN`, but the cycle stays bounded.

use std::{cmp::Ordering, collections::BinaryHeap};

/// Longest cycle built for sets smaller than this; larger sets get one pick
/// per unit of scaled weight, at least one per endpoint.
pub(crate) const MAX_LEN: usize = 1 << 16;

/// Largest `n * cycle` for which nginx's O(n)-per-step loop runs (about a
/// millisecond of work).
const NGINX_BUDGET: u64 = 1 << 20;

/// One endpoint's progress through the cycle, for the deadline construction.
#[derive(Clone, Copy, Debug)]
struct Task {
    /// Picks so far.
    done: u64,
    weight: u64,
    local: u32,
}

/// Orders [`Task`]s by deadline `(done + 1) / weight` (max-heap reversed).
#[derive(Debug)]
struct ByDeadline(Task);

/// Orders [`Task`]s by eligible time `done / weight` (max-heap reversed).
#[derive(Debug)]
struct ByStart(Task);

/// One smooth WRR cycle over `weights` (all non-zero), as indexes into
/// `weights`.
pub(crate) fn smooth_cycle(weights: &[u32]) -> Vec<u32> {
    let weights = cycle_weights(weights);
    let total: u64 = weights.iter().sum();
    if total == 0 {
        return Vec::new();
    }
    if weights.len() as u64 * total <= NGINX_BUDGET {
        nginx_cycle(&weights, total)
    } else {
        deadline_cycle(&weights, total)
    }
}

/// The weights divided by their gcd, then scaled down if the cycle would
/// exceed `max(MAX_LEN, n)`.
fn cycle_weights(weights: &[u32]) -> Vec<u64> {
    let g = weights
        .iter()
        .fold(0u64, |g, &w| gcd(g, u64::from(w)))
        .max(1);
    let mut reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
    let total: u64 = reduced.iter().sum();
    let cap = MAX_LEN.max(weights.len()) as u64;
    if total > cap {
        let scale = cap as f64 / total as f64;
        for w in reduced.iter_mut().filter(|w| **w > 0) {
            *w = ((*w as f64 * scale).round() as u64).max(1);
        }
        let g = reduced.iter().fold(0u64, |g, &w| gcd(g, w)).max(1);
        reduced.iter_mut().for_each(|w| *w /= g);
    }
    reduced
}

/// nginx's smooth weighted round robin, `total` steps of O(n).
fn nginx_cycle(weights: &[u64], total: u64) -> Vec<u32> {
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        let mut best_current = i64::MIN;
        for (i, (c, &w)) in current.iter_mut().zip(weights).enumerate() {
            *c += w as i64;
            if *c > best_current {
                best_current = *c;
                best = i;
            }
        }
        current[best] -= total as i64;
        cycle.push(best as u32);
    }
    cycle
}

/// Earliest eligible deadline first, `total` steps of O(log n).
fn deadline_cycle(weights: &[u64], total: u64) -> Vec<u32> {
    let mut ready: BinaryHeap<ByDeadline> = weights
        .iter()
        .enumerate()
        .filter(|(_, w)| **w > 0)
        .map(|(i, &weight)| {
            ByDeadline(Task {
                done: 0,
                weight,
                local: i as u32,
            })
        })
        .collect();
    let mut waiting: BinaryHeap<ByStart> = BinaryHeap::with_capacity(ready.len());
    let mut cycle = Vec::with_capacity(total as usize);
    // A task may run at step `t` once `done / weight <= t / total`.
    let eligible = |task: &Task, t: u64| task.done * total <= t * task.weight;
    for t in 0..total {
        while waiting
            .peek()
            .is_some_and(|ByStart(task)| eligible(task, t))
        {
            if let Some(ByStart(task)) = waiting.pop() {
                ready.push(ByDeadline(task));
            }
        }
        // Never empty: the counts sum to `t` and the shares to `t` too, so
        // some task is at or behind its share, hence eligible.
        let Some(ByDeadline(mut task)) = ready.pop() else {
            debug_assert!(false, "no eligible endpoint at step {t}");
            break;
        };
        cycle.push(task.local);
        task.done += 1;
        if eligible(&task, t + 1) {
            ready.push(ByDeadline(task));
        } else {
            waiting.push(ByStart(task));
        }
    }
    cycle
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Compares `a_num / a_den` with `b_num / b_den` exactly.
fn cmp_ratio(a_num: u64, a_den: u64, b_num: u64, b_den: u64) -> Ordering {
    (u128::from(a_num) * u128::from(b_den)).cmp(&(u128::from(b_num) * u128::from(a_den)))
}

// === impl ByDeadline ===

impl Ord for ByDeadline {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (&self.0, &other.0);
        // Reversed: the earliest deadline, then the lowest index, on top.
        cmp_ratio(b.done + 1, b.weight, a.done + 1, a.weight).then(b.local.cmp(&a.local))
    }
}

impl PartialOrd for ByDeadline {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ByDeadline {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ByDeadline {}

// === impl ByStart ===

impl Ord for ByStart {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (&self.0, &other.0);
        // Reversed: the earliest eligible time on top.
        cmp_ratio(b.done, b.weight, a.done, a.weight).then(b.local.cmp(&a.local))
    }
}

impl PartialOrd for ByStart {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ByStart {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ByStart {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Checks that over the cyclic sequence, every window of `len` picks
    /// gives endpoint `i` at most `ceil(len * w_i / W) + 1`, for every `len`.
    fn assert_smooth(cycle: &[u32], weights: &[u64]) -> Result<(), TestCaseError> {
        let total: u64 = weights.iter().sum();
        let l = cycle.len();
        prop_assert_eq!(l as u64, total);
        for (i, &w) in weights.iter().enumerate() {
            // prefix[k] = picks of i among the first k of the doubled cycle.
            let mut prefix = vec![0u64; 2 * l + 1];
            for k in 0..2 * l {
                prefix[k + 1] = prefix[k] + u64::from(cycle[k % l] == i as u32);
            }
            prop_assert_eq!(prefix[l], w, "endpoint {} share over one cycle", i);
            for start in 0..l {
                for len in 1..=l {
                    let got = prefix[start + len] - prefix[start];
                    let bound = (len as u64 * w).div_ceil(total) + 1;
                    prop_assert!(got <= bound, "endpoint {i}: {got} of {len} from {start}");
                }
            }
        }
        Ok(())
    }

    fn reduced(weights: &[u32]) -> Vec<u64> {
        cycle_weights(weights)
    }

    proptest! {
        #[test]
        fn nginx_is_smooth(weights in prop::collection::vec(1u32..40, 1..8)) {
            let w = reduced(&weights);
            assert_smooth(&nginx_cycle(&w, w.iter().sum()), &w)?;
        }

        #[test]
        fn deadline_is_smooth(weights in prop::collection::vec(1u32..40, 1..8)) {
            let w = reduced(&weights);
            assert_smooth(&deadline_cycle(&w, w.iter().sum()), &w)?;
        }

        #[test]
        fn capped_cycles_keep_proportions(
            weights in prop::collection::vec(1u32..1_000_000, 2..50),
        ) {
            let cycle = smooth_cycle(&weights);
            prop_assert!(cycle.len() <= 2 * MAX_LEN);
            let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            let n = weights.len() as f64;
            // Rounding each scaled weight (to at least 1) moves it by under
            // one pick of a cycle of about MAX_LEN, and the cycle by n/2.
            let tolerance = (n + 2.0) / (2.0 * (MAX_LEN as f64 - n));
            for (i, &w) in weights.iter().enumerate() {
                let got = cycle.iter().filter(|&&c| c == i as u32).count() as f64;
                prop_assert!(got >= 1.0, "endpoint {} never picked", i);
                let (share, want) = (got / cycle.len() as f64, f64::from(w) / total);
                prop_assert!((share - want).abs() <= tolerance, "endpoint {i}: {share} vs {want}");
            }
        }
    }

    #[test]
    fn nginx_sequence_for_5_1_1() {
        // The example from nginx's commit introducing smooth WRR.
        assert_eq!(smooth_cycle(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weights_reduce_by_gcd() {
        assert_eq!(smooth_cycle(&[100, 100, 100]), vec![0, 1, 2]);
        assert_eq!(smooth_cycle(&[20, 10]).len(), 3);
    }

    #[test]
    fn big_sets_use_the_deadline_cycle() {
        let weights: Vec<u32> = (0..10_000).map(|i| 1 + i % 3).collect();
        let cycle = smooth_cycle(&weights);
        assert_eq!(cycle.len(), 20_000 - 1);
        let mut counts = vec![0u32; weights.len()];
        cycle.iter().for_each(|&c| counts[c as usize] += 1);
        assert_eq!(counts, weights);
    }
}
