//! `discovery-dns` serving a service from Consul's DNS interface: the real
//! Consul agent (`-dev`, every port chosen for it), services registered over
//! its HTTP API, `<service>.service.consul` SRV records (TTL 0) read from
//! its DNS port, and a registration change followed.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::{Result, anyhow, ensure};
use integration::{Consul, Subscriber, start_dns_adapter};
use serde_json::json;
use tokio::time::Instant;

/// Registers instance `id` of `name` on 127.0.0.1:`port` with `weight`.
async fn register(consul: &Consul, id: &str, name: &str, port: u16, weight: u32) -> Result<()> {
    consul
        .register(&json!({
            "ID": id, "Name": name, "Address": "127.0.0.1", "Port": port,
            "Weights": {"Passing": weight, "Warning": 1}
        }))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_service_through_consul_dns() -> Result<()> {
    let consul = Consul::start().await?;
    register(&consul, "web-1", "web", 9001, 5).await?;
    register(&consul, "web-2", "web", 9002, 1).await?;
    let dns = SocketAddr::from(([127, 0, 0, 1], consul.ports().dns));
    let adapter = start_dns_adapter(dns, &[]).await?;
    let result = async {
        let srv = BTreeMap::from([("type".to_string(), "srv".to_string())]);
        let mut sub =
            Subscriber::watch_with(adapter.grpc(), "web.service.consul.", srv.clone()).await?;
        sub.recv_change(Duration::from_secs(10)).await?;
        let weights = |s: &Subscriber| -> Vec<(String, u32)> {
            s.set()
                .values()
                .map(|e| (e.id.clone(), e.weight.unwrap_or(1)))
                .collect()
        };
        ensure!(
            weights(&sub)
                == [
                    ("127.0.0.1:9001".to_string(), 5),
                    ("127.0.0.1:9002".to_string(), 1)
                ],
            "{:?}",
            sub.set()
        );
        // TTL 0: the adapter asks again after --min-ttl (1 s).
        register(&consul, "web-3", "web", 9003, 1).await?;
        let started = Instant::now();
        sub.wait_for(Duration::from_secs(5), true, "web-3", |s| {
            s.contains_key("127.0.0.1:9003")
        })
        .await?;
        println!("registration seen after {:?}", started.elapsed());
        consul.deregister("web-1").await?;
        let started = Instant::now();
        sub.wait_for(Duration::from_secs(5), true, "web-1 gone", |s| {
            !s.contains_key("127.0.0.1:9001")
        })
        .await?;
        println!("deregistration seen after {:?}", started.elapsed());
        ensure!(sub.set().len() == 2, "{:?}", sub.set().keys());
        // A service Consul does not know: NXDOMAIN, not found.
        let mut missing =
            Subscriber::watch_with(adapter.grpc(), "nosuch.service.consul.", srv).await?;
        missing.recv_change(Duration::from_secs(10)).await?;
        ensure!(missing.not_found(), "{:?}", missing.set());
        Ok(())
    };
    adapter.explain(
        result
            .await
            .map_err(|e| anyhow!("{e:#}\n--- consul's log:\n{}", consul.log_tail())),
    )
}
