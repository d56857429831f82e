//! Span export off the request path: a bounded queue that a finished span
//! joins with one `try_send` (dropped and counted when full), drained by one
//! thread of its own that batches spans and hands them to the OTLP exporter.
//! A slow or dead collector fills the queue; it never makes a request wait.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{Span, SpanData, SpanExporter, SpanProcessor},
};
use tokio::sync::mpsc;

/// What the exporter did, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ExportStats {
    /// Spans dropped because the queue was full (or export had stopped).
    pub(crate) dropped: AtomicU64,
    /// Spans the collector accepted.
    pub(crate) exported: AtomicU64,
    /// Spans lost to failed or timed-out exports.
    pub(crate) failed: AtomicU64,
    /// Set when the queue overflows: new requests are not traced (their
    /// trace context still passes through) until the queue has drained
    /// and exports work, or [`RETRY_AFTER_FAILURE`] has passed since the
    /// last failed one. Building spans that would be dropped is wasted work.
    pub(crate) shedding: AtomicBool,
    /// Times shedding started.
    pub(crate) shed_episodes: AtomicU64,
}

/// How long a failing exporter sheds new traces before trying again.
pub(crate) const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// How the queue and batches behave.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchConfig {
    pub(crate) queue: usize,
    pub(crate) batch: usize,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

/// The span processor: hands finished sampled spans to the export thread.
#[derive(Debug)]
pub(crate) struct QueueProcessor {
    spans: mpsc::Sender<SpanData>,
    control: mpsc::UnboundedSender<Control>,
    stats: Arc<ExportStats>,
}

#[derive(Debug)]
enum Control {
    /// Export everything queued, then answer.
    Flush(std::sync::mpsc::SyncSender<()>),
    /// Export everything queued, shut the exporter down, answer and stop.
    Shutdown(std::sync::mpsc::SyncSender<()>),
}

// === impl QueueProcessor ===

impl QueueProcessor {
    /// Starts the export thread. `make` builds the exporter there, inside
    /// the thread's own runtime (the gRPC channel lives on it); its error
    /// comes back from here.
    pub(crate) fn start<E, F>(
        make: F,
        resource: Resource,
        cfg: BatchConfig,
        stats: Arc<ExportStats>,
    ) -> Result<Self, String>
    where
        E: SpanExporter + 'static,
        F: FnOnce() -> Result<E, String> + Send + 'static,
    {
        let (spans, rx) = mpsc::channel(cfg.queue);
        let (control, ctrl_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("otel-export".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot start the export runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut exporter = match make() {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    exporter.set_resource(&resource);
                    let _ = ready_tx.send(Ok(()));
                    run(exporter, rx, ctrl_rx, cfg, &thread_stats).await;
                });
            })
            .map_err(|e| format!("cannot start the export thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the export thread stopped while starting".to_owned())??;
        Ok(Self {
            spans,
            control,
            stats,
        })
    }

    fn ask(
        &self,
        make: fn(std::sync::mpsc::SyncSender<()>) -> Control,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.control
            .send(make(tx))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        rx.recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            self.stats.dropped.fetch_add(1, Relaxed);
            if !self.stats.shedding.swap(true, Relaxed) {
                self.stats.shed_episodes.fetch_add(1, Relaxed);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Control::Flush, Duration::from_secs(10))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.ask(Control::Shutdown, timeout)
    }

    fn set_resource(&mut self, _resource: &Resource) {
        // The exporter got the resource when the thread built it.
    }
}

/// The export thread's loop.
async fn run<E: SpanExporter>(
    exporter: E,
    mut spans: mpsc::Receiver<SpanData>,
    mut control: mpsc::UnboundedReceiver<Control>,
    cfg: BatchConfig,
    stats: &ExportStats,
) {
    let mut batch = Vec::with_capacity(cfg.batch);
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut failed_at: Option<Instant> = None;
    let capacity = spans.max_capacity();
    loop {
        if stats.shedding.load(Relaxed) && spans.len() <= capacity / 2 {
            let retry = failed_at.is_none_or(|t| t.elapsed() >= RETRY_AFTER_FAILURE);
            if !failing || retry {
                stats.shedding.store(false, Relaxed);
            }
        }
        let room = cfg.batch - batch.len();
        let failed_before = stats.failed.load(Relaxed);
        tokio::select! {
            biased;
            cmd = control.recv() => {
                let Some(cmd) = cmd else { break };
                while let Ok(s) = spans.try_recv() {
                    batch.push(s);
                    if batch.len() >= cfg.batch {
                        export(&exporter, &mut batch, cfg.timeout, stats, &mut failing).await;
                    }
                }
                export(&exporter, &mut batch, cfg.timeout, stats, &mut failing).await;
                match cmd {
                    Control::Flush(reply) => {
                        let _ = reply.send(());
                    }
                    Control::Shutdown(reply) => {
                        spans.close();
                        let _ = exporter.shutdown_with_timeout(cfg.timeout);
                        let _ = reply.send(());
                        break;
                    }
                }
            }
            n = spans.recv_many(&mut batch, room) => {
                if n == 0 {
                    break;
                }
                if batch.len() >= cfg.batch {
                    export(&exporter, &mut batch, cfg.timeout, stats, &mut failing).await;
                }
            }
            _ = tick.tick() => {
                export(&exporter, &mut batch, cfg.timeout, stats, &mut failing).await;
            }
        }
        if stats.failed.load(Relaxed) != failed_before {
            failed_at = Some(Instant::now());
        } else if !failing {
            failed_at = None;
        }
    }
}

async fn export<E: SpanExporter>(
    exporter: &E,
    batch: &mut Vec<SpanData>,
    timeout: Duration,
    stats: &ExportStats,
    failing: &mut bool,
) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let spans = std::mem::replace(batch, Vec::with_capacity(batch.capacity()));
    let result = tokio::time::timeout(timeout, exporter.export(spans)).await;
    match result {
        Ok(Ok(())) => {
            stats.exported.fetch_add(n, Relaxed);
            if std::mem::take(failing) {
                tracing::info!("span export works again");
            }
        }
        Ok(Err(e)) => {
            stats.failed.fetch_add(n, Relaxed);
            if !std::mem::replace(failing, true) {
                tracing::warn!(error = %e, "span export failed; spans are dropped until it works");
            }
        }
        Err(_) => {
            stats.failed.fetch_add(n, Relaxed);
            if !std::mem::replace(failing, true) {
                tracing::warn!(
                    ?timeout,
                    "span export timed out; spans are dropped until it works"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    /// An exporter whose collector never answers.
    #[derive(Debug)]
    struct Stuck;

    impl SpanExporter for Stuck {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            std::future::pending().await
        }
    }

    /// An exporter that counts what it got.
    #[derive(Debug, Clone, Default)]
    struct Counting(Arc<AtomicU64>);

    impl SpanExporter for Counting {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.fetch_add(batch.len() as u64, Relaxed);
            Ok(())
        }
    }

    fn cfg(queue: usize, batch: usize) -> BatchConfig {
        BatchConfig {
            queue,
            batch,
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(60),
        }
    }

    fn end_spans(provider: &SdkTracerProvider, n: usize) {
        let tracer = provider.tracer("test");
        for _ in 0..n {
            tracer.start("span").end();
        }
    }

    #[test]
    fn a_stuck_collector_costs_drops_not_waits() {
        let stats = Arc::new(ExportStats::default());
        let p = QueueProcessor::start(
            || Ok(Stuck),
            Resource::builder().build(),
            cfg(4, 2),
            stats.clone(),
        )
        .expect("starts");
        let provider = SdkTracerProvider::builder().with_span_processor(p).build();
        // Every `end` returns at once although nothing is ever exported:
        // at most the queue and one batch are held, the rest are counted.
        end_spans(&provider, 50);
        let dropped = stats.dropped.load(Relaxed);
        assert!((44..=46).contains(&dropped), "dropped {dropped}");
        assert_eq!(stats.exported.load(Relaxed), 0);
        // The proxy stops tracing new requests until the queue drains.
        assert!(stats.shedding.load(Relaxed));
        assert_eq!(stats.shed_episodes.load(Relaxed), 1);
    }

    #[test]
    fn spans_are_exported_in_batches_and_flushed() {
        let stats = Arc::new(ExportStats::default());
        let got = Counting::default();
        let exporter = got.clone();
        let p = QueueProcessor::start(
            move || Ok(exporter),
            Resource::builder().build(),
            cfg(100, 8),
            stats.clone(),
        )
        .expect("starts");
        let provider = SdkTracerProvider::builder().with_span_processor(p).build();
        end_spans(&provider, 20);
        provider.force_flush().expect("flushes");
        assert_eq!(got.0.load(Relaxed), 20);
        assert_eq!(stats.exported.load(Relaxed), 20);
        assert_eq!(stats.dropped.load(Relaxed), 0);
        provider.shutdown().expect("shuts down");
    }
}
