//! Upstreams: endpoint sets fed by static nodes and discovery, with their
//! balancer, swapped atomically when a source changes.

mod endpoint;

pub use self::endpoint::{
    DEFAULT_RTT_NS, EWMA_DECAY_NS, Endpoint, EndpointState, Health, InFlight,
};
