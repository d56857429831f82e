//! gRPC through the sidecar: h2c downstream and upstream (`scheme: grpc`),
//! with the `discovery-file` adapter as the gRPC backend, so that unary
//! calls, a long-lived server stream, trailers and error statuses all cross
//! the proxy.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::{Context, Result, anyhow, bail, ensure};
use integration::{
    Adapter, EndpointFile, Sidecar, Subscriber, TestEndpoint, connect, describe, refusal, render,
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tributary_proto::v1::{self as pb, endpoint_update::Kind};

/// How long one awaited message or change may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// `web` with endpoints on these ports, and `other`.
fn endpoints(web: &[u16]) -> String {
    render(&BTreeMap::from([
        (
            "web".to_string(),
            web.iter().map(|p| TestEndpoint::new(*p, 1)).collect(),
        ),
        ("other".to_string(), vec![TestEndpoint::new(9100, 1)]),
    ]))
}

/// A listener whose discovery.v1 and grpc.health.v1 calls go to the adapter.
fn config(adapter: SocketAddr) -> String {
    format!(
        "\
listeners:
  - name: grpc
    address: 127.0.0.1:0
routes:
  - name: discovery
    uri: /discovery.v1.EndpointDiscovery/*
    upstream: adapter
  - name: health
    uri: /grpc.health.v1.Health/*
    upstream: adapter
upstreams:
  - name: adapter
    scheme: grpc
    nodes:
      \"{adapter}\": 1
admin:
  address: 127.0.0.1:0
"
    )
}

/// Fields drop in order: the sidecar stops before its backend, the adapter.
struct Setup {
    sidecar: Sidecar,
    _adapter: Adapter,
    file: EndpointFile,
}

async fn setup() -> Result<Setup> {
    let file = EndpointFile::new(&endpoints(&[9001]))?;
    let path = file.path().to_str().context("non-UTF-8 temp path")?;
    let adapter = Adapter::start_binary("discovery-file", &["--file", path]).await?;
    let sidecar = Sidecar::start(&config(adapter.grpc())).await?;
    Ok(Setup {
        sidecar,
        _adapter: adapter,
        file,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_cross_the_sidecar() -> Result<()> {
    let s = setup().await?;
    let proxy = s.sidecar.listener("grpc")?;
    s.sidecar.explain(
        async {
            let mut client = connect(proxy).await?;
            let call = client.list_services(pb::ListServicesRequest::default());
            let services = tokio::time::timeout(DEADLINE, call)
                .await
                .context("ListServices through the sidecar timed out")??
                .into_inner()
                .services;
            ensure!(
                services == ["other", "web"],
                "ListServices through the sidecar answered {services:?}"
            );

            let channel = tonic::transport::Channel::from_shared(format!("http://{proxy}"))?
                .connect()
                .await?;
            let mut health = HealthClient::new(channel);
            let check = health.check(HealthCheckRequest {
                service: "discovery.v1.EndpointDiscovery".into(),
            });
            let status = tokio::time::timeout(DEADLINE, check)
                .await
                .context("the health check through the sidecar timed out")??
                .into_inner()
                .status;
            ensure!(
                status == ServingStatus::Serving as i32,
                "health through the sidecar is {:?}",
                ServingStatus::try_from(status)
            );
            Ok(())
        }
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stream_crosses_the_sidecar_snapshot_then_delta() -> Result<()> {
    let s = setup().await?;
    let proxy = s.sidecar.listener("grpc")?;
    s.sidecar.explain(
        async {
            // The Subscriber checks the stream rules on every message.
            let mut sub = Subscriber::watch(proxy, "web").await?;
            let first = sub.recv_change(DEADLINE).await?;
            ensure!(
                matches!(first.kind, Some(Kind::Snapshot(_)))
                    && sub.set().keys().collect::<Vec<_>>() == ["127.0.0.1:9001"],
                "first message through the sidecar: {}",
                describe(&first)
            );

            s.file.write(&endpoints(&[9001, 9002]))?;
            sub.wait_for(DEADLINE, true, "the added endpoint as a delta", |set| {
                set.contains_key("127.0.0.1:9002")
            })
            .await?;
            ensure!(sub.set().len() == 2, "the set is {:?}", sub.set().keys());
            Ok(())
        }
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_status_crosses_the_sidecar() -> Result<()> {
    let s = setup().await?;
    let proxy = s.sidecar.listener("grpc")?;
    s.sidecar.explain(
        async {
            let args = BTreeMap::from([("namespace".to_string(), "prod".to_string())]);
            let err = match Subscriber::watch_with(proxy, "web", args).await {
                Ok(_) => bail!("a watch with an unknown argument was accepted"),
                Err(e) => e,
            };
            let (code, message) =
                refusal(&err).ok_or_else(|| anyhow!("not a gRPC refusal: {err:#}"))?;
            ensure!(
                code == Code::InvalidArgument && message.contains("namespace"),
                "expected the adapter's INVALID_ARGUMENT naming the argument, \
                 got {code:?}: {message:?}"
            );
            Ok(())
        }
        .await,
    )
}
