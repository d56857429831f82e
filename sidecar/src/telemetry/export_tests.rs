//! Tests of the export thread: batching, flushing, partial success, drops
//! when the collector is stuck, and shedding with probes when it fails.

use std::time::Instant;

use bytes::Bytes;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message as _;

use super::*;
use crate::telemetry::send::{Accepted, Framed};

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
    async fn send(&mut self, _body: Framed) -> Result<Accepted, String> {
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
    async fn send(&mut self, body: Framed) -> Result<Accepted, String> {
        self.calls.fetch_add(1, Relaxed);
        if self.down.load(Relaxed) {
            return Err("connection refused".into());
        }
        self.got.fetch_add(spans_in(&body.message()), Relaxed);
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

#[test]
fn span_limits_count_a_request_record_as_two_spans() {
    let c = cfg(2048, 512).in_records();
    assert_eq!((c.queue, c.batch), (1024, 256));
    let c = cfg(1, 1).in_records();
    assert_eq!((c.queue, c.batch), (1, 1), "never zero");
}
