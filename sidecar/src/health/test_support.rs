//! Test doubles for the health checks: endpoints, and a scripted prober fed
//! through a list that reports when each probe runs.

use std::{
    collections::VecDeque,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
};

use tokio::{sync::mpsc, time::Instant};

use super::{
    hysteresis::Outcome,
    probe::{Detail, Probed},
};
use crate::upstream::{Endpoint, EndpointState};

/// A prober that answers from a script and reports each probe's time.
#[derive(Debug)]
pub(crate) struct Script {
    outcomes: VecDeque<Outcome>,
    times: mpsc::UnboundedSender<Instant>,
}

/// An endpoint `10.1.0.i:8080` of weight 1.
pub(crate) fn endpoint(i: u8) -> Arc<Endpoint> {
    Arc::new(Endpoint {
        id: format!("ep-{i}").into(),
        addr: SocketAddr::from((Ipv4Addr::new(10, 1, 0, i), 8080)),
        weight: 1,
        priority: 0,
        zone: "".into(),
        source: "static".into(),
        state: Arc::new(EndpointState::default()),
        authority: Endpoint::authority_of(SocketAddr::from((Ipv4Addr::new(10, 1, 0, i), 8080))),
        host: Endpoint::host_of(&Endpoint::authority_of(SocketAddr::from((
            Ipv4Addr::new(10, 1, 0, i),
            8080,
        )))),
    })
}

// === impl Script ===

impl Script {
    /// A script of `outcomes`, and the receiver of probe times. Once the
    /// script is over, probes never finish.
    pub(crate) fn new(outcomes: &[Outcome]) -> (Self, mpsc::UnboundedReceiver<Instant>) {
        let (times, rx) = mpsc::unbounded_channel();
        let outcomes = outcomes.iter().copied().collect();
        (Script { outcomes, times }, rx)
    }

    pub(crate) async fn probe(&mut self) -> Probed {
        let _ = self.times.send(Instant::now());
        match self.outcomes.pop_front() {
            Some(o) => Probed {
                outcome: Some(o),
                detail: Detail::Scripted,
            },
            None => std::future::pending().await,
        }
    }
}
