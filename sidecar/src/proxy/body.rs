//! Response bodies the proxy sends downstream: an upstream body streamed
//! through (holding the endpoint's in-flight count until it ends), or a small
//! body the proxy made itself.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::InFlight;

/// A downstream response body.
pub(crate) enum ProxyBody {
    /// Streamed from an upstream; the guard ends when the body does.
    Upstream {
        body: Incoming,
        guard: Option<InFlight>,
    },
    /// Made by the proxy (errors, admin).
    Full(Option<Bytes>),
}

// === impl ProxyBody ===

impl ProxyBody {
    pub(crate) fn upstream(body: Incoming, guard: InFlight) -> Self {
        let end = body.is_end_stream();
        let mut b = Self::Upstream {
            body,
            guard: Some(guard),
        };
        if end {
            b.finish();
        }
        b
    }

    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    fn finish(&mut self) {
        if let Self::Upstream { guard, .. } = self
            && let Some(g) = guard.take()
        {
            g.finish();
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut *self {
            Self::Upstream { body, .. } => {
                let polled = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(None | Some(Err(_))) = &polled {
                    self.finish();
                }
                polled
            }
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

/// A request body sent upstream: streamed once, or replayable bytes when the
/// request may be retried.
pub(crate) enum RequestBody {
    /// The downstream body, streamed through; cannot be retried.
    Streamed(Incoming),
    /// A small body buffered so that another attempt can send it again.
    Buffered(Option<Bytes>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut *self {
            Self::Streamed(body) => Pin::new(body).poll_frame(cx),
            Self::Buffered(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Streamed(body) => body.is_end_stream(),
            Self::Buffered(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Streamed(body) => body.size_hint(),
            Self::Buffered(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
