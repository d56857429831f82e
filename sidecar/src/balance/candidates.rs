//! What an algorithm sees of a group during one pick: its members, their
//! endpoints, and which of them this pass admits (healthy or not, tried or
//! not). Algorithms address members by local index (position in the group)
//! or, where it saves a lookup on the pick path, by global index (position in
//! the endpoint slice); they never decide admission themselves, so the pass
//! logic lives in one place. Every pick returns a global index.

use std::sync::Arc;

use super::rng::FastRng;
use crate::upstream::{Endpoint, EndpointState, Health};

/// Random pairs drawn before power-of-two choices falls back to a scan: with
/// half the group out, one pick in 64 scans.
const P2C_ROUNDS: usize = 3;

/// Which endpoints one pass of a pick lets through.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Admit<'a> {
    /// Indexes (into the endpoint slice) this request already tried.
    tried: &'a [usize],
    /// Whether to require [`Endpoint::is_available`]; panic mode does not.
    healthy_only: bool,
}

/// What the load-aware algorithms keep per member: the live state one
/// pointer away (instead of three: member list, endpoint slice, endpoint),
/// and `1 / weight`, so that scoring multiplies instead of dividing.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The member's live counters and health.
    pub(crate) state: Arc<EndpointState>,
    /// One over the member's weight (which is never 0 in a group).
    pub(crate) inv_weight: f64,
}

/// A group as one pass of a pick sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidates<'a> {
    members: &'a [u32],
    endpoints: &'a [Arc<Endpoint>],
    admit: Admit<'a>,
}

// === impl Admit ===

impl<'a> Admit<'a> {
    /// Available endpoints that are not in `tried`.
    pub(crate) fn healthy(tried: &'a [usize]) -> Self {
        Self {
            tried,
            healthy_only: true,
        }
    }

    /// Any endpoint not in `tried`, whatever its health (panic mode). Weight
    /// 0 endpoints are not group members, so they stay out regardless.
    pub(crate) fn any(tried: &'a [usize]) -> Self {
        Self {
            tried,
            healthy_only: false,
        }
    }

    /// Whether this pass may pick `ep`, at index `global` of the slice.
    #[inline]
    fn admits(&self, global: usize, ep: &Endpoint) -> bool {
        (!self.healthy_only || ep.is_available()) && !self.tried.contains(&global)
    }
}

// === impl Candidates ===

impl<'a> Candidates<'a> {
    /// A view of `members` (indexes into `endpoints`) under `admit`.
    pub(crate) fn new(
        members: &'a [u32],
        endpoints: &'a [Arc<Endpoint>],
        admit: Admit<'a>,
    ) -> Self {
        debug_assert!(members.iter().all(|&m| (m as usize) < endpoints.len()));
        Self {
            members,
            endpoints,
            admit,
        }
    }

    /// Number of members.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// The index into the endpoint slice of member `local`.
    #[inline]
    pub(crate) fn global(&self, local: usize) -> usize {
        self.members[local] as usize
    }

    /// The endpoint of member `local`.
    #[inline]
    pub(crate) fn endpoint(&self, local: usize) -> &'a Endpoint {
        // In bounds: the balancer checked the slice length at pick time and
        // built `members` from that length.
        &self.endpoints[self.members[local] as usize]
    }

    /// Whether this pass may pick member `local`.
    #[inline]
    pub(crate) fn admits(&self, local: usize) -> bool {
        self.admits_global(self.members[local] as usize)
    }

    /// Whether this pass may pick the member at `global` in the slice.
    #[inline]
    pub(crate) fn admits_global(&self, global: usize) -> bool {
        self.admit.admits(global, &self.endpoints[global])
    }

    /// Whether this pass may pick member `local`, whose [`Loaded`] is `l`.
    /// Members all have a non-zero weight (groups are built from those
    /// only), so [`Endpoint::is_available`] comes down to the state's health.
    #[inline]
    fn admits_loaded(&self, local: usize, l: &Loaded) -> bool {
        (!self.admit.healthy_only || l.state.health() == Health::Healthy)
            && (self.admit.tried.is_empty() || !self.admit.tried.contains(&self.global(local)))
    }

    /// Each member's [`Loaded`], in member order.
    pub(crate) fn loaded(&self) -> Box<[Loaded]> {
        (0..self.len())
            .map(|local| {
                let ep = self.endpoint(local);
                Loaded {
                    state: ep.state.clone(),
                    inv_weight: 1.0 / f64::from(ep.weight.max(1)),
                }
            })
            .collect()
    }

    /// The first admitted member at or after local index `start`, wrapping
    /// around, as a global index: the fallback of the algorithms whose fast
    /// path found nothing. O(n).
    pub(crate) fn first_admitted_from(&self, start: usize) -> Option<usize> {
        let n = self.len();
        let local = (start..n)
            .chain(0..start)
            .find(|&local| self.admits(local))?;
        Some(self.global(local))
    }

    /// The admitted member of lowest `cost` (as a global index), by a scan
    /// of `loaded` (this group's, in member order); equal costs are broken
    /// uniformly at random (reservoir sampling over the ties), so no member
    /// is favoured for its position. O(n).
    pub(crate) fn cheapest<C: PartialOrd>(
        &self,
        loaded: &[Loaded],
        rng: &mut FastRng,
        cost: impl Fn(&Loaded) -> C,
    ) -> Option<usize> {
        debug_assert_eq!(loaded.len(), self.len());
        let mut best: Option<(usize, C)> = None;
        let mut ties = 0;
        for (local, l) in loaded.iter().enumerate() {
            if !self.admits_loaded(local, l) {
                continue;
            }
            let c = cost(l);
            if let Some((_, b)) = &best {
                if c > *b {
                    continue;
                }
                if c == *b {
                    ties += 1;
                    if rng.below(ties) != 0 {
                        continue;
                    }
                } else {
                    ties = 1;
                }
            } else {
                ties = 1;
            }
            best = Some((local, c));
        }
        best.map(|(local, _)| self.global(local))
    }

    /// Power of two choices over `loaded` (this group's, in member order):
    /// of two distinct random admitted members, the one (as a global index)
    /// of lower `cost`, the first drawn on a tie, which is random, so ties
    /// spread. If a few pairs find nothing admitted, the cheapest admitted
    /// member by a scan.
    #[inline]
    pub(crate) fn p2c<C: PartialOrd>(
        &self,
        loaded: &[Loaded],
        rng: &mut FastRng,
        cost: impl Fn(&Loaded) -> C,
    ) -> Option<usize> {
        debug_assert_eq!(loaded.len(), self.len());
        let n = loaded.len();
        if n < 2 {
            let admitted = n == 1 && self.admits_loaded(0, &loaded[0]);
            return admitted.then(|| self.global(0));
        }
        for _ in 0..P2C_ROUNDS {
            let (a, b) = rng.pair(n);
            let (la, lb) = (&loaded[a], &loaded[b]);
            match (self.admits_loaded(a, la), self.admits_loaded(b, lb)) {
                (true, true) => {
                    let cheaper = if cost(lb) < cost(la) { b } else { a };
                    return Some(self.global(cheaper));
                }
                (true, false) => return Some(self.global(a)),
                (false, true) => return Some(self.global(b)),
                (false, false) => {}
            }
        }
        self.cheapest(loaded, rng, cost)
    }
}
