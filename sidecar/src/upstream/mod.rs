//! Upstreams: endpoint sets fed by static nodes and discovery sources, merged
//! by address, with a balancer built off the request path and swapped in
//! atomically when a source changes.

mod clock;
mod endpoint;
mod merge;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use tokio::task::AbortHandle;

pub(crate) use self::clock::now_ns;

pub use self::endpoint::{
    DEFAULT_RTT_NS, EWMA_DECAY_NS, Endpoint, EndpointState, Health, InFlight,
};
pub(crate) use self::merge::SourceView;
use crate::{
    balance::{Balancer, BalancerType},
    config,
    discovery::{Discovery, Source, SourceKey},
    proxy::UpstreamClients,
};

/// One configured upstream and its live endpoint set.
pub struct Upstream {
    /// The upstream's name in the config.
    pub name: Arc<str>,
    /// Its config.
    pub cfg: Arc<config::Upstream>,
    state: ArcSwap<UpstreamState>,
    /// Live state by address: kept while the address is in the set, so that a
    /// weight change or a re-subscribe keeps counters and health.
    live: Mutex<HashMap<SocketAddr, Arc<EndpointState>>>,
    /// Keep-alive connection pools to the endpoints.
    pub(crate) clients: UpstreamClients,
    /// `upstream_host` as a header value, for `pass_host: rewrite`.
    pub(crate) host_header: Option<http::HeaderValue>,
    updater: Mutex<Option<AbortHandle>>,
}

/// One version of an upstream's endpoints and balancer; immutable.
pub struct UpstreamState {
    /// Counts rebuilds of this upstream.
    pub generation: u64,
    /// The endpoints; indexes are the balancer's index space.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// The balancer over `endpoints`.
    pub balancer: Balancer,
    /// Each source's view, for `/upstreams` and readiness.
    pub sources: Vec<SourceView>,
}

// === impl Upstream ===

impl Upstream {
    /// Builds an upstream from its config and starts following its sources.
    ///
    /// `previous` is the same-named upstream of the config being replaced: its
    /// live endpoint state carries over.
    pub(crate) async fn start(
        cfg: Arc<config::Upstream>,
        discovery: &Discovery,
        previous: Option<&Upstream>,
    ) -> Result<Arc<Self>, String> {
        let kind = cfg.r#type;
        let statics = merge::resolve_static(&cfg.nodes).await?;
        let mut sources: Vec<(Arc<Source>, i32)> = Vec::new();
        for s in &cfg.discovery {
            let key = SourceKey {
                adapter: s.discovery_type.clone(),
                service: s.service_name.clone(),
                args: s.discovery_args.clone(),
            };
            let source = discovery
                .subscribe(&key)
                .map_err(|e| format!("upstream {:?}: {e}", cfg.name))?;
            sources.push((source, s.priority));
        }
        let live = previous
            .map(|p| p.live.lock().expect("live map lock poisoned").clone())
            .unwrap_or_default();
        let up = Arc::new(Self {
            name: cfg.name.as_str().into(),
            cfg: cfg.clone(),
            state: ArcSwap::from_pointee(UpstreamState {
                generation: 0,
                endpoints: Vec::new(),
                balancer: Balancer::build(kind, &[]),
                sources: Vec::new(),
            }),
            live: Mutex::new(live),
            clients: UpstreamClients::new(&cfg),
            host_header: cfg
                .upstream_host
                .as_deref()
                .and_then(|h| http::HeaderValue::from_str(h).ok()),
            updater: Mutex::new(None),
        });
        let mut merger = merge::Merger::new(statics, sources);
        up.rebuild(merger.merge().await);
        let weak = Arc::downgrade(&up);
        let task = tokio::spawn(async move {
            while merger.changed().await {
                let merged = merger.merge().await;
                let Some(up) = weak.upgrade() else { break };
                up.rebuild(merged);
            }
        });
        *up.updater.lock().expect("updater lock poisoned") = Some(task.abort_handle());
        Ok(up)
    }

    /// The current endpoints and balancer; cheap, lock-free.
    #[inline]
    pub fn state(&self) -> arc_swap::Guard<Arc<UpstreamState>> {
        self.state.load()
    }

    /// The current state as an owned pointer, for holding across awaits.
    #[inline]
    pub fn state_full(&self) -> Arc<UpstreamState> {
        self.state.load_full()
    }

    /// Whether every discovery source has delivered its first snapshot.
    pub fn is_ready(&self) -> bool {
        self.state.load().sources.iter().all(|s| s.synced)
    }

    /// The balancer type.
    pub fn balancer_type(&self) -> BalancerType {
        self.cfg.r#type
    }

    /// Swaps in a new set, reusing live state by address.
    fn rebuild(&self, merged: merge::Merged) {
        let mut live = self.live.lock().expect("live map lock poisoned");
        let mut next_live = HashMap::with_capacity(merged.endpoints.len());
        let endpoints: Vec<Arc<Endpoint>> = merged
            .endpoints
            .into_iter()
            .map(|c| {
                let state = live.remove(&c.addr).unwrap_or_default();
                state.set_health(c.registry_health);
                next_live.insert(c.addr, state.clone());
                Arc::new(Endpoint {
                    id: c.id,
                    addr: c.addr,
                    weight: c.weight,
                    priority: c.priority,
                    zone: c.zone,
                    source: c.source,
                    state,
                    authority: Endpoint::authority_of(c.addr),
                })
            })
            .collect();
        *live = next_live;
        drop(live);
        let balancer = Balancer::build(self.cfg.r#type, &endpoints);
        let generation = self.state.load().generation + 1;
        tracing::info!(
            upstream = %self.name,
            generation,
            endpoints = endpoints.len(),
            "endpoint set updated"
        );
        self.state.store(Arc::new(UpstreamState {
            generation,
            endpoints,
            balancer,
            sources: merged.sources,
        }));
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(task) = self.updater.lock().map(|mut u| u.take()).ok().flatten() {
            task.abort();
        }
    }
}
