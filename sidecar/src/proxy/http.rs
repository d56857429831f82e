//! Forwarding one HTTP request: route, pick an endpoint, send with the
//! upstream's timeouts, retry on another endpoint where that is safe, and
//! stream the response back.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    task::Poll,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{
    HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header, request::Parts, uri,
};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{
    body::{BoxError, Progress, ProxyBody, RequestBody, Returning, UpstreamBody},
    error::ProxyError,
    hash::request_hash,
    headers::{ClientAddr, add_forwarded, forwarding_lines, strip_hop_by_hop},
    pool::{self, SendError},
    route::RouteTable,
    server::{Activity, Busy},
};
use crate::{
    balance::{BalancerType, PickCtx},
    config::{PassHost, UpstreamProtocol},
    health::Attempt,
    telemetry::{RequestTrace, RouteStats, Telemetry, TraceparentLine, traceparent_trace_id},
    upstream::Upstream,
};

/// Bodies up to this size are buffered so that the request can be retried.
const RETRY_BUFFER_BYTES: u64 = 64 * 1024;

/// Largest number of attempts of one request, whatever `retries` says.
const MAX_ATTEMPTS: usize = 16;

/// Serves the requests of one HTTP listener.
pub(crate) struct HttpProxy {
    routes: Arc<ArcSwap<RouteTable>>,
    telemetry: Arc<Telemetry>,
}

/// A downstream connection's share of every request on it: the proxy of
/// its listener and the client's address.
pub(crate) struct Downstream {
    pub(crate) proxy: Arc<HttpProxy>,
    pub(crate) client: ClientAddr,
    /// Its requests, for the connection's idle watchdog.
    pub(crate) activity: Activity,
}

/// What the access log line needs of a request, taken only when it is on.
struct AccessInfo {
    method: Method,
    path: String,
    /// The client's trace id when the sidecar itself does not trace.
    trace_id: Option<String>,
}

/// Where a request went: the last endpoint tried and how many attempts.
#[derive(Default)]
struct Outcome {
    endpoint: Option<SocketAddr>,
    attempts: usize,
}

/// Counts a request in its route's in-flight gauge until dropped (also
/// when the client goes away mid-request).
struct RouteInFlight<'a>(&'a RouteStats);

// === impl HttpProxy ===

impl HttpProxy {
    pub(crate) fn new(routes: Arc<ArcSwap<RouteTable>>, telemetry: Arc<Telemetry>) -> Self {
        Self { routes, telemetry }
    }

    /// Handles one request from `downstream`; errors become responses
    /// here, at the edge.
    ///
    /// Takes the connection's shared state by value so that the service
    /// returns this future itself: wrapped in another `async` block, it was
    /// stored twice over (rustc keeps an awaited future beside its source),
    /// and every request's future is moved whole when it starts and ends
    /// (an HTTP/2 stream's several times). For the same reason it is an
    /// `async` block, not an `async fn` (which keeps each argument twice),
    /// and the request comes split, so that its head is kept once.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps each argument twice in its future"
    )]
    pub(crate) fn serve(
        downstream: Arc<Downstream>,
        mut parts: Parts,
        body: Incoming,
    ) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> {
        async move {
            let busy = Busy::new(downstream);
            // Every borrow of `busy` ends with this block: the body takes it.
            let mut resp = {
                let (this, client) = (&*busy.proxy, &busy.client);
                let start = Instant::now();
                let route = {
                    let routes = this.routes.load();
                    match routes.find(&parts) {
                        Some(route) => route.clone(),
                        None => return Ok(error_response(&ProxyError::NoRoute)),
                    }
                };
                let telemetry = &*this.telemetry;
                let in_flight = RouteInFlight::new(&route.stats);
                let upstream = &route.upstream;
                let mut trace = telemetry.tracer().and_then(|t| {
                    t.start_request(&parts, client.addr, &route.name, &upstream.name)
                });
                let access = telemetry.access_log().then(|| AccessInfo {
                    method: parts.method.clone(),
                    path: parts.uri.path().to_owned(),
                    trace_id: match &trace {
                        Some(_) => None,
                        None => traceparent_trace_id(&parts.headers).map(str::to_owned),
                    },
                });
                let mut outcome = Outcome::default();
                let result = forward(
                    upstream,
                    &mut parts,
                    body,
                    client,
                    start,
                    trace.as_mut(),
                    &mut outcome,
                )
                .await;
                let (mut resp, err) = match result {
                    Ok(resp) => (resp, None),
                    Err(e) => (error_response(&e), Some(e)),
                };
                let status = resp.status().as_u16();
                let elapsed = start.elapsed();
                route.stats.record(status, elapsed);
                drop(in_flight);
                let ids = trace.as_ref().map(RequestTrace::ids);
                if let Some(e) = &err {
                    let trace_id = ids.map(|i| i.trace_id);
                    tracing::debug!(route = %route.name, upstream = %upstream.name, error = %e, trace_id = trace_id.map(tracing::field::display), "request failed");
                }
                if let Some(a) = access {
                    let trace_id = ids
                        .map(|i| i.trace_id.to_string())
                        .or(a.trace_id)
                        .unwrap_or_default();
                    let span_id = ids.map(|i| i.span_id.to_string()).unwrap_or_default();
                    tracing::info!(
                        target: "access",
                        client = %client.addr,
                        method = %a.method,
                        path = %a.path,
                        status,
                        duration_ms = elapsed.as_secs_f64() * 1e3,
                        route = %route.name,
                        upstream = %upstream.name,
                        endpoint = outcome.endpoint.map(tracing::field::display),
                        attempts = outcome.attempts,
                        trace_id = %trace_id,
                        span_id = %span_id,
                        "request"
                    );
                }
                if let Some(t) = trace
                    && let Some(span) = t.end_with_body(
                        status,
                        err.as_ref().map(|e| e as &dyn std::fmt::Display),
                        &this.telemetry,
                    )
                {
                    // The server span covers the response body too.
                    resp.body_mut().end_span_with_body(span);
                }
                resp
            };
            resp.body_mut().hold(busy);
            Ok(resp)
        }
    }
}

// === impl RouteInFlight ===

impl<'a> RouteInFlight<'a> {
    #[inline]
    fn new(stats: &'a RouteStats) -> Self {
        stats
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for RouteInFlight<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps each argument twice in its future"
)]
fn forward<'a>(
    upstream: &'a Upstream,
    parts: &'a mut Parts,
    body: Incoming,
    client: &'a ClientAddr,
    start: Instant,
    mut trace: Option<&'a mut RequestTrace<'_>>,
    outcome: &'a mut Outcome,
) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> {
    // An `async` block rather than an `async fn`: an `async fn` keeps each
    // argument twice in its future (as passed, and moved into its body).
    async move {
        let cfg = &upstream.cfg;
        let h2 = match cfg.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::H2c => true,
            UpstreamProtocol::Auto => parts.version == Version::HTTP_2,
        };
        let hash = match cfg.r#type {
            BalancerType::Chash => request_hash(cfg, parts, client.addr),
            _ => 0,
        };
        // The client's host: its `Host` header (a cheap shared clone), or the
        // URI authority when it spoke HTTP/2.
        let (host, host_in_map) = match parts.headers.get(header::HOST) {
            Some(h) => (Some(h.clone()), true),
            None => (
                parts
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
                false,
            ),
        };
        // A small or empty body is buffered so that a retry can send it again.
        let replayable = body.is_end_stream()
            || body
                .size_hint()
                .exact()
                .is_some_and(|n| n <= RETRY_BUFFER_BYTES);
        strip_hop_by_hop(&mut parts.headers);
        // The sidecar's own HTTP/1.1 client (buffered bodies) takes the
        // forwarding fields as encoded lines, with `Host` when an HTTP/2
        // client gave it as the URI's authority; hyper's clients in the map.
        let own_h1 = !h2 && replayable;
        let host_field = !host_in_map && host.is_some() && matches!(cfg.pass_host, PassHost::Pass);
        let forwarding = if own_h1 {
            forwarding_lines(&parts.headers, client, host.as_ref(), host_field)
        } else {
            None
        };
        let host_in_lines = host_field && forwarding.is_some();
        if forwarding.is_none() {
            add_forwarded(&mut parts.headers, client, host.as_ref());
        }
        match cfg.pass_host {
            PassHost::Pass => {
                if let Some(h) = host
                    && !host_in_map
                    && !host_in_lines
                {
                    parts.headers.insert(header::HOST, h);
                }
            }
            PassHost::Rewrite => {
                if let Some(h) = &upstream.host_header {
                    parts.headers.insert(header::HOST, h.clone());
                }
            }
            PassHost::Node => {}
        }
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));

        let mut body = if body.is_end_stream() {
            // No body (most GETs): nothing to collect.
            Some(Body::Buffered(Bytes::new()))
        } else if replayable {
            let bytes = body
                .collect()
                .await
                .map_err(|e| ProxyError::BadRequest(format!("reading the request body: {e}")))?
                .to_bytes();
            Some(Body::Buffered(bytes))
        } else {
            Some(Body::Streamed(body))
        };

        let idempotent = is_idempotent(&parts.method);
        // Whether each attempt names its endpoint in `Host`: decided on the
        // head as it came, the same for every attempt.
        let endpoint_host = matches!(cfg.pass_host, PassHost::Node)
            || !(host_in_lines || parts.headers.contains_key(header::HOST));
        let state = upstream.state_full();
        let max_attempts = match cfg.retries {
            Some(r) => r as usize + 1,
            None => state.endpoints.len().max(1),
        }
        .min(MAX_ATTEMPTS);
        let mut tried = [0usize; MAX_ATTEMPTS];
        let mut attempt = 0;
        let clients = &upstream.clients;
        let mut progress = None;
        loop {
            let pick = state
                .balancer
                .pick(
                    &state.endpoints,
                    &PickCtx {
                        hash,
                        tried: &tried[..attempt],
                    },
                )
                .ok_or_else(|| ProxyError::NoEndpoint(upstream.name.to_string()))?;
            if pick.panic {
                upstream.panic.count_pick();
            }
            let endpoint = &state.endpoints[pick.index];
            tried[attempt] = pick.index;
            attempt += 1;
            outcome.endpoint = Some(endpoint.addr);
            outcome.attempts = attempt;
            if attempt > 1 {
                upstream
                    .stats
                    .retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }

            // HTTP/1.1 connections are the endpoint's own: the origin form is
            // all they need. hyper-util's h2c client routes on the full URI.
            let uri = if h2 {
                Uri::builder()
                    .scheme("http")
                    .authority(endpoint.authority.clone())
                    .path_and_query(path.clone())
                    .build()
                    .map_err(|e| ProxyError::BadRequest(e.to_string()))?
            } else {
                Uri::from(path.clone())
            };
            let mut req = Request::new(match body.take() {
                Some(Body::Buffered(b)) => {
                    body = Some(Body::Buffered(b.clone()));
                    RequestBody::Buffered((!b.is_empty()).then_some(b))
                }
                Some(Body::Streamed(s)) => {
                    let p = Progress::new();
                    progress = Some(p.clone());
                    RequestBody::Streamed(s, p)
                }
                None => unreachable!("a streamed body is never retried"),
            });
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = uri;
            // The sidecar's own HTTP/1.1 client writes the head from the
            // request's own map, which every attempt changes alike (its
            // endpoint's `Host`, the trace context); hyper's clients take a
            // map of their own, cloned only while another attempt may need
            // the original.
            if !own_h1 {
                *req.headers_mut() = if body.is_none() || attempt == max_attempts {
                    std::mem::take(&mut parts.headers)
                } else {
                    parts.headers.clone()
                };
            }
            *req.version_mut() = if h2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            };
            let headers = if own_h1 {
                &mut parts.headers
            } else {
                req.headers_mut()
            };
            if endpoint_host {
                headers.insert(header::HOST, endpoint.host.clone());
            }

            // The sidecar's own HTTP/1.1 client writes the request head: the
            // trace context line goes there, not in the map.
            let mut context_line = None;
            let attempt_trace = trace.as_deref_mut().and_then(|t| {
                t.start_attempt(
                    headers,
                    own_h1.then_some(&mut context_line),
                    &state,
                    (pick.index, pick.panic),
                    hash,
                    attempt,
                )
            });

            let guard = endpoint.state.begin();
            let attempt_start = guard.started();
            let can_retry = body.is_some()
                && attempt < max_attempts
                && (cfg.retry_timeout.is_zero() || start.elapsed() < cfg.retry_timeout);
            let (send, read) = (cfg.timeout.send, cfg.timeout.read);
            let result = if h2 {
                response_head(clients.h2c.request(req), progress.as_deref(), send, read)
                    .await
                    .map(|r| {
                        r.map(|resp| (resp.map(UpstreamBody::Hyper), None))
                            .map_err(SendFailure::from)
                    })
            } else if let RequestBody::Buffered(bytes) = req.body() {
                // The whole body is in hand: the sidecar's own connection.
                // Borrowed from `req`, not taken apart: its parts would be
                // a second request head in every request's future.
                let lines = [
                    forwarding.as_deref().unwrap_or_default(),
                    context_line
                        .as_ref()
                        .map(TraceparentLine::as_bytes)
                        .unwrap_or_default(),
                ];
                let sent = pool::send_buffered(
                    &endpoint.state.idle,
                    endpoint.addr,
                    clients.http1,
                    &clients.conns,
                    req.method(),
                    path.as_str(),
                    &parts.headers,
                    &lines,
                    bytes.as_ref(),
                    idempotent,
                    Instant::now() + send + read,
                );
                // The connection keeps its own deadline timer.
                match sent.await {
                    Err(pool::SendError::Deadline) => Err(send + read),
                    r => Ok(r
                        .map(|resp| {
                            let back = Returning {
                                conn: None,
                                limits: clients.http1,
                            };
                            (resp.map(UpstreamBody::H1), Some(back))
                        })
                        .map_err(SendFailure::from)),
                }
            } else {
                // Boxed: the largest future of the three paths, and the rarest
                // (a body too large to keep for a retry). Inline, every
                // request's future carried its 1.2 KB, and HTTP/2 streams,
                // each a task of its own, move that future whole several times.
                let sent = Box::pin(pool::send(
                    &endpoint.state.idle,
                    endpoint.addr,
                    clients.http1,
                    &clients.conns,
                    req,
                ));
                response_head(sent, progress.as_deref(), send, read)
                    .await
                    .map(|r| {
                        r.map(|(resp, conn)| {
                            let back = Returning {
                                conn: Some(conn),
                                limits: clients.http1,
                            };
                            (resp.map(UpstreamBody::Hyper), Some(back))
                        })
                        .map_err(SendFailure::from)
                    })
            };
            let err = match result {
                Ok(Ok((resp, conn))) => {
                    let status = resp.status().as_u16();
                    endpoint
                        .state
                        .attempts()
                        .record(attempt_start.elapsed(), false);
                    upstream.record(endpoint, Attempt::Status(status));
                    let retry = can_retry && idempotent && cfg.retry_on_status.contains(&status);
                    if let Some(t) = attempt_trace {
                        t.answered(status, retry);
                    }
                    if retry {
                        tracing::debug!(upstream = %upstream.name, endpoint = %endpoint.addr, status, attempt, "retrying on status");
                        drop(guard);
                        continue;
                    }
                    let (mut rparts, rbody) = resp.into_parts();
                    strip_hop_by_hop(&mut rparts.headers);
                    return Ok(Response::from_parts(
                        rparts,
                        ProxyBody::upstream(rbody, guard, cfg.timeout.read, conn),
                    ));
                }
                Ok(Err(SendFailure {
                    connect: true,
                    source,
                })) => ProxyError::Connect {
                    endpoint: endpoint.addr.to_string(),
                    source,
                },
                Ok(Err(SendFailure { source, .. })) => ProxyError::Upstream {
                    endpoint: endpoint.addr.to_string(),
                    source,
                },
                Err(timeout) => ProxyError::Timeout {
                    endpoint: endpoint.addr.to_string(),
                    timeout,
                },
            };
            drop(guard);
            endpoint
                .state
                .attempts()
                .record(attempt_start.elapsed(), true);
            if let Some(attempt) = err.attempt() {
                upstream.record(endpoint, attempt);
            }
            let retry = can_retry && (err.is_retryable() || idempotent);
            if let Some(t) = attempt_trace {
                t.failed(err.kind(), &err, retry);
            }
            tracing::debug!(upstream = %upstream.name, error = %err, attempt, retry, "attempt failed");
            if !retry {
                return Err(err);
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// Waits for the response head of one attempt. A buffered request must
    /// be answered within `send + read`; a streamed one may take as long as
    /// it keeps moving: `send` after its last frame, then `read` after its
    /// end. On expiry, says which limit ran out.
    ///
    /// Written out rather than as an `async fn` over `tokio::time::timeout`:
    /// that held the attempt's future twice (once per branch) and doubled
    /// the size of every request's future, which is moved whole when the
    /// request starts and ends.
    struct ResponseHead<'a, F> {
        #[pin]
        fut: F,
        #[pin]
        sleep: tokio::time::Sleep,
        progress: Option<&'a Progress>,
        send: Duration,
        read: Duration,
    }
}

fn response_head<F: Future>(
    fut: F,
    progress: Option<&Progress>,
    send: Duration,
    read: Duration,
) -> ResponseHead<'_, F> {
    let deadline = match progress {
        Some(p) => p.deadline(send, read),
        None => Instant::now() + send + read,
    };
    ResponseHead {
        fut,
        // Not registered with the timer until first polled.
        sleep: tokio::time::sleep_until(deadline.into()),
        progress,
        send,
        read,
    }
}

impl<F: Future> Future for ResponseHead<'_, F> {
    type Output = Result<F::Output, Duration>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        loop {
            std::task::ready!(this.sleep.as_mut().poll(cx));
            let (send, read) = (*this.send, *this.read);
            let Some(progress) = this.progress else {
                return Poll::Ready(Err(send + read));
            };
            let deadline = progress.deadline(send, read);
            if Instant::now() >= deadline {
                return Poll::Ready(Err(if progress.is_done() { read } else { send }));
            }
            this.sleep.as_mut().reset(deadline.into());
        }
    }
}

/// Why an attempt got no response head, from either client.
struct SendFailure {
    /// Nothing was sent: connecting failed.
    connect: bool,
    source: BoxError,
}

impl From<hyper_util::client::legacy::Error> for SendFailure {
    fn from(e: hyper_util::client::legacy::Error) -> Self {
        Self {
            connect: e.is_connect(),
            source: Box::new(e),
        }
    }
}

impl From<SendError> for SendFailure {
    fn from(e: SendError) -> Self {
        Self {
            connect: e.is_connect(),
            source: Box::new(e),
        }
    }
}

/// The request body across attempts.
enum Body {
    Buffered(Bytes),
    Streamed(Incoming),
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The one place where proxy errors become HTTP responses.
pub(crate) fn error_response(e: &ProxyError) -> Response<ProxyBody> {
    let status = e.status();
    let mut resp = Response::new(ProxyBody::full(format!("{e}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}
