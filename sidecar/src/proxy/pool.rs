//! Keep-alive HTTP/1.1 connections to upstream endpoints.
//!
//! Each endpoint keeps its idle connections in a small stack beside its live
//! state, so a request takes one straight from the endpoint the balancer
//! picked: no pool-wide map, no key hashing, no task spawned per request to
//! hand the connection back. A connection returns to the stack when its
//! response body has been read to the end, and is dropped (closed) when the
//! body fails, after `keepalive_pool.requests` requests, after
//! `keepalive_pool.idle_timeout` idle, or when the stack holds
//! `keepalive_pool.size` already. The most recently used connection is
//! reused first; the oldest are the first to expire.
//!
//! The stack's mutex is held for a push or a pop, never across an await, and
//! only by requests (never by discovery updates).

use std::{
    collections::VecDeque,
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use hyper::{
    body::Incoming,
    client::conn::http1::{Builder, SendRequest},
};
use tokio::net::TcpStream;

use super::{
    body::RequestBody,
    client::{ConnectionStats, Counted},
    h1::{H1Body, H1Conn, H1Error},
};
use crate::{config, upstream::now_ns};

/// TCP keep-alive probes on upstream connections start after this idle time.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The idle connections of one endpoint: hyper's (for streamed request
/// bodies) and the sidecar's own HTTP/1.1 ones (for bodies in hand).
#[derive(Default)]
pub(crate) struct IdleConns {
    hyper: Stack<SendRequest<RequestBody>>,
    raw: Stack<Box<H1Conn>>,
}

/// Idle connections of one kind, the most recently used on top.
struct Stack<C>(Mutex<VecDeque<Idle<C>>>);

/// A connection the idle stacks can keep.
trait Pooled {
    /// Whether it is known to be closed, without asking the socket.
    fn known_closed(&self) -> bool;

    /// Whether it can carry a request now; may ask the socket.
    fn usable(&mut self) -> bool {
        !self.known_closed()
    }
}

/// A connection ready for, or busy with, one request.
pub(crate) struct Conn {
    sender: SendRequest<RequestBody>,
    /// Requests sent on it, this one included.
    served: u32,
    /// Whether it came from the stack (and may have been closed meanwhile).
    reused: bool,
}

/// The `keepalive_pool` and connect settings of an upstream, copied where
/// a connection goes back to its stack.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolLimits {
    size: usize,
    requests: u32,
    idle: Duration,
    connect: Duration,
}

/// Why no response head came back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be made; nothing was sent.
    #[error("{0}")]
    Connect(std::io::Error),
    /// The exchange failed on a connection.
    #[error("{0}")]
    Http(hyper::Error),
    /// The exchange failed on one of the sidecar's own connections.
    #[error("{0}")]
    H1(#[from] H1Error),
    /// No response head by the deadline [`send_buffered`] was given.
    #[error("no response by the deadline")]
    Deadline,
}

struct Idle<C> {
    conn: C,
    served: u32,
    /// When it went idle, on the coarse clock ([`now_ns`]): idle limits are
    /// seconds, and the precise clock costs more on every request.
    since: u64,
}

/// Whether a connection idle since `since` (coarse nanoseconds) has been
/// idle longer than `limit` at `now`; with no limit at all, always (the
/// coarse clock may not have ticked since).
fn expired(since: u64, now: u64, limit: Duration) -> bool {
    limit.is_zero() || u128::from(now.saturating_sub(since)) > limit.as_nanos()
}

// === impl IdleConns ===

impl IdleConns {
    /// The most recently used idle connection that is still open and fresh.
    fn take(&self, limits: PoolLimits) -> Option<Conn> {
        let (sender, served) = self.hyper.take(limits)?;
        Some(Conn {
            sender,
            served,
            reused: true,
        })
    }

    /// Keeps `conn` for the next request, unless it has served its share or
    /// the stack is full; expired connections at the bottom go first.
    pub(crate) fn put(&self, conn: Conn, limits: PoolLimits) {
        self.hyper.put(conn.sender, conn.served, limits);
    }

    /// The most recently used of the sidecar's own idle connections that
    /// is still open and fresh, with the requests it has served.
    fn take_raw(&self, limits: PoolLimits) -> Option<(Box<H1Conn>, u32)> {
        self.raw.take(limits)
    }

    /// Keeps one of the sidecar's own connections for the next request,
    /// as [`IdleConns::put`] does hyper's.
    pub(crate) fn put_raw(&self, conn: Box<H1Conn>, served: u32, limits: PoolLimits) {
        self.raw.put(conn, served, limits);
    }

    /// Closes connections idle longer than `idle`, or closed by the peer.
    pub(crate) fn sweep(&self, idle: Duration) {
        self.hyper.sweep(idle);
        self.raw.sweep(idle);
    }

    /// How many connections are idle now.
    pub(crate) fn len(&self) -> usize {
        self.hyper.len() + self.raw.len()
    }
}

// === impl Stack ===

impl<C> Default for Stack<C> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<C: Pooled> Stack<C> {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle<C>>> {
        self.0.lock().expect("idle stack lock poisoned")
    }

    fn take(&self, limits: PoolLimits) -> Option<(C, u32)> {
        let mut stack = self.lock();
        let now = now_ns();
        while let Some(mut idle) = stack.pop_back() {
            if expired(idle.since, now, limits.idle) || !idle.conn.usable() {
                continue;
            }
            return Some((idle.conn, idle.served));
        }
        None
    }

    fn put(&self, conn: C, served: u32, limits: PoolLimits) {
        if served >= limits.requests || conn.known_closed() {
            return;
        }
        let now = now_ns();
        let mut stack = self.lock();
        while stack
            .front()
            .is_some_and(|i| expired(i.since, now, limits.idle) || i.conn.known_closed())
        {
            stack.pop_front();
        }
        if stack.len() < limits.size {
            stack.push_back(Idle {
                conn,
                served,
                since: now,
            });
        }
    }

    fn sweep(&self, idle: Duration) {
        let now = now_ns();
        self.lock()
            .retain_mut(|i| !expired(i.since, now, idle) && i.conn.usable());
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Pooled for SendRequest<RequestBody> {
    fn known_closed(&self) -> bool {
        self.is_closed()
    }
}

impl Pooled for Box<H1Conn> {
    /// Only the socket can tell.
    fn known_closed(&self) -> bool {
        false
    }

    fn usable(&mut self) -> bool {
        self.is_reusable()
    }
}

impl fmt::Debug for IdleConns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleConns")
            .field("idle", &self.len())
            .finish()
    }
}

// === impl PoolLimits ===

impl PoolLimits {
    pub(crate) fn new(cfg: &config::Upstream) -> Self {
        Self {
            size: cfg.keepalive_pool.size as usize,
            requests: cfg.keepalive_pool.requests,
            idle: cfg.keepalive_pool.idle_timeout,
            connect: cfg.timeout.connect,
        }
    }
}

// === impl SendError ===

impl SendError {
    /// Whether the request never left: another endpoint may take it.
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

/// Sends `req` to `addr` on an idle connection of `idle`, or on a new one,
/// and returns the response head with the connection, which goes back to
/// `idle` once the response body has been read.
///
/// A reused connection that the endpoint closed while it sat idle is
/// noticed before or while sending (the request comes back unsent), and the
/// request goes on the next connection.
pub(crate) async fn send(
    idle: &IdleConns,
    addr: SocketAddr,
    limits: PoolLimits,
    stats: &Arc<ConnectionStats>,
    mut req: Request<RequestBody>,
) -> Result<(Response<Incoming>, Conn), SendError> {
    loop {
        let mut conn = match idle.take(limits) {
            Some(c) => c,
            // Boxed: connecting is the rare path, and inline its future
            // would make every request's future several times larger.
            None => Box::pin(connect(addr, limits.connect, stats)).await?,
        };
        // A connection whose last response just ended may not have told
        // its sender yet that it wants the next request.
        if !conn.sender.is_ready()
            && let Err(e) = conn.sender.ready().await
        {
            if conn.reused {
                continue;
            }
            return Err(SendError::Http(e));
        }
        conn.served += 1;
        // Sends at once (the future only waits for the answer); a request
        // the connection could not take comes back in the error.
        match conn.sender.try_send_request(req).await {
            Ok(resp) => return Ok((resp, conn)),
            Err(mut e) => match e.take_message() {
                Some(unsent) if conn.reused => req = unsent,
                _ => return Err(SendError::Http(e.into_error())),
            },
        }
    }
}

/// Sends a request whose body is in hand (`body`, `None` when empty) to
/// `addr` on one of the sidecar's own idle connections of `idle`, or a new
/// one; the response's body carries the connection, which goes back to
/// `idle` once that body has been read to the end.
///
/// An idle connection the endpoint closed meanwhile is noticed when taken,
/// or when writing to it fails, or, for an idempotent request, when it
/// ends before any byte of an answer; the request then goes on the next
/// connection. `lines` are head fields already encoded, written after
/// `headers`. [`SendError::Deadline`] when no response head has come by
/// `deadline` (connecting included).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn send_buffered(
    idle: &IdleConns,
    addr: SocketAddr,
    limits: PoolLimits,
    stats: &Arc<ConnectionStats>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    lines: &[&[u8]],
    body: Option<&Bytes>,
    idempotent: bool,
    deadline: Instant,
) -> Result<Response<H1Body>, SendError> {
    loop {
        let (mut conn, served, reused) = match idle.take_raw(limits) {
            Some((c, served)) => (c, served, true),
            None => {
                let connect = Box::pin(connect_raw(addr, limits.connect, stats));
                match tokio::time::timeout_at(deadline.into(), connect).await {
                    Ok(c) => (c?, 0, false),
                    Err(_) => return Err(SendError::Deadline),
                }
            }
        };
        let mut timer = match conn.deadline.take() {
            Some(mut t) => {
                t.as_mut().reset(deadline.into());
                t
            }
            None => Box::pin(tokio::time::sleep_until(deadline.into())),
        };
        let exchange = async move {
            if let Err(e) = conn
                .write_request(method, target, headers, lines, body)
                .await
            {
                return Err((H1Error::from(e), true));
            }
            conn.read_head(method).await.map_err(|e| (e, false))
        };
        let done = tokio::select! {
            biased;
            done = exchange => Some(done),
            () = timer.as_mut() => None,
        };
        match done {
            None => return Err(SendError::Deadline),
            Some(Ok(mut resp)) => {
                resp.body_mut().served = served + 1;
                resp.body_mut().keep_deadline(timer);
                return Ok(resp);
            }
            // A stale idle connection: the request goes on the next one.
            Some(Err((_, true))) if reused => continue,
            Some(Err((H1Error::Closed, false))) if reused && idempotent => continue,
            Some(Err((e, _))) => return Err(e.into()),
        }
    }
}

async fn open_stream(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, SendError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(SendError::Connect(e)),
        Err(_) => {
            return Err(SendError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect timed out after {timeout:?} (timeout.connect)"),
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&stream)
        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE));
    Ok(stream)
}

async fn connect_raw(
    addr: SocketAddr,
    timeout: Duration,
    stats: &Arc<ConnectionStats>,
) -> Result<Box<H1Conn>, SendError> {
    Ok(H1Conn::new(open_stream(addr, timeout).await?, stats))
}

async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    stats: &Arc<ConnectionStats>,
) -> Result<Conn, SendError> {
    let stream = open_stream(addr, timeout).await?;
    let (sender, conn) = Builder::new()
        .handshake(Counted::new(stream, stats))
        .await
        .map_err(SendError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(endpoint = %addr, error = %e, "upstream connection ended with an error");
        }
    });
    Ok(Conn {
        sender,
        served: 0,
        reused: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_limits_on_the_coarse_clock() {
        let second = Duration::from_secs(1);
        let ns = 1_000_000_000;
        assert!(!expired(10, 10 + ns, second));
        assert!(expired(10, 11 + ns, second));
        // A reading older than the stamp (another core's clock) is not idle.
        assert!(!expired(100, 50, second));
        // No idle time allowed: expired even before the clock ticks.
        assert!(expired(5, 5, Duration::ZERO));
    }
}
