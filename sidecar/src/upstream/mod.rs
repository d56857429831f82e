//! Upstreams: endpoint sets fed by static nodes and discovery sources, merged
//! by address, with a balancer built off the request path and swapped in
//! atomically when a source changes, and the health checks that follow the
//! set.

mod clock;
mod endpoint;
mod merge;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::{
    sync::{Notify, watch},
    task::AbortHandle,
};

pub(crate) use self::clock::now_ns;

pub use self::endpoint::{
    DEFAULT_RTT_NS, EWMA_DECAY_NS, Endpoint, EndpointState, Health, InFlight,
};
pub(crate) use self::merge::SourceView;
use crate::{
    balance::{Balancer, BalancerType},
    config,
    discovery::{Discovery, Source, SourceKey},
    health::{
        ActivePlan, Attempt, CheckerPlan, PanicState, Passive, PassivePolicy, health_name,
        log_change, spawn_checker,
    },
    proxy::UpstreamClients,
    telemetry::UpstreamStats,
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
    /// Passive checks, counted by the proxy on each attempt.
    passive: Option<PassivePolicy>,
    /// Panic mode: whether every endpoint is unavailable, and counts.
    pub(crate) panic: PanicState,
    /// Retries and the attempt counts of departed endpoints; shared with
    /// the upstream this one replaces, so counters survive reloads.
    pub(crate) stats: Arc<UpstreamStats>,
    /// Bumped with each new set, for the health checker.
    set_version: watch::Sender<u64>,
    /// Wakes the health checker when a passive ejection starts.
    wake: Arc<Notify>,
    /// The source follower and the health checker.
    tasks: Mutex<Vec<AbortHandle>>,
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
        let checks = cfg.checks.as_ref();
        let active = checks.and_then(|c| c.active.as_ref());
        let passive = checks.and_then(|c| c.passive.as_ref());
        let active_plan = active
            .map(ActivePlan::new)
            .transpose()
            .map_err(|e| format!("upstream {:?}: checks.active.{e}", cfg.name))?
            .map(Arc::new);
        let live = previous
            .map(|p| p.live.lock().expect("live map lock poisoned").clone())
            .unwrap_or_default();
        let stats: Arc<UpstreamStats> = previous.map(|p| p.stats.clone()).unwrap_or_default();
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
            clients: UpstreamClients::new(&cfg, &stats.connections),
            host_header: cfg
                .upstream_host
                .as_deref()
                .and_then(|h| http::HeaderValue::from_str(h).ok()),
            passive: passive.map(|p| PassivePolicy::new(p, active.is_some())),
            panic: PanicState::default(),
            stats,
            set_version: watch::Sender::new(0),
            wake: Arc::new(Notify::new()),
            tasks: Mutex::new(Vec::new()),
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
        let mut tasks = vec![task.abort_handle(), spawn_idle_sweeper(&up)];
        if checks.is_some() {
            let plan = CheckerPlan {
                active: active_plan,
                revive: up
                    .passive
                    .as_ref()
                    .is_some_and(|p| p.ejection_ends_by_time()),
            };
            let set = up.set_version.subscribe();
            tasks.push(spawn_checker(&up, plan, set, up.wake.clone()));
        }
        *up.tasks.lock().expect("tasks lock poisoned") = tasks;
        Ok(up)
    }

    /// Closes idle upstream connections older than `keepalive_pool.idle_timeout`
    /// (requests also drop them as they pass; this covers quiet upstreams).
    fn sweep_idle(&self) {
        let idle = self.cfg.keepalive_pool.idle_timeout;
        let states: Vec<Arc<EndpointState>> = self
            .live
            .lock()
            .expect("live map lock poisoned")
            .values()
            .cloned()
            .collect();
        for state in states {
            state.idle.sweep(idle);
        }
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

    /// Counts one proxied attempt on `endpoint` for the passive checks.
    /// Lock-free and allocation-free unless the endpoint's verdict changes.
    #[inline]
    pub(crate) fn record(&self, endpoint: &Endpoint, attempt: Attempt) {
        if let Some(passive) = &self.passive
            && let Some(change) = passive.record(&self.name, endpoint, attempt)
        {
            if matches!(
                change,
                crate::health::PassiveChange::Ejected { lasts: Some(_), .. }
            ) {
                self.wake.notify_one();
            }
            self.refresh_panic();
        }
    }

    /// Looks for an entry into or exit from panic mode after a change.
    pub(crate) fn refresh_panic(&self) {
        self.panic.refresh(&self.name, &self.state.load().endpoints);
    }

    /// Stops following sources and checking health: a reload replaced or
    /// removed the upstream. Requests still holding it finish on its last set.
    pub(crate) fn retire(&self) {
        for task in self.tasks.lock().expect("tasks lock poisoned").drain(..) {
            task.abort();
        }
    }

    /// Takes over from `previous`, the upstream this one replaces (started
    /// with it): retires it, then clears the verdicts of checks that this
    /// config no longer runs, so that nothing holds an endpoint down that
    /// nothing would bring back. After the retirement, so that the old
    /// checker cannot set a verdict again.
    pub(crate) fn take_over(&self, previous: &Upstream) {
        previous.retire();
        let checks = self.cfg.checks.as_ref();
        let no_active = checks.and_then(|c| c.active.as_ref()).is_none();
        let no_passive = checks.and_then(|c| c.passive.as_ref()).is_none();
        let live = self.live.lock().expect("live map lock poisoned");
        clear_removed_checks(&self.name, &live, no_active, no_passive);
    }

    /// Swaps in a new set, reusing live state by address.
    fn rebuild(&self, merged: merge::Merged) {
        let mut live = self.live.lock().expect("live map lock poisoned");
        let mut next_live = HashMap::with_capacity(merged.endpoints.len());
        let mut registry_changes = Vec::new();
        let endpoints: Vec<Arc<Endpoint>> = merged
            .endpoints
            .into_iter()
            .map(|c| {
                let known = live.remove(&c.addr);
                let seen = known.is_some();
                let state = known.unwrap_or_default();
                let before = state.set_registry_health(c.registry_health);
                next_live.insert(c.addr, state.clone());
                let authority = Endpoint::authority_of(c.addr);
                let e = Arc::new(Endpoint {
                    id: c.id,
                    addr: c.addr,
                    weight: c.weight,
                    priority: c.priority,
                    zone: c.zone,
                    source: c.source,
                    state,
                    host: Endpoint::host_of(&authority),
                    authority,
                });
                if seen && before != c.registry_health {
                    registry_changes.push((e.clone(), before));
                }
                e
            })
            .collect();
        // What is left in `live` left the set: keep its attempt counts in
        // the upstream's sums.
        for gone in live.values() {
            self.stats.absorb(gone.attempts());
        }
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
        for (e, before) in registry_changes {
            let now = e.state.verdicts().registry();
            let reason = "the registry says so";
            let health = e.state.health();
            log_change(
                &self.name,
                &e,
                "registry",
                health_name(before),
                health_name(now),
                reason,
                health,
            );
        }
        self.state.store(Arc::new(UpstreamState {
            generation,
            endpoints,
            balancer,
            sources: merged.sources,
        }));
        self.set_version.send_replace(generation);
        self.refresh_panic();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.drain(..).for_each(|t| t.abort());
        }
    }
}

/// Clears the verdicts of checks that a reload removed from an upstream,
/// so that an endpoint is not held down by a check that no longer runs. A
/// passive ejection waiting for active probes that are gone goes too.
fn clear_removed_checks(
    upstream: &str,
    live: &HashMap<SocketAddr, Arc<EndpointState>>,
    active: bool,
    passive: bool,
) {
    for (addr, state) in live {
        let cell = state.verdicts();
        let stranded =
            active && cell.passive() == Passive::Ejected && cell.ejected_until().is_none();
        if (active && cell.reset_active()) | ((passive || stranded) && cell.reset_passive()) {
            tracing::info!(
                upstream,
                endpoint = %addr,
                health = health_name(state.health()),
                "health checks removed by reload: their verdicts no longer count"
            );
        }
    }
}

/// Sweeps an upstream's idle connections every half idle timeout (at least
/// every second) until the upstream goes.
fn spawn_idle_sweeper(up: &Arc<Upstream>) -> AbortHandle {
    let every = (up.cfg.keepalive_pool.idle_timeout / 2).max(Duration::from_secs(1));
    let weak = Arc::downgrade(up);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(up) = weak.upgrade() else { break };
            up.sweep_idle();
        }
    })
    .abort_handle()
}
