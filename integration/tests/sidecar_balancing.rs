//! Load-aware balancing against real backends of unequal speed: `ewma`
//! steers traffic away from a much slower backend, and `least_conn`
//! keeps requests in flight even where round robin piles them on the slow one.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result, ensure};
use integration::{Backend, HttpClient, Sidecar, web_config, web_nodes};
use tokio::sync::Mutex;

const DEADLINE: Duration = Duration::from_secs(10);

/// Upstream `web` of type `kind` over static `nodes`, no retries.
fn config(kind: &str, nodes: &[SocketAddr]) -> String {
    web_config(
        None,
        &format!("    type: {kind}\n    retries: 0\n{}", web_nodes(nodes)),
    )
}

/// Sends `per_client` sequential requests from each of `clients` concurrent
/// clients; counts the answers by backend name.
async fn load(
    addr: SocketAddr,
    clients: usize,
    per_client: usize,
) -> Result<BTreeMap<String, usize>> {
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let counts = counts.clone();
        tasks.push(tokio::spawn(async move {
            let client = HttpClient::http1().with_timeout(DEADLINE);
            for _ in 0..per_client {
                let reply = client.get(addr, "/").await?.ok()?;
                let name = reply
                    .header("x-backend")
                    .context("no x-backend")?
                    .to_string();
                *counts.lock().await.entry(name).or_insert(0) += 1;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let counts = counts.lock().await.clone();
    Ok(counts)
}

/// The share of `per_client` requests from each of four clients that a
/// balancer of type `kind` sends to the slow one of two backends.
async fn slow_share(kind: &str, per_client: usize) -> Result<f64> {
    let fast = Backend::start_with("fast", &["--delay-ms", "2"]).await?;
    let slow = Backend::start_with("slow", &["--delay-ms", "100"]).await?;
    let sidecar = Sidecar::start(&config(kind, &[fast.addr(), slow.addr()])).await?;
    let counts = load(sidecar.listener("http")?, 4, per_client).await?;
    let total: usize = counts.values().sum();
    Ok(*counts.get("slow").unwrap_or(&0) as f64 / total as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ewma_sends_clearly_less_to_a_fifty_times_slower_backend() -> Result<()> {
    // Peak EWMA holds a latency spike for seconds (its decay window is 10 s),
    // so a single slow answer from the fast backend, which a loaded machine
    // can cause, must not look as slow as the slow backend: 2 ms against
    // 100 ms leaves a wide margin. Only the first few requests, sent before
    // the slow backend's first answer, should reach it.
    let ewma = slow_share("ewma", 60).await?;
    ensure!(
        ewma < 0.10,
        "ewma sent {:.0}% of requests to the slow backend",
        ewma * 100.0
    );
    // The control: round robin does not look at latency.
    let rr = slow_share("roundrobin", 20).await?;
    ensure!(
        rr > 0.4,
        "round robin sent only {:.0}% to the slow backend",
        rr * 100.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_keeps_in_flight_requests_balanced() -> Result<()> {
    let fast = Backend::start_with("fast", &["--delay-ms", "5"]).await?;
    let slow = Backend::start_with("slow", &["--delay-ms", "50"]).await?;
    let sidecar = Sidecar::start(&config("least_conn", &[fast.addr(), slow.addr()])).await?;
    let addr = sidecar.listener("http")?;
    let traffic = tokio::spawn(load(addr, 8, 40));
    // Sample the in-flight counts while the traffic runs.
    let (mut samples, mut fast_sum, mut slow_sum) = (0u32, 0u64, 0u64);
    while !traffic.is_finished() {
        let ups = sidecar.upstreams().await?;
        let mut by_addr = BTreeMap::new();
        for e in ups.endpoints("web") {
            by_addr.insert(
                e["address"].as_str().unwrap_or_default().to_string(),
                e["in_flight"].as_u64().unwrap_or_default(),
            );
        }
        fast_sum += by_addr.get(&fast.addr().to_string()).copied().unwrap_or(0);
        slow_sum += by_addr.get(&slow.addr().to_string()).copied().unwrap_or(0);
        samples += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let counts = traffic.await??;
    ensure!(samples >= 5, "only {samples} samples taken");
    let (f, s) = (
        fast_sum as f64 / samples as f64,
        slow_sum as f64 / samples as f64,
    );
    // Round robin would hold about ten times as many on the slow backend.
    ensure!(
        (f - s).abs() <= 1.5,
        "mean in flight: fast {f:.2}, slow {s:.2} ({samples} samples)"
    );
    let (nf, ns) = (
        counts.get("fast").copied().unwrap_or(0),
        counts.get("slow").copied().unwrap_or(0),
    );
    ensure!(
        nf > 3 * ns,
        "least_conn sent {nf} requests to the fast backend and {ns} to the slow one"
    );
    Ok(())
}
