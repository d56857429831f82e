//! Why a pick went where it did, for the attempt span of a traced request:
//! every endpoint of the set as a candidate with its score (where the
//! algorithm has one) or as skipped with the reason.
//!
//! Computed after the pick from the same live state, and only for a request
//! whose span records: the pick path itself is untouched and pays nothing.
//! The scores are read a moment after the pick, so under load they may
//! differ slightly from what the pick compared; power-of-two-choices
//! algorithms compare two random candidates, and the list shows them all.

use std::sync::Arc;

use super::{Balancer, BalancerType, PickCtx};
use crate::upstream::{Endpoint, Health, now_ns};

/// One endpoint in the explanation of a pick.
#[derive(Clone, Copy, Debug)]
pub struct Explained<'a> {
    /// The endpoint.
    pub endpoint: &'a Endpoint,
    /// Whether the pick chose it.
    pub chosen: bool,
    /// Its score for the balancer (lower wins), if the balancer scores.
    pub score: Option<f64>,
    /// What the score is: `cost_ms` (ewma: latency × pending / weight),
    /// `load` (least_conn: pending / weight) or `weight` (roundrobin).
    pub score_name: &'static str,
    /// Why it could not be picked, if so.
    pub skipped: Option<&'static str>,
}

// === impl Balancer ===

impl Balancer {
    /// Explains a pick of `chosen` among `endpoints` (the slice the balancer
    /// was built from) for a request with `ctx`, one endpoint at a time.
    pub fn explain<'a>(
        &self,
        endpoints: &'a [Arc<Endpoint>],
        ctx: &PickCtx<'_>,
        chosen: usize,
        f: impl FnMut(Explained<'a>),
    ) {
        self.explain_with(endpoints, ctx, chosen, None, f);
    }

    /// The live scores of every endpoint, taken at the pick for an
    /// explanation made later ([`Balancer::explain_with`]); `None` when the
    /// balancer's scores do not change between picks (`roundrobin`,
    /// `chash`).
    pub(crate) fn scores(&self, endpoints: &[Arc<Endpoint>]) -> Option<Box<[f64]>> {
        if !matches!(self.kind, BalancerType::Ewma | BalancerType::LeastConn) {
            return None;
        }
        let now = now_ns();
        Some(
            endpoints
                .iter()
                .map(|ep| self.score(ep, now).0.unwrap_or(0.0))
                .collect(),
        )
    }

    /// [`Balancer::explain`] with the scores taken at the pick, if any.
    pub(crate) fn explain_with<'a>(
        &self,
        endpoints: &'a [Arc<Endpoint>],
        ctx: &PickCtx<'_>,
        chosen: usize,
        scores: Option<&[f64]>,
        mut f: impl FnMut(Explained<'a>),
    ) {
        let Some(picked) = endpoints.get(chosen) else {
            return;
        };
        let now = now_ns();
        for (i, ep) in endpoints.iter().enumerate() {
            let skipped = if i == chosen {
                None
            } else if ep.weight == 0 {
                Some("weight 0")
            } else if ep.state.health() == Health::Unhealthy {
                Some("unhealthy")
            } else if ep.state.health() == Health::Draining {
                Some("draining")
            } else if ctx.tried.contains(&i) {
                Some("tried by an earlier attempt")
            } else if ep.priority < picked.priority {
                Some("lower priority")
            } else {
                None
            };
            let (mut score, score_name) = self.score(ep, now);
            if let (Some(s), Some(taken)) = (&mut score, scores.and_then(|s| s.get(i))) {
                *s = *taken;
            }
            f(Explained {
                endpoint: ep,
                chosen: i == chosen,
                score,
                score_name,
                skipped,
            });
        }
    }
}

impl Balancer {
    /// An endpoint's score now, and what it is.
    fn score(&self, ep: &Endpoint, now: u64) -> (Option<f64>, &'static str) {
        let pending = ep.state.in_flight() as f64 + 1.0;
        let weight = f64::from(ep.weight.max(1));
        match self.kind {
            BalancerType::Ewma => (
                Some(ep.state.ewma_at(now) * pending / weight / 1e6),
                "cost_ms",
            ),
            BalancerType::LeastConn => (Some(pending / weight), "load"),
            BalancerType::RoundRobin => (Some(f64::from(ep.weight)), "weight"),
            BalancerType::Chash => (None, ""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        BalancerType, PickCtx,
        test_support::{set_down, weighted},
    };
    use super::*;

    #[test]
    fn lists_candidates_with_scores_and_skipped_with_reasons() {
        let eps = weighted(&[1, 2, 0, 1]);
        set_down(&eps, 3, true);
        let _busy = eps[1].state.begin();
        let b = Balancer::build(BalancerType::LeastConn, &eps);
        let mut seen = Vec::new();
        b.explain(&eps, &PickCtx::default(), 0, |e| {
            seen.push((e.chosen, e.score, e.skipped));
        });
        assert_eq!(
            seen,
            [
                (true, Some(1.0), None),
                (false, Some(1.0), None),
                (false, Some(1.0), Some("weight 0")),
                (false, Some(1.0), Some("unhealthy")),
            ]
        );
        let tried = [1];
        let mut reasons = Vec::new();
        b.explain(
            &eps,
            &PickCtx {
                hash: 0,
                tried: &tried,
            },
            0,
            |e| reasons.push(e.skipped),
        );
        assert_eq!(reasons[1], Some("tried by an earlier attempt"));
    }
}
