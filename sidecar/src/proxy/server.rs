//! Listeners: accepting connections and serving HTTP/1.1 and HTTP/2 (h2c
//! prior knowledge) on them, with graceful shutdown that lets requests in
//! flight finish.
//!
//! A connection with no request in progress that completes no request head
//! within `client_header_timeout` is closed by a watchdog that wakes once
//! per period, rather than by hyper's header read timeout, which arms and
//! drops a timer (and allocates) for every request.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use hyper::{Request, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
    task::AbortHandle,
};

use super::{
    headers::ClientAddr,
    http::{Downstream, HttpProxy},
};

/// Serves HTTP on `listener` until `stop` turns true, then drains the open
/// connections for at most `drain`.
pub(crate) async fn serve_http(
    name: Arc<str>,
    listener: TcpListener,
    proxy: Arc<HttpProxy>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    header_timeout: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The idle watchdog below does this job.
        .header_read_timeout(None)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024)
        .adaptive_window(true);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off a little.
                        tracing::warn!(listener = %name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // One shared clone per request: the proxy and the client's
                // forwarding values, formatted once for the connection.
                let downstream = Arc::new(Downstream {
                    proxy: proxy.clone(),
                    client: ClientAddr::new(remote),
                    activity: Activity::default(),
                });
                let watched = downstream.clone();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (parts, body) = req.into_parts();
                    HttpProxy::serve(downstream.clone(), parts, body)
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn.into_owned());
                // The watchdog is a task of its own, so that the
                // connection's task never polls its timer; each ends the
                // other.
                let (conn_tx, conn_rx) = oneshot::channel::<AbortHandle>();
                let watchdog = tokio::spawn(async move {
                    let Ok(conn) = conn_rx.await else { return };
                    idle(&watched.activity, header_timeout).await;
                    tracing::debug!(client = %remote, timeout = ?header_timeout, "closing a connection with no request head within client_header_timeout");
                    conn.abort();
                });
                let stop_watchdog = AbortOnDrop(watchdog.abort_handle());
                let task = tokio::spawn(async move {
                    let _stop_watchdog = stop_watchdog;
                    if let Err(e) = conn.await {
                        tracing::debug!(client = %remote, error = %e, "connection ended with an error");
                    }
                });
                let _ = conn_tx.send(task.abort_handle());
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    tracing::info!(listener = %name, "listener closed; draining connections");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!(listener = %name, "connections drained"),
        () = tokio::time::sleep(drain) => {
            tracing::warn!(listener = %name, "drain deadline passed; closing remaining connections");
        }
    }
}

/// What a connection's idle watchdog reads.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Requests whose head has arrived.
    begun: AtomicU64,
    /// Requests not yet answered to the end of their response body.
    open: AtomicU64,
}

/// One request in progress on its connection, until dropped with its
/// response body.
pub(crate) struct Busy(Arc<Downstream>);

impl Busy {
    pub(crate) fn new(downstream: Arc<Downstream>) -> Self {
        downstream.activity.begun.fetch_add(1, Relaxed);
        downstream.activity.open.fetch_add(1, Relaxed);
        Self(downstream)
    }
}

impl std::ops::Deref for Busy {
    type Target = Downstream;

    fn deref(&self) -> &Downstream {
        &self.0
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.activity.open.fetch_sub(1, Relaxed);
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Returns once a whole `period` passes with no request in progress and no
/// new request head: the connection is then closed.
async fn idle(activity: &Activity, period: Duration) {
    let mut seen = activity.begun.load(Relaxed);
    loop {
        tokio::time::sleep(period).await;
        let begun = activity.begun.load(Relaxed);
        if begun == seen && activity.open.load(Relaxed) == 0 {
            return;
        }
        seen = begun;
    }
}

/// The address a listener is bound to, for logs and the start-up line.
pub(crate) fn bound(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}
