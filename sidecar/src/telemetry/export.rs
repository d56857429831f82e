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

use bytes::{BufMut, BytesMut};
use opentelemetry::Context;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{Span, SpanData, SpanProcessor},
};
use tokio::sync::{Notify, mpsc};

use super::{
    encode::Encoder,
    recycle::{Pooled, Recycler},
    request::ServerSpan,
    send::{Framed, GRPC_PREFIX, Sink},
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
    /// Most records queued.
    pub(crate) queue: usize,
    /// Most records in one export.
    pub(crate) batch: usize,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

impl BatchConfig {
    /// The queue and batch sizes, given in spans, counted in records: a
    /// request's record holds its server span and its attempts' spans, two
    /// for most requests (more with retries; a discovery update's span is a
    /// record of its own).
    pub(crate) fn in_records(self) -> Self {
        Self {
            queue: (self.queue / 2).max(1),
            batch: (self.batch / 2).max(1),
            ..self
        }
    }
}

/// Finished spans waiting for export.
#[derive(Debug)]
pub(crate) enum Record {
    /// A request's server span with the client spans of its attempts.
    Server(Pooled<ServerSpan>),
    /// A span of the SDK's tracer (discovery updates).
    Sdk(Box<SpanData>),
}

impl Record {
    /// How many spans it holds.
    fn spans(&self) -> u64 {
        match self {
            Self::Server(s) => 1 + s.attempts.len() as u64,
            Self::Sdk(_) => 1,
        }
    }
}

/// The boxes of exported request records, for new ones.
#[derive(Debug)]
pub(crate) struct Boxes {
    pub(crate) server: Recycler<ServerSpan>,
}

impl Boxes {
    /// Drops `record` and keeps its box.
    fn recycle(&self, record: Record) {
        match record {
            Record::Server(s) => self.server.recycle(s),
            Record::Sdk(_) => {}
        }
    }
}

/// How many spans `records` hold.
fn span_count(records: &[Record]) -> u64 {
    records.iter().map(Record::spans).sum()
}

/// The way into the export thread: its queue and its control channel.
#[derive(Clone, Debug)]
pub(crate) struct ExportQueue {
    records: mpsc::Sender<Record>,
    /// Wakes the export thread once a batch is queued: it is not woken for
    /// each span (its timer collects what is left).
    full: Arc<Notify>,
    /// Records in a batch.
    batch: usize,
    control: mpsc::UnboundedSender<Control>,
    stats: Arc<ExportStats>,
    /// Where request and attempt records get their boxes.
    pub(crate) boxes: Arc<Boxes>,
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
        let full = Arc::new(Notify::new());
        let thread_full = full.clone();
        let (control, ctrl_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread_stats = stats.clone();
        // Room for every record that can be out at once: the queue's and
        // the batch being exported. With room for one batch only, the
        // records queued while a batch was encoded took new boxes on the
        // request path, and as many were freed here when the batch came
        // back (a box for 1 request in 13 under load).
        let boxes = Arc::new(Boxes {
            server: Recycler::new(cfg.queue + cfg.batch),
        });
        let thread_boxes = boxes.clone();
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
                        encoder: Encoder::default(),
                        timeout: cfg.timeout,
                        stats: &thread_stats,
                        boxes: &thread_boxes,
                    };
                    run(&mut exporter, rx, &thread_full, ctrl_rx, cfg).await;
                });
            })
            .map_err(|e| format!("cannot start the export thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the export thread stopped while starting".to_owned())??;
        Ok(Self {
            records,
            full,
            batch: cfg.batch.max(1),
            control,
            stats,
            boxes,
        })
    }

    /// Queues a finished span without waiting; counts it and sheds when
    /// the queue is full.
    pub(crate) fn send(&self, record: Record) {
        if let Err(e) = self.records.try_send(record) {
            self.stats
                .dropped
                .fetch_add(e.into_inner().spans(), Relaxed);
            start_shedding(&self.stats);
        } else if self.records.max_capacity() - self.records.capacity() >= self.batch {
            self.full.notify_one();
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
    encoder: Encoder,
    timeout: Duration,
    stats: &'a ExportStats,
    boxes: &'a Boxes,
}

impl<S: Sink> Exporter<'_, S> {
    /// Encodes and sends `batch` (cleared after); an empty one probes the
    /// collector.
    async fn send(&mut self, batch: &mut Vec<Record>) -> Result<(), String> {
        self.buf.clear();
        self.buf.put_bytes(0, GRPC_PREFIX);
        self.encoder.encode(&mut self.buf, &self.resource, batch);
        let body = Framed::new(self.buf.split());
        let n = span_count(batch);
        for r in batch.drain(..) {
            self.boxes.recycle(r);
        }
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

    /// Exports the queued spans in full batches, and with `all` the rest
    /// too; false when an export failed.
    async fn drain(
        &mut self,
        spans: &mut mpsc::Receiver<Record>,
        batch: &mut Vec<Record>,
        size: usize,
        all: bool,
    ) -> bool {
        loop {
            // What is queued, taken at once: `recv_many` gives its permits
            // back to the senders in one release, `try_recv` one by one
            // (each a lock of the semaphore's waiter list). It waits only
            // when the queue is empty, which `len` rules out.
            let ready = spans.len().min(size.saturating_sub(batch.len()));
            if ready > 0 {
                spans.recv_many(batch, ready).await;
            }
            if batch.len() < size {
                return !all || self.export(batch).await;
            }
            if !self.export(batch).await {
                return false;
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
    full: &Notify,
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
            () = full.notified() => exporter.drain(&mut spans, &mut batch, cfg.batch, false).await,
            _ = tick.tick() => exporter.drain(&mut spans, &mut batch, cfg.batch, true).await,
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
    stats.dropped.fetch_add(span_count(batch), Relaxed);
    batch.clear();
}

impl Control {
    fn answer(self) {
        let (Self::Flush(reply) | Self::Shutdown(reply)) = self;
        let _ = reply.send(());
    }
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
