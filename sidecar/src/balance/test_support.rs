//! Endpoint sets and pick loops shared by the balancer tests.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
};

use super::{Balancer, BalancerType, PickCtx, rng::FastRng};
use crate::upstream::{Endpoint, EndpointState, Health};

/// An endpoint `10.0.x.y:8080` with id `ep-{i}`.
pub(super) fn endpoint(i: usize, weight: u32, priority: i32) -> Arc<Endpoint> {
    let ip = Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8);
    Arc::new(Endpoint {
        id: format!("ep-{i}").into(),
        addr: SocketAddr::from((ip, 8080)),
        weight,
        priority,
        zone: "".into(),
        source: "static".into(),
        state: Arc::new(EndpointState::default()),
        authority: Endpoint::authority_of(SocketAddr::from((ip, 8080))),
        host: Endpoint::host_of(&Endpoint::authority_of(SocketAddr::from((ip, 8080)))),
    })
}

/// Endpoints of the given weights, all of priority 0.
pub(super) fn weighted(weights: &[u32]) -> Vec<Arc<Endpoint>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| endpoint(i, w, 0))
        .collect()
}

/// `n` endpoints of weight 1.
pub(super) fn uniform(n: usize) -> Vec<Arc<Endpoint>> {
    weighted(&vec![1; n])
}

/// Marks endpoint `i` down (or up again).
pub(super) fn set_down(eps: &[Arc<Endpoint>], i: usize, down: bool) {
    let health = if down {
        Health::Unhealthy
    } else {
        Health::Healthy
    };
    eps[i].state.set_registry_health(health);
}

/// Picks `n` times with no key and nothing tried; counts picks per endpoint.
pub(super) fn counts(kind: BalancerType, eps: &[Arc<Endpoint>], n: usize) -> Vec<usize> {
    let b = Balancer::build_with(kind, eps, &mut FastRng::seeded(1));
    let mut rng = FastRng::seeded(2);
    let mut counts = vec![0; eps.len()];
    for _ in 0..n {
        let pick = b
            .pick_with(eps, &PickCtx::default(), &mut rng)
            .expect("a non-empty set picks");
        counts[pick.index] += 1;
    }
    counts
}
