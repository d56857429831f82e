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
    // Fast and slow in turn: a slow request on a connection kept from a
    // fast one must still time out (the connection keeps its deadline
    // timer and moves it), and a timed-out connection is not reused.
    for (i, (path, want)) in [
        ("/delay/50", 200),
        ("/delay/1500", 504),
        ("/delay/50", 200),
        ("/delay/50", 200),
        ("/delay/1500", 504),
        ("/delay/50", 200),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = client.get(addr, path).await?;
        ensure!(
            reply.status == want,
            "request {i}: {path} with read 0.4 s got {}, not {want}",
            reply.status
        );
    }
    Ok(())
}

/// The listener's `client_header_timeout` at 0.3 s over one backend.
fn header_timeout_config(node: SocketAddr) -> String {
    web_config(None, &web_nodes(&[node])).replace(
        "    address: 127.0.0.1:0\nroutes:",
        "    address: 127.0.0.1:0\n    client_header_timeout: 0.3\nroutes:",
    )
}

/// Reads until the sidecar closes the connection; what it sent before.
async fn read_to_close(conn: &mut tokio::net::TcpStream) -> Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    // A reset counts as closed too.
    let _ = tokio::time::timeout(DEADLINE, conn.read_to_end(&mut got))
        .await
        .map_err(|_| anyhow::anyhow!("the connection was still open after {DEADLINE:?}"))?;
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_request_head_are_closed_and_requests_in_progress_are_not()
-> Result<()> {
    use tokio::io::AsyncWriteExt;
    let backend = Backend::start("b").await?;
    let cfg = header_timeout_config(backend.addr());
    ensure!(cfg.contains("client_header_timeout"), "config: {cfg}");
    let sidecar = Sidecar::start(&cfg).await?;
    let addr = sidecar.listener("http")?;

    // Silent from the start.
    let mut silent = tokio::net::TcpStream::connect(addr).await?;
    let got = read_to_close(&mut silent).await?;
    ensure!(got.is_empty(), "a silent connection got {got:?}");

    // Idle after one answered request on a keep-alive connection.
    let mut idle = tokio::net::TcpStream::connect(addr).await?;
    idle.write_all(b"GET /hello HTTP/1.1\r\nhost: a\r\n\r\n")
        .await?;
    let got = read_to_close(&mut idle).await?;
    let text = String::from_utf8_lossy(&got);
    ensure!(text.starts_with("HTTP/1.1 200"), "the request got {text}");

    // A head that never ends, one header line every 50 ms.
    let mut slow = tokio::net::TcpStream::connect(addr).await?;
    slow.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n").await?;
    let drip = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if slow
                .write_all(format!("x-drip-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    };
    tokio::time::timeout(DEADLINE, drip)
        .await
        .map_err(|_| anyhow::anyhow!("a dripping head was still accepted after {DEADLINE:?}"))?;

    // A request longer than twice the timeout is answered in full.
    let client = HttpClient::http1().with_timeout(DEADLINE);
    let long = client.get(addr, "/delay/1000").await?;
    ensure!(
        long.status == 200,
        "a 1 s answer with a 0.3 s client_header_timeout got {}",
        long.status
    );
    Ok(())
}
