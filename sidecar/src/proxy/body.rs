//! Bodies between downstream and upstream.
//!
//! Responses stream through with the endpoint's in-flight count held until
//! they end, and fail when the upstream sends nothing for the `read` timeout.
//! Request bodies stream through once, recording their progress so that the
//! `send` timeout measures the gap between two writes, not the whole upload;
//! or, when small, are buffered so that a retry can send them again.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::{
    h1::H1Body,
    pool::{Conn, PoolLimits},
    server::Busy,
};
use crate::{telemetry::PendingSpan, upstream::InFlight};

/// The error a proxied body can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A downstream response body.
pub(crate) enum ProxyBody {
    /// Streamed from an upstream; the guard ends when the body does.
    Upstream {
        body: UpstreamBody,
        guard: Option<InFlight>,
        /// Longest silence of the upstream between two frames.
        read: Duration,
        /// Armed only once a poll finds no data ready, so that bodies that
        /// arrive whole never touch the timer wheel.
        idle: Option<Pin<Box<Sleep>>>,
        /// The HTTP/1.1 connection, back to its endpoint's idle stack once
        /// the body has been read to the end.
        conn: Option<Returning>,
        /// The request's server span (sampled requests), ended when the
        /// body is dropped: after its last frame, or when it broke off.
        span: Option<PendingSpan>,
        /// Keeps the request counted as in progress on its connection.
        busy: Option<Busy>,
    },
    /// Made by the proxy (errors, admin).
    Full(Option<Bytes>),
}

/// A response body from an upstream: read by hyper's client (h2c, and
/// HTTP/1.1 answers to streamed requests) or by the sidecar's own HTTP/1.1
/// connection.
pub(crate) enum UpstreamBody {
    Hyper(Incoming),
    H1(H1Body),
}

/// Where a pooled connection goes back: the idle stack of the endpoint
/// whose in-flight guard the body holds, with its limits; hyper's
/// connection travels here, the sidecar's own inside [`UpstreamBody::H1`].
pub(crate) struct Returning {
    pub(crate) conn: Option<Conn>,
    pub(crate) limits: PoolLimits,
}

/// The upstream sent no body data within the read timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?} (timeout.read)")]
pub(crate) struct ReadTimeout(Duration);

/// How far a streamed request body got; shared with the attempt's deadline.
#[derive(Debug)]
pub(crate) struct Progress {
    start: Instant,
    /// Nanoseconds after `start` of the last frame sent.
    last_ns: AtomicU64,
    /// Nanoseconds after `start` when the body ended; `u64::MAX` until then.
    done_ns: AtomicU64,
}

/// A request body sent upstream.
pub(crate) enum RequestBody {
    /// The downstream body, streamed through once.
    Streamed(Incoming, Arc<Progress>),
    /// A small body buffered so that another attempt can send it again.
    Buffered(Option<Bytes>),
}

// === impl ProxyBody ===

impl ProxyBody {
    pub(crate) fn upstream(
        body: UpstreamBody,
        guard: InFlight,
        read: Duration,
        conn: Option<Returning>,
    ) -> Self {
        let end = body.is_end_stream();
        let mut b = Self::Upstream {
            body,
            guard: Some(guard),
            read,
            idle: None,
            conn,
            span: None,
            busy: None,
        };
        if end {
            b.finish(true);
        }
        b
    }

    /// Ends `span` with this body: when it is dropped, or at once for a
    /// body the proxy made.
    pub(crate) fn end_span_with_body(&mut self, pending: PendingSpan) {
        if let Self::Upstream { span, .. } = self {
            *span = Some(pending);
        }
    }

    /// Keeps `request` in progress on its connection until this body is
    /// dropped; a body the proxy made is written at once and needs none.
    pub(crate) fn hold(&mut self, request: Busy) {
        if let Self::Upstream { busy, .. } = self {
            *busy = Some(request);
        }
    }

    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// Ends the request's accounting; a body read to the end (`whole`)
    /// hands its connection back for the next request, any other end closes
    /// it.
    fn finish(&mut self, whole: bool) {
        if let Self::Upstream {
            guard, conn, body, ..
        } = self
        {
            let conn = conn.take();
            if let Some(g) = guard.take() {
                if let Some(r) = conn
                    && whole
                {
                    match (r.conn, body) {
                        (Some(c), _) => g.state().idle.put(c, r.limits),
                        (None, UpstreamBody::H1(b)) => {
                            if let Some(c) = b.take_conn() {
                                g.state().idle.put_raw(c, b.served, r.limits);
                            }
                        }
                        (None, UpstreamBody::Hyper(_)) => {}
                    }
                }
                g.finish();
            }
        }
    }

    /// Ends the body broken off by `error`: the connection closes and the
    /// server span, if any, is marked failed.
    fn fail(&mut self, error: &dyn std::fmt::Display) {
        if let Self::Upstream {
            span: Some(span), ..
        } = self
        {
            span.body_failed(error);
        }
        self.finish(false);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match this {
            Self::Upstream {
                body, read, idle, ..
            } => match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(t) = idle {
                        t.as_mut().reset(tokio::time::Instant::now() + *read);
                    }
                    // The server stops polling a body that says it has ended,
                    // so the last frame is where the connection goes back.
                    if body.is_end_stream() {
                        this.finish(true);
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    this.fail(&e);
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Ready(None) => {
                    this.finish(true);
                    Poll::Ready(None)
                }
                Poll::Pending => {
                    let read = *read;
                    let timer = idle.get_or_insert_with(|| Box::pin(tokio::time::sleep(read)));
                    match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            let e = ReadTimeout(read);
                            this.fail(&e);
                            Poll::Ready(Some(Err(e.into())))
                        }
                        Poll::Pending => Poll::Pending,
                    }
                }
            },
            Self::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream { body, .. } => body.is_end_stream(),
            Self::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream { body, .. } => body.size_hint(),
            Self::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

// === impl UpstreamBody ===

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper(b) => b.is_end_stream(),
            Self::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Hyper(b) => b.size_hint(),
            Self::H1(b) => b.size_hint(),
        }
    }
}

// === impl Progress ===

impl Progress {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_ns: AtomicU64::new(0),
            done_ns: AtomicU64::new(u64::MAX),
        })
    }

    fn since_start(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Whether the body has been sent whole.
    pub(crate) fn is_done(&self) -> bool {
        self.done_ns.load(Ordering::Relaxed) != u64::MAX
    }

    /// When the attempt's wait for the response head expires: `send` after
    /// the last frame while the body is still going, `read` after its end.
    pub(crate) fn deadline(&self, send: Duration, read: Duration) -> Instant {
        match self.done_ns.load(Ordering::Relaxed) {
            u64::MAX => {
                self.start + Duration::from_nanos(self.last_ns.load(Ordering::Relaxed)) + send
            }
            done => self.start + Duration::from_nanos(done) + read,
        }
    }
}

// === impl RequestBody ===

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut *self {
            Self::Streamed(body, progress) => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(_))) => {
                        progress
                            .last_ns
                            .store(progress.since_start(), Ordering::Relaxed);
                    }
                    Poll::Ready(None) => {
                        progress
                            .done_ns
                            .store(progress.since_start(), Ordering::Relaxed);
                    }
                    _ => {}
                }
                polled
            }
            Self::Buffered(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Streamed(body, _) => body.is_end_stream(),
            Self::Buffered(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Streamed(body, _) => body.size_hint(),
            Self::Buffered(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
