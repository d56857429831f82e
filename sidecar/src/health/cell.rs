//! The health of one endpoint as three verdicts in one atomic word: the
//! registry's view, the active checks' and the passive checks', with the
//! passive counters beside them.
//!
//! Keeping the verdicts apart means none overrides another: a registry
//! update does not undo a failed probe, and a passing probe does not undo a
//! registry's "draining". The combined health is one relaxed load and a
//! mask, which is all the request path reads. Passive counting is one
//! compare-and-swap, and none when nothing changes (a success on a healthy
//! endpoint). The active counters have a word of their own, written by the
//! endpoint's probe task.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

use tokio::time::Instant;

use super::hysteresis::{Counters, Flip, Outcome, Thresholds};
use crate::upstream::Health;

/// The health word of an endpoint, its active counters and its ejection
/// deadline.
#[derive(Debug)]
pub(crate) struct HealthCell {
    /// The verdicts, the passive counters and the ejection count; see the
    /// constants below.
    word: AtomicU64,
    /// The active checks' [`Counters`], packed.
    active: AtomicU32,
    /// Until when a passive ejection lasts, in milliseconds since `epoch`.
    ejected_until_ms: AtomicU64,
    epoch: Instant,
}

/// The passive checks' verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Passive {
    /// Takes traffic.
    Healthy,
    /// Ejected by failures in live traffic.
    Ejected,
    /// Back on trial after an ejection: one success restores it, one
    /// failure ejects it again for longer.
    HalfOpen,
}

/// How the passive verdict changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PassiveChange {
    /// Ejected by failures of this kind; `ejections` counts the ejections
    /// in a row, for the back-off; `lasts` is the ejection time, `None`
    /// when only an active check brings the endpoint back.
    Ejected {
        from: Passive,
        by: Outcome,
        ejections: u8,
        lasts: Option<Duration>,
    },
    /// Healthy again, from this state.
    Restored { from: Passive },
}

/// How long a passive ejection lasts, given how many ejections came in a
/// row (1 for the first); `None` when only an active check brings an
/// endpoint back.
pub(crate) type EjectionTime = fn(u8) -> Option<Duration>;

// Bits 0–1: the registry's view. 0 healthy, 1 unhealthy, 2 draining.
const REGISTRY_UNHEALTHY: u64 = 1;
const REGISTRY_DRAINING: u64 = 1 << 1;
const REGISTRY_MASK: u64 = REGISTRY_UNHEALTHY | REGISTRY_DRAINING;
// Bit 2: the active checks say unhealthy.
const ACTIVE_DOWN: u64 = 1 << 2;
// Bits 3–4: the passive verdict. 0 healthy, ejected, half-open.
const PASSIVE_EJECTED: u64 = 1 << 3;
const PASSIVE_HALF_OPEN: u64 = 1 << 4;
const PASSIVE_MASK: u64 = PASSIVE_EJECTED | PASSIVE_HALF_OPEN;
// Bits 8–39: the passive counters; bits 40–47: ejections in a row.
const COUNTERS_SHIFT: u32 = 8;
const COUNTERS_MASK: u64 = (u32::MAX as u64) << COUNTERS_SHIFT;
const EJECTIONS_SHIFT: u32 = 40;
const EJECTIONS_MASK: u64 = 0xff << EJECTIONS_SHIFT;
/// Any of these makes the endpoint unhealthy.
const DOWN: u64 = REGISTRY_UNHEALTHY | ACTIVE_DOWN | PASSIVE_EJECTED;

/// A passive ejection that ended this long before the next one no longer
/// counts toward that one's back-off.
pub(crate) const EJECTION_MEMORY: Duration = Duration::from_secs(300);

// === impl HealthCell ===

impl Default for HealthCell {
    fn default() -> Self {
        Self {
            word: AtomicU64::new(0),
            active: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl HealthCell {
    /// The combined health: draining if the registry says so; unhealthy if
    /// any verdict says so; healthy otherwise (a half-open endpoint takes
    /// traffic).
    #[inline]
    pub(crate) fn health(&self) -> Health {
        let w = self.word.load(Ordering::Relaxed);
        if w & REGISTRY_DRAINING != 0 {
            Health::Draining
        } else if w & DOWN != 0 {
            Health::Unhealthy
        } else {
            Health::Healthy
        }
    }

    /// The registry's view.
    pub(crate) fn registry(&self) -> Health {
        registry_of(self.word.load(Ordering::Relaxed))
    }

    /// Sets the registry's view; returns the previous one.
    pub(crate) fn set_registry(&self, h: Health) -> Health {
        let bits = match h {
            Health::Healthy => 0,
            Health::Unhealthy => REGISTRY_UNHEALTHY,
            Health::Draining => REGISTRY_DRAINING,
        };
        let old = self.update(|w| (w & !REGISTRY_MASK) | bits);
        registry_of(old)
    }

    /// Whether the active checks say unhealthy.
    pub(crate) fn active_down(&self) -> bool {
        self.word.load(Ordering::Relaxed) & ACTIVE_DOWN != 0
    }

    /// The active checks' counters.
    pub(crate) fn active_counters(&self) -> Counters {
        Counters::unpack(self.active.load(Ordering::Relaxed))
    }

    /// Counts one probe result; returns the flip of the active verdict, if any.
    pub(crate) fn observe_active(&self, outcome: Outcome, t: &Thresholds) -> Option<Flip> {
        // The probe task is the only writer of the active verdict, so the
        // verdict read here stays true until it writes it below.
        let healthy = !self.active_down();
        let mut flip = None;
        let _ = self
            .active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                let (next, f) = Counters::unpack(c).step(healthy, outcome, t);
                flip = f;
                Some(next.pack())
            });
        match flip {
            Some(Flip::Down(_)) => self.update(|w| w | ACTIVE_DOWN),
            Some(Flip::Up) => self.update(|w| w & !ACTIVE_DOWN),
            None => 0,
        };
        flip
    }

    /// Clears the active verdict and counters (active checks were removed).
    /// Returns whether the verdict was unhealthy.
    pub(crate) fn reset_active(&self) -> bool {
        self.active.store(0, Ordering::Relaxed);
        self.update(|w| w & !ACTIVE_DOWN) & ACTIVE_DOWN != 0
    }

    /// The passive verdict.
    pub(crate) fn passive(&self) -> Passive {
        passive_of(self.word.load(Ordering::Relaxed))
    }

    /// The passive counters.
    pub(crate) fn passive_counters(&self) -> Counters {
        counters_of(self.word.load(Ordering::Relaxed))
    }

    /// Passive ejections in a row.
    pub(crate) fn ejections(&self) -> u8 {
        ((self.word.load(Ordering::Relaxed) & EJECTIONS_MASK) >> EJECTIONS_SHIFT) as u8
    }

    /// When the current passive ejection ends, if it ends by time.
    pub(crate) fn ejected_until(&self) -> Option<Instant> {
        let w = self.word.load(Ordering::Acquire);
        let ms = self.ejected_until_ms.load(Ordering::Relaxed);
        (w & PASSIVE_EJECTED != 0 && ms != u64::MAX).then(|| self.epoch + Duration::from_millis(ms))
    }

    /// Counts one proxied attempt. `ejection_time` gives how long an
    /// ejection lasts. Lock-free, allocation-free; writes nothing when
    /// nothing changes.
    pub(crate) fn observe_passive(
        &self,
        outcome: Outcome,
        t: &Thresholds,
        ejection_time: EjectionTime,
    ) -> Option<PassiveChange> {
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            let (next, change) = self.passive_step(cur, outcome, t, ejection_time);
            if next == cur {
                return change;
            }
            let ejected = matches!(change, Some(PassiveChange::Ejected { .. }));
            if let Some(PassiveChange::Ejected { lasts, .. }) = change {
                // Written before the verdict (released below), so that the
                // reviver never pairs the new ejection with an old deadline.
                let until = lasts.map_or(u64::MAX, |d| {
                    self.now_ms().saturating_add(d.as_millis() as u64)
                });
                self.ejected_until_ms.store(until, Ordering::Relaxed);
            }
            match self
                .word
                .compare_exchange_weak(cur, next, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => {
                    if ejected {
                        // A passive ejection breaks the active checks' run
                        // of successes: probes must pass anew to restore it.
                        self.active.fetch_and(!0xff, Ordering::Relaxed);
                    }
                    return change;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    fn passive_step(
        &self,
        w: u64,
        outcome: Outcome,
        t: &Thresholds,
        ejection_time: EjectionTime,
    ) -> (u64, Option<PassiveChange>) {
        let from = passive_of(w);
        let counters = counters_of(w);
        let eject = |by: Outcome| {
            let mut ejections = ((w & EJECTIONS_MASK) >> EJECTIONS_SHIFT) as u8;
            // A long quiet spell since the last ejection ended forgets it.
            let last_end = self.ejected_until_ms.load(Ordering::Relaxed);
            let memory = EJECTION_MEMORY.as_millis() as u64;
            if last_end != u64::MAX && self.now_ms() > last_end.saturating_add(memory) {
                ejections = 0;
            }
            let ejections = ejections.saturating_add(1);
            let lasts = ejection_time(ejections);
            let next = (w & !(PASSIVE_MASK | COUNTERS_MASK | EJECTIONS_MASK))
                | PASSIVE_EJECTED
                | (u64::from(ejections) << EJECTIONS_SHIFT);
            let change = PassiveChange::Ejected {
                from,
                by,
                ejections,
                lasts,
            };
            (next, Some(change))
        };
        let restore = || {
            let next = w & !(PASSIVE_MASK | COUNTERS_MASK);
            (next, Some(PassiveChange::Restored { from }))
        };
        match from {
            Passive::HalfOpen => match outcome {
                Outcome::Success => restore(),
                failure if t.get(failure) > 0 => eject(failure),
                _ => (w, None),
            },
            // Successes count only toward a restore: on a healthy endpoint a
            // success just ends any run of failures, and usually there is
            // none, so the word stays as it is and nothing is written.
            Passive::Healthy if outcome == Outcome::Success => {
                (with_counters(w, Counters::default()), None)
            }
            Passive::Healthy | Passive::Ejected => {
                let healthy = from == Passive::Healthy;
                match counters.step(healthy, outcome, t) {
                    (_, Some(Flip::Down(by))) => eject(by),
                    (_, Some(Flip::Up)) => restore(),
                    (c, None) => (with_counters(w, c), None),
                }
            }
        }
    }

    /// Restores a passively ejected endpoint once active probes have passed
    /// `successes` times in a row since the ejection. Returns whether it did.
    pub(crate) fn restore_passive_by_active(&self, successes: u8) -> bool {
        if self.passive() != Passive::Ejected || self.active_counters().successes < successes {
            return false;
        }
        self.transition_passive(Passive::Ejected, 0)
    }

    /// Moves an ejected endpoint whose ejection time is over to half-open.
    /// Returns whether it did.
    pub(crate) fn revive(&self, now: Instant) -> bool {
        match self.ejected_until() {
            Some(until) if until <= now => {
                self.transition_passive(Passive::Ejected, PASSIVE_HALF_OPEN)
            }
            _ => false,
        }
    }

    /// Clears the passive verdict, counters and ejections (passive checks
    /// were removed). Returns whether the endpoint was ejected.
    pub(crate) fn reset_passive(&self) -> bool {
        let old = self.update(|w| w & !(PASSIVE_MASK | COUNTERS_MASK | EJECTIONS_MASK));
        passive_of(old) == Passive::Ejected
    }

    /// Moves the passive verdict from `from` to `to_bits`, clearing the
    /// counters; false if it was no longer `from`.
    fn transition_passive(&self, from: Passive, to_bits: u64) -> bool {
        self.word
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| {
                (passive_of(w) == from).then_some((w & !(PASSIVE_MASK | COUNTERS_MASK)) | to_bits)
            })
            .is_ok()
    }

    /// Applies `f` to the word; returns the word before.
    fn update(&self, f: impl Fn(u64) -> u64) -> u64 {
        match self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| Some(f(w)))
        {
            Ok(old) | Err(old) => old,
        }
    }

    fn now_ms(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }
}

fn registry_of(w: u64) -> Health {
    if w & REGISTRY_DRAINING != 0 {
        Health::Draining
    } else if w & REGISTRY_UNHEALTHY != 0 {
        Health::Unhealthy
    } else {
        Health::Healthy
    }
}

fn passive_of(w: u64) -> Passive {
    if w & PASSIVE_EJECTED != 0 {
        Passive::Ejected
    } else if w & PASSIVE_HALF_OPEN != 0 {
        Passive::HalfOpen
    } else {
        Passive::Healthy
    }
}

fn counters_of(w: u64) -> Counters {
    Counters::unpack(((w & COUNTERS_MASK) >> COUNTERS_SHIFT) as u32)
}

fn with_counters(w: u64, c: Counters) -> u64 {
    (w & !COUNTERS_MASK) | (u64::from(c.pack()) << COUNTERS_SHIFT)
}

#[cfg(test)]
mod tests;
