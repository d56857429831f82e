//! Passive checks: health judged from live traffic, counted on the request
//! path with the endpoint's atomics (no lock, no allocation), and the way
//! back for an ejected endpoint.
//!
//! Traffic alone cannot show that an ejected endpoint has recovered, since
//! it gets no traffic (except in panic mode, where `healthy.successes` in a
//! row restore it). With active checks, the probes bring it back: it returns
//! once `active.healthy.successes` probes in a row have passed since the
//! ejection. Without them, an ejection lasts a while, 10 s the first time
//! and twice as long each time it is ejected again soon after (at most
//! 5 min); then the endpoint is half-open: it takes traffic, one success
//! restores it, one failure ejects it again.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::{
    cell::{EjectionTime, Passive, PassiveChange},
    hysteresis::{Outcome, Thresholds},
    log_change,
};
use crate::{
    config::{PassiveCheck, PassiveCheckType},
    upstream::Endpoint,
};

/// The first ejection of an endpoint with no active checks lasts this long.
pub(crate) const BASE_EJECTION: Duration = Duration::from_secs(10);

/// Ejections double in length up to this.
pub(crate) const MAX_EJECTION: Duration = Duration::from_secs(300);

/// What one proxied attempt came to, as the proxy saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// A response with this status.
    Status(u16),
    /// A TCP connection was made (TCP listeners).
    Connected,
    /// The connection could not be made.
    ConnectFailed,
    /// The exchange broke after the request was sent.
    Failed,
    /// No response in time.
    TimedOut,
}

/// A set of HTTP statuses, one bit each, for a lookup without branches
/// over a list.
#[derive(Clone, Debug)]
pub(crate) struct StatusSet([u64; 10]);

/// An upstream's passive checks, built from its config.
#[derive(Debug)]
pub(crate) struct PassivePolicy {
    thresholds: Thresholds,
    healthy: StatusSet,
    unhealthy: StatusSet,
    /// `type: http`: statuses count; `tcp`: only connections and timeouts.
    statuses: bool,
    ejection_time: EjectionTime,
}

// === impl StatusSet ===

impl StatusSet {
    /// The set of `statuses`; those above 639 are left out (config allows
    /// 200–599).
    pub(crate) fn new(statuses: &[u16]) -> Self {
        let mut bits = [0u64; 10];
        for &s in statuses.iter().filter(|&&s| s < 640) {
            bits[s as usize / 64] |= 1 << (s % 64);
        }
        StatusSet(bits)
    }

    /// Whether `status` is in the set.
    #[inline]
    pub(crate) fn contains(&self, status: u16) -> bool {
        self.0
            .get(status as usize / 64)
            .is_some_and(|w| w & (1 << (status % 64)) != 0)
    }
}

// === impl PassivePolicy ===

impl PassivePolicy {
    /// `active`: whether the upstream has active checks, which then are the
    /// way back from an ejection.
    pub(crate) fn new(c: &PassiveCheck, active: bool) -> Self {
        PassivePolicy {
            thresholds: Thresholds::passive(c),
            healthy: StatusSet::new(&c.healthy.http_statuses),
            unhealthy: StatusSet::new(&c.unhealthy.http_statuses),
            statuses: c.r#type == PassiveCheckType::Http,
            ejection_time: if active { by_probes } else { backoff },
        }
    }

    /// Whether an ejection ends by time (no active checks).
    pub(crate) fn ejection_ends_by_time(&self) -> bool {
        (self.ejection_time)(1).is_some()
    }

    /// Counts one attempt on `endpoint` and logs a change of verdict.
    #[inline]
    pub(crate) fn record(
        &self,
        upstream: &str,
        endpoint: &Endpoint,
        attempt: Attempt,
    ) -> Option<PassiveChange> {
        let outcome = self.classify(attempt)?;
        let cell = endpoint.state.verdicts();
        let change = cell.observe_passive(outcome, &self.thresholds, self.ejection_time)?;
        self.log(upstream, endpoint, change);
        Some(change)
    }

    #[inline]
    fn classify(&self, attempt: Attempt) -> Option<Outcome> {
        match attempt {
            Attempt::Status(_) if !self.statuses => None,
            Attempt::Status(s) if self.unhealthy.contains(s) => Some(Outcome::HttpFailure),
            Attempt::Status(s) if self.healthy.contains(s) => Some(Outcome::Success),
            Attempt::Status(_) => None,
            Attempt::Connected => Some(Outcome::Success),
            Attempt::ConnectFailed | Attempt::Failed => Some(Outcome::TcpFailure),
            Attempt::TimedOut => Some(Outcome::Timeout),
        }
    }

    #[cold]
    fn log(&self, upstream: &str, endpoint: &Endpoint, change: PassiveChange) {
        let health = endpoint.state.health();
        match change {
            PassiveChange::Ejected {
                from,
                by,
                ejections,
                lasts,
            } => {
                let reason = if from == Passive::HalfOpen {
                    format!("a {} while half-open", singular(by))
                } else {
                    format!(
                        "{} consecutive {} in live traffic",
                        self.thresholds.get(by),
                        by.counter_name()
                    )
                };
                let back = match lasts {
                    Some(d) => format!("for {d:?} (ejection {ejections} in a row)"),
                    None => "until active checks pass".to_owned(),
                };
                log_change(
                    upstream,
                    endpoint,
                    "passive",
                    passive_name(from),
                    "ejected",
                    &format!("{reason}; ejected {back}"),
                    health,
                );
            }
            PassiveChange::Restored { from } => {
                let reason = if from == Passive::HalfOpen {
                    "a success while half-open".to_owned()
                } else {
                    format!(
                        "{} consecutive successes in live traffic",
                        self.thresholds.successes
                    )
                };
                log_change(
                    upstream,
                    endpoint,
                    "passive",
                    passive_name(from),
                    "healthy",
                    &reason,
                    health,
                );
            }
        }
    }
}

/// The passive verdict's name in logs and `/upstreams`.
pub(crate) fn passive_name(p: Passive) -> &'static str {
    match p {
        Passive::Healthy => "healthy",
        Passive::Ejected => "ejected",
        Passive::HalfOpen => "half_open",
    }
}

fn singular(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::HttpFailure => "HTTP failure",
        Outcome::TcpFailure => "TCP failure",
        Outcome::Timeout => "timeout",
    }
}

/// Ejection time without active checks: [`BASE_EJECTION`], doubled for each
/// ejection in a row, at most [`MAX_EJECTION`].
pub(crate) fn backoff(ejections: u8) -> Option<Duration> {
    let doublings = u32::from(ejections.saturating_sub(1)).min(16);
    Some((BASE_EJECTION * (1 << doublings)).min(MAX_EJECTION))
}

/// With active checks, an ejection lasts until they pass.
fn by_probes(_: u8) -> Option<Duration> {
    None
}

/// Moves the endpoints whose ejection time is over to half-open, logging
/// each. Returns whether any moved, and the next deadline among those still
/// ejected.
pub(crate) fn revive_due(
    upstream: &str,
    endpoints: &[Arc<Endpoint>],
    now: Instant,
) -> (bool, Option<Instant>) {
    let mut revived = false;
    let mut next: Option<Instant> = None;
    for e in endpoints {
        let cell = e.state.verdicts();
        let Some(until) = cell.ejected_until() else {
            continue;
        };
        if until > now {
            next = Some(next.map_or(until, |n| n.min(until)));
        } else if cell.revive(now) {
            revived = true;
            let reason = "ejection time over: one success restores it, one failure ejects it again";
            let health = e.state.health();
            log_change(
                upstream,
                e,
                "passive",
                "ejected",
                "half_open",
                reason,
                health,
            );
        }
    }
    (revived, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::PassiveCheck, health::test_support::endpoint, upstream::Health};

    fn policy(active: bool) -> PassivePolicy {
        let mut c = PassiveCheck::default();
        c.unhealthy.tcp_failures = 2;
        c.unhealthy.http_failures = 3;
        c.healthy.successes = 2;
        PassivePolicy::new(&c, active)
    }

    fn fail(p: &PassivePolicy, e: &Endpoint, n: usize) {
        for _ in 0..n {
            p.record("web", e, Attempt::ConnectFailed);
        }
    }

    #[test]
    fn statuses_are_classified_by_the_lists() {
        let p = policy(true);
        assert_eq!(p.classify(Attempt::Status(200)), Some(Outcome::Success));
        assert_eq!(p.classify(Attempt::Status(503)), Some(Outcome::HttpFailure));
        assert_eq!(p.classify(Attempt::Status(404)), None);
        assert_eq!(p.classify(Attempt::Failed), Some(Outcome::TcpFailure));
        let tcp = PassivePolicy::new(
            &PassiveCheck {
                r#type: PassiveCheckType::Tcp,
                ..PassiveCheck::default()
            },
            true,
        );
        assert_eq!(tcp.classify(Attempt::Status(500)), None);
        assert_eq!(tcp.classify(Attempt::TimedOut), Some(Outcome::Timeout));
    }

    #[test]
    fn the_back_off_doubles_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=8).map(|n| backoff(n).unwrap().as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u8::MAX), Some(MAX_EJECTION));
    }

    #[test]
    fn failures_in_a_row_eject_and_successes_in_between_do_not() {
        let p = policy(true);
        let e = endpoint(1);
        fail(&p, &e, 1);
        p.record("web", &e, Attempt::Status(200));
        fail(&p, &e, 1);
        assert_eq!(e.state.health(), Health::Healthy);
        fail(&p, &e, 1);
        assert_eq!(e.state.health(), Health::Unhealthy);
        assert_eq!(e.state.verdicts().passive(), Passive::Ejected);
        // Without a time-out: only probes (or panic-mode traffic) restore it.
        assert_eq!(e.state.verdicts().ejected_until(), None);
    }

    #[test]
    fn active_successes_after_the_ejection_restore_it() {
        let p = policy(true);
        let e = endpoint(1);
        let cell = e.state.verdicts();
        let t = Thresholds {
            successes: 2,
            http_failures: 1,
            tcp_failures: 1,
            timeouts: 1,
        };
        // Probes passed before the ejection: they do not count.
        cell.observe_active(Outcome::Success, &t);
        cell.observe_active(Outcome::Success, &t);
        fail(&p, &e, 2);
        assert!(!cell.restore_passive_by_active(2));
        cell.observe_active(Outcome::Success, &t);
        assert!(!cell.restore_passive_by_active(2));
        cell.observe_active(Outcome::Success, &t);
        assert!(cell.restore_passive_by_active(2));
        assert_eq!(e.state.health(), Health::Healthy);
    }

    #[test]
    fn panic_mode_successes_restore_an_ejected_endpoint() {
        let p = policy(true);
        let e = endpoint(1);
        fail(&p, &e, 2);
        p.record("web", &e, Attempt::Status(200));
        assert_eq!(e.state.health(), Health::Unhealthy);
        p.record("web", &e, Attempt::Status(200));
        assert_eq!(e.state.health(), Health::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn without_active_checks_ejections_back_off_then_half_open() {
        let p = policy(false);
        let e = endpoint(1);
        let eps = [e.clone()];
        let cell = e.state.verdicts();
        let start = Instant::now();

        fail(&p, &e, 2);
        assert_eq!(cell.ejected_until(), Some(start + Duration::from_secs(10)));
        let (revived, next) = revive_due("web", &eps, Instant::now());
        assert_eq!(
            (revived, next),
            (false, Some(start + Duration::from_secs(10)))
        );

        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(revive_due("web", &eps, Instant::now()).0);
        assert_eq!(cell.passive(), Passive::HalfOpen);
        assert_eq!(e.state.health(), Health::Healthy);

        // One failure while half-open ejects it again, for twice as long.
        fail(&p, &e, 1);
        assert_eq!(cell.passive(), Passive::Ejected);
        let t = Instant::now();
        assert_eq!(cell.ejected_until(), Some(t + Duration::from_secs(20)));
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(!revive_due("web", &eps, Instant::now()).0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(revive_due("web", &eps, Instant::now()).0);

        // Then 40 s, 80 s, 160 s, and 300 s from then on.
        for want in [40, 80, 160, 300, 300] {
            fail(&p, &e, 1);
            let t = Instant::now();
            assert_eq!(cell.ejected_until(), Some(t + Duration::from_secs(want)));
            tokio::time::advance(Duration::from_secs(want)).await;
            assert!(revive_due("web", &eps, Instant::now()).0);
        }

        // One success while half-open restores it.
        p.record("web", &e, Attempt::Status(204));
        assert_eq!(cell.passive(), Passive::Healthy);

        // Soon ejected again: the back-off remembers.
        fail(&p, &e, 2);
        let t = Instant::now();
        assert_eq!(cell.ejected_until(), Some(t + Duration::from_secs(300)));
        tokio::time::advance(Duration::from_secs(300)).await;
        revive_due("web", &eps, Instant::now());
        p.record("web", &e, Attempt::Status(200));

        // Healthy for longer than the memory: the next ejection is short.
        tokio::time::advance(Duration::from_secs(301)).await;
        fail(&p, &e, 2);
        let t = Instant::now();
        assert_eq!(cell.ejected_until(), Some(t + Duration::from_secs(10)));
        assert_eq!(cell.ejections(), 1);
    }
}
