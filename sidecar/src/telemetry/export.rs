//! Span export off the request path: a bounded queue that a finished span
//! joins with one `try_send` (dropped and counted when full), drained by one
//! thread of its own that batches spans and hands them to the OTLP exporter.
//! A slow or dead collector fills the queue; it never makes a request wait.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
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
    /// Spans dropped: the queue was full, or they were queued while
    /// export failed.
    pub(crate) dropped: AtomicU64,
    /// Requests not traced because the sidecar was shedding.
    pub(crate) untraced: AtomicU64,
    /// Spans the collector accepted.
    pub(crate) exported: AtomicU64,
    /// Spans lost to failed or timed-out exports.
    pub(crate) failed: AtomicU64,
    /// Set when the queue overflows or an export fails: new requests are
    /// not traced (their trace context still passes through) until the
    /// queue has drained to half, or, after a failure, until a probe of
    /// the collector succeeds. Building spans that would be dropped is
    /// wasted work.
    pub(crate) shedding: AtomicBool,
    /// Times shedding started.
    pub(crate) shed_episodes: AtomicU64,
}

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
            start_shedding(&self.stats);
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

/// The first pause after a failed export; it doubles with each failed
/// probe up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// The longest pause between probes of a failing collector.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// While exports fail: when to probe next, and the pause after that.
#[derive(Debug)]
struct Backoff {
    probe_at: tokio::time::Instant,
    delay: Duration,
}

/// The export thread's loop. Healthy, it batches spans and exports them.
/// After a failed export it sheds: new requests are not traced, spans
/// still arriving are dropped (counted), and an empty export probes the
/// collector after a back-off until one succeeds.
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
    let mut failing: Option<Backoff> = None;
    let capacity = spans.max_capacity();
    loop {
        if let Some(backoff) = &mut failing {
            let room = cfg.batch.max(1);
            tokio::select! {
                biased;
                cmd = control.recv() => {
                    let Some(cmd) = cmd else { break };
                    discard(&mut spans, &mut batch, stats);
                    let stop = matches!(cmd, Control::Shutdown(_));
                    cmd.answer();
                    if stop {
                        break;
                    }
                }
                n = spans.recv_many(&mut batch, room) => {
                    if n == 0 {
                        break;
                    }
                    discard(&mut spans, &mut batch, stats);
                }
                () = tokio::time::sleep_until(backoff.probe_at) => {
                    if send(&exporter, Vec::new(), cfg.timeout).await.is_ok() {
                        tracing::info!("span export works again");
                        failing = None;
                        // Whatever queued up meanwhile predates the probe.
                        discard(&mut spans, &mut batch, stats);
                        stats.shedding.store(false, Relaxed);
                        tick.reset();
                    } else {
                        backoff.delay = (backoff.delay * 2).min(MAX_BACKOFF);
                        backoff.probe_at = tokio::time::Instant::now() + backoff.delay;
                    }
                }
            }
            continue;
        }
        if stats.shedding.load(Relaxed) && spans.len() <= capacity / 2 {
            stats.shedding.store(false, Relaxed);
        }
        let room = cfg.batch - batch.len();
        let ok = tokio::select! {
            biased;
            cmd = control.recv() => {
                let Some(cmd) = cmd else { break };
                let mut ok = true;
                while ok && let Ok(s) = spans.try_recv() {
                    batch.push(s);
                    if batch.len() >= cfg.batch {
                        ok = export(&exporter, &mut batch, cfg.timeout, stats).await;
                    }
                }
                ok = ok && export(&exporter, &mut batch, cfg.timeout, stats).await;
                if !ok {
                    discard(&mut spans, &mut batch, stats);
                }
                match cmd {
                    Control::Flush(_) => cmd.answer(),
                    Control::Shutdown(_) => {
                        spans.close();
                        let _ = exporter.shutdown_with_timeout(cfg.timeout);
                        cmd.answer();
                        break;
                    }
                }
                ok
            }
            n = spans.recv_many(&mut batch, room) => {
                if n == 0 {
                    break;
                }
                batch.len() < cfg.batch || export(&exporter, &mut batch, cfg.timeout, stats).await
            }
            _ = tick.tick() => export(&exporter, &mut batch, cfg.timeout, stats).await,
        };
        if !ok {
            start_shedding(stats);
            failing = Some(Backoff {
                probe_at: tokio::time::Instant::now() + FIRST_BACKOFF,
                delay: FIRST_BACKOFF,
            });
        }
    }
}

/// Stops tracing new requests; counts the episode if it is a new one.
fn start_shedding(stats: &ExportStats) {
    if !stats.shedding.swap(true, Relaxed) {
        stats.shed_episodes.fetch_add(1, Relaxed);
    }
}

/// Drops the spans queued and batched while export fails, counted.
fn discard(spans: &mut mpsc::Receiver<SpanData>, batch: &mut Vec<SpanData>, stats: &ExportStats) {
    while let Ok(s) = spans.try_recv() {
        batch.push(s);
    }
    stats.dropped.fetch_add(batch.len() as u64, Relaxed);
    batch.clear();
}

impl Control {
    fn answer(self) {
        let (Self::Flush(reply) | Self::Shutdown(reply)) = self;
        let _ = reply.send(());
    }
}

/// One export, with the timeout: the error says what went wrong.
async fn send<E: SpanExporter>(
    exporter: &E,
    spans: Vec<SpanData>,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, exporter.export(spans)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Exports the batch (if any); false when that failed (the spans are
/// counted as failed and the caller starts shedding).
async fn export<E: SpanExporter>(
    exporter: &E,
    batch: &mut Vec<SpanData>,
    timeout: Duration,
    stats: &ExportStats,
) -> bool {
    if batch.is_empty() {
        return true;
    }
    let n = batch.len() as u64;
    let spans = std::mem::replace(batch, Vec::with_capacity(batch.capacity()));
    match send(exporter, spans, timeout).await {
        Ok(()) => {
            stats.exported.fetch_add(n, Relaxed);
            true
        }
        Err(e) => {
            stats.failed.fetch_add(n, Relaxed);
            tracing::warn!(
                error = %e,
                "span export failed; requests are not traced until the collector answers again"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use std::time::Instant;

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

    /// An exporter whose collector refuses while `down` is set; counts the
    /// calls (probes included) and the spans it took.
    #[derive(Debug, Clone, Default)]
    struct Flaky {
        down: Arc<AtomicBool>,
        calls: Arc<AtomicU64>,
        got: Arc<AtomicU64>,
    }

    impl SpanExporter for Flaky {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.calls.fetch_add(1, Relaxed);
            if self.down.load(Relaxed) {
                return Err(OTelSdkError::InternalFailure("connection refused".into()));
            }
            self.got.fetch_add(batch.len() as u64, Relaxed);
            Ok(())
        }
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "a plain test thread, no runtime to block"
    )]
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_failed_export_sheds_until_a_probe_gets_through() {
        let stats = Arc::new(ExportStats::default());
        let flaky = Flaky::default();
        flaky.down.store(true, Relaxed);
        let exporter = flaky.clone();
        let p = QueueProcessor::start(
            move || Ok(exporter),
            Resource::builder().build(),
            cfg(100, 8),
            stats.clone(),
        )
        .expect("starts");
        let provider = SdkTracerProvider::builder().with_span_processor(p).build();
        end_spans(&provider, 3);
        wait_until("the failed export", || stats.shedding.load(Relaxed));
        assert_eq!(stats.failed.load(Relaxed), 3);
        assert_eq!(stats.shed_episodes.load(Relaxed), 1);

        // Spans that still arrive are dropped, not exported, and the
        // collector is probed (empty exports) while it stays down.
        end_spans(&provider, 5);
        wait_until("the late spans dropped", || {
            stats.dropped.load(Relaxed) == 5
        });
        let calls = flaky.calls.load(Relaxed);
        wait_until("a second probe", || flaky.calls.load(Relaxed) >= calls + 2);
        assert!(stats.shedding.load(Relaxed));
        assert_eq!(flaky.got.load(Relaxed), 0);

        // The collector is back: the next probe ends the episode and new
        // spans are exported again.
        flaky.down.store(false, Relaxed);
        wait_until("the probe that succeeds", || !stats.shedding.load(Relaxed));
        end_spans(&provider, 4);
        provider.force_flush().expect("flushes");
        assert_eq!(flaky.got.load(Relaxed), 4);
        assert_eq!(stats.exported.load(Relaxed), 4);
        assert_eq!(stats.shed_episodes.load(Relaxed), 1);
        provider.shutdown().expect("shuts down");
    }

    #[test]
    fn probes_back_off() {
        let stats = Arc::new(ExportStats::default());
        let flaky = Flaky::default();
        flaky.down.store(true, Relaxed);
        let exporter = flaky.clone();
        let p = QueueProcessor::start(
            move || Ok(exporter),
            Resource::builder().build(),
            cfg(100, 8),
            stats.clone(),
        )
        .expect("starts");
        let provider = SdkTracerProvider::builder().with_span_processor(p).build();
        end_spans(&provider, 1);
        wait_until("the failed export", || stats.shedding.load(Relaxed));
        let started = Instant::now();
        wait_until("four probes", || flaky.calls.load(Relaxed) >= 5);
        // 250 + 500 + 1000 + 2000 ms: the pauses double (a lower bound,
        // never a measurement).
        assert!(started.elapsed() >= Duration::from_millis(3700));
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
