//! Load balancers: given one version of an upstream's endpoint set, pick the
//! endpoint for a request (APISIX `type: roundrobin | chash | ewma |
//! least_conn`).
//!
//! A [`Balancer`] is built once per endpoint-set version, off the request
//! path, and is immutable after (a round-robin cursor is its one atomic). The
//! proxy swaps it together with the endpoint slice it was built from, so a
//! pick's index always refers to that slice. Picks take no lock and allocate
//! nothing; live load and health are read from each endpoint's atomics.
//!
//! Every pick goes through the same passes, whatever the algorithm:
//!
//! 1. priority groups, highest [`Endpoint::priority`] first: the first group
//!    with an available endpoint that this request has not tried serves it;
//! 2. if every available endpoint was tried, the same again with tried ones
//!    allowed (a retry may go back to an endpoint rather than fail);
//! 3. panic mode: no endpoint is available at all, so pick among every
//!    endpoint of non-zero weight, ignoring health, and say so in
//!    [`Pick::panic`]; an unhealthy verdict may be wrong, no answer surely is.
//!
//! Weight 0 means no traffic in every pass: such endpoints join no group.

use std::{fmt, str::FromStr, sync::Arc};

use crate::upstream::Endpoint;

mod candidates;
mod chash;
mod ewma;
mod explain;
mod hash;
mod least_conn;
mod rng;
mod round_robin;
mod sequence;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use self::{
    candidates::{Admit, Candidates},
    chash::Ring,
    ewma::PeakEwma,
    least_conn::LeastConn,
    rng::FastRng,
    round_robin::RoundRobin,
};

pub(crate) use self::rng::with_thread_rng;
pub use self::{explain::Explained, hash::hash_key};

/// The balancing algorithm of an upstream, named as in APISIX's `type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum BalancerType {
    /// `roundrobin`: smooth weighted round robin.
    #[default]
    RoundRobin,
    /// `chash`: consistent hashing on a request key (ketama ring).
    Chash,
    /// `ewma`: peak-EWMA latency with power-of-two choices.
    Ewma,
    /// `least_conn`: weighted least active requests.
    LeastConn,
}

/// A balancer type name that APISIX does not define.
#[derive(Debug, thiserror::Error)]
#[error("unknown balancer type {0:?} (expected roundrobin, chash, ewma or least_conn)")]
pub struct UnknownBalancerType(String);

/// Per-request input to a pick.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickCtx<'a> {
    /// The request's hash key for `chash`, from [`hash_key`]; ignored by the
    /// other balancers.
    pub hash: u64,
    /// Indexes already tried by this request's earlier attempts: skipped
    /// unless nothing else is left.
    pub tried: &'a [usize],
}

/// What a pick returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    /// Index of the chosen endpoint in the slice the balancer was built from.
    pub index: usize,
    /// True when every endpoint was unavailable and the pick fell back to all
    /// of them, ignoring health.
    pub panic: bool,
}

/// The balancer of one endpoint-set version: built once off the request path,
/// immutable after, picks lock-free.
pub struct Balancer {
    kind: BalancerType,
    /// Length of the slice built from; picks check it to catch a mismatch.
    len: usize,
    /// Endpoints of non-zero weight, by priority, highest first.
    groups: Box<[Group]>,
    /// Every endpoint of non-zero weight, for panic mode; `None` when there
    /// is a single group, which then serves panic mode too.
    all: Option<Group>,
}

/// The endpoints of one priority and the algorithm that picks among them.
struct Group {
    priority: i32,
    /// Indexes into the endpoint slice ("global"); positions in this list
    /// are "local" indexes.
    members: Box<[u32]>,
    selector: Selector,
}

/// One algorithm's state for one group.
///
/// An enum rather than `Box<dyn Select>`: the four algorithms are a closed
/// set (APISIX's), and a match lets each pick inline into the caller instead
/// of going through a vtable and a second pointer.
enum Selector {
    RoundRobin(RoundRobin),
    Chash(Ring),
    Ewma(PeakEwma),
    LeastConn(LeastConn),
}

/// One balancing algorithm over one group of endpoints: what each of the
/// four types does, and all the balancer asks of them.
trait Select: Sized {
    /// Builds the algorithm's state for a group (off the request path).
    fn build(cands: &Candidates<'_>, rng: &mut FastRng) -> Self;

    /// Picks a member that `cands` admits, as an index into the endpoint
    /// slice, or `None` when it admits none. `hash` is the request key (only
    /// `chash` reads it).
    fn select(&self, cands: &Candidates<'_>, hash: u64, rng: &mut FastRng) -> Option<usize>;
}

// === impl BalancerType ===

impl BalancerType {
    /// The APISIX name: `roundrobin`, `chash`, `ewma` or `least_conn`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "roundrobin",
            Self::Chash => "chash",
            Self::Ewma => "ewma",
            Self::LeastConn => "least_conn",
        }
    }
}

impl fmt::Display for BalancerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BalancerType {
    type Err = UnknownBalancerType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "roundrobin" => Ok(Self::RoundRobin),
            "chash" => Ok(Self::Chash),
            "ewma" => Ok(Self::Ewma),
            "least_conn" => Ok(Self::LeastConn),
            other => Err(UnknownBalancerType(other.to_owned())),
        }
    }
}

impl TryFrom<String> for BalancerType {
    type Error = UnknownBalancerType;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

// === impl Balancer ===

impl Balancer {
    /// Builds the balancer for one endpoint-set version. The order of
    /// `endpoints` is the index space of every pick.
    pub fn build(kind: BalancerType, endpoints: &[Arc<Endpoint>]) -> Balancer {
        rng::with_thread_rng(|rng| Self::build_with(kind, endpoints, rng))
    }

    /// [`Self::build`] with a given generator (tests seed it).
    pub(crate) fn build_with(
        kind: BalancerType,
        endpoints: &[Arc<Endpoint>],
        rng: &mut FastRng,
    ) -> Balancer {
        // Index space is u32 inside (half the memory of usize in rings and
        // sequences); four billion endpoints is not a real upstream.
        let indexable = endpoints.len().min(u32::MAX as usize);
        let mut weighted: Vec<(i32, u32)> = (0..indexable)
            .filter(|&i| endpoints[i].weight > 0)
            .map(|i| (endpoints[i].priority, i as u32))
            .collect();
        // Highest priority first; within a group, slice order.
        weighted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));

        let groups: Box<[Group]> = weighted
            .chunk_by(|a, b| a.0 == b.0)
            .map(|chunk| {
                let members = chunk.iter().map(|&(_, i)| i).collect();
                Group::build(kind, chunk[0].0, members, endpoints, rng)
            })
            .collect();
        let all = (groups.len() > 1).then(|| {
            let mut members: Vec<u32> = weighted.iter().map(|&(_, i)| i).collect();
            members.sort_unstable();
            Group::build(kind, i32::MIN, members.into(), endpoints, rng)
        });
        Balancer {
            kind,
            len: endpoints.len(),
            groups,
            all,
        }
    }

    /// Picks an endpoint for a request; `endpoints` must be the slice the
    /// balancer was built from. `None` only when no endpoint has a non-zero
    /// weight (or, a caller bug, the slice is not the one built from).
    pub fn pick(&self, endpoints: &[Arc<Endpoint>], ctx: &PickCtx<'_>) -> Option<Pick> {
        rng::with_thread_rng(|rng| self.pick_with(endpoints, ctx, rng))
    }

    /// [`Self::pick`] with a given generator (tests seed it).
    pub(crate) fn pick_with(
        &self,
        endpoints: &[Arc<Endpoint>],
        ctx: &PickCtx<'_>,
        rng: &mut FastRng,
    ) -> Option<Pick> {
        if endpoints.len() != self.len {
            debug_assert!(false, "picked with a slice the balancer was not built from");
            return None;
        }
        let healthy = [Admit::healthy(ctx.tried), Admit::healthy(&[])];
        let passes = if ctx.tried.is_empty() { 1 } else { 2 };
        for admit in &healthy[..passes] {
            for group in self.groups.iter() {
                if let Some(index) = group.select(endpoints, *admit, ctx.hash, rng) {
                    return Some(Pick {
                        index,
                        panic: false,
                    });
                }
            }
        }

        let everyone = self.all.as_ref().or(self.groups.first())?;
        let any = [Admit::any(ctx.tried), Admit::any(&[])];
        any[..passes].iter().find_map(|admit| {
            let index = everyone.select(endpoints, *admit, ctx.hash, rng)?;
            Some(Pick { index, panic: true })
        })
    }

    /// The algorithm this balancer runs.
    pub fn kind(&self) -> BalancerType {
        self.kind
    }

    /// Length of the endpoint slice the balancer was built from.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the balancer was built from an empty slice.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<(i32, usize)> = self
            .groups
            .iter()
            .map(|g| (g.priority, g.members.len()))
            .collect();
        f.debug_struct("Balancer")
            .field("kind", &self.kind)
            .field("len", &self.len)
            .field("groups (priority, endpoints)", &groups)
            .finish()
    }
}

// === impl Group ===

impl Group {
    fn build(
        kind: BalancerType,
        priority: i32,
        members: Box<[u32]>,
        endpoints: &[Arc<Endpoint>],
        rng: &mut FastRng,
    ) -> Self {
        let cands = Candidates::new(&members, endpoints, Admit::any(&[]));
        let selector = match kind {
            BalancerType::RoundRobin => Selector::RoundRobin(RoundRobin::build(&cands, rng)),
            BalancerType::Chash => Selector::Chash(Ring::build(&cands, rng)),
            BalancerType::Ewma => Selector::Ewma(PeakEwma::build(&cands, rng)),
            BalancerType::LeastConn => Selector::LeastConn(LeastConn::build(&cands, rng)),
        };
        Group {
            priority,
            members,
            selector,
        }
    }

    /// A member that `admit` lets through, as an index into `endpoints`.
    #[inline]
    fn select(
        &self,
        endpoints: &[Arc<Endpoint>],
        admit: Admit<'_>,
        hash: u64,
        rng: &mut FastRng,
    ) -> Option<usize> {
        let cands = Candidates::new(&self.members, endpoints, admit);
        match &self.selector {
            Selector::RoundRobin(s) => s.select(&cands, hash, rng),
            Selector::Chash(s) => s.select(&cands, hash, rng),
            Selector::Ewma(s) => s.select(&cands, hash, rng),
            Selector::LeastConn(s) => s.select(&cands, hash, rng),
        }
    }
}
