//! The upstream `timeout` block through the sidecar: `send` and `read` bound
//! the silences of a transfer, not its length, so a slow but steady upload
//! passes while a backend that does not answer in time gets a 504.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Result, ensure};
use bytes::Bytes;
use futures_util::StreamExt;
use hyper::Method;
use integration::{
    Backend, HttpClient, Sidecar, http_request, streamed_body, web_config, web_nodes,
};

const DEADLINE: Duration = Duration::from_secs(10);

/// Upstream `web` over one static node with short send/read timeouts.
fn config(node: SocketAddr) -> String {
    web_config(
        None,
        &format!(
            "    retries: 0\n    timeout: {{connect: 1, send: 0.4, read: 0.4}}\n{}",
            web_nodes(&[node])
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_steady_upload_outlasts_send_plus_read() -> Result<()> {
    let backend = Backend::start("b").await?;
    let sidecar = Sidecar::start(&config(backend.addr())).await?;
    let addr = sidecar.listener("http")?;
    // 20 chunks 100 ms apart: 2 s in all, five times send + read, but never
    // silent for longer than `send`.
    let chunks = futures_util::stream::iter(0..20).then(|_| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Bytes::from(vec![7u8; 64 * 1024])
    });
    let req = http_request(Method::POST, addr, "/upload").body(streamed_body(chunks))?;
    let reply = HttpClient::http1().with_timeout(DEADLINE).send(req).await?;
    ensure!(
        reply.status == 200,
        "slow upload got {}: {}",
        reply.status,
        reply.text()
    );
    ensure!(
        reply.text().trim() == (20 * 64 * 1024).to_string(),
        "upload length {}",
        reply.text()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_slower_than_the_read_timeout_gets_a_504() -> Result<()> {
    let backend = Backend::start("b").await?;
    let sidecar = Sidecar::start(&config(backend.addr())).await?;
    let addr = sidecar.listener("http")?;
    let client = HttpClient::http1().with_timeout(DEADLINE);
    let slow = client.get(addr, "/delay/1500").await?;
    ensure!(
        slow.status == 504,
        "a 1.5 s answer with read 0.4 s got {}",
        slow.status
    );
    let fast = client.get(addr, "/delay/50").await?;
    ensure!(fast.status == 200, "a 50 ms answer got {}", fast.status);
    Ok(())
}
