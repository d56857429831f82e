//! Watch arguments against a real Nacos server: one service name in two
//! namespaces, two groups and two clusters gives separate sets that never mix;
//! a service missing in a namespace is not found; a bad argument is refused.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Result, ensure};
use integration::{Adapter, Nacos, NacosInstance, Subscriber, refusal};

const DEADLINE: Duration = Duration::from_secs(10);

async fn watch(adapter: &Adapter, args: &[(&str, &str)]) -> Result<Subscriber> {
    let args: BTreeMap<String, String> = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut s = Subscriber::watch_with(adapter.grpc(), "web", args).await?;
    s.recv_change(DEADLINE).await?;
    Ok(s)
}

fn ids(s: &Subscriber) -> Vec<String> {
    s.set().keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_groups_and_clusters_do_not_mix() -> Result<()> {
    let nacos = Nacos::start(&[]).await?;
    let plain = NacosInstance::new("web", "127.0.0.1", 42_001);
    let mut grouped = NacosInstance::new("web", "127.0.0.1", 42_002);
    grouped.group = "G2".into();
    let mut spaced = NacosInstance::new("web", "127.0.0.1", 42_003);
    spaced.namespace = "dev".into();
    let mut east = NacosInstance::new("web", "127.0.0.1", 42_004);
    east.cluster = "east".into();
    east.metadata = r#"{"version":"2"}"#.into();
    for i in [&plain, &grouped, &spaced, &east] {
        nacos.register(i).await?;
    }
    let args = nacos.adapter_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let adapter = Adapter::start_binary("discovery-nacos", &args).await?;

    let result = async {
        let mut default = watch(&adapter, &[]).await?;
        ensure!(
            ids(&default) == [plain.id(), east.id()],
            "default: {:?}",
            ids(&default)
        );
        let mut g2 = watch(&adapter, &[("group_name", "G2")]).await?;
        ensure!(ids(&g2) == [grouped.id()], "group G2: {:?}", ids(&g2));
        let dev = watch(&adapter, &[("namespace_id", "dev")]).await?;
        ensure!(ids(&dev) == [spaced.id()], "namespace dev: {:?}", ids(&dev));
        let only_east = watch(&adapter, &[("clusters", "east")]).await?;
        ensure!(
            ids(&only_east) == [east.id()],
            "cluster east: {:?}",
            ids(&only_east)
        );
        let e = &only_east.set()[&east.id()];
        ensure!(
            e.zone == "east" && e.metadata.get("version").map(String::as_str) == Some("2"),
            "cluster and metadata: {e:?}"
        );
        let missing = watch(&adapter, &[("namespace_id", "dev"), ("groupName", "G2")]).await?;
        ensure!(
            missing.not_found() && missing.set().is_empty(),
            "web in dev/G2 does not exist, yet: not_found={} {:?}",
            missing.not_found(),
            ids(&missing)
        );

        // A change in one group reaches its watch and not the other.
        let mut grouped2 = NacosInstance::new("web", "127.0.0.1", 42_005);
        grouped2.group = "G2".into();
        nacos.register(&grouped2).await?;
        g2.wait_for(DEADLINE, true, "the G2 instance", |s| {
            s.contains_key(&grouped2.id())
        })
        .await?;
        let plain2 = NacosInstance::new("web", "127.0.0.1", 42_006);
        nacos.register(&plain2).await?;
        default
            .wait_for(DEADLINE, true, "the default-group instance", |s| {
                s.contains_key(&plain2.id())
            })
            .await?;
        ensure!(
            ids(&default) == [plain.id(), east.id(), plain2.id()],
            "default group after changes in both: {:?}",
            ids(&default)
        );

        let err = Subscriber::watch_with(
            adapter.grpc(),
            "web",
            [("zone".to_string(), "a".to_string())].into(),
        )
        .await
        .expect_err("an unknown argument is refused");
        let (code, message) = refusal(&err).ok_or_else(|| anyhow::anyhow!("{err:#}"))?;
        ensure!(
            code == tonic::Code::InvalidArgument
                && message.contains("unknown watch argument \"zone\""),
            "{code:?}: {message}"
        );

        let mut client = integration::connect(adapter.grpc()).await?;
        let list = |args: &[(&str, &str)]| tributary_proto::v1::ListServicesRequest {
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let all = client.list_services(list(&[])).await?.into_inner().services;
        ensure!(all == ["web"], "services of public/DEFAULT_GROUP: {all:?}");
        let none = client
            .list_services(list(&[("namespace_id", "dev"), ("group_name", "G2")]))
            .await?
            .into_inner()
            .services;
        ensure!(none.is_empty(), "services of dev/G2: {none:?}");
        Ok(())
    };
    adapter.explain(result.await)
}
