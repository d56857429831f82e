//! How `discovery-consul` reaches Consul: fail-over from an agent address
//! where nothing listens to the next one, and the ACL token (from
//! `CONSUL_HTTP_TOKEN` or `--token-file`) sent with every call but never
//! logged, even at debug level.

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Result, ensure};
use integration::{
    Adapter, Consul, Fault, FaultStub, Subscriber, closed_port, loopback_args, workspace_binary,
};

const DEADLINE: Duration = Duration::from_secs(15);
const SECRET: &str = "5ecret-acl-token-0042";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_address_hands_over_to_the_next_agent() -> Result<()> {
    let consul = Consul::start().await?;
    consul
        .register_ttl("web", "web-1", "127.0.0.1", 45_001, 1)
        .await?;
    let dead = closed_port()?;
    let addrs = format!("http://{dead},{}", consul.url());
    let adapter = Adapter::start_binary("discovery-consul", &["--consul-addr", &addrs]).await?;
    let mut sub = Subscriber::watch(adapter.grpc(), "web").await?;
    adapter.explain(
        sub.wait_for(DEADLINE, false, "web-1 through the second address", |s| {
            s.contains_key("tributary-test/web-1")
        })
        .await,
    )?;
    ensure!(sub.statuses().is_empty(), "statuses: {:?}", sub.statuses());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent_and_never_logged() -> Result<()> {
    let consul = Consul::start().await?;
    consul
        .register_ttl("web", "web-1", "127.0.0.1", 45_001, 1)
        .await?;
    let tokens = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = tokens.clone();
    let stub = FaultStub::start(Some(consul.addr()), move |parts| {
        let t = parts
            .headers
            .get("x-consul-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(none)");
        seen.lock().expect("lock").push(t.to_string());
        Fault::forward()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{SECRET}-file\n"))?;

    for (how, want) in [
        ("env", SECRET.to_string()),
        ("file", format!("{SECRET}-file")),
    ] {
        tokens.lock().expect("lock").clear();
        let mut cmd = Command::new(workspace_binary("discovery-consul")?);
        cmd.args(["--consul-addr", &stub.url(), "--log-level", "debug"])
            .args(loopback_args())
            .env("CONSUL_HTTP_TOKEN", SECRET);
        if how == "file" {
            cmd.arg("--token-file").arg(&token_file);
        }
        let adapter = Adapter::start("discovery-consul", cmd).await?;
        let mut sub = Subscriber::watch(adapter.grpc(), "web").await?;
        sub.wait_for(DEADLINE, false, "web-1", |s| s.len() == 1)
            .await?;
        let sent = tokens.lock().expect("lock").clone();
        ensure!(
            !sent.is_empty() && sent.iter().all(|t| *t == want),
            "{how}: tokens sent {sent:?}"
        );
        drop(sub);
        drop(adapter.process().terminate());
        adapter.process().wait_exit(DEADLINE).await?;
        let log = adapter.process().stderr();
        ensure!(
            log.contains("consul answer") && !log.contains(SECRET),
            "{how}: the debug log must show calls and never the token:\n{log}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_services_reads_the_catalog() -> Result<()> {
    use tributary_proto::v1::ListServicesRequest;
    let consul = Consul::start().await?;
    consul
        .register_ttl("web", "web-1", "127.0.0.1", 45_001, 1)
        .await?;
    consul
        .register_ttl("db", "db-1", "127.0.0.1", 45_002, 1)
        .await?;
    let adapter =
        Adapter::start_binary("discovery-consul", &["--consul-addr", &consul.url()]).await?;
    let mut client = integration::connect(adapter.grpc()).await?;
    let services = client
        .list_services(ListServicesRequest::default())
        .await?
        .into_inner()
        .services;
    ensure!(services == ["consul", "db", "web"], "{services:?}");
    let bad = ListServicesRequest {
        args: [("tag".to_string(), "x".to_string())].into(),
    };
    let err = client.list_services(bad).await.expect_err("refused");
    ensure!(
        err.code() == tonic::Code::InvalidArgument && err.message().contains("\"tag\""),
        "{err:?}"
    );
    let other_dc = ListServicesRequest {
        args: [("dc".to_string(), "nowhere".to_string())].into(),
    };
    let err = client
        .list_services(other_dc)
        .await
        .expect_err("unknown dc");
    ensure!(
        err.code() == tonic::Code::Unavailable && err.message().contains("No path to datacenter"),
        "{err:?}"
    );
    Ok(())
}
