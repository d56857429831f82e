//! One blocking query at a time against Consul, whatever the number of
//! subscribers: 1,000 subscribers of one service through `discovery-consul`,
//! counted at a forwarding proxy in front of a real agent.

use std::time::Duration;

use anyhow::{Result, ensure};
use futures_util::future::join_all;
use integration::{Adapter, Consul, Fault, FaultStub, Subscriber, wait_for_metrics};

const SUBSCRIBERS: usize = 1000;
const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_cause_one_blocking_query_at_a_time() -> Result<()> {
    let consul = Consul::start().await?;
    consul
        .register_ttl("web", "web-1", "127.0.0.1", 44_001, 1)
        .await?;
    let stub = FaultStub::start(Some(consul.addr()), |_| Fault::forward()).await?;
    let adapter =
        Adapter::start_binary("discovery-consul", &["--consul-addr", &stub.url()]).await?;

    let mut subs = Vec::with_capacity(SUBSCRIBERS);
    for chunk in 0..SUBSCRIBERS / 100 {
        let opened = join_all((0..100).map(|_| async {
            let mut s = Subscriber::watch(adapter.grpc(), "web").await?;
            s.recv_change(DEADLINE).await?;
            anyhow::Ok(s)
        }))
        .await;
        for s in opened {
            subs.push(adapter.explain(s.map_err(|e| e.context(format!("chunk {chunk}"))))?);
        }
    }
    wait_for_metrics(
        adapter.metrics(),
        DEADLINE,
        "1000 subscribers",
        "discovery_subscribers",
        |m| {
            m.get("discovery_subscribers", &[("service", "web")]) == Some(SUBSCRIBERS as f64)
                && m.get("discovery_watches", &[]) == Some(1.0)
        },
    )
    .await?;

    for i in 2..=4u16 {
        consul
            .register_ttl("web", &format!("web-{i}"), "127.0.0.1", 44_000 + i, 1)
            .await?;
        let n = usize::from(i);
        let waits = subs.iter_mut().map(|s| {
            s.wait_for(DEADLINE, true, "the new instance", move |set| {
                set.len() == n
            })
        });
        for r in join_all(waits).await {
            adapter.explain(r)?;
        }
    }
    let requests = stub.requests();
    println!(
        "{SUBSCRIBERS} subscribers, 3 changes: {requests} requests to Consul, at most {} in flight",
        stub.max_in_flight()
    );
    ensure!(
        stub.max_in_flight() == 1,
        "{} Consul queries were in flight at once",
        stub.max_in_flight()
    );
    ensure!(
        requests <= 10,
        "{requests} requests to Consul for 3 changes"
    );
    // The adapter's own count agrees: every query ended well, one waits.
    let ok = |m: &integration::Metrics| {
        m.get(
            "consul_requests_total",
            &[("endpoint", "/v1/health/service"), ("outcome", "ok")],
        )
    };
    let waiting = |m: &integration::Metrics| {
        m.get(
            "consul_requests_in_flight",
            &[("endpoint", "/v1/health/service")],
        )
    };
    wait_for_metrics(
        adapter.metrics(),
        DEADLINE,
        "the adapter's call count",
        "consul_requests_total",
        |m| waiting(m) == Some(1.0) && ok(m).map(|n| n + 1.0) == Some(stub.requests() as f64),
    )
    .await?;
    Ok(())
}
