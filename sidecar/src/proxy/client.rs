//! Upstream HTTP clients: HTTP/1.1 on the endpoints' own keep-alive stacks
//! (see `pool`), h2c on hyper-util's pooled client (one multiplexed
//! connection per endpoint), both with the upstream's connect timeout,
//! counting the connections they open and hold (for `/metrics`).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection, HttpConnector},
    },
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tokio::net::TcpStream;

use super::{body::RequestBody, pool::PoolLimits};
use crate::config;

/// The upstream clients of one upstream.
pub(crate) struct UpstreamClients {
    /// HTTP/1.1 keep-alive settings for the endpoints' idle stacks.
    pub(crate) http1: PoolLimits,
    /// The connections both open, counted.
    pub(crate) conns: Arc<ConnectionStats>,
    /// HTTP/2 over cleartext, prior knowledge (gRPC).
    pub(crate) h2c: Client<CountingConnector, RequestBody>,
}

/// Connections of one upstream's pools.
#[derive(Debug, Default)]
pub(crate) struct ConnectionStats {
    /// Connections opened.
    pub(crate) opened: AtomicU64,
    /// Connections open now (in use or idle in the pool).
    pub(crate) open: AtomicI64,
}

/// `HttpConnector` counting the connections it makes.
#[derive(Clone)]
pub(crate) struct CountingConnector {
    inner: HttpConnector,
    stats: Arc<ConnectionStats>,
}

/// A connection counted in [`ConnectionStats::open`] until dropped.
pub(crate) struct Counted {
    io: TokioIo<TcpStream>,
    _open: OpenConn,
}

/// Counts one connection opened, and open until dropped.
pub(crate) struct OpenConn(Arc<ConnectionStats>);

impl UpstreamClients {
    pub(crate) fn new(cfg: &config::Upstream, stats: &Arc<ConnectionStats>) -> Self {
        Self {
            http1: PoolLimits::new(cfg),
            conns: stats.clone(),
            h2c: build(cfg, true, stats),
        }
    }
}

fn build(
    cfg: &config::Upstream,
    h2: bool,
    stats: &Arc<ConnectionStats>,
) -> Client<CountingConnector, RequestBody> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(cfg.timeout.connect));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.set_reuse_address(true);
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(cfg.keepalive_pool.idle_timeout)
        .pool_max_idle_per_host(cfg.keepalive_pool.size as usize)
        .retry_canceled_requests(true)
        .set_host(false);
    if h2 {
        b.http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_while_idle(false)
            .http2_adaptive_window(true);
    }
    b.build(CountingConnector {
        inner: connector,
        stats: stats.clone(),
    })
}

// === impl CountingConnector ===

impl tower_service::Service<Uri> for CountingConnector {
    type Response = Counted;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Counted, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    /// Once per new connection, not per request: the box costs nothing
    /// on the pooled path.
    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let stats = self.stats.clone();
        Box::pin(async move {
            let io = connecting.await?;
            Ok(Counted {
                io,
                _open: OpenConn::new(&stats),
            })
        })
    }
}

// === impl Counted ===

impl Counted {
    /// Counts a connection made outside hyper-util's client (the HTTP/1.1
    /// idle stacks connect themselves).
    pub(crate) fn new(stream: TcpStream, stats: &Arc<ConnectionStats>) -> Self {
        Self {
            io: TokioIo::new(stream),
            _open: OpenConn::new(stats),
        }
    }
}

// === impl OpenConn ===

impl OpenConn {
    pub(crate) fn new(stats: &Arc<ConnectionStats>) -> Self {
        stats.opened.fetch_add(1, Relaxed);
        stats.open.fetch_add(1, Relaxed);
        Self(stats.clone())
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl hyper::rt::Read for Counted {
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Counted {
    #[inline]
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    #[inline]
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    #[inline]
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
