//! Upstream HTTP clients: HTTP/1.1 on the endpoints' own keep-alive stacks
//! (see `pool`), h2c on hyper-util's pooled client (one multiplexed
//! connection per endpoint), both with the upstream's connect timeout.

use std::time::Duration;

use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

use super::{body::RequestBody, pool::PoolLimits};
use crate::config;

/// The upstream clients of one upstream.
pub(crate) struct UpstreamClients {
    /// HTTP/1.1 keep-alive settings for the endpoints' idle stacks.
    pub(crate) http1: PoolLimits,
    /// HTTP/2 over cleartext, prior knowledge (gRPC).
    pub(crate) h2c: Client<HttpConnector, RequestBody>,
}

impl UpstreamClients {
    pub(crate) fn new(cfg: &config::Upstream) -> Self {
        Self {
            http1: PoolLimits::new(cfg),
            h2c: build(cfg, true),
        }
    }
}

fn build(cfg: &config::Upstream, h2: bool) -> Client<HttpConnector, RequestBody> {
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
    b.build(connector)
}
