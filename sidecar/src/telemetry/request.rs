//! Spans of the request path: a server span per proxied request and a client
//! span per upstream attempt, with W3C trace context taken from the request
//! and given to the upstream.
//!
//! The request path only captures raw values (ids, clocks, the method, the
//! text of the URI and a few header fields, addresses, the endpoint set and
//! the pick) into one plain record per request, which holds its attempts
//! too, and hands it to the export queue with one `try_send`; attribute
//! formatting, the balancer's explanation and the OTLP encoding happen on
//! the export thread ([`super::encode`]). An unsampled request builds no
//! record but still passes its trace context on.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::SystemTime,
};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Version, request::Parts};

use super::Telemetry;
use super::{
    context::{Parent, SpanId, TraceId, TraceparentLine, parse_traceparent, traceparent},
    export::{ExportQueue, ExportStats, Record},
    otel::SamplerChoice,
    recycle::{Pooled, Recycle},
};
use crate::upstream::UpstreamState;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Most attempts whose endpoints an attempt span lists as tried before.
pub(crate) const MAX_TRIED: usize = 16;

/// Starts request and attempt spans; exists only while traces are on.
#[derive(Debug)]
pub(crate) struct ProxyTracer {
    sampler: SamplerChoice,
    queue: ExportQueue,
    export: Arc<ExportStats>,
}

/// The server span of one request, and its trace context. Dropped before
/// [`RequestTrace::end`] (the client went away), the span ends without a
/// status.
pub(crate) struct RequestTrace<'a> {
    tracer: &'a ProxyTracer,
    trace_id: TraceId,
    span_id: SpanId,
    trace_state: Option<HeaderValue>,
    /// Whether the request came with a `traceparent` (valid or not), which
    /// the upstream must not get beside the sidecar's.
    has_traceparent: bool,
    /// The record, while the span is sampled and not yet ended; boxed so
    /// that the request's future stays small when traces are off.
    span: Option<Pooled<ServerSpan>>,
}

/// The client span of one attempt (sampled requests only): the last
/// attempt in its request's record, which it ends when dropped.
pub(crate) struct AttemptTrace<'r> {
    request: &'r mut ServerSpan,
}

/// What the request's log lines carry: its trace and span ids.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TraceIds {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
}

/// The raw values of a server span.
#[derive(Debug)]
pub(crate) struct ServerSpan {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) parent: Option<SpanId>,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) method: Method,
    pub(crate) version: Version,
    /// The URI's text, `Host`, `User-Agent` and `tracestate`.
    pub(crate) head: HeadText,
    pub(crate) client: SocketAddr,
    pub(crate) route: Arc<str>,
    pub(crate) upstream: Arc<str>,
    /// The status the client got; `None` when it went away first.
    pub(crate) status: Option<u16>,
    /// Why the proxy answered with an error, for 5xx.
    pub(crate) error: Option<String>,
    /// The client spans of its attempts, in order.
    pub(crate) attempts: Attempts,
}

/// A request's attempts: the first in place (most requests make one), the
/// others, from retries, in a vector.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    first: Option<ClientSpan>,
    more: Vec<ClientSpan>,
}

/// The text of the request head that a server span reports: the path and
/// query, the URI's host, and the `Host`, `User-Agent` and `tracestate`
/// fields. Copied, not shared: the head's values are slices of the
/// connection's read buffer, and a span holding one until it is exported
/// kept that whole buffer (8 KB) alive and had the export thread free it.
/// Its buffers go from one record to the next ([`Recycle`]).
#[derive(Debug, Default)]
pub(crate) struct HeadText {
    /// The path and query, then the URI's host.
    uri: String,
    /// Where the path ends in `uri` (a query, if any, follows its `?`
    /// up to the host), and where the URI's host starts (`None`: no host).
    path_end: usize,
    uri_host: Option<usize>,
    /// The values of `Host`, `User-Agent` and `tracestate`, one after the
    /// other, with where each ends (`None`: absent).
    fields: Vec<u8>,
    ends: [Option<usize>; 3],
}

/// The header fields [`HeadText`] keeps, as indexes into its `ends`.
#[derive(Clone, Copy)]
enum Field {
    Host = 0,
    UserAgent = 1,
    TraceState = 2,
}

impl HeadText {
    /// Fills `self` (emptied, as a spare is) from a request head.
    fn fill(
        &mut self,
        uri: &http::Uri,
        host: Option<&HeaderValue>,
        user_agent: Option<&HeaderValue>,
        trace_state: Option<&HeaderValue>,
    ) {
        self.uri.push_str(uri.path());
        self.path_end = self.uri.len();
        if let Some(q) = uri.query() {
            self.uri.push('?');
            self.uri.push_str(q);
        }
        self.uri_host = uri.host().map(|h| {
            let at = self.uri.len();
            self.uri.push_str(h);
            at
        });
        // The `Host` field only matters when the URI has no host.
        let host = host.filter(|_| self.uri_host.is_none());
        for (field, value) in [
            (Field::Host, host),
            (Field::UserAgent, user_agent),
            (Field::TraceState, trace_state),
        ] {
            self.ends[field as usize] = value.map(|v| {
                self.fields.extend_from_slice(v.as_bytes());
                self.fields.len()
            });
        }
    }

    /// The path and query, as the request line had them (origin form;
    /// `/` for none).
    pub(crate) fn path_and_query(&self) -> &str {
        match &self.uri[..self.path_and_query_end()] {
            "" => "/",
            pq => pq,
        }
    }

    pub(crate) fn path(&self) -> &str {
        &self.uri[..self.path_end]
    }

    pub(crate) fn query(&self) -> Option<&str> {
        let end = self.path_and_query_end();
        (end > self.path_end).then(|| &self.uri[self.path_end + 1..end])
    }

    /// Where the path and query end in `uri`: at the host, if any.
    fn path_and_query_end(&self) -> usize {
        self.uri_host.unwrap_or(self.uri.len())
    }

    /// The URI's host (absolute-form and HTTP/2 requests).
    pub(crate) fn uri_host(&self) -> Option<&str> {
        self.uri_host.map(|at| &self.uri[at..])
    }

    /// The `Host` field, when the URI has no host.
    pub(crate) fn host(&self) -> Option<&[u8]> {
        self.field(Field::Host)
    }

    pub(crate) fn user_agent(&self) -> Option<&[u8]> {
        self.field(Field::UserAgent)
    }

    /// The `tracestate` the span continues (only with a valid parent).
    pub(crate) fn trace_state(&self) -> Option<&[u8]> {
        self.field(Field::TraceState)
    }

    fn field(&self, field: Field) -> Option<&[u8]> {
        let i = field as usize;
        let end = self.ends[i]?;
        // The fields are stored in order: this one starts where the last
        // present one before it ends.
        let start = self.ends[..i].iter().rev().find_map(|e| *e).unwrap_or(0);
        Some(&self.fields[start..end])
    }

    /// Empties it, keeping its buffers.
    fn clear(&mut self) {
        self.uri.clear();
        self.fields.clear();
        self.path_end = 0;
        self.uri_host = None;
        self.ends = [None; 3];
    }
}

impl Recycle for ServerSpan {
    type Spare = HeadText;

    fn spare(&mut self) -> HeadText {
        let mut head = std::mem::take(&mut self.head);
        head.clear();
        head
    }
}

/// The raw values of a client span: the endpoint set the pick used and the
/// pick, from which the export thread formats the explanation. Its trace,
/// parent, trace state, method, path and upstream are its request's; the
/// endpoints tried before it are those its request's earlier attempts
/// chose.
pub(crate) struct ClientSpan {
    pub(crate) span_id: SpanId,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) state: Arc<UpstreamState>,
    pub(crate) chosen: usize,
    pub(crate) panic: bool,
    pub(crate) hash: u64,
    /// The balancer's scores of every endpoint at the pick, where it has
    /// live ones (`ewma`, `least_conn`).
    pub(crate) scores: Option<Box<[f64]>>,
    pub(crate) attempt: usize,
    pub(crate) outcome: AttemptOutcome,
}

/// How an attempt ended.
#[derive(Debug)]
pub(crate) enum AttemptOutcome {
    /// Dropped before it ended (the request was cancelled).
    Unfinished,
    Answered {
        status: u16,
        retried: bool,
    },
    Failed {
        kind: &'static str,
        message: String,
        retried: bool,
    },
}

impl std::fmt::Debug for ClientSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSpan")
            .field("span_id", &self.span_id)
            .field("chosen", &self.chosen)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Attempts {
    fn push(&mut self, attempt: ClientSpan) {
        if self.first.is_none() {
            self.first = Some(attempt);
        } else {
            self.more.push(attempt);
        }
    }

    fn last_mut(&mut self) -> Option<&mut ClientSpan> {
        self.more.last_mut().or(self.first.as_mut())
    }

    /// The attempts, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &ClientSpan> {
        self.first.iter().chain(&self.more)
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }
}

/// The fields a server span reads from the request head.
#[derive(Default)]
struct Fields<'a> {
    traceparent: Option<&'a HeaderValue>,
    tracestate: Option<&'a HeaderValue>,
    host: Option<&'a HeaderValue>,
    user_agent: Option<&'a HeaderValue>,
}

impl<'a> Fields<'a> {
    /// The first value of each, found in one pass over the head (a head
    /// has few fields; four map lookups hash four names).
    fn of(headers: &'a HeaderMap) -> Self {
        let mut f = Self::default();
        for (name, value) in headers {
            let slot = if name == http::header::HOST {
                &mut f.host
            } else if name == http::header::USER_AGENT {
                &mut f.user_agent
            } else if name == TRACEPARENT {
                &mut f.traceparent
            } else if name == TRACESTATE {
                &mut f.tracestate
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        f
    }
}

// === impl ProxyTracer ===

impl ProxyTracer {
    pub(crate) fn new(
        sampler: SamplerChoice,
        queue: ExportQueue,
        export: Arc<ExportStats>,
    ) -> Self {
        Self {
            sampler,
            queue,
            export,
        }
    }

    /// Starts the server span of a request, as a child of its valid
    /// `traceparent`; `None` while the exporter sheds load (the request's
    /// own trace context then passes through untouched).
    pub(crate) fn start_request(
        &self,
        parts: &Parts,
        client: SocketAddr,
        route: &Arc<str>,
        upstream: &Arc<str>,
    ) -> Option<RequestTrace<'_>> {
        if self.export.shedding.load(Relaxed) {
            self.export.untraced.fetch_add(1, Relaxed);
            return None;
        }
        let fields = Fields::of(&parts.headers);
        let incoming = fields.traceparent;
        let parent: Option<Parent> = incoming.and_then(|v| parse_traceparent(v.as_bytes()));
        let trace_id = parent.map_or_else(TraceId::random, |p| p.trace_id);
        let span_id = SpanId::random();
        let trace_state = parent.and(fields.tracestate).cloned();
        let span = self.sampler.sample(parent.as_ref(), trace_id).then(|| {
            self.queue.boxes.server.fill(|mut head| {
                head.fill(
                    &parts.uri,
                    fields.host,
                    fields.user_agent,
                    trace_state.as_ref(),
                );
                ServerSpan {
                    trace_id,
                    span_id,
                    parent: parent.map(|p| p.span_id),
                    start: SystemTime::now(),
                    end: SystemTime::UNIX_EPOCH,
                    method: parts.method.clone(),
                    version: parts.version,
                    head,
                    client,
                    route: route.clone(),
                    upstream: upstream.clone(),
                    status: None,
                    error: None,
                    attempts: Attempts::default(),
                }
            })
        });
        Some(RequestTrace {
            tracer: self,
            trace_id,
            span_id,
            trace_state,
            has_traceparent: incoming.is_some(),
            span,
        })
    }

    /// Queues a finished span; counts it and sheds when the queue is full.
    fn send(&self, record: Record) {
        self.queue.send(record);
    }
}

// === impl RequestTrace ===

impl<'a> RequestTrace<'a> {
    /// The ids for log lines.
    pub(crate) fn ids(&self) -> TraceIds {
        TraceIds {
            trace_id: self.trace_id,
            span_id: self.span_id,
        }
    }

    /// Starts the client span of attempt `attempt` (1 for the first) on
    /// `state.endpoints[pick.0]` and writes its trace context into
    /// `headers`, or its `traceparent` into `line` when given (a request
    /// head the sidecar writes itself). An unsampled request passes the
    /// server span's context on, flagged unsampled.
    pub(crate) fn start_attempt(
        &mut self,
        headers: &mut HeaderMap,
        line: Option<&mut Option<TraceparentLine>>,
        state: &Arc<UpstreamState>,
        pick: (usize, bool),
        hash: u64,
        attempt: usize,
    ) -> Option<AttemptTrace<'_>> {
        let sampled = self.span.is_some();
        let span_id = if sampled {
            SpanId::random()
        } else {
            self.span_id
        };
        match line {
            Some(line) => {
                if self.has_traceparent {
                    headers.remove(&TRACEPARENT);
                }
                *line = Some(TraceparentLine::new(self.trace_id, span_id, sampled));
            }
            None => {
                headers.insert(&TRACEPARENT, traceparent(self.trace_id, span_id, sampled));
            }
        }
        if let Some(ts) = &self.trace_state {
            headers.insert(&TRACESTATE, ts.clone());
        }
        let request = &mut **self.span.as_mut()?;
        request.attempts.push(ClientSpan {
            span_id,
            start: SystemTime::now(),
            end: SystemTime::UNIX_EPOCH,
            state: state.clone(),
            chosen: pick.0,
            panic: pick.1,
            hash,
            scores: state.balancer.scores(&state.endpoints),
            attempt,
            outcome: AttemptOutcome::Unfinished,
        });
        Some(AttemptTrace { request })
    }

    /// Gives the server span the response status and error.
    fn set_status(&mut self, status: u16, error: Option<&dyn std::fmt::Display>) {
        if let Some(span) = &mut self.span {
            span.status = Some(status);
            if status >= 500 {
                span.error = Some(error.map(|e| e.to_string()).unwrap_or_default());
            }
        }
    }

    /// Ends the server span now, with the response status.
    #[cfg(test)]
    pub(crate) fn end(mut self, status: u16, error: Option<&dyn std::fmt::Display>) {
        self.set_status(status, error);
    }

    /// Gives the server span the response status; it ends when the
    /// returned [`PendingSpan`] is dropped (with the response body), or
    /// now when the request is not sampled.
    pub(crate) fn end_with_body(
        mut self,
        status: u16,
        error: Option<&dyn std::fmt::Display>,
        telemetry: &Arc<Telemetry>,
    ) -> Option<PendingSpan> {
        self.set_status(status, error);
        Some(PendingSpan {
            span: Some(self.span.take()?),
            telemetry: telemetry.clone(),
        })
    }
}

/// A server span waiting for its response body to end: queued for export
/// when dropped, so that its duration covers the whole exchange.
pub(crate) struct PendingSpan {
    span: Option<Pooled<ServerSpan>>,
    telemetry: Arc<Telemetry>,
}

impl PendingSpan {
    /// Marks the span failed: the response body broke off with `error`.
    pub(crate) fn body_failed(&mut self, error: &dyn std::fmt::Display) {
        if let Some(span) = &mut self.span {
            span.error = Some(format!("response body: {error}"));
        }
    }
}

impl Drop for PendingSpan {
    fn drop(&mut self) {
        if let (Some(mut span), Some(tracer)) = (self.span.take(), self.telemetry.tracer()) {
            span.end = SystemTime::now();
            tracer.send(Record::Server(span));
        }
    }
}

impl Drop for RequestTrace<'_> {
    fn drop(&mut self) {
        if let Some(mut span) = self.span.take() {
            span.end = SystemTime::now();
            self.tracer.send(Record::Server(span));
        }
    }
}

// === impl AttemptTrace ===

impl AttemptTrace<'_> {
    /// Ends the attempt with the upstream's status.
    pub(crate) fn answered(self, status: u16, retried: bool) {
        if let Some(span) = self.request.attempts.last_mut() {
            span.outcome = AttemptOutcome::Answered { status, retried };
        }
    }

    /// Ends the attempt that got no response.
    pub(crate) fn failed(self, kind: &'static str, error: &dyn std::fmt::Display, retried: bool) {
        if let Some(span) = self.request.attempts.last_mut() {
            span.outcome = AttemptOutcome::Failed {
                kind,
                message: error.to_string(),
                retried,
            };
        }
    }
}

impl Drop for AttemptTrace<'_> {
    fn drop(&mut self) {
        if let Some(span) = self.request.attempts.last_mut() {
            span.end = SystemTime::now();
        }
    }
}

/// The trace id of a valid `traceparent` header, for access log lines when
/// traces are off.
pub(crate) fn traceparent_trace_id(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(&TRACEPARENT)?;
    parse_traceparent(v.as_bytes())?;
    v.to_str().ok()?.get(3..35)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_finds_the_first_value_of_each_field() {
        let mut h = HeaderMap::new();
        h.insert("accept", HeaderValue::from_static("*/*"));
        assert!(Fields::of(&h).host.is_none());
        h.append(&TRACEPARENT, HeaderValue::from_static("first"));
        h.append(&TRACEPARENT, HeaderValue::from_static("second"));
        h.insert(http::header::HOST, HeaderValue::from_static("example.test"));
        h.insert(http::header::USER_AGENT, HeaderValue::from_static("curl"));
        h.insert(&TRACESTATE, HeaderValue::from_static("k=v"));
        let f = Fields::of(&h);
        assert_eq!(
            f.traceparent.map(HeaderValue::as_bytes),
            Some(&b"first"[..])
        );
        assert_eq!(f.tracestate.map(HeaderValue::as_bytes), Some(&b"k=v"[..]));
        assert_eq!(
            f.host.map(HeaderValue::as_bytes),
            Some(&b"example.test"[..])
        );
        assert_eq!(f.user_agent.map(HeaderValue::as_bytes), Some(&b"curl"[..]));
    }

    #[test]
    fn head_text_keeps_the_uri_and_fields_it_copied() {
        let v = HeaderValue::from_static;
        let mut head = HeadText::default();
        let uri: http::Uri = "/api/items?page=2&q=x".parse().expect("valid URI");
        head.fill(&uri, Some(&v("example.test:8080")), None, Some(&v("k=v")));
        assert_eq!(head.path_and_query(), "/api/items?page=2&q=x");
        assert_eq!(head.path(), "/api/items");
        assert_eq!(head.query(), Some("page=2&q=x"));
        assert_eq!(head.uri_host(), None);
        assert_eq!(head.host(), Some(&b"example.test:8080"[..]));
        assert_eq!(head.user_agent(), None, "absent between two present");
        assert_eq!(head.trace_state(), Some(&b"k=v"[..]));

        // Emptied as a spare, then filled by the next request: nothing of
        // the first is left.
        let mut span_head = head;
        span_head.clear();
        let uri: http::Uri = "http://upstream.test/x".parse().expect("valid URI");
        span_head.fill(&uri, Some(&v("ignored.test")), Some(&v("curl/8")), None);
        assert_eq!(span_head.path_and_query(), "/x");
        assert_eq!(span_head.path(), "/x");
        assert_eq!(span_head.query(), None);
        assert_eq!(span_head.uri_host(), Some("upstream.test"));
        assert_eq!(span_head.host(), None, "the URI's host wins");
        assert_eq!(span_head.user_agent(), Some(&b"curl/8"[..]));
        assert_eq!(span_head.trace_state(), None);

        span_head.clear();
        let uri: http::Uri = "upstream.test:443".parse().expect("authority form");
        span_head.fill(&uri, None, None, None);
        assert_eq!(span_head.path_and_query(), "/", "no path is the root");
        assert_eq!(span_head.query(), None);
    }

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
}
