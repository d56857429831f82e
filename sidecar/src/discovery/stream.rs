//! Watch streams to adapters: connecting, applying snapshots and deltas,
//! detecting version gaps, and reconnecting with back-off while the last known
//! endpoints stay in force.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use tokio::{sync::watch, task::AbortHandle};
use tonic::transport::{Channel, Endpoint as GrpcEndpoint};
use tributary_proto::v1::{
    self as pb, endpoint_discovery_client::EndpointDiscoveryClient, endpoint_update::Kind,
};

use super::{SourceEndpoint, SourceKey, SourceState, backoff::Backoff};

/// Open streams by source and adapter address.
type SourceMap = Mutex<HashMap<(SourceKey, String), Weak<Source>>>;

/// Largest update accepted from an adapter.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Discovery streams, shared by every upstream that watches the same service.
pub(crate) struct Discovery {
    subscriber_id: String,
    adapters: Mutex<HashMap<String, AdapterConn>>,
    sources: Arc<SourceMap>,
}

/// One adapter's address and lazily connected channel.
#[derive(Clone)]
struct AdapterConn {
    address: String,
    channel: Channel,
}

/// A live watch stream; the stream stops when the last holder drops it.
pub(crate) struct Source {
    key: SourceKey,
    map_key: (SourceKey, String),
    rx: watch::Receiver<Arc<SourceState>>,
    task: AbortHandle,
    sources: Weak<SourceMap>,
}

/// Why a source could not be watched.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    /// The config names an adapter that it does not define.
    #[error("unknown adapter {0:?}")]
    UnknownAdapter(String),
}

// === impl Discovery ===

impl Discovery {
    /// A discovery client that names itself `subscriber_id` to adapters.
    pub(crate) fn new(subscriber_id: impl Into<String>) -> Self {
        Self {
            subscriber_id: subscriber_id.into(),
            adapters: Mutex::default(),
            sources: Arc::default(),
        }
    }

    /// Sets the adapters from the config: name → (gRPC address, connect timeout).
    /// Channels of unchanged adapters are kept; streams to a changed address
    /// start anew as upstreams re-subscribe.
    pub(crate) fn set_adapters(
        &self,
        adapters: impl IntoIterator<Item = (String, String, Duration)>,
    ) -> Result<(), String> {
        let mut next = HashMap::new();
        let current = self
            .adapters
            .lock()
            .expect("adapter map lock poisoned")
            .clone();
        for (name, address, connect_timeout) in adapters {
            if let Some(c) = current.get(&name).filter(|c| c.address == address) {
                next.insert(name, c.clone());
                continue;
            }
            let endpoint = GrpcEndpoint::from_shared(address.clone())
                .map_err(|e| format!("adapter {name:?}: address {address:?}: {e}"))?
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(10));
            let channel = endpoint.connect_lazy();
            next.insert(name, AdapterConn { address, channel });
        }
        *self.adapters.lock().expect("adapter map lock poisoned") = next;
        Ok(())
    }

    /// Joins the stream of `key`, opening it if nobody watches it yet.
    pub(crate) fn subscribe(&self, key: &SourceKey) -> Result<Arc<Source>, SourceError> {
        let conn = self
            .adapters
            .lock()
            .expect("adapter map lock poisoned")
            .get(&key.adapter)
            .cloned()
            .ok_or_else(|| SourceError::UnknownAdapter(key.adapter.clone()))?;
        let map_key = (key.clone(), conn.address.clone());
        let mut sources = self.sources.lock().expect("source map lock poisoned");
        if let Some(s) = sources.get(&map_key).and_then(Weak::upgrade) {
            return Ok(s);
        }
        let (tx, rx) = watch::channel(Arc::new(SourceState::default()));
        let task = tokio::spawn(run(
            conn.channel,
            key.clone(),
            self.subscriber_id.clone(),
            tx,
        ));
        let source = Arc::new(Source {
            key: key.clone(),
            map_key: map_key.clone(),
            rx,
            task: task.abort_handle(),
            sources: Arc::downgrade(&self.sources),
        });
        sources.insert(map_key, Arc::downgrade(&source));
        Ok(source)
    }
}

// === impl Source ===

impl Source {
    /// The watched service.
    pub(crate) fn key(&self) -> &SourceKey {
        &self.key
    }

    /// Follows the source's state.
    pub(crate) fn receiver(&self) -> watch::Receiver<Arc<SourceState>> {
        self.rx.clone()
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(sources) = self.sources.upgrade() {
            let mut sources = sources.lock().expect("source map lock poisoned");
            if sources
                .get(&self.map_key)
                .is_some_and(|w| w.strong_count() == 0)
            {
                sources.remove(&self.map_key);
            }
        }
        tracing::info!(source = %self.key, "discovery stream closed");
    }
}

/// The endpoint set held by one stream, as received.
#[derive(Default)]
struct Held {
    version: Option<u64>,
    set: BTreeMap<Arc<str>, SourceEndpoint>,
    not_found: bool,
}

/// What one message did.
#[derive(Debug)]
enum Applied {
    Changed,
    Status { stale: bool },
}

/// Runs one source: watch, apply, reconnect, forever (until aborted).
async fn run(
    channel: Channel,
    key: SourceKey,
    subscriber_id: String,
    tx: watch::Sender<Arc<SourceState>>,
) {
    let mut client =
        EndpointDiscoveryClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        let request = pb::WatchRequest {
            service: key.service.clone(),
            args: key.args.clone().into_iter().collect(),
            subscriber_id: subscriber_id.clone(),
        };
        match client.watch(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                let mut held = Held::default();
                loop {
                    let message = match stream.message().await {
                        Ok(Some(m)) => m,
                        Ok(None) => {
                            tracing::warn!(source = %key, "adapter ended the stream");
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(source = %key, code = ?status.code(), message = status.message(), "discovery stream failed");
                            break;
                        }
                    };
                    let kind = match &message.kind {
                        Some(Kind::Snapshot(_)) => "snapshot",
                        Some(Kind::Delta(_)) => "delta",
                        _ => "status",
                    };
                    match apply(&mut held, message, &key) {
                        Ok(Applied::Changed) => {
                            backoff.reset();
                            publish(&tx, &held, false);
                            trace_update(&key, &held, kind);
                        }
                        Ok(Applied::Status { stale }) => {
                            tx.send_if_modified(|s| {
                                let changed = s.stale != stale && s.synced;
                                if changed {
                                    Arc::make_mut(s).stale = stale;
                                }
                                changed
                            });
                        }
                        Err(e) => {
                            tracing::warn!(source = %key, error = %e, "bad update; keeping the last set and re-subscribing");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::warn!(source = %key, code = ?status.code(), message = status.message(), "cannot watch");
            }
        }
        // Keep the last known endpoints; only say they may be out of date.
        tx.send_if_modified(|s| {
            let changed = !s.stale && s.synced;
            if changed {
                Arc::make_mut(s).stale = true;
            }
            changed
        });
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Applies one message to the held set; an error means "re-subscribe".
fn apply(held: &mut Held, message: pb::EndpointUpdate, key: &SourceKey) -> Result<Applied, String> {
    let version = message.version;
    match message.kind {
        Some(Kind::Snapshot(s)) => {
            held.set = valid_endpoints(&s.endpoints, key);
            held.not_found = s.not_found;
            held.version = Some(version);
            tracing::debug!(source = %key, version, endpoints = held.set.len(), not_found = s.not_found, "snapshot");
            Ok(Applied::Changed)
        }
        Some(Kind::Delta(d)) => {
            let Some(have) = held.version else {
                return Err("delta before the first snapshot".into());
            };
            if version != have + 1 {
                return Err(format!("version gap: held {have}, got delta {version}"));
            }
            for id in &d.removals {
                held.set.remove(id.as_str());
            }
            for (id, e) in valid_endpoints(&d.upserts, key) {
                held.set.insert(id, e);
            }
            held.version = Some(version);
            held.not_found = false;
            tracing::debug!(source = %key, version, upserts = d.upserts.len(), removals = d.removals.len(), "delta");
            Ok(Applied::Changed)
        }
        Some(Kind::Status(s)) => {
            let stale = s.state == pb::SyncState::Stale as i32;
            if stale {
                tracing::warn!(source = %key, message = %s.message, "adapter reports its registry stale; keeping the last set");
            } else {
                tracing::info!(source = %key, "adapter reports its registry in sync");
            }
            Ok(Applied::Status { stale })
        }
        None => Err("update without a kind".into()),
    }
}

fn valid_endpoints(
    endpoints: &[pb::Endpoint],
    key: &SourceKey,
) -> BTreeMap<Arc<str>, SourceEndpoint> {
    endpoints
        .iter()
        .filter_map(|e| match SourceEndpoint::from_wire(e) {
            Ok(e) => Some((e.id.clone(), e)),
            Err(err) => {
                tracing::warn!(source = %key, error = %err, "malformed endpoint dropped");
                None
            }
        })
        .collect()
}

/// A span per applied update, carrying the adapter's version: the adapter's
/// span of the same service and version is the other end.
fn trace_update(key: &SourceKey, held: &Held, kind: &'static str) {
    use opentelemetry::{
        KeyValue,
        trace::{Span as _, SpanKind, Tracer as _},
    };
    let tracer = opentelemetry::global::tracer("tributary-sidecar");
    let mut span = tracer
        .span_builder("discovery.update")
        .with_kind(SpanKind::Consumer)
        .start(&tracer);
    if span.is_recording() {
        span.set_attributes([
            KeyValue::new("discovery.adapter", key.adapter.clone()),
            KeyValue::new("discovery.service", key.service.clone()),
            KeyValue::new("discovery.source", key.to_string()),
            KeyValue::new("discovery.version", held.version.unwrap_or(0) as i64),
            KeyValue::new("discovery.kind", kind),
            KeyValue::new("discovery.endpoints", held.set.len() as i64),
            KeyValue::new("discovery.not_found", held.not_found),
        ]);
    }
    span.end();
}

fn publish(tx: &watch::Sender<Arc<SourceState>>, held: &Held, stale: bool) {
    tx.send_replace(Arc::new(SourceState {
        synced: true,
        version: held.version.unwrap_or(0),
        endpoints: Arc::new(held.set.values().cloned().collect()),
        not_found: held.not_found,
        stale,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(id: &str, port: u32) -> pb::Endpoint {
        pb::Endpoint {
            id: id.into(),
            address: "127.0.0.1".into(),
            port,
            ..Default::default()
        }
    }

    fn key() -> SourceKey {
        SourceKey {
            adapter: "a".into(),
            service: "s".into(),
            args: BTreeMap::new(),
        }
    }

    fn snapshot(version: u64, eps: Vec<pb::Endpoint>) -> pb::EndpointUpdate {
        pb::EndpointUpdate {
            version,
            kind: Some(Kind::Snapshot(pb::Snapshot {
                endpoints: eps,
                not_found: false,
            })),
        }
    }

    fn delta(version: u64, upserts: Vec<pb::Endpoint>, removals: Vec<&str>) -> pb::EndpointUpdate {
        pb::EndpointUpdate {
            version,
            kind: Some(Kind::Delta(pb::Delta {
                upserts,
                removals: removals.into_iter().map(String::from).collect(),
            })),
        }
    }

    #[test]
    fn snapshots_and_deltas_apply_in_order() {
        let mut held = Held::default();
        apply(&mut held, snapshot(4, vec![ep("a", 1), ep("b", 2)]), &key()).unwrap();
        apply(&mut held, delta(5, vec![ep("c", 3)], vec!["a"]), &key()).unwrap();
        let ids: Vec<_> = held.set.keys().map(|k| k.to_string()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(held.version, Some(5));
    }

    #[test]
    fn a_version_gap_or_early_delta_asks_for_a_resubscribe() {
        let mut held = Held::default();
        assert!(apply(&mut held, delta(1, vec![], vec![]), &key()).is_err());
        apply(&mut held, snapshot(1, vec![ep("a", 1)]), &key()).unwrap();
        let err = apply(&mut held, delta(3, vec![], vec!["a"]), &key()).unwrap_err();
        assert!(err.contains("gap"), "{err}");
        assert_eq!(held.set.len(), 1, "nothing is discarded on a gap");
    }

    #[test]
    fn malformed_endpoints_are_dropped_and_the_rest_kept() {
        let mut held = Held::default();
        apply(
            &mut held,
            snapshot(1, vec![ep("a", 0), ep("b", 70000), ep("c", 80)]),
            &key(),
        )
        .unwrap();
        assert_eq!(held.set.len(), 1);
        assert!(held.set.contains_key("c"));
    }
}
