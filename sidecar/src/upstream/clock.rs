//! The clock of load accounting: a coarse monotonic clock that the pick path
//! can afford, and the conversion of `std` instants onto it.
//!
//! Peak-EWMA decays with a window of seconds, so its clock needs
//! milliseconds, not nanoseconds. `Instant::now()` costs about 30 ns on this
//! project's VMs (it reads the TSC and scales it); the kernel's coarse clock
//! (`CLOCK_MONOTONIC_COARSE`, one vDSO memory read, a few milliseconds of
//! resolution) costs under 10. Both count from one process-wide epoch, taken
//! on both clocks at once, so a latency stamp from a precise `Instant` and a
//! pick-time reading from the coarse clock compare to within one coarse tick.

use std::{sync::OnceLock, time::Instant};

/// The same moment on both clocks.
struct Epoch {
    precise: Instant,
    coarse: coarsetime::Instant,
}

static EPOCH: OnceLock<Epoch> = OnceLock::new();

/// Nanoseconds since the process epoch, from the coarse clock. Cheap, and
/// never decreasing; may lag the precise clock by one tick (1–4 ms).
#[inline]
pub(crate) fn now_ns() -> u64 {
    let epoch = epoch();
    // Not `now()`: that also stores into a process-wide cache line, which
    // every core's pick would then contend on.
    coarsetime::Instant::now_without_cache_update()
        .duration_since(epoch.coarse)
        .as_nanos()
}

/// Nanoseconds from the process epoch to `t` (0 for instants before it).
#[inline]
pub(crate) fn ns_since_epoch(t: Instant) -> u64 {
    let nanos = t.saturating_duration_since(epoch().precise).as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

#[inline]
fn epoch() -> &'static Epoch {
    EPOCH.get_or_init(|| Epoch {
        precise: Instant::now(),
        coarse: coarsetime::Instant::now_without_cache_update(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn clocks_agree_within_a_tick() {
        let coarse = now_ns();
        let precise = ns_since_epoch(Instant::now());
        // 20 ms covers the coarsest kernel tick (HZ=100) with room to spare.
        assert!(
            precise.abs_diff(coarse) < 20_000_000,
            "{precise} vs {coarse}"
        );
    }

    #[test]
    fn coarse_clock_moves_forward() {
        let a = now_ns();
        let until = Instant::now() + Duration::from_millis(30);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        assert!(now_ns() > a);
    }
}
