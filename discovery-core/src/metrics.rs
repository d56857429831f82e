//! Adapter metrics, and the HTTP endpoint that serves them in Prometheus text
//! format.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::net::TcpListener;

type Watched = Family<WatchLabels, Gauge>;

/// The runtime's own metrics; clones share the same series.
#[derive(Clone, Default)]
pub(crate) struct CoreMetrics {
    subscribers: Family<WatchLabels, Gauge>,
    watches: Gauge,
    updates_sent: Family<KindLabels, Counter>,
    answers: Family<WatchLabels, Counter>,
    registry_errors: Family<WatchLabels, Counter>,
    invalid_endpoints: Family<WatchLabels, Counter>,
    held_back: Family<WatchLabels, Counter>,
    endpoints: Watched,
    last_sync: Family<WatchLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    outcome: &'static str,
}

/// Times the calls a registry client makes to its registry (one HTTP
/// request, one DNS query, one file read), by operation and outcome, as
/// `discovery_registry_request_duration_seconds`. Clones share the series:
/// give one to the registry client and one to
/// [`Adapter::with_registry_metrics`](crate::Adapter::with_registry_metrics).
///
/// Time only real requests: the wait of a long poll or a watch stream
/// for its next answer is the registry's pace, not its latency.
#[derive(Clone, Debug)]
pub struct RegistryMetrics {
    requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

/// One registry call being timed; [`RegistryRequest::finish`] records it.
#[must_use = "a request is recorded when finished"]
#[derive(Debug)]
pub struct RegistryRequest {
    metrics: RegistryMetrics,
    operation: &'static str,
    start: std::time::Instant,
}

// === impl CoreMetrics ===

impl CoreMetrics {
    /// Registers every series under the `discovery_` prefix.
    pub(crate) fn register(&self, reg: &mut Registry) {
        let reg = reg.sub_registry_with_prefix("discovery");
        reg.register(
            "subscribers",
            "Open Watch streams, by watched service",
            self.subscribers.clone(),
        );
        reg.register("watches", "Open registry watches", self.watches.clone());
        reg.register(
            "updates_sent",
            "Messages sent to subscribers, by kind",
            self.updates_sent.clone(),
        );
        reg.register(
            "registry_answers",
            "Answers read from the registry",
            self.answers.clone(),
        );
        reg.register(
            "registry_errors",
            "Registry calls that failed",
            self.registry_errors.clone(),
        );
        reg.register(
            "invalid_endpoints",
            "Endpoints dropped from registry answers as malformed or duplicate",
            self.invalid_endpoints.clone(),
        );
        reg.register(
            "held_back_updates",
            "Answers held back by the sudden-emptying guard",
            self.held_back.clone(),
        );
        reg.register(
            "endpoints",
            "Endpoints in the last good set",
            self.endpoints.clone(),
        );
        reg.register(
            "last_sync_timestamp_seconds",
            "When the registry last answered well (Unix time); time since = time() - this",
            self.last_sync.clone(),
        );
    }

    fn labels(service: &str) -> WatchLabels {
        WatchLabels {
            service: service.to_string(),
        }
    }

    pub(crate) fn subscriber_joined(&self, service: &str) {
        self.subscribers.get_or_create(&Self::labels(service)).inc();
    }

    pub(crate) fn subscriber_left(&self, service: &str) {
        self.subscribers.get_or_create(&Self::labels(service)).dec();
    }

    pub(crate) fn sent(&self, kind: &'static str) {
        self.updates_sent.get_or_create(&KindLabels { kind }).inc();
    }

    pub(crate) fn watch_opened(&self) {
        self.watches.inc();
    }

    pub(crate) fn watch_closed(&self, service: &str) {
        self.watches.dec();
        let l = Self::labels(service);
        self.subscribers.remove(&l);
        self.endpoints.remove(&l);
        self.last_sync.remove(&l);
    }

    pub(crate) fn answers(&self, service: &str) {
        self.answers.get_or_create(&Self::labels(service)).inc();
    }

    pub(crate) fn registry_error(&self, service: &str) {
        self.registry_errors
            .get_or_create(&Self::labels(service))
            .inc();
    }

    pub(crate) fn invalid_endpoint(&self, service: &str) {
        self.invalid_endpoints
            .get_or_create(&Self::labels(service))
            .inc();
    }

    pub(crate) fn held_back(&self, service: &str) {
        self.held_back.get_or_create(&Self::labels(service)).inc();
    }

    pub(crate) fn synced(&self, service: &str, unix_ms: u64, endpoints: usize) {
        let l = Self::labels(service);
        self.last_sync
            .get_or_create(&l)
            .set(unix_ms as f64 / 1000.0);
        self.endpoints.get_or_create(&l).set(endpoints as i64);
    }
}

// === impl RegistryMetrics ===

impl RegistryMetrics {
    /// An empty set of series.
    pub fn new() -> Self {
        fn buckets() -> Histogram {
            // 0.5 ms to about 16 s.
            Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
        }
        Self {
            requests: Family::new_with_constructor(buckets),
        }
    }

    /// Starts timing a call of `operation` (for example `health_service`).
    pub fn start(&self, operation: &'static str) -> RegistryRequest {
        RegistryRequest {
            metrics: self.clone(),
            operation,
            start: std::time::Instant::now(),
        }
    }

    /// Records a call of `operation` that took `elapsed`; `ok` when the
    /// registry answered usefully.
    pub fn observe(&self, operation: &'static str, elapsed: std::time::Duration, ok: bool) {
        let labels = RequestLabels {
            operation,
            outcome: if ok { "ok" } else { "error" },
        };
        self.requests
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn register(&self, reg: &mut Registry) {
        reg.sub_registry_with_prefix("discovery").register(
            "registry_request_duration_seconds",
            "Registry calls by operation and outcome (ok, error), and how long they took",
            self.requests.clone(),
        );
    }
}

impl Default for RegistryMetrics {
    fn default() -> Self {
        Self::new()
    }
}

// === impl RegistryRequest ===

impl RegistryRequest {
    /// Records the call; `ok` when the registry answered usefully.
    pub fn finish(self, ok: bool) {
        self.metrics
            .observe(self.operation, self.start.elapsed(), ok);
    }
}

/// Serves `GET /metrics` from `registry` on `listener` until the task is dropped.
pub(crate) async fn serve_metrics(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener accept failed");
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(metrics_response(&req, &registry)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

fn metrics_response(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => {
            let mut text = String::new();
            match encode(&mut text, registry) {
                Ok(()) => (
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    prometheus_text(&text),
                ),
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    e.to_string(),
                ),
            }
        }
        "/live" | "/ready" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, ctype)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// Rewrites prometheus-client's OpenMetrics text as the Prometheus text
/// format 0.0.4, which `promtool check metrics` and every Prometheus read:
/// a counter family's `HELP` and `TYPE` lines name it with its `_total`
/// suffix, as its samples are named, and the `# EOF` and `# UNIT` lines go.
pub(crate) fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((tag, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(tag);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The bound address of the metrics listener, for the start-up line.
pub(crate) fn local(listener: &TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}
