//! The OTLP encoding of a batch, on the export thread: one
//! `ExportTraceServiceRequest` (one resource, one scope) written into a
//! reused buffer. Request and attempt records get their attributes here,
//! with the balancer's explanation; spans of the SDK (discovery updates)
//! are converted field by field.
//!
//! What an attempt span says of its endpoint (addresses, ids, the endpoint
//! set's generation and sources) and, for a plain pick, the balancer's
//! explanation are the same for every request to that endpoint: they are
//! encoded once per endpoint set and endpoint and copied after that, until
//! the set is replaced or an endpoint's health changes.

use std::{collections::HashMap, fmt::Write as _, net::IpAddr, sync::Arc, time::SystemTime};

use bytes::BytesMut;
use http::{Method, Version};
use opentelemetry::{Array, Value, trace::Status};
use opentelemetry_sdk::{Resource, trace::SpanData};

use super::{
    export::Record,
    pb::Writer,
    request::{AttemptOutcome, ClientSpan, MAX_TRIED, ServerSpan},
    text::Text,
};
use crate::{
    balance::{Explained, PickCtx},
    upstream::{Health, UpstreamState},
};

/// The caches' hasher: their keys are addresses of our own values, so
/// there is no untrusted input to defend against.
type Fast = foldhash::fast::RandomState;

/// The instrumentation scope of every span.
pub(crate) const SCOPE: &str = "tributary-sidecar";

/// Most endpoints listed in each of an attempt span's balancing lists.
const MAX_EXPLAINED: usize = 32;

/// OTLP span kinds.
const SERVER: u64 = 2;
const CLIENT: u64 = 3;

/// Span flags: W3C sampled, and whether the parent is remote is known / true.
const SAMPLED: u32 = 0x01;
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// Encodes batches, keeping what repeats from one to the next.
#[derive(Default)]
pub(crate) struct Encoder {
    /// Encoded attributes per endpoint set, keyed by the set's address.
    sets: HashMap<usize, SetBlocks, Fast>,
    /// Encoded route attributes per route and upstream name, keyed by
    /// their addresses.
    routes: HashMap<(usize, usize), RouteBlock, Fast>,
    /// The address attributes of the last client seen.
    client: Option<(IpAddr, Box<[u8]>)>,
    /// The server span attributes most requests share, for the last
    /// combination seen.
    request_common: Option<RequestCommon>,
    /// The attempt span attributes most attempts share, likewise.
    attempt_common: Option<AttemptCommon>,
    /// Counts batches, so that health is checked once per batch.
    batch: u64,
}

/// The attributes a server span has from its route.
struct RouteBlock {
    /// Held so that the addresses keying this entry stay these names'.
    names: (Arc<str>, Arc<str>),
    block: Box<[u8]>,
}

/// A server span's method, protocol, host, user agent and status, and
/// their encoded attributes.
struct RequestCommon {
    method: Method,
    version: Version,
    /// The URI's host, and the `Host` and `User-Agent` fields as they came
    /// (compared before they are validated).
    uri_host: Option<Box<str>>,
    host: Option<Box<[u8]>>,
    user_agent: Option<Box<[u8]>>,
    status: Option<u16>,
    block: Box<[u8]>,
}

/// An attempt span's method, attempt number, balancer panic and answer,
/// and their encoded attributes.
struct AttemptCommon {
    method: Method,
    attempt: usize,
    panic: bool,
    /// The status and whether the attempt was retried, when it was
    /// answered.
    answer: Option<(u16, bool)>,
    block: Box<[u8]>,
}

/// The attribute blocks of one endpoint set, per endpoint index.
struct SetBlocks {
    /// Held so that the address keying this entry stays this set's.
    state: Arc<UpstreamState>,
    /// Each endpoint's health when the explanations were made.
    health: Vec<Health>,
    /// The batch that last compared `health`.
    checked: u64,
    /// The endpoint's own attributes.
    endpoint: Vec<Option<Box<[u8]>>>,
    /// The explanation of a pick of it with no hash, scores or earlier
    /// attempts.
    explained: Vec<Option<Box<[u8]>>>,
}

impl Encoder {
    /// Writes the export request of `batch` at the end of `buf`.
    pub(crate) fn encode(&mut self, buf: &mut BytesMut, resource: &Resource, batch: &[Record]) {
        self.batch += 1;
        // A set that only this cache still holds can get no more spans.
        self.sets.retain(|_, s| Arc::strong_count(&s.state) > 1);
        self.routes
            .retain(|_, r| Arc::strong_count(&r.names.0) > 1 && Arc::strong_count(&r.names.1) > 1);
        // About what a request's spans take: the buffer grows at most once.
        buf.reserve(1024 + batch.len() * 1536);
        let mut w = Writer(buf);
        // ExportTraceServiceRequest.resource_spans
        w.message_sized(1, 3, |w| {
            // ResourceSpans.resource
            w.message_sized(1, 2, |w| {
                for (k, v) in resource.iter() {
                    w.message(1, |w| key_value(w, k.as_str(), v));
                }
            });
            // ResourceSpans.scope_spans
            w.message_sized(2, 3, |w| {
                w.message(1, |w| w.str(1, SCOPE));
                for r in batch {
                    match r {
                        Record::Server(s) => {
                            w.message_sized(2, 2, |w| self.server(w, s));
                            let mut tried = [0; MAX_TRIED];
                            for (i, a) in s.attempts.iter().enumerate() {
                                let earlier = &tried[..i.min(MAX_TRIED)];
                                w.message_sized(2, 2, |w| self.client(w, s, a, earlier));
                                if let Some(t) = tried.get_mut(i) {
                                    *t = a.chosen;
                                }
                            }
                        }
                        Record::Sdk(s) => w.message_sized(2, 2, |w| sdk(w, s)),
                    }
                }
            });
        });
    }

    /// The cached blocks of the set of `s`, its explanations dropped if an
    /// endpoint's health changed since they were made.
    fn set(&mut self, s: &ClientSpan) -> &mut SetBlocks {
        let batch = self.batch;
        let set = self
            .sets
            .entry(Arc::as_ptr(&s.state) as usize)
            .or_insert_with(|| SetBlocks {
                state: s.state.clone(),
                health: s.state.endpoints.iter().map(|e| e.state.health()).collect(),
                checked: batch,
                endpoint: vec![None; s.state.endpoints.len()],
                explained: vec![None; s.state.endpoints.len()],
            });
        if set.checked != batch {
            set.checked = batch;
            let now = set.state.endpoints.iter().map(|e| e.state.health());
            if !set.health.iter().copied().eq(now) {
                set.health.clear();
                set.health
                    .extend(set.state.endpoints.iter().map(|e| e.state.health()));
                set.explained.fill(None);
            }
        }
        set
    }

    fn server(&mut self, w: &mut Writer<'_>, s: &ServerSpan) {
        server_head(w, s);
        let uri_host = s.head.uri_host();
        let host = s.head.host();
        let user_agent = s.head.user_agent();
        let same = self.request_common.as_ref().is_some_and(|c| {
            c.method == s.method
                && c.version == s.version
                && c.status == s.status
                && c.uri_host.as_deref() == uri_host
                && c.host.as_deref() == host
                && c.user_agent.as_deref() == user_agent
        });
        if !same {
            self.request_common = Some(RequestCommon {
                method: s.method.clone(),
                version: s.version,
                uri_host: uri_host.map(Into::into),
                host: host.map(Into::into),
                user_agent: user_agent.map(Into::into),
                status: s.status,
                block: cached(|w| request_attrs(w, s)),
            });
        }
        if let Some(c) = &self.request_common {
            w.0.extend_from_slice(&c.block);
        }
        let ip = s.client.ip();
        if self.client.as_ref().is_none_or(|(last, _)| *last != ip) {
            self.client = Some((ip, cached(|w| client_attrs(w, ip))));
        }
        if let Some((_, block)) = &self.client {
            w.0.extend_from_slice(block);
        }
        let key = (
            Arc::as_ptr(&s.route) as *const u8 as usize,
            Arc::as_ptr(&s.upstream) as *const u8 as usize,
        );
        let route = self.routes.entry(key).or_insert_with(|| RouteBlock {
            names: (s.route.clone(), s.upstream.clone()),
            block: cached(|w| route_attrs(w, s)),
        });
        w.0.extend_from_slice(&route.block);
        server_tail(w, s);
    }

    /// The span of attempt `s` of request `r`, after attempts on the
    /// endpoints `tried`.
    fn client(&mut self, w: &mut Writer<'_>, r: &ServerSpan, s: &ClientSpan, tried: &[usize]) {
        if !client_head(w, r, s) {
            return;
        }
        let answer = match s.outcome {
            AttemptOutcome::Answered { status, retried } => Some((status, retried)),
            _ => None,
        };
        let same = self.attempt_common.as_ref().is_some_and(|c| {
            c.method == r.method
                && c.attempt == s.attempt
                && c.panic == s.panic
                && c.answer == answer
        });
        if !same {
            self.attempt_common = Some(AttemptCommon {
                method: r.method.clone(),
                attempt: s.attempt,
                panic: s.panic,
                answer,
                block: cached(|w| attempt_attrs(w, &r.method, s, answer)),
            });
        }
        if let Some(c) = &self.attempt_common {
            w.0.extend_from_slice(&c.block);
        }
        let set = self.set(s);
        let block = set.endpoint[s.chosen]
            .get_or_insert_with(|| cached(|w| endpoint_attrs(w, &r.upstream, s)));
        w.0.extend_from_slice(block);
        if s.hash == 0 && tried.is_empty() && s.scores.is_none() {
            let block =
                set.explained[s.chosen].get_or_insert_with(|| cached(|w| explain(w, s, &[])));
            w.0.extend_from_slice(block);
        } else {
            explain(w, s, tried);
        }
        client_tail(w, s);
    }
}

/// Fields written by `f`, kept for copying into later spans.
fn cached(f: impl FnOnce(&mut Writer<'_>)) -> Box<[u8]> {
    let mut buf = BytesMut::new();
    f(&mut Writer(&mut buf));
    buf.to_vec().into_boxed_slice()
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// Span fields: trace_id 1, span_id 2, trace_state 3, parent_span_id 4,
// name 5, kind 6, start 7, end 8, attributes 9, dropped_attributes 10,
// events 11, dropped_events 12, links 13, dropped_links 14, status 15,
// flags 16.

/// The client's address as the server span's attributes.
fn client_attrs(w: &mut Writer<'_>, ip: IpAddr) {
    let ip = Text::ip(ip);
    attr_str(w, "network.peer.address", ip.as_str());
    attr_str(w, "client.address", ip.as_str());
}

/// What a server span has from its route: the same for all its requests.
fn route_attrs(w: &mut Writer<'_>, s: &ServerSpan) {
    attr_str(w, "url.scheme", "http");
    attr_str(w, "tributary.route", &s.route);
    attr_str(w, "tributary.upstream", &s.upstream);
}

/// The server span's own fields and the attributes that change with
/// every request.
fn server_head(w: &mut Writer<'_>, s: &ServerSpan) {
    w.bytes(1, &s.trace_id.to_bytes());
    w.bytes(2, &s.span_id.to_bytes());
    if let Some(ts) = s.head.trace_state() {
        w.bytes(3, ts);
    }
    if let Some(p) = s.parent {
        w.bytes(4, &p.to_bytes());
    }
    w.str(5, span_name(&s.method));
    w.uint(6, SERVER);
    w.fixed64(7, nanos(s.start));
    w.fixed64(8, nanos(s.end));
    attr_str(w, "url.path", s.head.path());
    attr_int(w, "network.peer.port", i64::from(s.client.port()));
    if let Some(q) = s.head.query() {
        attr_str(w, "url.query", q);
    }
}

/// The host a server span names: the URI's, else the `Host` header's.
fn request_host(s: &ServerSpan) -> Option<&str> {
    match (s.head.uri_host(), s.head.host()) {
        (Some(h), _) => Some(h),
        (None, Some(h)) => std::str::from_utf8(h).ok().map(strip_port),
        (None, None) => None,
    }
}

/// The server span attributes that most requests share.
fn request_attrs(w: &mut Writer<'_>, s: &ServerSpan) {
    attr_str(w, "http.request.method", method_value(&s.method));
    attr_str(w, "network.protocol.version", protocol_version(s.version));
    if let Some(h) = request_host(s) {
        attr_str(w, "server.address", h);
    }
    if let Some(ua) = s
        .head
        .user_agent()
        .and_then(|v| std::str::from_utf8(v).ok())
    {
        attr_str(w, "user_agent.original", ua);
    }
    if let Some(status) = s.status {
        attr_int(w, "http.response.status_code", i64::from(status));
    }
}

/// The server span's error, if any, and its flags.
fn server_tail(w: &mut Writer<'_>, s: &ServerSpan) {
    if let Some(status) = s.status
        && status >= 500
    {
        attr_fmt(w, "error.type", format_args!("{status}"));
        error_status(w, s.error.as_deref().unwrap_or_default());
    }
    w.fixed32(
        16,
        SAMPLED | HAS_IS_REMOTE | if s.parent.is_some() { IS_REMOTE } else { 0 },
    );
}

/// The client span's own fields and its per-request attributes; false
/// (and nothing more to write) if its endpoint is not in its set.
fn client_head(w: &mut Writer<'_>, r: &ServerSpan, s: &ClientSpan) -> bool {
    w.bytes(1, &r.trace_id.to_bytes());
    w.bytes(2, &s.span_id.to_bytes());
    if let Some(ts) = r.head.trace_state() {
        w.bytes(3, ts);
    }
    w.bytes(4, &r.span_id.to_bytes());
    w.str(5, span_name(&r.method));
    w.uint(6, CLIENT);
    w.fixed64(7, nanos(s.start));
    w.fixed64(8, nanos(s.end));
    let Some(endpoint) = s.state.endpoints.get(s.chosen) else {
        return false;
    };
    w.message(9, |w| {
        w.str(1, "url.full");
        w.message(2, |w| {
            w.concat(
                1,
                &[
                    b"http://",
                    endpoint.authority.as_str().as_bytes(),
                    r.head.path_and_query().as_bytes(),
                ],
            );
        });
    });
    true
}

/// The attempt span attributes that most attempts share: the method, the
/// attempt number, the balancer's panic, and the status it was answered
/// with.
fn attempt_attrs(w: &mut Writer<'_>, method: &Method, s: &ClientSpan, answer: Option<(u16, bool)>) {
    attr_str(w, "http.request.method", method_value(method));
    attr_int(w, "tributary.attempt", s.attempt as i64);
    attr_bool(w, "tributary.balancer.panic", s.panic);
    if s.attempt > 1 {
        attr_int(w, "http.request.resend_count", (s.attempt - 1) as i64);
    }
    if let Some((status, retried)) = answer {
        attr_int(w, "http.response.status_code", i64::from(status));
        if retried {
            attr_bool(w, "tributary.retried", true);
        }
    }
}

/// What the attempt span says of its endpoint and endpoint set: the same
/// for every attempt on that endpoint of that set.
fn endpoint_attrs(w: &mut Writer<'_>, upstream: &str, s: &ClientSpan) {
    let state = &*s.state;
    let Some(endpoint) = state.endpoints.get(s.chosen) else {
        return;
    };
    let addr = endpoint.addr;
    let ip = Text::ip(addr.ip());
    attr_str(w, "server.address", ip.as_str());
    attr_int(w, "server.port", i64::from(addr.port()));
    attr_str(w, "network.peer.address", ip.as_str());
    attr_int(w, "network.peer.port", i64::from(addr.port()));
    attr_str(w, "tributary.upstream", upstream);
    attr_str(w, "tributary.endpoint", Text::socket(addr).as_str());
    attr_str(w, "tributary.endpoint.id", &endpoint.id);
    attr_str(w, "tributary.balancer", state.balancer.kind().as_str());
    attr_int(
        w,
        "tributary.endpoint_set.generation",
        state.generation as i64,
    );
    if !state.sources.is_empty() {
        attr_list(w, "tributary.discovery.versions", |w| {
            for src in &state.sources {
                w.message(1, |w| {
                    w.fmt(1, format_args!("{}@{}", src.name, src.version));
                });
            }
        });
    }
}

/// How the attempt ended, and the span's flags.
fn client_tail(w: &mut Writer<'_>, s: &ClientSpan) {
    match &s.outcome {
        AttemptOutcome::Unfinished => {}
        AttemptOutcome::Answered { status, .. } => {
            if *status >= 500 {
                attr_fmt(w, "error.type", format_args!("{status}"));
                error_status(w, "");
            }
        }
        AttemptOutcome::Failed {
            kind,
            message,
            retried,
        } => {
            attr_str(w, "error.type", kind);
            if *retried {
                attr_bool(w, "tributary.retried", true);
            }
            error_status(w, message);
        }
    }
    w.fixed32(16, SAMPLED | HAS_IS_REMOTE);
}

/// Why the balancer chose that endpoint: the candidates with their scores
/// and the endpoints it skipped with the reason, at most
/// [`MAX_EXPLAINED`] of each. `tried`: the endpoints of the request's
/// earlier attempts.
fn explain(w: &mut Writer<'_>, s: &ClientSpan, tried: &[usize]) {
    let state = &*s.state;
    let ctx = PickCtx {
        hash: s.hash,
        tried,
    };
    if s.hash != 0 {
        attr_int(w, "tributary.balancer.hash", s.hash as i64);
    }
    let mut unlisted = 0;
    for (name, want_skipped) in [
        ("tributary.balancer.candidates", false),
        ("tributary.balancer.skipped", true),
    ] {
        attr_list(w, name, |w| {
            let mut listed = 0;
            state.balancer.explain_with(
                &state.endpoints,
                &ctx,
                s.chosen,
                s.scores.as_deref(),
                |e: Explained<'_>| {
                    if e.skipped.is_some() != want_skipped {
                        return;
                    }
                    if listed >= MAX_EXPLAINED {
                        unlisted += 1;
                        return;
                    }
                    listed += 1;
                    w.message(1, |w| {
                        w.message(1, |w| {
                            let _ = w.write_str(Text::socket(e.endpoint.addr).as_str());
                            if e.chosen {
                                let _ = w.write_str(" chosen");
                            }
                            if let Some(score) = e.score {
                                let _ = write!(w, " {}=", e.score_name);
                                write_score(w, score);
                            }
                            if let Some(why) = e.skipped {
                                let _ = write!(w, ": {why}");
                            }
                        });
                    });
                },
            );
        });
    }
    if unlisted > 0 {
        attr_int(w, "tributary.balancer.unlisted", unlisted);
    }
}

/// A span of the SDK (the discovery updates), field by field.
fn sdk(w: &mut Writer<'_>, s: &SpanData) {
    use opentelemetry::trace::SpanKind;
    let cx = &s.span_context;
    w.bytes(1, &cx.trace_id().to_bytes());
    w.bytes(2, &cx.span_id().to_bytes());
    let ts = cx.trace_state().header();
    if !ts.is_empty() {
        w.str(3, &ts);
    }
    if s.parent_span_id != opentelemetry::trace::SpanId::INVALID {
        w.bytes(4, &s.parent_span_id.to_bytes());
    }
    w.str(5, &s.name);
    w.uint(
        6,
        match s.span_kind {
            SpanKind::Internal => 1,
            SpanKind::Server => 2,
            SpanKind::Client => 3,
            SpanKind::Producer => 4,
            SpanKind::Consumer => 5,
        },
    );
    w.fixed64(7, nanos(s.start_time));
    w.fixed64(8, nanos(s.end_time));
    for kv in &s.attributes {
        w.message(9, |w| key_value(w, kv.key.as_str(), &kv.value));
    }
    if s.dropped_attributes_count > 0 {
        w.uint(10, u64::from(s.dropped_attributes_count));
    }
    for e in s.events.iter() {
        w.message(11, |w| {
            w.fixed64(1, nanos(e.timestamp));
            w.str(2, &e.name);
            for kv in &e.attributes {
                w.message(3, |w| key_value(w, kv.key.as_str(), &kv.value));
            }
        });
    }
    let dropped_events = s.events.dropped_count;
    if dropped_events > 0 {
        w.uint(12, u64::from(dropped_events));
    }
    // Links are not exported (the sidecar makes none); counted as dropped.
    let links = s.links.len() as u64 + u64::from(s.links.dropped_count);
    if links > 0 {
        w.uint(14, links);
    }
    match &s.status {
        Status::Unset => {}
        Status::Ok => w.message(15, |w| w.uint(3, 1)),
        Status::Error { description } => error_status(w, description),
    }
    w.fixed32(16, u32::from(cx.trace_flags().to_u8()) | HAS_IS_REMOTE);
}

fn error_status(w: &mut Writer<'_>, message: &str) {
    w.message(15, |w| {
        if !message.is_empty() {
            w.str(2, message);
        }
        w.uint(3, 2);
    });
}

// KeyValue: key 1, value 2. AnyValue: string 1, bool 2, int 3, double 4,
// array 5. ArrayValue: values 1.

fn attr_str(w: &mut Writer<'_>, key: &str, v: &str) {
    w.kv_str(9, key, v.as_bytes());
}

fn attr_fmt(w: &mut Writer<'_>, key: &str, v: std::fmt::Arguments<'_>) {
    w.message(9, |w| {
        w.str(1, key);
        w.message(2, |w| w.fmt(1, v));
    });
}

fn attr_int(w: &mut Writer<'_>, key: &str, v: i64) {
    w.kv_int(9, key, v);
}

fn attr_bool(w: &mut Writer<'_>, key: &str, v: bool) {
    w.kv_bool(9, key, v);
}

/// An array attribute; `items` writes each AnyValue as field 1.
fn attr_list(w: &mut Writer<'_>, key: &str, items: impl FnOnce(&mut Writer<'_>)) {
    w.message(9, |w| {
        w.str(1, key);
        w.message(2, |w| w.message(5, items));
    });
}

/// A KeyValue's fields from an SDK value.
fn key_value(w: &mut Writer<'_>, key: &str, v: &Value) {
    w.str(1, key);
    w.message(2, |w| any_value(w, v));
}

fn any_value(w: &mut Writer<'_>, v: &Value) {
    match v {
        Value::Bool(b) => w.bool(2, *b),
        Value::I64(i) => w.int(3, *i),
        Value::F64(f) => w.double(4, *f),
        Value::String(s) => w.str(1, s.as_str()),
        Value::Array(a) => w.message(5, |w| match a {
            Array::Bool(v) => v.iter().for_each(|b| w.message(1, |w| w.bool(2, *b))),
            Array::I64(v) => v.iter().for_each(|i| w.message(1, |w| w.int(3, *i))),
            Array::F64(v) => v.iter().for_each(|f| w.message(1, |w| w.double(4, *f))),
            Array::String(v) => v
                .iter()
                .for_each(|s| w.message(1, |w| w.str(1, s.as_str()))),
            _ => {}
        }),
        _ => w.fmt(1, format_args!("{v}")),
    }
}

/// The span name: the method (semantic conventions: `HTTP` for others).
fn span_name(m: &Method) -> &'static str {
    match *m {
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
    }
}

/// `http.request.method`: known methods as they are, others `_OTHER`.
fn method_value(m: &Method) -> &'static str {
    match span_name(m) {
        "HTTP" => "_OTHER",
        s => s,
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

/// A score with four decimals; whole numbers (weights) without `fmt`'s
/// float formatting.
fn write_score(w: &mut Writer<'_>, score: f64) {
    if score.fract() == 0.0 && (0.0..1e15).contains(&score) {
        let mut t = Text::default();
        t.push_uint(score as u64);
        let _ = w.write_str(t.as_str());
        let _ = w.write_str(".0000");
    } else {
        let _ = write!(w, "{score:.4}");
    }
}

/// A `Host` value without its port, keeping IPv6 literals whole.
fn strip_port(raw: &str) -> &str {
    match raw.rfind(':') {
        Some(i) if !raw.ends_with(']') && raw[..i].find(':').is_none() => &raw[..i],
        _ => raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_read_as_display_writes_them() {
        for score in [0.0, 1.0, 12.0, 0.25, 2.71, 0.123456, 1e20] {
            let mut buf = BytesMut::new();
            write_score(&mut Writer(&mut buf), score);
            assert_eq!(&buf[..], format!("{score:.4}").as_bytes());
        }
    }

    #[test]
    fn methods_follow_the_conventions() {
        assert_eq!(span_name(&Method::GET), "GET");
        let odd = Method::from_bytes(b"PURGE").expect("a method");
        assert_eq!((span_name(&odd), method_value(&odd)), ("HTTP", "_OTHER"));
    }
}
