//! Spans of the request path: a server span per proxied request and a client
//! span per upstream attempt, with the OpenTelemetry HTTP semantic
//! conventions, W3C trace context taken from the request and given to the
//! upstream, and the balancer's explanation of each choice.
//!
//! Only built when traces are on ([`ProxyTracer`] exists); attributes are
//! formatted only when the span records (the request is sampled). An
//! unsampled request still passes its trace context on.

use std::{borrow::Cow, net::SocketAddr, sync::Arc};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Version, request::Parts};
use opentelemetry::{
    Array, Context, KeyValue, StringValue, Value,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanKind, Status, TraceContextExt, Tracer as _},
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracer};

use super::ExportStats;
use crate::{
    balance::{Explained, PickCtx},
    upstream::{Endpoint, Upstream, UpstreamState},
};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Most endpoints listed in an attempt span's balancing attributes.
const MAX_EXPLAINED: usize = 32;

/// Starts request and attempt spans; exists only while traces are on.
#[derive(Debug)]
pub(crate) struct ProxyTracer {
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    export: Arc<ExportStats>,
}

/// The server span of one request, and its trace context.
pub(crate) struct RequestTrace<'a> {
    tracer: &'a ProxyTracer,
    cx: Context,
}

/// The client span of one attempt.
pub(crate) struct AttemptTrace {
    cx: Context,
}

/// What the request's log lines carry: its trace and span ids.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TraceIds {
    pub(crate) trace_id: opentelemetry::trace::TraceId,
    pub(crate) span_id: opentelemetry::trace::SpanId,
}

struct HeaderExtractor<'a>(&'a HeaderMap);
struct HeaderInjector<'a>(&'a mut HeaderMap);

// === impl ProxyTracer ===

impl ProxyTracer {
    pub(crate) fn new(tracer: SdkTracer, export: Arc<ExportStats>) -> Self {
        Self {
            tracer,
            propagator: TraceContextPropagator::new(),
            export,
        }
    }

    /// Starts the server span of a request, as a child of its `traceparent`;
    /// `None` while the export queue sheds load (the request's own trace
    /// context then passes through untouched).
    pub(crate) fn start_request(
        &self,
        parts: &Parts,
        client: SocketAddr,
        route: &str,
        upstream: &str,
    ) -> Option<RequestTrace<'_>> {
        if self
            .export
            .shedding
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.export
                .untraced
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        let parent = if parts.headers.contains_key(&TRACEPARENT) {
            self.propagator.extract(&HeaderExtractor(&parts.headers))
        } else {
            Context::new()
        };
        let mut span = self
            .tracer
            .span_builder(span_name(&parts.method))
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        use opentelemetry::trace::Span as _;
        if span.is_recording() {
            let host = crate::proxy::request_host(parts);
            let ip = client.ip().to_string();
            let mut attrs = vec![
                KeyValue::new("http.request.method", method_value(&parts.method)),
                KeyValue::new("url.path", parts.uri.path().to_owned()),
                KeyValue::new("url.scheme", "http"),
                KeyValue::new("network.protocol.version", protocol_version(parts.version)),
                KeyValue::new("network.peer.address", ip.clone()),
                KeyValue::new("network.peer.port", i64::from(client.port())),
                KeyValue::new("client.address", ip),
                KeyValue::new("tributary.route", route.to_owned()),
                KeyValue::new("tributary.upstream", upstream.to_owned()),
            ];
            if let Some(q) = parts.uri.query() {
                attrs.push(KeyValue::new("url.query", q.to_owned()));
            }
            if let Some(h) = host {
                attrs.push(KeyValue::new("server.address", h.to_owned()));
            }
            if let Some(ua) = parts
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
            {
                attrs.push(KeyValue::new("user_agent.original", ua.to_owned()));
            }
            span.set_attributes(attrs);
        }
        Some(RequestTrace {
            tracer: self,
            cx: parent.with_span(span),
        })
    }
}

// === impl RequestTrace ===

impl RequestTrace<'_> {
    /// The ids for log lines.
    pub(crate) fn ids(&self) -> TraceIds {
        let span = self.cx.span();
        let sc = span.span_context();
        TraceIds {
            trace_id: sc.trace_id(),
            span_id: sc.span_id(),
        }
    }

    /// Starts the client span of attempt `attempt` (1 for the first) on
    /// `state.endpoints[index]` and writes its trace context into `headers`.
    /// An unsampled request passes the server span's context on unchanged.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_attempt(
        &self,
        headers: &mut HeaderMap,
        method: &Method,
        path: &str,
        upstream: &Upstream,
        state: &UpstreamState,
        pick: (usize, bool),
        ctx: &PickCtx<'_>,
        attempt: usize,
    ) -> Option<AttemptTrace> {
        if !self.cx.span().is_recording() {
            self.tracer
                .propagator
                .inject_context(&self.cx, &mut HeaderInjector(headers));
            return None;
        }
        let endpoint: &Endpoint = &state.endpoints[pick.0];
        let tracer = &self.tracer.tracer;
        let mut span = tracer
            .span_builder(span_name(method))
            .with_kind(SpanKind::Client)
            .start_with_context(tracer, &self.cx);
        use opentelemetry::trace::Span as _;
        let ip = endpoint.addr.ip().to_string();
        let mut attrs = vec![
            KeyValue::new("http.request.method", method_value(method)),
            KeyValue::new("server.address", ip.clone()),
            KeyValue::new("server.port", i64::from(endpoint.addr.port())),
            KeyValue::new("network.peer.address", ip),
            KeyValue::new("network.peer.port", i64::from(endpoint.addr.port())),
            KeyValue::new(
                "url.full",
                format!("http://{}{}", endpoint.authority.as_str(), path),
            ),
            KeyValue::new("tributary.upstream", upstream.name.to_string()),
            KeyValue::new("tributary.endpoint", endpoint.addr.to_string()),
            KeyValue::new("tributary.endpoint.id", endpoint.id.to_string()),
            KeyValue::new("tributary.attempt", attempt as i64),
            KeyValue::new("tributary.balancer", state.balancer.kind().as_str()),
            KeyValue::new("tributary.balancer.panic", pick.1),
            KeyValue::new("tributary.endpoint_set.generation", state.generation as i64),
        ];
        if attempt > 1 {
            attrs.push(KeyValue::new(
                "http.request.resend_count",
                (attempt - 1) as i64,
            ));
        }
        if !state.sources.is_empty() {
            let versions: Vec<StringValue> = state
                .sources
                .iter()
                .map(|s| format!("{}@{}", s.name, s.version).into())
                .collect();
            attrs.push(KeyValue::new(
                "tributary.discovery.versions",
                Value::Array(Array::String(versions)),
            ));
        }
        explain(&mut attrs, state, pick.0, ctx);
        span.set_attributes(attrs);
        let cx = self.cx.with_span(span);
        self.tracer
            .propagator
            .inject_context(&cx, &mut HeaderInjector(headers));
        Some(AttemptTrace { cx })
    }

    /// Ends the server span with the response status.
    pub(crate) fn end(self, status: u16, error: Option<&dyn std::fmt::Display>) {
        let span = self.cx.span();
        if span.is_recording() {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                span.set_attribute(KeyValue::new("error.type", status.to_string()));
                span.set_status(Status::error(
                    error.map(|e| e.to_string()).unwrap_or_default(),
                ));
            }
        }
        span.end();
    }
}

// === impl AttemptTrace ===

impl AttemptTrace {
    /// Ends the attempt with the upstream's status.
    pub(crate) fn answered(self, status: u16, retried: bool) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if retried {
            span.set_attribute(KeyValue::new("tributary.retried", true));
        }
        if status >= 500 {
            span.set_attribute(KeyValue::new("error.type", status.to_string()));
            span.set_status(Status::error(""));
        }
        span.end();
    }

    /// Ends the attempt that got no response.
    pub(crate) fn failed(self, kind: &'static str, error: &dyn std::fmt::Display, retried: bool) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("error.type", kind));
        if retried {
            span.set_attribute(KeyValue::new("tributary.retried", true));
        }
        span.set_status(Status::error(error.to_string()));
        span.end();
    }
}

/// Adds why the balancer chose `chosen`: the candidates with their scores
/// and the endpoints it skipped with the reason.
fn explain(attrs: &mut Vec<KeyValue>, state: &UpstreamState, chosen: usize, ctx: &PickCtx<'_>) {
    let mut candidates: Vec<StringValue> = Vec::new();
    let mut skipped: Vec<StringValue> = Vec::new();
    let mut more = 0;
    state
        .balancer
        .explain(&state.endpoints, ctx, chosen, |e: Explained<'_>| {
            let list = if e.skipped.is_some() {
                &mut skipped
            } else {
                &mut candidates
            };
            if list.len() >= MAX_EXPLAINED {
                more += 1;
                return;
            }
            let mut s = e.endpoint.addr.to_string();
            if e.chosen {
                s.push_str(" chosen");
            }
            if let Some(score) = e.score {
                s.push_str(&format!(" {}={score:.4}", e.score_name));
            }
            if let Some(why) = e.skipped {
                s.push_str(": ");
                s.push_str(why);
            }
            list.push(s.into());
        });
    if ctx.hash != 0 {
        attrs.push(KeyValue::new("tributary.balancer.hash", ctx.hash as i64));
    }
    attrs.push(KeyValue::new(
        "tributary.balancer.candidates",
        Value::Array(Array::String(candidates)),
    ));
    attrs.push(KeyValue::new(
        "tributary.balancer.skipped",
        Value::Array(Array::String(skipped)),
    ));
    if more > 0 {
        attrs.push(KeyValue::new("tributary.balancer.unlisted", more as i64));
    }
}

/// The span name: the method (semantic conventions: `HTTP` for others).
fn span_name(m: &Method) -> Cow<'static, str> {
    Cow::Borrowed(match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "HTTP",
    })
}

/// `http.request.method`: known methods as they are, others `_OTHER`.
fn method_value(m: &Method) -> &'static str {
    match span_name(m) {
        Cow::Borrowed("HTTP") => "_OTHER",
        Cow::Borrowed(s) => s,
        Cow::Owned(_) => "_OTHER",
    }
}

fn protocol_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

// === impl HeaderExtractor / HeaderInjector ===

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The trace id of a `traceparent` header, for access log lines when traces
/// are off: `00-<32 hex>-<16 hex>-<2 hex>`.
pub(crate) fn traceparent_trace_id(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(&TRACEPARENT)?.to_str().ok()?;
    let id = v.get(3..35)?;
    (v.len() >= 55 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_from_traceparent() {
        let mut h = HeaderMap::new();
        assert_eq!(traceparent_trace_id(&h), None);
        h.insert(
            &TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(
            traceparent_trace_id(&h),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        h.insert(&TRACEPARENT, HeaderValue::from_static("00-zz"));
        assert_eq!(traceparent_trace_id(&h), None);
    }

    #[test]
    fn methods_follow_the_conventions() {
        assert_eq!(span_name(&Method::GET), "GET");
        let odd = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(
            (span_name(&odd).as_ref(), method_value(&odd)),
            ("HTTP", "_OTHER")
        );
    }
}
