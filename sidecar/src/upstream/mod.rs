//! Upstreams: endpoint sets fed by static nodes and discovery, with their
//! balancer, swapped atomically when a source changes.

mod clock;
mod endpoint;

pub(crate) use self::clock::now_ns;

pub use self::endpoint::{
    DEFAULT_RTT_NS, EWMA_DECAY_NS, Endpoint, EndpointState, Health, InFlight,
};
