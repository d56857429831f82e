//! Watch sharing: one registry watch per distinct target, whatever the number
//! of subscribers, closed when the last subscriber leaves.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{sync::watch, task::AbortHandle};

use crate::{
    Registry, Target,
    metrics::CoreMetrics,
    watch::{Published, WatchConfig, spawn},
};

/// Hands out shared watches.
pub(crate) struct Hub<R> {
    registry: Arc<R>,
    cfg: WatchConfig,
    metrics: CoreMetrics,
    watches: Arc<Mutex<HashMap<Target, Entry>>>,
    next_id: AtomicU64,
}

/// A subscriber's hold on a shared watch; the watch closes when the last
/// hold is dropped.
pub(crate) struct SharedWatch {
    id: u64,
    target: Target,
    rx: watch::Receiver<Arc<Published>>,
    task: AbortHandle,
    watches: Weak<Mutex<HashMap<Target, Entry>>>,
    metrics: CoreMetrics,
}

struct Entry {
    id: u64,
    watch: Weak<SharedWatch>,
}

// === impl Hub ===

impl<R: Registry> Hub<R> {
    pub(crate) fn new(registry: Arc<R>, cfg: WatchConfig, metrics: CoreMetrics) -> Self {
        Self {
            registry,
            cfg,
            metrics,
            watches: Arc::default(),
            next_id: AtomicU64::new(1),
        }
    }

    pub(crate) fn registry(&self) -> &R {
        &self.registry
    }

    /// Joins the watch of `target`, opening it if nobody watches it yet.
    pub(crate) fn subscribe(&self, target: Target) -> Arc<SharedWatch> {
        let mut watches = self.watches.lock().expect("watch map lock poisoned");
        if let Some(w) = watches.get(&target).and_then(|e| e.watch.upgrade()) {
            return w;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (rx, task) = spawn(
            self.registry.clone(),
            target.clone(),
            self.cfg.clone(),
            self.metrics.clone(),
        );
        self.metrics.watch_opened();
        let w = Arc::new(SharedWatch {
            id,
            target: target.clone(),
            rx,
            task,
            watches: Arc::downgrade(&self.watches),
            metrics: self.metrics.clone(),
        });
        watches.insert(
            target,
            Entry {
                id,
                watch: Arc::downgrade(&w),
            },
        );
        w
    }
}

// === impl SharedWatch ===

impl SharedWatch {
    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    pub(crate) fn receiver(&self) -> watch::Receiver<Arc<Published>> {
        self.rx.clone()
    }
}

impl Drop for SharedWatch {
    fn drop(&mut self) {
        self.task.abort();
        self.metrics.watch_closed(&self.target.to_string());
        tracing::info!(target = %self.target, "last subscriber left; registry watch closed");
        if let Some(watches) = self.watches.upgrade() {
            let mut watches = watches.lock().expect("watch map lock poisoned");
            // A newer watch of the same target may have replaced this one.
            if watches.get(&self.target).is_some_and(|e| e.id == self.id) {
                watches.remove(&self.target);
            }
        }
    }
}
