//! `discovery-consul`'s watch arguments and endpoint fields against a real
//! Consul agent: tag filters, `passing`, `filter` expressions, the zone from
//! node meta, tagged addresses, weights and metadata; and a service that
//! appears and disappears while watched (not found, found, not found).

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Result, ensure};
use integration::{Adapter, Consul, Subscriber};
use serde_json::json;
use tributary_proto::v1 as pb;

const DEADLINE: Duration = Duration::from_secs(15);

async fn watch(adapter: &Adapter, service: &str, args: &[(&str, &str)]) -> Result<Subscriber> {
    let args: BTreeMap<String, String> = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut s = Subscriber::watch_with(adapter.grpc(), service, args).await?;
    s.recv_change(DEADLINE).await?;
    Ok(s)
}

fn ids(s: &Subscriber) -> Vec<&str> {
    s.set()
        .keys()
        .map(|k| k.trim_start_matches("tributary-test/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_arguments_shape_the_endpoints() -> Result<()> {
    let consul = Consul::start_with(json!({"node_meta": {"rack": "r7"}})).await?;
    for (id, tags, port, version) in [
        ("api-1", vec!["v1"], 47_101, "1"),
        ("api-2", vec!["v2", "blue"], 47_102, "2"),
        ("api-3", vec!["v2"], 47_103, "2"),
    ] {
        consul
            .register(&json!({
                "ID": id, "Name": "api", "Address": "127.0.0.1", "Port": port, "Tags": tags,
                "Meta": {"version": version},
                "Weights": {"Passing": 4, "Warning": 2},
                "TaggedAddresses": {"wan": {"Address": "192.0.2.10", "Port": port + 1000}},
                "Check": {"CheckID": format!("{id}-ttl"), "TTL": "10m", "Status": "passing"},
            }))
            .await?;
    }
    consul.set_check("api-3-ttl", "warn").await?;
    let adapter =
        Adapter::start_binary("discovery-consul", &["--consul-addr", &consul.url()]).await?;

    let all = watch(&adapter, "api", &[]).await?;
    ensure!(ids(&all) == ["api-1", "api-2", "api-3"], "{:?}", ids(&all));
    let e: &pb::Endpoint = &all.set()["tributary-test/api-2"];
    ensure!(
        e.address == "127.0.0.1" && e.port == 47_102 && e.weight == Some(4),
        "{e:?}"
    );
    ensure!(
        e.zone == "dc1",
        "without a zone key the zone is the datacenter: {e:?}"
    );
    ensure!(
        e.metadata.get("version").map(String::as_str) == Some("2")
            && e.metadata.get("tags").map(String::as_str) == Some("v2,blue")
            && e.metadata.get("node.rack").map(String::as_str) == Some("r7"),
        "{:?}",
        e.metadata
    );
    // A warning check: healthy by default, with the Warning weight.
    let w = &all.set()["tributary-test/api-3"];
    ensure!(
        w.health == pb::Health::Healthy as i32 && w.weight == Some(2),
        "{w:?}"
    );

    let v2 = watch(&adapter, "api", &[("tag", "v2")]).await?;
    ensure!(ids(&v2) == ["api-2", "api-3"], "tag=v2: {:?}", ids(&v2));
    let both = watch(&adapter, "api", &[("tag", "v2,blue")]).await?;
    ensure!(ids(&both) == ["api-2"], "tag=v2,blue: {:?}", ids(&both));
    let passing = watch(&adapter, "api", &[("passing", "true")]).await?;
    ensure!(
        ids(&passing) == ["api-1", "api-2"],
        "passing: {:?}",
        ids(&passing)
    );
    let filtered = watch(
        &adapter,
        "api",
        &[("filter", "Service.Meta.version == \"1\"")],
    )
    .await?;
    ensure!(ids(&filtered) == ["api-1"], "filter: {:?}", ids(&filtered));
    let draining = watch(&adapter, "api", &[("warning", "draining")]).await?;
    ensure!(
        draining.set()["tributary-test/api-3"].health == pb::Health::Draining as i32,
        "warning=draining: {:?}",
        draining.set()["tributary-test/api-3"]
    );
    let zoned = watch(&adapter, "api", &[("zone_key", "rack"), ("address", "wan")]).await?;
    let z = &zoned.set()["tributary-test/api-1"];
    ensure!(
        z.zone == "r7" && z.address == "192.0.2.10" && z.port == 48_101,
        "zone_key=rack, address=wan: {z:?}"
    );
    // No instance matches, but the service exists: empty, not "not found".
    let none = watch(&adapter, "api", &[("tag", "v9")]).await?;
    ensure!(
        none.set().is_empty() && !none.not_found(),
        "tag=v9: {:?} not_found={}",
        ids(&none),
        none.not_found()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_appears_and_disappears_while_watched() -> Result<()> {
    let consul = Consul::start().await?;
    let adapter =
        Adapter::start_binary("discovery-consul", &["--consul-addr", &consul.url()]).await?;
    let mut s = watch(&adapter, "late", &[]).await?;
    ensure!(s.not_found() && s.set().is_empty(), "first: not found");

    consul
        .register_ttl("late", "late-1", "127.0.0.1", 47_201, 1)
        .await?;
    adapter.explain(
        s.wait_for(DEADLINE, false, "late-1", |set| set.len() == 1)
            .await,
    )?;
    ensure!(!s.not_found(), "found once registered");

    consul.deregister("late-1").await?;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !s.not_found() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        adapter.explain(s.recv_change(left).await)?;
    }
    ensure!(s.set().is_empty(), "not found again, and empty");
    Ok(())
}
