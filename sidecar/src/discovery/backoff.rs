//! Jittered exponential back-off between reconnects to an adapter.
//!
//! The sidecar links no adapter crate (DESIGN.md: dependency direction), so it
//! keeps its own copy of this small policy.

use std::time::Duration;

use rand::Rng;

/// Exponential back-off with "equal jitter": a delay in `[d/2, d]`, `d`
/// doubling from `min` to `max`.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            current: min,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_jittered_ceilings() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(200));
        for c in [50u64, 100, 200, 200] {
            let d = b.next_delay();
            let c = Duration::from_millis(c);
            assert!(d >= c / 2 && d <= c, "{d:?} not in [{:?}, {c:?}]", c / 2);
        }
    }
}
