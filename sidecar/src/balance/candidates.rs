//! What an algorithm sees of a group during one pick: its members, their
//! endpoints, and which of them this pass admits (healthy or not, tried or
//! not). Algorithms address members by local index (position in the group)
//! or, where it saves a lookup on the pick path, by global index (position in
//! the endpoint slice); they never decide admission themselves, so the pass
//! logic lives in one place. Every pick returns a global index.

use std::sync::Arc;

use super::rng::FastRng;
use crate::upstream::Endpoint;

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

    /// Member `local`'s endpoint if this pass may pick it: one lookup for
    /// algorithms that go on to read its load.
    #[inline]
    fn admitted(&self, local: usize) -> Option<&'a Endpoint> {
        let global = self.members[local] as usize;
        let ep = &*self.endpoints[global];
        self.admit.admits(global, ep).then_some(ep)
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

    /// The admitted member of lowest `cost(local, endpoint)` (as a global
    /// index), by a scan; equal costs are
    /// broken uniformly at random (reservoir sampling over the ties), so no
    /// member is favoured for its position. O(n).
    pub(crate) fn cheapest<C: PartialOrd>(
        &self,
        rng: &mut FastRng,
        cost: impl Fn(usize, &Endpoint) -> C,
    ) -> Option<usize> {
        let mut best: Option<(usize, C)> = None;
        let mut ties = 0;
        for local in 0..self.len() {
            let Some(ep) = self.admitted(local) else {
                continue;
            };
            let c = cost(local, ep);
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

    /// Power of two choices: of two distinct random admitted members, the one
    /// (as a global index) of lower `cost` (the first drawn on a tie, which is random, so ties
    /// spread). If a few pairs find nothing admitted, the cheapest admitted
    /// member by a scan.
    #[inline]
    pub(crate) fn p2c<C: PartialOrd>(
        &self,
        rng: &mut FastRng,
        cost: impl Fn(usize, &Endpoint) -> C,
    ) -> Option<usize> {
        let n = self.len();
        if n < 2 {
            return (n == 1 && self.admits(0)).then(|| self.global(0));
        }
        for _ in 0..P2C_ROUNDS {
            let (a, b) = rng.pair(n);
            match (self.admitted(a), self.admitted(b)) {
                (Some(ea), Some(eb)) => {
                    let cheaper = if cost(b, eb) < cost(a, ea) { b } else { a };
                    return Some(self.global(cheaper));
                }
                (Some(_), None) => return Some(self.global(a)),
                (None, Some(_)) => return Some(self.global(b)),
                (None, None) => {}
            }
        }
        self.cheapest(rng, cost)
    }
}
