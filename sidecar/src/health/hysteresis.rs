//! Hysteresis: consecutive-result counters that turn a run of probe or
//! request results into a verdict, so that one lost probe does not eject an
//! endpoint and one lucky answer does not bring it back.
//!
//! The rules are lua-resty-healthcheck's, which APISIX users know: each kind
//! of failure (HTTP status, TCP error, timeout) is counted on its own, a
//! success clears every failure count, and any failure clears the successes.
//! A healthy verdict turns unhealthy when one failure count reaches its
//! threshold; an unhealthy one turns healthy when the successes reach theirs.
//! A threshold of 0 never flips the verdict. The counters are four bytes so
//! that they pack into one atomic word.

use crate::config::{ActiveCheck, PassiveCheck};

/// What one probe or proxied attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A healthy answer.
    Success,
    /// An answer that says unhealthy: an HTTP status in the unhealthy list,
    /// or a gRPC health status other than `SERVING`.
    HttpFailure,
    /// No answer: the connection was refused, reset or broken.
    TcpFailure,
    /// No answer in time.
    Timeout,
}

/// Consecutive results of each kind since the last result that broke the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) successes: u8,
    pub(crate) http_failures: u8,
    pub(crate) tcp_failures: u8,
    pub(crate) timeouts: u8,
}

/// How many consecutive results of each kind flip a verdict; 0 never does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Thresholds {
    pub(crate) successes: u8,
    pub(crate) http_failures: u8,
    pub(crate) tcp_failures: u8,
    pub(crate) timeouts: u8,
}

/// A verdict that changed, and the kind of result that changed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flip {
    /// Unhealthy to healthy: enough successes in a row.
    Up,
    /// Healthy to unhealthy: enough failures of this kind in a row.
    Down(Outcome),
}

// === impl Outcome ===

impl Outcome {
    /// The name of the threshold this outcome counts toward.
    pub(crate) fn counter_name(self) -> &'static str {
        match self {
            Outcome::Success => "successes",
            Outcome::HttpFailure => "http_failures",
            Outcome::TcpFailure => "tcp_failures",
            Outcome::Timeout => "timeouts",
        }
    }
}

// === impl Counters ===

impl Counters {
    /// Counts `outcome` under the current verdict (`healthy`). Returns the
    /// counters after, and the flip if the verdict changes; after a flip the
    /// counters start again from zero.
    pub(crate) fn step(
        self,
        healthy: bool,
        outcome: Outcome,
        t: &Thresholds,
    ) -> (Self, Option<Flip>) {
        let mut next = self;
        match outcome {
            Outcome::Success => {
                next = Counters {
                    successes: self.successes.saturating_add(1),
                    ..Counters::default()
                };
            }
            failure => {
                next.successes = 0;
                let n = next.slot(failure);
                *n = n.saturating_add(1);
            }
        }
        let count = next.get(outcome);
        let threshold = t.get(outcome);
        let flips = threshold > 0 && count >= threshold && (outcome == Outcome::Success) != healthy;
        if !flips {
            return (next, None);
        }
        let flip = match outcome {
            Outcome::Success => Flip::Up,
            failure => Flip::Down(failure),
        };
        (Counters::default(), Some(flip))
    }

    /// The count of one kind.
    pub(crate) fn get(self, outcome: Outcome) -> u8 {
        match outcome {
            Outcome::Success => self.successes,
            Outcome::HttpFailure => self.http_failures,
            Outcome::TcpFailure => self.tcp_failures,
            Outcome::Timeout => self.timeouts,
        }
    }

    fn slot(&mut self, outcome: Outcome) -> &mut u8 {
        match outcome {
            Outcome::Success => &mut self.successes,
            Outcome::HttpFailure => &mut self.http_failures,
            Outcome::TcpFailure => &mut self.tcp_failures,
            Outcome::Timeout => &mut self.timeouts,
        }
    }

    /// The four counts in one word, successes in the low byte.
    pub(crate) fn pack(self) -> u32 {
        u32::from_le_bytes([
            self.successes,
            self.http_failures,
            self.tcp_failures,
            self.timeouts,
        ])
    }

    /// The inverse of [`pack`](Self::pack).
    pub(crate) fn unpack(word: u32) -> Self {
        let [successes, http_failures, tcp_failures, timeouts] = word.to_le_bytes();
        Counters {
            successes,
            http_failures,
            tcp_failures,
            timeouts,
        }
    }
}

// === impl Thresholds ===

impl Thresholds {
    /// The thresholds of active probes.
    pub(crate) fn active(c: &ActiveCheck) -> Self {
        Thresholds {
            successes: byte(c.healthy.successes),
            http_failures: byte(c.unhealthy.http_failures),
            tcp_failures: byte(c.unhealthy.tcp_failures),
            timeouts: byte(c.unhealthy.timeouts),
        }
    }

    /// The thresholds of passive checks.
    pub(crate) fn passive(c: &PassiveCheck) -> Self {
        Thresholds {
            successes: byte(c.healthy.successes),
            http_failures: byte(c.unhealthy.http_failures),
            tcp_failures: byte(c.unhealthy.tcp_failures),
            timeouts: byte(c.unhealthy.timeouts),
        }
    }

    /// The threshold of one kind.
    pub(crate) fn get(&self, outcome: Outcome) -> u8 {
        match outcome {
            Outcome::Success => self.successes,
            Outcome::HttpFailure => self.http_failures,
            Outcome::TcpFailure => self.tcp_failures,
            Outcome::Timeout => self.timeouts,
        }
    }
}

/// Config thresholds are validated to `0..=254`; a byte holds them.
fn byte(n: u32) -> u8 {
    n.min(u8::MAX as u32) as u8
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{Outcome::*, *};

    const T: Thresholds = Thresholds {
        successes: 2,
        http_failures: 3,
        tcp_failures: 2,
        timeouts: 1,
    };

    /// Runs `outcomes` from a verdict; returns the verdict after each.
    fn run(mut healthy: bool, outcomes: &[Outcome], t: &Thresholds) -> Vec<bool> {
        let mut c = Counters::default();
        outcomes
            .iter()
            .map(|&o| {
                let (next, flip) = c.step(healthy, o, t);
                c = next;
                match flip {
                    Some(Flip::Up) => healthy = true,
                    Some(Flip::Down(kind)) => {
                        assert_eq!(kind, o);
                        healthy = false;
                    }
                    None => {}
                }
                healthy
            })
            .collect()
    }

    #[test]
    fn consecutive_failures_of_one_kind_turn_unhealthy() {
        assert_eq!(run(true, &[TcpFailure, TcpFailure], &T), [true, false]);
        assert_eq!(run(true, &[Timeout], &T), [false]);
        assert_eq!(
            run(true, &[HttpFailure, HttpFailure, HttpFailure], &T),
            [true, true, false]
        );
    }

    #[test]
    fn a_success_breaks_a_run_of_failures() {
        let got = run(true, &[TcpFailure, Success, TcpFailure, Success], &T);
        assert_eq!(got, [true; 4]);
    }

    #[test]
    fn kinds_are_counted_apart() {
        // HTTP failures do not clear the TCP count, nor add to it.
        let got = run(
            true,
            &[TcpFailure, HttpFailure, HttpFailure, TcpFailure],
            &T,
        );
        assert_eq!(got, [true, true, true, false]);
    }

    #[test]
    fn consecutive_successes_turn_healthy_and_a_failure_restarts_the_count() {
        assert_eq!(run(false, &[Success, Success], &T), [false, true]);
        assert_eq!(
            run(false, &[Success, HttpFailure, Success, Success], &T),
            [false, false, false, true]
        );
    }

    #[test]
    fn failures_while_unhealthy_and_successes_while_healthy_flip_nothing() {
        assert_eq!(run(false, &[Timeout; 5], &T), [false; 5]);
        assert_eq!(run(true, &[Success; 5], &T), [true; 5]);
    }

    #[test]
    fn a_zero_threshold_never_flips() {
        let t = Thresholds {
            successes: 0,
            tcp_failures: 0,
            ..T
        };
        assert_eq!(run(true, &[TcpFailure; 300], &t), [true; 300]);
        assert_eq!(run(false, &[Success; 300], &t), [false; 300]);
    }

    #[test]
    fn counts_saturate_and_restart_after_a_flip() {
        let t = Thresholds { timeouts: 0, ..T };
        let mut c = Counters::default();
        for _ in 0..300 {
            c = c.step(true, Timeout, &t).0;
        }
        assert_eq!(c.timeouts, u8::MAX);
        let (after, flip) = c.step(true, TcpFailure, &t).0.step(true, TcpFailure, &t);
        assert_eq!(
            (after, flip),
            (Counters::default(), Some(Flip::Down(TcpFailure)))
        );
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Success),
            Just(HttpFailure),
            Just(TcpFailure),
            Just(Timeout)
        ]
    }

    proptest! {
        #[test]
        fn packing_round_trips(word: u32) {
            prop_assert_eq!(Counters::unpack(word).pack(), word);
        }

        /// Against a naive model that recounts from the results since the
        /// last flip: trailing successes, or failures of one kind since the
        /// last success.
        #[test]
        fn matches_a_recounting_model(outcomes in prop::collection::vec(outcome(), 0..64)) {
            let got = run(true, &outcomes, &T);
            let (mut healthy, mut since_flip) = (true, 0);
            for (i, &o) in outcomes.iter().enumerate() {
                let window = &outcomes[since_flip..=i];
                let count = if o == Success {
                    window.iter().rev().take_while(|&&x| x == Success).count()
                } else {
                    let after = window.iter().rposition(|&x| x == Success).map_or(0, |p| p + 1);
                    window[after..].iter().filter(|&&x| x == o).count()
                };
                if (o == Success) != healthy && count >= T.get(o) as usize {
                    healthy = !healthy;
                    since_flip = i + 1;
                }
                prop_assert_eq!(got[i], healthy, "at {}: {:?}", i, &outcomes[..=i]);
            }
        }
    }
}
