//! Span export off the request path: a bounded queue that a finished span
//! joins with one `try_send` (dropped and counted when full), drained by one
//! thread of its own that batches the records, encodes them as OTLP and
//! sends them to the collector. A slow or dead collector fills the queue or
//! makes the sidecar shed; it never makes a request wait.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use bytes::BytesMut;
use opentelemetry::Context;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{Span, SpanData, SpanProcessor},
};
use tokio::sync::mpsc;

use super::{
    encode::encode,
    request::{ClientSpan, ServerSpan},
    send::Sink,
};

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
    /// Spans the collector rejected in an accepted export
    /// (`partial_success`).
    pub(crate) rejected: AtomicU64,
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

/// A finished span waiting for export.
#[derive(Debug)]
pub(crate) enum Record {
    Server(ServerSpan),
    Client(ClientSpan),
    /// A span of the SDK's tracer (discovery updates).
    Sdk(Box<SpanData>),
}

/// The way into the export thread: its queue and its control channel.
#[derive(Clone, Debug)]
pub(crate) struct ExportQueue {
    pub(crate) records: mpsc::Sender<Record>,
    control: mpsc::UnboundedSender<Control>,
    stats: Arc<ExportStats>,
}

/// The SDK's span processor: hands the SDK's finished sampled spans
/// (discovery updates) to the same queue.
#[derive(Debug)]
pub(crate) struct QueueProcessor(pub(crate) ExportQueue);

#[derive(Debug)]
enum Control {
    /// Export everything queued, then answer.
    Flush(std::sync::mpsc::SyncSender<()>),
    /// Export everything queued, answer and stop.
    Shutdown(std::sync::mpsc::SyncSender<()>),
}

// === impl ExportQueue ===

impl ExportQueue {
    /// Starts the export thread. `make` builds the sink there, inside the
    /// thread's own runtime (the gRPC channel lives on it); its error comes
    /// back from here.
    pub(crate) fn start<S, F>(
        make: F,
        resource: Resource,
        cfg: BatchConfig,
        stats: Arc<ExportStats>,
    ) -> Result<Self, String>
    where
        S: Sink + 'static,
        F: FnOnce() -> Result<S, String> + Send + 'static,
    {
        let (records, rx) = mpsc::channel(cfg.queue);
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
                    let sink = match make() {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let mut exporter = Exporter {
                        sink,
                        resource,
                        buf: BytesMut::with_capacity(64 * 1024),
                        timeout: cfg.timeout,
                        stats: &thread_stats,
                    };
                    run(&mut exporter, rx, ctrl_rx, cfg).await;
                });
            })
            .map_err(|e| format!("cannot start the export thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the export thread stopped while starting".to_owned())??;
        Ok(Self {
            records,
            control,
            stats,
        })
    }

    /// Queues a finished span without waiting; counts it and sheds when
    /// the queue is full.
    pub(crate) fn send(&self, record: Record) {
        if self.records.try_send(record).is_err() {
            self.stats.dropped.fetch_add(1, Relaxed);
            start_shedding(&self.stats);
        }
    }

    /// Exports everything queued; waits at most `timeout`.
    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), String> {
        self.ask(Control::Flush, timeout)
    }

    /// Exports everything queued and stops the thread; waits at most
    /// `timeout`.
    pub(crate) fn shutdown(&self, timeout: Duration) -> Result<(), String> {
        self.ask(Control::Shutdown, timeout)
    }

    fn ask(
        &self,
        make: fn(std::sync::mpsc::SyncSender<()>) -> Control,
        timeout: Duration,
    ) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.control
            .send(make(tx))
            .map_err(|_| "the export thread has stopped".to_owned())?;
        rx.recv_timeout(timeout)
            .map_err(|_| format!("span export did not finish within {timeout:?}"))
    }
}

// === impl QueueProcessor ===

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            self.0.send(Record::Sdk(Box::new(span)));
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0
            .flush(Duration::from_secs(10))
            .map_err(OTelSdkError::InternalFailure)
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // The queue is shared with the request path: `Telemetry::shutdown`
        // stops it once.
        Ok(())
    }

    fn set_resource(&mut self, _resource: &Resource) {
        // The export thread has the resource.
    }
}

/// The export thread's side: the sink, the resource and the reused
/// encoding buffer.
struct Exporter<'a, S> {
    sink: S,
    resource: Resource,
    buf: BytesMut,
    timeout: Duration,
    stats: &'a ExportStats,
}

impl<S: Sink> Exporter<'_, S> {
    /// Encodes and sends `batch` (cleared after); an empty one probes the
    /// collector.
    async fn send(&mut self, batch: &mut Vec<Record>) -> Result<(), String> {
        encode(&mut self.buf, &self.resource, batch);
        let body = self.buf.split().freeze();
        let n = batch.len() as u64;
        batch.clear();
        let result = match tokio::time::timeout(self.timeout, self.sink.send(body)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        match result {
            Ok(accepted) => {
                let rejected = accepted.rejected.min(n);
                self.stats.exported.fetch_add(n - rejected, Relaxed);
                if rejected > 0 || !accepted.message.is_empty() {
                    self.stats.rejected.fetch_add(rejected, Relaxed);
                    tracing::warn!(
                        rejected,
                        message = %accepted.message,
                        "the collector rejected spans"
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.stats.failed.fetch_add(n, Relaxed);
                Err(e)
            }
        }
    }

    /// Exports a batch (if any); false when that failed (the spans are
    /// counted as failed and the caller starts shedding).
    async fn export(&mut self, batch: &mut Vec<Record>) -> bool {
        if batch.is_empty() {
            return true;
        }
        match self.send(batch).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "span export failed; requests are not traced until the collector answers again"
                );
                false
            }
        }
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
async fn run<S: Sink>(
    exporter: &mut Exporter<'_, S>,
    mut spans: mpsc::Receiver<Record>,
    mut control: mpsc::UnboundedReceiver<Control>,
    cfg: BatchConfig,
) {
    let stats = exporter.stats;
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
                    if exporter.send(&mut Vec::new()).await.is_ok() {
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
                        ok = exporter.export(&mut batch).await;
                    }
                }
                ok = ok && exporter.export(&mut batch).await;
                if !ok {
                    discard(&mut spans, &mut batch, stats);
                }
                let stop = matches!(cmd, Control::Shutdown(_));
                if stop {
                    spans.close();
                }
                cmd.answer();
                if stop {
                    break;
                }
                ok
            }
            n = spans.recv_many(&mut batch, room) => {
                if n == 0 {
                    break;
                }
                batch.len() < cfg.batch || exporter.export(&mut batch).await
            }
            _ = tick.tick() => exporter.export(&mut batch).await,
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
pub(crate) fn start_shedding(stats: &ExportStats) {
    if !stats.shedding.swap(true, Relaxed) {
        stats.shed_episodes.fetch_add(1, Relaxed);
    }
}

/// Drops the spans queued and batched while export fails, counted.
fn discard(spans: &mut mpsc::Receiver<Record>, batch: &mut Vec<Record>, stats: &ExportStats) {
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use prost::Message as _;

    use super::*;
    use crate::telemetry::send::Accepted;

    fn spans_in(body: &Bytes) -> u64 {
        let req = ExportTraceServiceRequest::decode(body.clone()).expect("valid OTLP");
        req.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum()
    }

    /// A collector that never answers.
    struct Stuck;

    impl Sink for Stuck {
        async fn send(&mut self, _body: Bytes) -> Result<Accepted, String> {
            std::future::pending().await
        }
    }

    /// A collector that refuses while `down` is set, and rejects `reject`
    /// spans of each export; counts the calls (probes included) and the
    /// spans it took.
    #[derive(Debug, Clone, Default)]
    struct Flaky {
        down: Arc<AtomicBool>,
        reject: Arc<AtomicU64>,
        calls: Arc<AtomicU64>,
        got: Arc<AtomicU64>,
    }

    impl Sink for Flaky {
        async fn send(&mut self, body: Bytes) -> Result<Accepted, String> {
            self.calls.fetch_add(1, Relaxed);
            if self.down.load(Relaxed) {
                return Err("connection refused".into());
            }
            self.got.fetch_add(spans_in(&body), Relaxed);
            let rejected = self.reject.load(Relaxed);
            Ok(Accepted {
                rejected,
                message: if rejected > 0 {
                    "too big".into()
                } else {
                    String::new()
                },
            })
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

    /// The SDK's tracer (as the discovery spans use it) over the queue.
    fn provider<S: Sink + Send + 'static>(
        sink: S,
        cfg: BatchConfig,
        stats: &Arc<ExportStats>,
    ) -> (SdkTracerProvider, ExportQueue) {
        let queue = ExportQueue::start(
            move || Ok(sink),
            Resource::builder().build(),
            cfg,
            stats.clone(),
        )
        .expect("starts");
        let provider = SdkTracerProvider::builder()
            .with_span_processor(QueueProcessor(queue.clone()))
            .build();
        (provider, queue)
    }

    fn end_spans(provider: &SdkTracerProvider, n: usize) {
        let tracer = provider.tracer("test");
        for _ in 0..n {
            tracer.start("span").end();
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
    fn a_stuck_collector_costs_drops_not_waits() {
        let stats = Arc::new(ExportStats::default());
        let (provider, _queue) = provider(Stuck, cfg(4, 2), &stats);
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
        let got = Flaky::default();
        let (provider, queue) = provider(got.clone(), cfg(100, 8), &stats);
        end_spans(&provider, 20);
        provider.force_flush().expect("flushes");
        assert_eq!(got.got.load(Relaxed), 20);
        assert_eq!(got.calls.load(Relaxed), 3);
        assert_eq!(stats.exported.load(Relaxed), 20);
        assert_eq!(stats.dropped.load(Relaxed), 0);
        // A partial success counts the rejected spans apart.
        got.reject.store(2, Relaxed);
        end_spans(&provider, 5);
        provider.force_flush().expect("flushes");
        assert_eq!(stats.exported.load(Relaxed), 23);
        assert_eq!(stats.rejected.load(Relaxed), 2);
        queue.shutdown(Duration::from_secs(10)).expect("shuts down");
    }

    #[test]
    fn a_failed_export_sheds_until_a_probe_gets_through() {
        let stats = Arc::new(ExportStats::default());
        let flaky = Flaky::default();
        flaky.down.store(true, Relaxed);
        let (provider, queue) = provider(flaky.clone(), cfg(100, 8), &stats);
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
        queue.shutdown(Duration::from_secs(10)).expect("shuts down");
    }

    #[test]
    fn probes_back_off() {
        let stats = Arc::new(ExportStats::default());
        let flaky = Flaky::default();
        flaky.down.store(true, Relaxed);
        let (provider, _queue) = provider(flaky.clone(), cfg(100, 8), &stats);
        end_spans(&provider, 1);
        wait_until("the failed export", || stats.shedding.load(Relaxed));
        let started = Instant::now();
        wait_until("four probes", || flaky.calls.load(Relaxed) >= 5);
        // 250 + 500 + 1000 + 2000 ms: the pauses double (a lower bound,
        // never a measurement).
        assert!(started.elapsed() >= Duration::from_millis(3700));
    }
}
