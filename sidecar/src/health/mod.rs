//! Health checks: active probes, passive checks from live traffic and the
//! registry's own view, combined into one health per endpoint.
//!
//! Each endpoint's live state carries three verdicts in one atomic word
//! ([`HealthCell`]): the registry's, the active checks' and the passive
//! checks'. An endpoint takes new requests only when none says unhealthy
//! and the registry does not say draining; the balancers read that with
//! one relaxed load. Each verdict moves by its own rules:
//!
//! - the registry's is whatever the adapter last said;
//! - the active one moves with consecutive probe results (hysteresis, see
//!   `hysteresis.rs`), probed by one task per endpoint (`active.rs`,
//!   `probe.rs`, `http_probe.rs`), started and stopped as the set changes
//!   (`checker.rs`) on a thread of their own;
//! - the passive one moves with consecutive results of proxied attempts,
//!   counted on the request path; it comes back through active probes, or
//!   without them after an ejection time that backs off (`passive.rs`).
//!
//! The state lives with the endpoint's live state, keyed by address, so it
//! survives a re-subscribe, an adapter restart, a config reload and a
//! weight change, and is dropped with the endpoint.
//!
//! When no endpoint of an upstream is available the balancer falls back to
//! all of them (panic mode); [`PanicState`] logs each entry into and exit
//! from it and counts the requests it served.

mod active;
mod cell;
mod checker;
mod http_probe;
mod hysteresis;
mod passive;
mod probe;
#[cfg(test)]
mod test_support;

use std::sync::{
    Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

pub(crate) use self::{
    active::ActivePlan,
    cell::{HealthCell, Passive, PassiveChange},
    checker::{CheckerPlan, spawn as spawn_checker},
    hysteresis::Counters,
    passive::{Attempt, PassivePolicy, passive_name},
};
use crate::upstream::{Endpoint, Health};

/// Whether an upstream is in panic mode, and how often it was.
#[derive(Debug, Default)]
pub(crate) struct PanicState {
    active: AtomicBool,
    /// Requests (attempts) sent while in panic mode.
    picks: AtomicU64,
    /// Entries into panic mode.
    episodes: AtomicU64,
    /// Serialises entry and exit, so that their log lines alternate.
    transition: Mutex<()>,
}

// === impl PanicState ===

impl PanicState {
    /// Counts one pick made in panic mode.
    #[inline]
    pub(crate) fn count_pick(&self) {
        self.picks.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the upstream is in panic mode now.
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Picks made in panic mode.
    pub(crate) fn picks(&self) -> u64 {
        self.picks.load(Ordering::Relaxed)
    }

    /// Times the upstream entered panic mode.
    pub(crate) fn episodes(&self) -> u64 {
        self.episodes.load(Ordering::Relaxed)
    }

    /// Looks at `endpoints` after a change of health or set; logs an entry
    /// into or an exit from panic mode.
    pub(crate) fn refresh(&self, upstream: &str, endpoints: &[std::sync::Arc<Endpoint>]) {
        let _serial = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        let weighted = endpoints.iter().filter(|e| e.weight > 0).count();
        let panic = weighted > 0 && !endpoints.iter().any(|e| e.is_available());
        if self.active.swap(panic, Ordering::Relaxed) == panic {
            return;
        }
        if panic {
            self.episodes.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                upstream,
                endpoints = weighted,
                "no endpoint is available: panic mode, sending to all of them"
            );
        } else {
            tracing::info!(upstream, "an endpoint is available again: panic mode over");
        }
    }
}

/// Logs one change of one verdict of an endpoint: a warning when it goes
/// down, information otherwise. `health` is the combined health after.
pub(crate) fn log_change(
    upstream: &str,
    endpoint: &Endpoint,
    check: &str,
    from: &str,
    to: &str,
    reason: &str,
    health: Health,
) {
    endpoint
        .state
        .attempts()
        .health_transitions
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let health = health_name(health);
    let endpoint_id = &*endpoint.id;
    if matches!(to, "unhealthy" | "ejected" | "draining") {
        tracing::warn!(upstream, endpoint = %endpoint.addr, endpoint_id, check, from, to, reason, health, "endpoint health changed");
    } else {
        tracing::info!(upstream, endpoint = %endpoint.addr, endpoint_id, check, from, to, reason, health, "endpoint health changed");
    }
}

/// A health's name in logs and `/upstreams`.
pub(crate) fn health_name(h: Health) -> &'static str {
    match h {
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
        Health::Draining => "draining",
    }
}
