//! Randomness for the pick path: a per-thread wyrand generator (one add and
//! one multiply per number, no locks, no allocation) and the power-of-two-
//! choices pair, written as a pure function of two random words so that it
//! can be property-tested without a generator.

use std::cell::Cell;

/// A small, fast, non-cryptographic generator (wyrand). Balancers take it as
/// `&mut FastRng` so that tests can seed it; the request path borrows the
/// calling thread's generator through [`with_thread_rng`].
#[derive(Clone, Debug)]
pub(crate) struct FastRng {
    state: u64,
}

thread_local! {
    /// Each thread's generator state; 0 until seeded from the OS on first
    /// use. A `const` initialiser makes every access a plain TLS load, with
    /// no lazy-initialisation check.
    static THREAD_STATE: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` with the calling thread's generator and saves its state after.
#[inline]
pub(crate) fn with_thread_rng<R>(f: impl FnOnce(&mut FastRng) -> R) -> R {
    THREAD_STATE.with(|cell| {
        let mut state = cell.get();
        if state == 0 {
            // `| 1`: a seed of 0 would look unseeded next time.
            state = rand::random::<u64>() | 1;
        }
        let mut rng = FastRng { state };
        let out = f(&mut rng);
        cell.set(rng.state);
        out
    })
}

/// Two distinct indexes below `n` (n ≥ 2) from two random words, uniform over
/// ordered pairs: the first is uniform below `n`, the second uniform over the
/// other `n - 1` indexes.
#[inline]
pub(crate) fn pair(n: usize, r0: u64, r1: u64) -> (usize, usize) {
    debug_assert!(n >= 2, "a pair needs two candidates");
    let a = below(r0, n);
    let mut b = below(r1, n - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}

/// Maps a random word onto `0..n` with one multiply (Lemire's reduction);
/// the bias is at most n / 2^64.
#[inline]
pub(crate) fn below(r: u64, n: usize) -> usize {
    ((u128::from(r) * n as u128) >> 64) as usize
}

// === impl FastRng ===

impl FastRng {
    /// A generator with a fixed seed, for reproducible tests.
    #[cfg(test)]
    pub(crate) fn seeded(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        (t as u64) ^ ((t >> 64) as u64)
    }

    /// A random index below `n` (n ≥ 1).
    #[inline]
    pub(crate) fn below(&mut self, n: usize) -> usize {
        below(self.next_u64(), n)
    }

    /// Two distinct random indexes below `n` (n ≥ 2); see [`pair`].
    #[inline]
    pub(crate) fn pair(&mut self, n: usize) -> (usize, usize) {
        let r0 = self.next_u64();
        let r1 = self.next_u64();
        pair(n, r0, r1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pair_is_two_distinct_indexes(n in 2usize..100_000, r0: u64, r1: u64) {
            let (a, b) = pair(n, r0, r1);
            prop_assert!(a < n && b < n, "({a}, {b}) out of 0..{n}");
            prop_assert_ne!(a, b);
        }

        #[test]
        fn below_stays_in_range(n in 1usize..usize::MAX, r: u64) {
            prop_assert!(below(r, n) < n);
        }
    }

    #[test]
    fn pair_covers_both_extremes() {
        assert_eq!(pair(2, 0, 0), (0, 1));
        assert_eq!(pair(2, u64::MAX, 0), (1, 0));
        assert_eq!(pair(5, u64::MAX, u64::MAX), (4, 3));
    }

    /// Every ordered pair of 4 candidates turns up about equally often.
    #[test]
    fn pairs_are_uniform() {
        let mut rng = FastRng::seeded(7);
        let mut counts = [[0u32; 4]; 4];
        let draws = 120_000;
        for _ in 0..draws {
            let (a, b) = rng.pair(4);
            counts[a][b] += 1;
        }
        let expected = f64::from(draws) / 12.0;
        for (a, row) in counts.iter().enumerate() {
            for (b, &c) in row.iter().enumerate() {
                if a == b {
                    assert_eq!(c, 0);
                } else {
                    let dev = (f64::from(c) - expected).abs() / expected;
                    assert!(dev < 0.05, "pair ({a},{b}) drawn {c} times");
                }
            }
        }
    }

    #[test]
    fn thread_rng_advances() {
        let a = with_thread_rng(FastRng::next_u64);
        let b = with_thread_rng(FastRng::next_u64);
        assert_ne!(a, b);
    }
}
