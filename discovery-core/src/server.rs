//! The `discovery.v1.EndpointDiscovery` gRPC service: turns a shared watch
//! into one subscriber's stream (snapshot first, then deltas and status).

use std::{collections::VecDeque, pin::Pin, sync::Arc};

use futures_util::{Stream, stream};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tributary_proto::v1::{self as pb, endpoint_discovery_server::EndpointDiscovery};

use crate::{
    ListError, Registry, Target,
    hub::{Hub, SharedWatch},
    metrics::CoreMetrics,
    watch::Published,
};

/// The gRPC service over a hub of shared watches.
pub(crate) struct Service<R> {
    hub: Arc<Hub<R>>,
    metrics: CoreMetrics,
    stop: watch::Receiver<bool>,
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<pb::EndpointUpdate, Status>> + Send>>;

/// One subscriber's position in its watch.
struct Subscriber {
    watch: Arc<SharedWatch>,
    rx: watch::Receiver<Arc<Published>>,
    stop: watch::Receiver<bool>,
    metrics: CoreMetrics,
    label: String,
    /// The version this subscriber holds; `None` before its first snapshot.
    version: Option<u64>,
    status_seq: u64,
    sent_stale: bool,
    queue: VecDeque<pb::EndpointUpdate>,
    started: bool,
}

// === impl Service ===

impl<R: Registry> Service<R> {
    /// A service whose streams end when `stop` turns true.
    pub(crate) fn new(hub: Arc<Hub<R>>, metrics: CoreMetrics, stop: watch::Receiver<bool>) -> Self {
        Self { hub, metrics, stop }
    }
}

#[tonic::async_trait]
impl<R: Registry> EndpointDiscovery for Service<R> {
    type WatchStream = UpdateStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        if req.service.is_empty() {
            return Err(Status::invalid_argument("WatchRequest.service is empty"));
        }
        let target = Target {
            service: req.service,
            args: req.args.into_iter().collect(),
        };
        self.hub
            .registry()
            .validate(&target)
            .map_err(|e| Status::invalid_argument(format!("watch of {target}: {e}")))?;
        tracing::debug!(%target, subscriber = %req.subscriber_id, "subscriber joined");
        let watch = self.hub.subscribe(target);
        Ok(Response::new(Box::pin(
            Subscriber::new(watch, self.metrics.clone(), self.stop.clone()).into_stream(),
        )))
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let args = request.into_inner().args.into_iter().collect();
        match self.hub.registry().list_services(&args).await {
            Ok(mut services) => {
                services.sort();
                services.dedup();
                Ok(Response::new(pb::ListServicesResponse { services }))
            }
            Err(e @ ListError::Unsupported) => Err(Status::unimplemented(e.to_string())),
            Err(e @ ListError::InvalidArgs(_)) => Err(Status::invalid_argument(e.to_string())),
            Err(e @ ListError::Registry(_)) => Err(Status::unavailable(e.to_string())),
        }
    }
}

// === impl Subscriber ===

impl Subscriber {
    fn new(watch: Arc<SharedWatch>, metrics: CoreMetrics, stop: watch::Receiver<bool>) -> Self {
        let label = watch.target().to_string();
        metrics.subscriber_joined(&label);
        Self {
            rx: watch.receiver(),
            stop,
            watch,
            metrics,
            label,
            version: None,
            status_seq: 0,
            sent_stale: false,
            queue: VecDeque::new(),
            started: false,
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<pb::EndpointUpdate, Status>> + Send {
        stream::unfold(self, |mut s| async move {
            loop {
                if let Some(m) = s.queue.pop_front() {
                    return Some((Ok(m), s));
                }
                if *s.stop.borrow() {
                    return None;
                }
                if s.started {
                    // The sender lives as long as the watch task, which lives
                    // as long as this subscriber holds the watch.
                    tokio::select! {
                        changed = s.rx.changed() => changed.ok()?,
                        _ = s.stop.changed() => return None,
                    }
                }
                s.started = true;
                let p = s.rx.borrow_and_update().clone();
                s.catch_up(&p);
            }
        })
    }

    /// Queues what this subscriber needs to reach the published state.
    fn catch_up(&mut self, p: &Published) {
        if p.version == 0 {
            // No answer from the registry yet: the first message must be a
            // snapshot, so nothing is sent until there is one.
            return;
        }
        match self.version {
            Some(v) if p.version <= v => {}
            Some(v) if p.version == v + 1 && p.delta.is_some() => {
                self.push("delta", p.delta.clone().expect("checked above"));
            }
            _ => self.push("snapshot", p.snapshot.clone()),
        }
        self.version = Some(p.version);
        if p.status_seq != self.status_seq {
            self.status_seq = p.status_seq;
            let stale = p.status.state == pb::SyncState::Stale as i32;
            // Recoveries matter only to a subscriber that saw the outage.
            if stale || self.sent_stale {
                self.sent_stale = stale;
                self.push(
                    "status",
                    pb::EndpointUpdate {
                        version: p.version,
                        kind: Some(pb::endpoint_update::Kind::Status(p.status.clone())),
                    },
                );
            }
        }
    }

    fn push(&mut self, kind: &'static str, m: pb::EndpointUpdate) {
        self.metrics.sent(kind);
        self.queue.push_back(m);
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.metrics.subscriber_left(&self.label);
        tracing::debug!(target = %self.watch.target(), "subscriber left");
    }
}
