//! One registry watch: the task that reads a registry's answers for one target,
//! validates them, diffs them into versions and publishes the result for every
//! subscriber of that target.
//!
//! The published state is a `tokio::sync::watch` value: subscribers always see
//! the latest version and never make the task wait. A subscriber that falls
//! more than one version behind gets a snapshot instead of the deltas it
//! missed.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::StreamExt;
use tokio::{sync::watch, time::Instant};
use tributary_proto::v1 as pb;

use crate::{
    Answer, Backoff, Registry, Target,
    diff::{Set, diff},
    metrics::CoreMetrics,
};

/// How every watch of an adapter behaves.
#[derive(Clone, Debug)]
pub(crate) struct WatchConfig {
    /// Hold back answers that remove more than this share of a non-empty set
    /// (every endpoint always counts). `None`: off.
    pub(crate) guard_share: Option<f64>,
    /// How long such an answer is held back before it is applied.
    pub(crate) guard_grace: Duration,
    /// Back-off between restarts of an ended registry watch.
    pub(crate) backoff: Backoff,
}

/// What a watch publishes to its subscribers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Published {
    /// Version of the set; 0 until the registry first answered.
    pub(crate) version: u64,
    /// The whole set at `version`, as a ready snapshot message.
    pub(crate) snapshot: pb::EndpointUpdate,
    /// The changes from `version - 1`, or `None` when `version` is a reset
    /// that subscribers must take as a snapshot.
    pub(crate) delta: Option<pb::EndpointUpdate>,
    /// The registry's status; changes with `status_seq`.
    pub(crate) status: pb::Status,
    /// Counts status changes.
    pub(crate) status_seq: u64,
}

/// The task's own state.
struct WatchTask<R> {
    registry: Arc<R>,
    target: Target,
    label: String,
    cfg: WatchConfig,
    metrics: CoreMetrics,
    tx: watch::Sender<Arc<Published>>,
    set: Set,
    version: u64,
    not_found: bool,
    stale: bool,
    status_seq: u64,
    last_sync_ms: u64,
    /// An emptying answer held back, and when it may be applied.
    held: Option<(Instant, Set, bool)>,
}

/// Starts the watch task for `target`; it runs until aborted.
pub(crate) fn spawn<R: Registry>(
    registry: Arc<R>,
    target: Target,
    cfg: WatchConfig,
    metrics: CoreMetrics,
) -> (watch::Receiver<Arc<Published>>, tokio::task::AbortHandle) {
    let (tx, rx) = watch::channel(Arc::new(Published::default()));
    let label = target.to_string();
    let task = WatchTask {
        registry,
        target,
        label,
        cfg,
        metrics,
        tx,
        set: Set::new(),
        version: 0,
        not_found: false,
        stale: false,
        status_seq: 0,
        last_sync_ms: 0,
        held: None,
    };
    let handle = tokio::spawn(task.run());
    (rx, handle.abort_handle())
}

// === impl WatchTask ===

impl<R: Registry> WatchTask<R> {
    async fn run(mut self) {
        tracing::info!(target = %self.label, "registry watch opened");
        let mut backoff = self.cfg.backoff.clone();
        loop {
            let mut answers = self.registry.watch(&self.target);
            loop {
                let item = match self.held.as_ref().map(|h| h.0) {
                    Some(deadline) => tokio::select! {
                        item = answers.next() => item,
                        () = tokio::time::sleep_until(deadline) => {
                            self.release_held();
                            continue;
                        }
                    },
                    None => answers.next().await,
                };
                match item {
                    None => break,
                    Some(Ok(answer)) => {
                        backoff.reset();
                        self.on_answer(answer);
                    }
                    Some(Err(e)) => self.on_error(&e.to_string()),
                }
            }
            self.on_error("registry watch ended");
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    fn on_answer(&mut self, answer: Answer) {
        let (set, not_found) = match answer {
            Answer::NotFound => (Set::new(), true),
            Answer::Found(endpoints) => (self.validate(endpoints), false),
        };
        self.metrics.answers(&self.label);
        if self.should_hold(&set) {
            let removed = self.set.keys().filter(|id| !set.contains_key(*id)).count();
            let deadline = match &self.held {
                Some((deadline, ..)) => *deadline,
                None => {
                    let msg = format!(
                        "update removing {removed} of {} endpoints held back for {:?}",
                        self.set.len(),
                        self.cfg.guard_grace
                    );
                    tracing::warn!(target = %self.label, "{msg}");
                    self.metrics.held_back(&self.label);
                    self.set_status(pb::SyncState::Stale, msg);
                    Instant::now() + self.cfg.guard_grace
                }
            };
            self.held = Some((deadline, set, not_found));
            return;
        }
        self.held = None;
        self.apply(set, not_found);
    }

    fn release_held(&mut self) {
        if let Some((_, set, not_found)) = self.held.take() {
            tracing::warn!(target = %self.label, "grace period over: applying held-back update");
            self.apply(set, not_found);
        }
    }

    /// Whether the guard holds back an answer that would replace the set by `new`.
    fn should_hold(&self, new: &Set) -> bool {
        let Some(share) = self.cfg.guard_share else {
            return false;
        };
        if self.version == 0 || self.set.is_empty() {
            return false;
        }
        if let Some((deadline, ..)) = &self.held
            && Instant::now() >= *deadline
        {
            return false;
        }
        let removed = self.set.keys().filter(|id| !new.contains_key(*id)).count();
        removed == self.set.len() || removed as f64 / self.set.len() as f64 > share
    }

    /// Drops malformed and duplicate endpoints, logging each one.
    fn validate(&self, endpoints: Vec<crate::Endpoint>) -> Set {
        let mut set = BTreeMap::new();
        for e in endpoints {
            match e.validate() {
                Ok(e) if set.contains_key(&e.id) => {
                    tracing::warn!(target = %self.label, id = %e.id, "duplicate endpoint id dropped");
                    self.metrics.invalid_endpoint(&self.label);
                }
                Ok(e) => {
                    set.insert(e.id.clone(), e);
                }
                Err(err) => {
                    tracing::warn!(target = %self.label, "{err}");
                    self.metrics.invalid_endpoint(&self.label);
                }
            }
        }
        set
    }

    fn apply(&mut self, set: Set, not_found: bool) {
        self.last_sync_ms = unix_ms();
        self.metrics
            .synced(&self.label, self.last_sync_ms, set.len());
        let delta = if self.version == 0 || not_found != self.not_found {
            None
        } else {
            let d = diff(&self.set, &set);
            if d.upserts.is_empty() && d.removals.is_empty() {
                if self.stale {
                    self.set_status(pb::SyncState::Recovered, "registry answers again".into());
                }
                return;
            }
            Some(d)
        };
        self.version += 1;
        self.set = set;
        self.not_found = not_found;
        let version = self.version;
        let state = if self.stale {
            self.stale = false;
            self.status_seq += 1;
            pb::SyncState::Recovered
        } else {
            pb::SyncState::InSync
        };
        let snapshot = pb::EndpointUpdate {
            version,
            kind: Some(pb::endpoint_update::Kind::Snapshot(pb::Snapshot {
                endpoints: self.set.values().cloned().collect(),
                not_found,
            })),
        };
        let delta = delta.map(|d| pb::EndpointUpdate {
            version,
            kind: Some(pb::endpoint_update::Kind::Delta(d)),
        });
        tracing::debug!(target = %self.label, version, endpoints = self.set.len(), not_found, "set updated");
        self.trace_update(version, delta.as_ref(), not_found);
        let status = self.status(state, String::new());
        self.tx.send_replace(Arc::new(Published {
            version,
            snapshot,
            delta,
            status,
            status_seq: self.status_seq,
        }));
    }

    /// A span per published version: the sidecars' spans of the same
    /// service and version are the other end.
    fn trace_update(&self, version: u64, delta: Option<&pb::EndpointUpdate>, not_found: bool) {
        use opentelemetry::{
            KeyValue,
            trace::{Span as _, SpanKind, Tracer as _},
        };
        let tracer = opentelemetry::global::tracer("tributary-adapter");
        let mut span = tracer
            .span_builder("discovery.update")
            .with_kind(SpanKind::Producer)
            .start(&tracer);
        if span.is_recording() {
            let (kind, upserts, removals) = match delta.and_then(|d| d.kind.as_ref()) {
                Some(pb::endpoint_update::Kind::Delta(d)) => {
                    ("delta", d.upserts.len(), d.removals.len())
                }
                _ => ("snapshot", self.set.len(), 0),
            };
            span.set_attributes([
                KeyValue::new("discovery.service", self.target.service.clone()),
                KeyValue::new("discovery.target", self.label.clone()),
                KeyValue::new("discovery.version", version as i64),
                KeyValue::new("discovery.kind", kind),
                KeyValue::new("discovery.endpoints", self.set.len() as i64),
                KeyValue::new("discovery.upserts", upserts as i64),
                KeyValue::new("discovery.removals", removals as i64),
                KeyValue::new("discovery.not_found", not_found),
            ]);
        }
        span.end();
    }

    fn on_error(&mut self, message: &str) {
        tracing::warn!(target = %self.label, error = %message, "registry error; keeping the last set");
        self.metrics.registry_error(&self.label);
        if !self.stale {
            self.set_status(pb::SyncState::Stale, message.to_string());
        }
    }

    /// Publishes a status change without changing the set.
    fn set_status(&mut self, state: pb::SyncState, message: String) {
        self.stale = state == pb::SyncState::Stale;
        self.status_seq += 1;
        let status = self.status(state, message);
        let seq = self.status_seq;
        self.tx.send_modify(|p| {
            let p = Arc::make_mut(p);
            p.status = status;
            p.status_seq = seq;
        });
    }

    fn status(&self, state: pb::SyncState, message: String) -> pb::Status {
        pb::Status {
            state: state.into(),
            message,
            last_sync_unix_ms: self.last_sync_ms,
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
