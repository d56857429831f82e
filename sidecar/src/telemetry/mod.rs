//! Observability of the request path and of discovery: the trace pipeline
//! (OTLP export behind a bounded queue), the spans of requests and
//! attempts, and the atomic counters that `/metrics` reads.
//!
//! With traces off there is no tracer: the request path checks one
//! `Option` and builds nothing.

mod context;
mod encode;
mod export;
mod otel;
mod pb;
#[cfg(test)]
mod pipeline_tests;
mod recycle;
mod request;
mod send;
mod stats;
mod text;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering::Relaxed},
};

use opentelemetry_sdk::trace::SdkTracerProvider;

use self::export::ExportQueue;

pub(crate) use self::{
    context::TraceparentLine,
    export::ExportStats,
    request::{PendingSpan, ProxyTracer, RequestTrace, traceparent_trace_id},
    stats::{AttemptStats, CLASSES, RouteStats, RouteStatsStore, UpstreamStats},
};
use crate::config;

/// The sidecar's telemetry: the trace pipeline, if on, and the request
/// counters that outlive reloads.
#[derive(Debug)]
pub struct Telemetry {
    tracer: Option<ProxyTracer>,
    provider: Option<SdkTracerProvider>,
    queue: Option<ExportQueue>,
    /// What span export did.
    pub(crate) export: Arc<ExportStats>,
    /// Each route's counters, by name.
    pub(crate) routes: RouteStatsStore,
    access_log: AtomicBool,
    endpoint_metrics: AtomicBool,
}

// === impl Telemetry ===

impl Telemetry {
    /// Starts span export when the config or the `OTEL_*` environment asks
    /// for it (see `docs/observability.md`); fails on a bad setting.
    pub fn start(cfg: &config::Telemetry) -> Result<Arc<Self>, String> {
        let export = Arc::new(ExportStats::default());
        let settings =
            otel::resolve(cfg, |k| std::env::var(k).ok()).map_err(|e| format!("telemetry: {e}"))?;
        let (tracer, provider, queue) = match &settings {
            Some(s) => {
                let (queue, p) =
                    otel::start(s, export.clone()).map_err(|e| format!("telemetry: {e}"))?;
                tracing::info!(
                    endpoint = %s.endpoint,
                    protocol = ?s.protocol,
                    service = %s.service_name,
                    sampler = ?s.sampler,
                    "exporting spans"
                );
                // Discovery spans use the global tracer.
                opentelemetry::global::set_tracer_provider(p.clone());
                let tracer = ProxyTracer::new(s.sampler, queue.clone(), export.clone());
                (Some(tracer), Some(p), Some(queue))
            }
            None => (None, None, None),
        };
        let t = Self {
            tracer,
            provider,
            queue,
            export,
            routes: RouteStatsStore::default(),
            access_log: AtomicBool::new(false),
            endpoint_metrics: AtomicBool::new(true),
        };
        t.apply(cfg);
        Ok(Arc::new(t))
    }

    /// Telemetry without traces, access log or anything else (tests).
    pub fn disabled() -> Arc<Self> {
        Arc::new(Self {
            tracer: None,
            provider: None,
            queue: None,
            export: Arc::default(),
            routes: RouteStatsStore::default(),
            access_log: AtomicBool::new(false),
            endpoint_metrics: AtomicBool::new(true),
        })
    }

    /// Applies the settings a reload may change: the access log and the
    /// endpoint label. Export settings apply at start only.
    pub fn apply(&self, cfg: &config::Telemetry) {
        self.access_log.store(cfg.access_log, Relaxed);
        self.endpoint_metrics.store(cfg.endpoint_metrics, Relaxed);
    }

    /// The request-path tracer; `None` while traces are off.
    #[inline]
    pub(crate) fn tracer(&self) -> Option<&ProxyTracer> {
        self.tracer.as_ref()
    }

    /// Whether to log a line per request.
    #[inline]
    pub(crate) fn access_log(&self) -> bool {
        self.access_log.load(Relaxed)
    }

    /// Whether attempt metrics carry the endpoint label.
    pub(crate) fn endpoint_metrics(&self) -> bool {
        self.endpoint_metrics.load(Relaxed)
    }

    /// Exports the spans still queued and stops the exporter (at shutdown).
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "the discovery tracer did not stop cleanly");
        }
        if let Some(q) = &self.queue
            && let Err(e) = q.shutdown(std::time::Duration::from_secs(10))
        {
            tracing::warn!(error = %e, "span export did not finish cleanly");
        }
    }
}
