//! Listeners: accepting connections and serving HTTP/1.1 and HTTP/2 (h2c
//! prior knowledge) on them, with graceful shutdown that lets requests in
//! flight finish.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper::{Request, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, sync::watch};

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
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
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
                });
                let svc = service_fn(move |req: Request<Incoming>| {
                    HttpProxy::serve(downstream.clone(), req)
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(client = %remote, error = %e, "connection ended with an error");
                    }
                });
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

/// The address a listener is bound to, for logs and the start-up line.
pub(crate) fn bound(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}
