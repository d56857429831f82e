//! Plain TCP listeners: each connection is balanced over an upstream and
//! copied both ways until either side closes. On stop, open sessions get the
//! drain deadline to finish.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::{balance::PickCtx, health::Attempt, upstream::Upstream};

/// Most endpoints tried for one connection.
const MAX_CONNECT_ATTEMPTS: usize = 8;

/// Serves TCP on `listener`, balancing over the current upstream, until `stop`.
pub(crate) async fn serve_tcp(
    name: Arc<str>,
    listener: TcpListener,
    upstream: Arc<ArcSwap<Upstream>>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        // Reap finished sessions so the set holds only open ones.
        while sessions.try_join_next().is_some() {}
        tokio::select! {
            accepted = listener.accept() => {
                let (mut inbound, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(listener = %name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = inbound.set_nodelay(true);
                let upstream = upstream.load_full();
                sessions.spawn(async move {
                    let hash = match remote.ip() {
                        std::net::IpAddr::V4(ip) => crate::balance::hash_key(&ip.octets()),
                        std::net::IpAddr::V6(ip) => crate::balance::hash_key(&ip.octets()),
                    };
                    let state = upstream.state_full();
                    let mut tried = [0usize; MAX_CONNECT_ATTEMPTS];
                    for attempt in 0..MAX_CONNECT_ATTEMPTS.min(state.endpoints.len().max(1)) {
                        let Some(pick) = state.balancer.pick(&state.endpoints, &PickCtx { hash, tried: &tried[..attempt] }) else {
                            tracing::warn!(upstream = %upstream.name, "no endpoint for TCP connection");
                            return;
                        };
                        if pick.panic {
                            upstream.panic.count_pick();
                        }
                        tried[attempt] = pick.index;
                        let endpoint = &state.endpoints[pick.index];
                        let guard = endpoint.state.begin();
                        let connect = tokio::time::timeout(upstream.cfg.timeout.connect, TcpStream::connect(endpoint.addr)).await;
                        match connect {
                            Ok(Ok(mut outbound)) => {
                                upstream.record(endpoint, Attempt::Connected);
                                let _ = outbound.set_nodelay(true);
                                if let Err(e) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await {
                                    tracing::debug!(client = %remote, endpoint = %endpoint.addr, error = %e, "TCP session ended");
                                }
                                guard.finish();
                                return;
                            }
                            Ok(Err(e)) => {
                                upstream.record(endpoint, Attempt::ConnectFailed);
                                tracing::debug!(endpoint = %endpoint.addr, error = %e, "TCP connect failed; trying another endpoint");
                            }
                            Err(_) => {
                                upstream.record(endpoint, Attempt::TimedOut);
                                tracing::debug!(endpoint = %endpoint.addr, "TCP connect timed out; trying another endpoint");
                            }
                        }
                    }
                    tracing::warn!(upstream = %upstream.name, client = %remote, "no endpoint accepted the TCP connection");
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    tracing::info!(listener = %name, sessions = sessions.len(), "TCP listener closed; draining sessions");
    let drained = tokio::time::timeout(drain, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(listener = %name, open = sessions.len(), "drain deadline passed; closing TCP sessions");
        sessions.abort_all();
    }
}
