//! The trace pipeline end to end inside the process: requests traced through
//! [`ProxyTracer`], exported by the export thread to a fake collector, and
//! the bytes decoded with the official OTLP types, attribute by attribute.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use prost::Message as _;

use super::{
    export::{BatchConfig, ExportQueue, ExportStats},
    otel::SamplerChoice,
    request::ProxyTracer,
    send::{Accepted, Framed, Sink},
};
use crate::{
    balance::{Balancer, BalancerType},
    upstream::{Endpoint, EndpointState, Health, UpstreamState},
};

/// A collector that keeps every request it got.
#[derive(Clone, Default)]
struct Keep(Arc<Mutex<Vec<Bytes>>>);

impl Sink for Keep {
    async fn send(&mut self, body: Framed) -> Result<Accepted, String> {
        self.0.lock().expect("not poisoned").push(body.message());
        Ok(Accepted::default())
    }
}

fn endpoint(i: u8, weight: u32) -> Arc<Endpoint> {
    let addr = SocketAddr::from(([10, 0, 0, i], 8080));
    Arc::new(Endpoint {
        id: format!("ep-{i}").into(),
        addr,
        weight,
        priority: 0,
        zone: "".into(),
        source: "static".into(),
        state: Arc::new(EndpointState::default()),
        authority: Endpoint::authority_of(addr),
        host: Endpoint::host_of(&Endpoint::authority_of(addr)),
    })
}

/// A collector that takes exports only while the test holds it open.
#[derive(Clone)]
struct Gate(tokio::sync::watch::Receiver<bool>);

impl Sink for Gate {
    async fn send(&mut self, _body: Framed) -> Result<Accepted, String> {
        self.0
            .wait_for(|open| *open)
            .await
            .map_err(|_| "the test ended".to_owned())?;
        Ok(Accepted::default())
    }
}

fn start(sampler: SamplerChoice) -> (ProxyTracer, ExportQueue, Keep, Arc<ExportStats>) {
    let keep = Keep::default();
    let (tracer, queue, stats) = start_with(sampler, keep.clone());
    (tracer, queue, keep, stats)
}

/// The tracer and its export queue (100 records, batches of 10) over `sink`.
fn start_with<S: Sink + Send + 'static>(
    sampler: SamplerChoice,
    sink: S,
) -> (ProxyTracer, ExportQueue, Arc<ExportStats>) {
    let stats = Arc::new(ExportStats::default());
    let cfg = BatchConfig {
        queue: 100,
        batch: 10,
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(10),
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("test-sidecar")
        .build();
    let queue = ExportQueue::start(move || Ok(sink), resource, cfg, stats.clone()).expect("starts");
    let tracer = ProxyTracer::new(sampler, queue.clone(), stats.clone());
    (tracer, queue, stats)
}

fn decode(keep: &Keep) -> (Vec<(String, String)>, Vec<Span>) {
    let mut resource = Vec::new();
    let mut spans = Vec::new();
    for body in keep.0.lock().expect("not poisoned").iter() {
        let req = ExportTraceServiceRequest::decode(body.clone()).expect("valid OTLP");
        for rs in req.resource_spans {
            for kv in rs.resource.expect("has a resource").attributes {
                resource.push((kv.key, show(kv.value.as_ref())));
            }
            for ss in rs.scope_spans {
                assert_eq!(ss.scope.expect("has a scope").name, "tributary-sidecar");
                spans.extend(ss.spans);
            }
        }
    }
    (resource, spans)
}

fn show(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| show(Some(v)))
            .collect::<Vec<_>>()
            .join("|"),
        other => format!("{other:?}"),
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| show(kv.value.as_ref()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A traced request from a local client on route `r`.
fn start_local<'a>(
    tracer: &'a ProxyTracer,
    parts: &http::request::Parts,
    upstream: &Arc<str>,
) -> super::request::RequestTrace<'a> {
    tracer
        .start_request(
            parts,
            "127.0.0.1:1".parse().expect("address"),
            &"r".into(),
            upstream,
        )
        .expect("traced")
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[test]
fn a_traced_request_exports_both_spans_with_every_attribute() {
    let (tracer, queue, keep, stats) = start(SamplerChoice::ParentOn);
    let eps = vec![endpoint(1, 1), endpoint(2, 0), endpoint(3, 1)];
    let state = Arc::new(UpstreamState {
        generation: 7,
        balancer: Balancer::build(BalancerType::RoundRobin, &eps),
        endpoints: eps,
        sources: Vec::new(),
    });
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/items?page=2")
        .header("host", "shop.example:8080")
        .header("user-agent", "unit-test")
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .header("tracestate", "vendor=abc")
        .body(())
        .expect("valid request");
    let (parts, ()) = req.into_parts();
    let client: SocketAddr = "192.0.2.9:40000".parse().expect("address");
    let upstream: Arc<str> = "web".into();
    let mut trace = tracer
        .start_request(&parts, client, &"main".into(), &upstream)
        .expect("traced");
    let mut headers = HeaderMap::new();
    let first = trace
        .start_attempt(&mut headers, None, &state, (0, false), 0, 1)
        .expect("sampled");
    let sent = headers["traceparent"].to_str().expect("ascii").to_owned();
    assert_eq!(headers["tracestate"], "vendor=abc");
    first.failed("connect", &"connection refused", true);
    let mut headers = HeaderMap::new();
    trace
        .start_attempt(&mut headers, None, &state, (2, false), 0, 2)
        .expect("sampled")
        .answered(503, false);
    let ids = trace.ids();
    trace.end(503, Some(&"upstream unavailable"));
    queue.flush(Duration::from_secs(10)).expect("flushed");

    let (resource, spans) = decode(&keep);
    assert!(resource.contains(&("service.name".into(), "test-sidecar".into())));
    assert_eq!(spans.len(), 3);
    assert_eq!(stats.exported.load(std::sync::atomic::Ordering::Relaxed), 3);
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("a server span");
    assert_eq!(hex(&server.trace_id), TRACE);
    assert_eq!(hex(&server.parent_span_id), PARENT);
    assert_eq!(hex(&server.span_id), ids.span_id.to_string());
    assert_eq!(server.trace_state, "vendor=abc");
    assert_eq!(server.name, "POST");
    assert!(server.end_time_unix_nano >= server.start_time_unix_nano);
    assert!(server.start_time_unix_nano > 1_600_000_000_000_000_000);
    for (k, v) in [
        ("http.request.method", "POST"),
        ("url.path", "/api/items"),
        ("url.query", "page=2"),
        ("url.scheme", "http"),
        ("network.protocol.version", "1.1"),
        ("network.peer.address", "192.0.2.9"),
        ("network.peer.port", "40000"),
        ("client.address", "192.0.2.9"),
        ("server.address", "shop.example"),
        ("user_agent.original", "unit-test"),
        ("tributary.route", "main"),
        ("tributary.upstream", "web"),
        ("http.response.status_code", "503"),
        ("error.type", "503"),
    ] {
        assert_eq!(attr(server, k).as_deref(), Some(v), "server {k}");
    }
    let status = server.status.as_ref().expect("error status");
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(status.message, "upstream unavailable");

    let mut clients: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    clients.sort_by_key(|s| attr(s, "tributary.attempt"));
    let [first, second] = clients[..] else {
        panic!("two client spans: {clients:?}")
    };
    assert_eq!(sent, format!("00-{TRACE}-{}-01", hex(&first.span_id)));
    for c in [first, second] {
        assert_eq!(hex(&c.trace_id), TRACE);
        assert_eq!(c.parent_span_id, server.span_id);
        assert_eq!(c.name, "POST");
    }
    for (k, v) in [
        ("http.request.method", "POST"),
        ("server.address", "10.0.0.1"),
        ("server.port", "8080"),
        ("network.peer.address", "10.0.0.1"),
        ("network.peer.port", "8080"),
        ("url.full", "http://10.0.0.1:8080/api/items?page=2"),
        ("tributary.upstream", "web"),
        ("tributary.endpoint", "10.0.0.1:8080"),
        ("tributary.endpoint.id", "ep-1"),
        ("tributary.attempt", "1"),
        ("tributary.balancer", "roundrobin"),
        ("tributary.balancer.panic", "false"),
        ("tributary.endpoint_set.generation", "7"),
        ("tributary.retried", "true"),
        ("error.type", "connect"),
        (
            "tributary.balancer.candidates",
            "10.0.0.1:8080 chosen weight=1.0000|10.0.0.3:8080 weight=1.0000",
        ),
        (
            "tributary.balancer.skipped",
            "10.0.0.2:8080 weight=0.0000: weight 0",
        ),
    ] {
        assert_eq!(attr(first, k).as_deref(), Some(v), "first attempt {k}");
    }
    assert_eq!(attr(first, "http.request.resend_count"), None);
    assert_eq!(
        first.status.as_ref().map(|s| s.message.as_str()),
        Some("connection refused")
    );
    for (k, v) in [
        ("tributary.attempt", "2"),
        ("http.request.resend_count", "1"),
        ("tributary.endpoint", "10.0.0.3:8080"),
        ("http.response.status_code", "503"),
        ("error.type", "503"),
        (
            "tributary.balancer.skipped",
            "10.0.0.1:8080 weight=1.0000: tried by an earlier attempt|10.0.0.2:8080 weight=0.0000: weight 0",
        ),
    ] {
        assert_eq!(attr(second, k).as_deref(), Some(v), "second attempt {k}");
    }
    assert_eq!(attr(second, "tributary.retried"), None);
    queue.shutdown(Duration::from_secs(10)).expect("stops");
}

#[test]
fn unsampled_requests_pass_their_context_on_and_export_nothing() {
    let (tracer, queue, keep, _) = start(SamplerChoice::ParentOn);
    let eps = vec![endpoint(1, 1)];
    let state = Arc::new(UpstreamState {
        generation: 1,
        balancer: Balancer::build(BalancerType::RoundRobin, &eps),
        endpoints: eps,
        sources: Vec::new(),
    });
    let upstream: Arc<str> = "web".into();
    let req = Request::builder()
        .uri("/")
        .header("traceparent", format!("00-{TRACE}-{PARENT}-00"))
        .body(())
        .expect("valid request");
    let (parts, ()) = req.into_parts();
    let mut trace = start_local(&tracer, &parts, &upstream);
    let mut headers = HeaderMap::new();
    let unsampled = trace
        .start_attempt(&mut headers, None, &state, (0, false), 0, 1)
        .is_none();
    assert!(unsampled);
    let tp = headers["traceparent"].to_str().expect("ascii");
    assert!(
        tp.starts_with(&format!("00-{TRACE}-")) && tp.ends_with("-00"),
        "{tp}"
    );
    assert_ne!(&tp[36..52], PARENT);
    trace.end(200, None);
    queue.flush(Duration::from_secs(10)).expect("flushed");
    assert!(decode(&keep).1.is_empty());

    // An invalid traceparent starts a new trace (sampled: parent-based
    // with no parent samples).
    let mut bad = HeaderMap::new();
    bad.insert("traceparent", HeaderValue::from_static("00-xyz"));
    let req = Request::builder().uri("/").body(()).expect("valid request");
    let (mut parts, ()) = req.into_parts();
    parts.headers = bad;
    let trace = start_local(&tracer, &parts, &upstream);
    assert_ne!(trace.ids().trace_id.to_string(), TRACE);
    trace.end(200, None);
    queue.flush(Duration::from_secs(10)).expect("flushed");
    let spans = decode(&keep).1;
    assert_eq!(spans.len(), 1);
    assert!(spans[0].parent_span_id.is_empty());
}

#[test]
fn cached_explanations_follow_health_and_new_endpoint_sets() {
    let (tracer, queue, keep, _) = start(SamplerChoice::ParentOn);
    let eps = vec![endpoint(1, 1), endpoint(2, 1)];
    let set = |generation| {
        Arc::new(UpstreamState {
            generation,
            balancer: Balancer::build(BalancerType::RoundRobin, &eps),
            endpoints: eps.clone(),
            sources: Vec::new(),
        })
    };
    let upstream: Arc<str> = "web".into();
    let (parts, ()) = Request::builder()
        .uri("/")
        .body(())
        .expect("valid request")
        .into_parts();
    // One attempt on endpoint 1 of `state`, exported on its own.
    let export = |state: &Arc<UpstreamState>| {
        let mut trace = start_local(&tracer, &parts, &upstream);
        trace
            .start_attempt(&mut HeaderMap::new(), None, state, (0, false), 0, 1)
            .expect("sampled")
            .answered(200, false);
        trace.end(200, None);
        queue.flush(Duration::from_secs(10)).expect("flushed");
        let spans = decode(&keep).1;
        keep.0.lock().expect("not poisoned").clear();
        let client = spans
            .into_iter()
            .find(|s| s.kind == SpanKind::Client as i32)
            .expect("a client span");
        let get = |k| attr(&client, k).unwrap_or_default();
        (
            get("tributary.balancer.candidates"),
            get("tributary.balancer.skipped"),
            get("tributary.endpoint_set.generation"),
        )
    };
    let first = set(1);
    let both = "10.0.0.1:8080 chosen weight=1.0000|10.0.0.2:8080 weight=1.0000";
    assert_eq!(export(&first), (both.into(), String::new(), "1".into()));
    // The same again, from the cache.
    assert_eq!(export(&first), (both.into(), String::new(), "1".into()));
    eps[1].state.set_registry_health(Health::Unhealthy);
    assert_eq!(
        export(&first),
        (
            "10.0.0.1:8080 chosen weight=1.0000".into(),
            "10.0.0.2:8080 weight=1.0000: unhealthy".into(),
            "1".into()
        )
    );
    eps[1].state.set_registry_health(Health::Healthy);
    drop(first);
    assert_eq!(export(&set(2)), (both.into(), String::new(), "2".into()));
    queue.shutdown(Duration::from_secs(10)).expect("stops");
}

#[test]
fn records_queued_while_a_batch_is_sent_keep_their_boxes_for_the_next() {
    let (open, gate) = tokio::sync::watch::channel(false);
    let (tracer, queue, stats) = start_with(SamplerChoice::ParentOn, Gate(gate));
    let parts = Request::builder()
        .uri("/")
        .body(())
        .expect("valid request")
        .into_parts()
        .0;
    let upstream: Arc<str> = "web".into();
    let traced = |n: usize| {
        for _ in 0..n {
            start_local(&tracer, &parts, &upstream).end(200, None);
        }
    };
    let boxes = &queue.boxes.server;

    // The collector holds the first batch of 10: the other 40 records
    // wait in the queue, each in a box of its own.
    traced(50);
    assert!(boxes.made() >= 40, "{} boxes", boxes.made());
    open.send_replace(true);
    queue.flush(Duration::from_secs(10)).expect("flushed");
    let made = boxes.made();

    // The same again: every record finds a box that came back.
    open.send_replace(false);
    traced(40);
    assert_eq!(
        boxes.made(),
        made,
        "records took new boxes: not all of the {made} made before were kept"
    );
    open.send_replace(true);
    queue.flush(Duration::from_secs(10)).expect("flushed");
    assert_eq!(
        stats.exported.load(std::sync::atomic::Ordering::Relaxed),
        90,
        "one span a request"
    );
    assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
}
