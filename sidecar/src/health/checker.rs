//! The checker of one upstream: follows its endpoint set, starting a probe
//! task for each endpoint discovery adds and aborting it the moment the
//! endpoint goes, and ends passive ejections whose time is over.
//!
//! It holds the upstream weakly and is aborted when the upstream is dropped
//! or retired (config reload), which aborts every probe task with it.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, OnceLock, Weak},
    time::Duration,
};

use tokio::{
    sync::{Notify, watch},
    task::{AbortHandle, JoinSet},
    time::Instant,
};

use super::{
    active::{self, ActivePlan, OnChange},
    passive::revive_due,
};
use crate::upstream::{Endpoint, EndpointState, Upstream};

/// What the checker of an upstream does.
pub(crate) struct CheckerPlan {
    /// Active checks, if configured.
    pub(crate) active: Option<Arc<ActivePlan>>,
    /// Whether passive ejections end by time (passive checks without
    /// active ones).
    pub(crate) revive: bool,
}

/// A running probe task and the live state it updates.
struct Probe {
    task: AbortHandle,
    state: Arc<EndpointState>,
}

/// Starts the checker of `upstream`; `set` changes with each new endpoint
/// set, `wake` is notified when an ejection starts.
pub(crate) fn spawn(
    upstream: &Arc<Upstream>,
    plan: CheckerPlan,
    set: watch::Receiver<u64>,
    wake: Arc<Notify>,
) -> AbortHandle {
    let weak = Arc::downgrade(upstream);
    runtime().spawn(run(weak, plan, set, wake)).abort_handle()
}

/// The runtime every checker and probe runs on: one thread of its own.
///
/// Probes are many small exchanges spread in time. On the proxy's
/// multi-thread runtime each would wake a parked worker, which wakes
/// another to steal work; on one thread that parks in `epoll_wait` the
/// same probes cost about a third less, and they never delay a request.
fn runtime() -> &'static tokio::runtime::Handle {
    static RUNTIME: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cannot build the health-check runtime");
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("health-checks".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .expect("cannot start the health-check thread");
        handle
    })
}

async fn run(
    upstream: Weak<Upstream>,
    plan: CheckerPlan,
    mut set: watch::Receiver<u64>,
    wake: Arc<Notify>,
) {
    let mut probes: HashMap<SocketAddr, Probe> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut revival: Option<Instant> = None;
    let on_change: OnChange = {
        let weak = upstream.clone();
        Arc::new(move || {
            if let Some(up) = weak.upgrade() {
                up.refresh_panic();
            }
        })
    };
    set.mark_changed();
    loop {
        // Far enough to never fire, near enough not to overflow.
        let wake_at = revival.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        let set_changed = tokio::select! {
            changed = set.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
            _ = wake.notified() => false,
            _ = tokio::time::sleep_until(wake_at), if revival.is_some() => false,
            Some(_) = tasks.join_next() => continue,
        };
        let Some(up) = upstream.upgrade() else {
            return;
        };
        let state = up.state_full();
        if set_changed && let Some(active) = &plan.active {
            reconcile(
                &up,
                active,
                &state.endpoints,
                &mut probes,
                &mut tasks,
                &on_change,
            );
        }
        if plan.revive {
            let (revived, next) = revive_due(&up.name, &state.endpoints, Instant::now());
            if revived {
                up.refresh_panic();
            }
            revival = next;
        }
    }
}

/// Aborts the probes of endpoints that left the set and starts probes for
/// those that joined it.
fn reconcile(
    up: &Upstream,
    plan: &Arc<ActivePlan>,
    endpoints: &[Arc<Endpoint>],
    probes: &mut HashMap<SocketAddr, Probe>,
    tasks: &mut JoinSet<()>,
    on_change: &OnChange,
) {
    let current: HashMap<SocketAddr, &Arc<Endpoint>> =
        endpoints.iter().map(|e| (e.addr, e)).collect();
    probes.retain(|addr, probe| {
        // An address that left and came back between two looks has a new
        // live state: its old probe would be updating the dropped one.
        let keep = current
            .get(addr)
            .is_some_and(|e| Arc::ptr_eq(&e.state, &probe.state));
        if !keep {
            probe.task.abort();
            tracing::debug!(upstream = %up.name, endpoint = %addr, "endpoint removed: probes stopped");
        }
        keep
    });
    for (addr, e) in current {
        if probes.contains_key(&addr) {
            continue;
        }
        let prober = match plan.prober(addr) {
            Ok(p) => p,
            Err(err) => {
                tracing::warn!(upstream = %up.name, endpoint = %addr, error = %err, "cannot probe endpoint");
                continue;
            }
        };
        let task = tasks.spawn(active::run(
            up.name.clone(),
            plan.clone(),
            (*e).clone(),
            prober,
            on_change.clone(),
        ));
        let state = e.state.clone();
        probes.insert(addr, Probe { task, state });
    }
}
