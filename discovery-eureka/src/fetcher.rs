//! The one fetch loop of an adapter process: a full fetch, then a delta
//! fetch every interval, reconciled with the server's hash code, and a full
//! fetch again whenever the hash codes disagree, a delta is refused, or a
//! fetch failed. Every watched application follows the registry it
//! publishes.

use std::{sync::Arc, time::Duration};

use discovery_core::Backoff;
use tokio::sync::watch;

use crate::{
    apps::Apps,
    client::{Client, FetchError},
    metrics::{EurekaMetrics, Kind},
    model::AppsDoc,
};

/// What the loop publishes.
#[derive(Debug)]
pub(crate) enum State {
    /// No fetch has finished yet.
    Pending,
    /// The registry as of the last good fetch.
    Ready(Arc<Apps>),
    /// The last fetch failed; `last` is the registry before it, if any.
    Failed {
        last: Option<Arc<Apps>>,
        error: String,
    },
}

/// Starts the loop; it ends when every receiver is gone.
pub(crate) fn spawn(
    client: Client,
    interval: Duration,
    metrics: EurekaMetrics,
) -> watch::Receiver<Arc<State>> {
    let (tx, rx) = watch::channel(Arc::new(State::Pending));
    let fetcher = Fetcher { client, metrics };
    tokio::spawn(run(fetcher, interval, tx));
    rx
}

/// The client and what it reports to.
struct Fetcher {
    client: Client,
    metrics: EurekaMetrics,
}

async fn run(mut f: Fetcher, interval: Duration, tx: watch::Sender<Arc<State>>) {
    let mut current: Option<Arc<Apps>> = None;
    let mut need_full = true;
    let mut backoff = Backoff::new(Duration::from_millis(200), interval);
    while !tx.is_closed() {
        let result = match (&current, need_full) {
            (Some(apps), false) => f.delta(apps).await,
            _ => f.full().await.map(Some),
        };
        let wait = match result {
            Ok(next) => {
                need_full = false;
                backoff.reset();
                let changed = next.is_some();
                if let Some(next) = next {
                    current = Some(Arc::new(next));
                }
                let apps = current.clone().expect("a good fetch leaves a registry");
                f.metrics.instances(apps.len());
                tx.send_if_modified(|state| {
                    // Publish a change, and the first good answer after none
                    // or after a failure.
                    if changed || !matches!(**state, State::Ready(_)) {
                        *state = Arc::new(State::Ready(apps));
                        true
                    } else {
                        false
                    }
                });
                interval
            }
            Err(e) => {
                let error = e.to_string();
                tracing::warn!(%error, "Eureka fetch failed; keeping the last registry");
                need_full = true;
                let last = current.clone();
                tx.send_if_modified(|state| {
                    if matches!(**state, State::Failed { .. }) {
                        return false;
                    }
                    *state = Arc::new(State::Failed { last, error });
                    true
                });
                backoff.next_delay()
            }
        };
        tokio::time::sleep(wait).await;
    }
}

// === impl Fetcher ===

impl Fetcher {
    /// A full fetch.
    async fn full(&mut self) -> Result<Apps, FetchError> {
        let doc = self.client.full().await;
        self.metrics.fetched(Kind::Full, doc.is_ok());
        let doc = doc?;
        log_skipped(&doc);
        let apps = Apps::from_full(doc);
        tracing::debug!(instances = apps.len(), "full fetch");
        Ok(apps)
    }

    /// A delta fetch applied to `apps`: `None` when nothing changed. Falls
    /// back to a full fetch when the delta is refused or its hash code
    /// disagrees.
    async fn delta(&mut self, apps: &Apps) -> Result<Option<Apps>, FetchError> {
        let doc = self.client.delta().await;
        self.metrics.fetched(Kind::Delta, doc.is_ok());
        let doc = match doc {
            Ok(doc) => doc,
            Err(FetchError::Refused { url, status }) => {
                tracing::warn!(%url, %status, "delta fetch refused; fetching the whole registry");
                self.metrics.reconciled();
                return self.full().await.map(Some);
            }
            Err(e) => return Err(e),
        };
        log_skipped(&doc);
        let server_hash = doc.hash_code.clone();
        if doc.instances.is_empty() {
            let ours = apps.hash_code();
            if ours == server_hash {
                return Ok(None);
            }
            return self.reconcile(&ours, &server_hash).await;
        }
        let mut next = apps.clone();
        let outcome = next.apply_delta(doc);
        if outcome.hash_code != server_hash {
            return self.reconcile(&outcome.hash_code, &server_hash).await;
        }
        Ok(outcome.changed.then_some(next))
    }

    async fn reconcile(&mut self, ours: &str, server: &str) -> Result<Option<Apps>, FetchError> {
        tracing::info!(
            ours,
            server,
            "registry hash code differs from the server's after a delta; fetching the whole registry"
        );
        self.metrics.reconciled();
        self.full().await.map(Some)
    }
}

fn log_skipped(doc: &AppsDoc) {
    for s in &doc.skipped {
        tracing::warn!("Eureka instance skipped: {s}");
    }
}
