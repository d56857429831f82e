//! The `discovery-file` adapter on its own: refused files, `ListServices`,
//! watch arguments and gRPC health.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, Result, anyhow, bail, ensure};
use integration::{
    Adapter, EndpointFile, Subscriber, TestEndpoint, connect, describe, refusal, render, scrape,
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tributary_proto::v1::{self as pb, endpoint_update::Kind};

/// How long the adapter gets to show one file change.
const DEADLINE: Duration = Duration::from_secs(10);

/// A good file: `web` with one endpoint of weight `weight`, and `other`.
fn good_file(weight: u32) -> String {
    render(&BTreeMap::from([
        ("web".to_string(), vec![TestEndpoint::new(8081, weight)]),
        ("other".to_string(), vec![TestEndpoint::new(8082, 1)]),
    ]))
}

async fn start(file: &EndpointFile) -> Result<Adapter> {
    let path = file.path().to_str().context("non-UTF-8 temp path")?;
    Adapter::start_binary("discovery-file", &["--file", path]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_files_turn_stale_keep_the_set_and_recover() -> Result<()> {
    let file = EndpointFile::new(&good_file(1))?;
    let adapter = start(&file).await?;
    adapter.explain(refused_files(&adapter, &file).await)
}

async fn refused_files(adapter: &Adapter, file: &EndpointFile) -> Result<()> {
    let cases = [
        ("bad YAML", "services: [\n", "line 1"),
        (
            "port 0",
            "services:\n  web:\n    - {address: 127.0.0.1, port: 0}\n",
            "services.web[0]: port 0 is not in 1..=65535",
        ),
        (
            "port 70000",
            "services:\n  web:\n    - {address: 127.0.0.1, port: 70000}\n",
            "services.web[0]: port 70000 is not in 1..=65535",
        ),
        (
            "negative weight",
            "services:\n  web:\n    - {address: 127.0.0.1, port: 80, weight: -1}\n",
            "services.web[0]: weight -1 is negative",
        ),
        (
            "duplicate ids",
            "services:\n  web:\n    - {id: a, address: 127.0.0.1, port: 80}\n    \
             - {id: a, address: 127.0.0.2, port: 80}\n",
            "services.web[1]: duplicate endpoint id \"a\"",
        ),
    ];
    let mut sub = Subscriber::watch(adapter.grpc(), "web").await?;
    sub.recv(DEADLINE).await?;
    for (i, (case, text, want)) in cases.into_iter().enumerate() {
        let held = (sub.version(), sub.set().clone());
        file.write(text)?;
        // The very next message is the stale status: no snapshot or delta
        // comes first, and the set is untouched.
        let m = sub.recv(DEADLINE).await.context(case)?;
        let status = stale_status(&m).context(case)?;
        ensure!(
            status.message.contains(want),
            "{case}: the stale status says {:?}, which does not name {want:?}",
            status.message
        );
        ensure!(
            (sub.version(), sub.set()) == (held.0, &held.1),
            "{case}: the set changed"
        );
        ensure!(
            adapter.process().stderr().contains(want),
            "{case}: the adapter logged no error naming {want:?}"
        );

        // A good file (with a new weight, so there is something to send)
        // brings exactly a delta and a RECOVERED status, in either order.
        file.write(&good_file(i as u32 + 2))?;
        let (a, b) = (sub.recv(DEADLINE).await?, sub.recv(DEADLINE).await?);
        let kinds = [&a, &b].map(|m| match &m.kind {
            Some(Kind::Delta(_)) => "delta",
            Some(Kind::Status(s)) if s.state == pb::SyncState::Recovered as i32 => "recovered",
            _ => "other",
        });
        ensure!(
            kinds == ["delta", "recovered"] || kinds == ["recovered", "delta"],
            "{case}: after a good file, expected a delta and a RECOVERED status; got {} then {}",
            describe(&a),
            describe(&b)
        );
        let web = sub.set().get("127.0.0.1:8081");
        ensure!(
            web.and_then(|e| e.weight) == Some(i as u32 + 2),
            "{case}: after recovery the set holds {web:?}"
        );
    }
    let errors = scrape(adapter.metrics())
        .await?
        .get("discovery_registry_errors_total", &[("service", "web")]);
    ensure!(
        errors >= Some(cases.len() as f64),
        "discovery_registry_errors_total{{service=\"web\"}} is {errors:?}"
    );
    Ok(())
}

fn stale_status(m: &pb::EndpointUpdate) -> Result<&pb::Status> {
    match &m.kind {
        Some(Kind::Status(s)) if s.state == pb::SyncState::Stale as i32 => Ok(s),
        _ => bail!("expected a STALE status, got a {}", describe(m)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_services_lists_the_files_services() -> Result<()> {
    let file = EndpointFile::new(&good_file(1))?;
    let adapter = start(&file).await?;
    let mut client = connect(adapter.grpc()).await?;
    let services = adapter
        .explain(
            client
                .list_services(pb::ListServicesRequest::default())
                .await
                .map_err(anyhow::Error::new),
        )?
        .into_inner()
        .services;
    ensure!(
        services == ["other", "web"],
        "ListServices answered {services:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_with_an_unknown_argument_is_refused() -> Result<()> {
    let file = EndpointFile::new(&good_file(1))?;
    let adapter = start(&file).await?;
    let args = BTreeMap::from([("namespace".to_string(), "prod".to_string())]);
    let err = match Subscriber::watch_with(adapter.grpc(), "web", args).await {
        Ok(_) => bail!("a watch with an unknown argument was accepted"),
        Err(e) => e,
    };
    let (code, message) = refusal(&err).ok_or_else(|| anyhow!("not a gRPC refusal: {err:#}"))?;
    ensure!(
        code == Code::InvalidArgument && message.contains("namespace"),
        "expected INVALID_ARGUMENT naming the argument, got {code:?}: {message:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_reports_serving() -> Result<()> {
    let file = EndpointFile::new(&good_file(1))?;
    let adapter = start(&file).await?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", adapter.grpc()))?
        .connect()
        .await?;
    let mut health = HealthClient::new(channel);
    for service in ["", "discovery.v1.EndpointDiscovery"] {
        let check = health.check(HealthCheckRequest {
            service: service.into(),
        });
        let status = tokio::time::timeout(DEADLINE, check)
            .await
            .context("health check timed out")??
            .into_inner()
            .status;
        ensure!(
            status == ServingStatus::Serving as i32,
            "health of {service:?} is {:?}",
            ServingStatus::try_from(status)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_an_idle_adapter() -> Result<()> {
    let file = EndpointFile::new(&good_file(1))?;
    let adapter = start(&file).await?;
    let mut client = connect(adapter.grpc()).await?;
    client
        .list_services(pb::ListServicesRequest::default())
        .await?;
    drop(client);
    adapter.process().terminate()?;
    let status = adapter.explain(adapter.process().wait_exit(DEADLINE).await)?;
    ensure!(
        status.success(),
        "discovery-file exited with {status} on SIGTERM"
    );
    Ok(())
}

/// Sidecars are always subscribed, so this is how an adapter is stopped in
/// practice: its Watch streams end and it exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_an_adapter_with_open_watches() -> Result<()> {
    let file = EndpointFile::new(&good_file(1))?;
    let adapter = start(&file).await?;
    let mut sub = Subscriber::watch(adapter.grpc(), "web").await?;
    sub.recv(DEADLINE).await?;
    adapter.process().terminate()?;
    let status = adapter.explain(adapter.process().wait_exit(DEADLINE).await)?;
    ensure!(
        status.success(),
        "discovery-file exited with {status} on SIGTERM"
    );
    Ok(())
}
