//! `discovery-consul` through Consul outages, against a real agent: a stopped
//! agent turns the stream STALE with its endpoints kept; the agent back with
//! fresh data (its index gone back) gives a correct fresh set and RECOVERED,
//! not a stuck watch; an unknown datacenter is a clear error.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Result, ensure};
use integration::{Adapter, Consul, Subscriber, refusal};
use tributary_proto::v1 as pb;

/// A generous bound for one awaited change; not a measurement.
const DEADLINE: Duration = Duration::from_secs(15);

fn ids(s: &Subscriber) -> Vec<String> {
    s.set().keys().cloned().collect()
}

/// Reads messages until a status in `state` arrives; returns its message.
async fn wait_status(s: &mut Subscriber, state: pb::SyncState) -> Result<String> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(st) = s
            .statuses()
            .iter()
            .rev()
            .find(|st| st.state == state as i32)
        {
            return Ok(st.message.clone());
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        s.recv(left).await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_is_stale_and_a_fresh_one_gives_a_fresh_set() -> Result<()> {
    let mut consul = Consul::start().await?;
    for (id, port) in [("web-1", 42_001), ("web-2", 42_002)] {
        consul.register_ttl("web", id, "127.0.0.1", port, 1).await?;
    }
    // Pad the index, so that the fresh agent's is clearly lower.
    for i in 0..20 {
        consul
            .set_check("web-1-ttl", if i % 2 == 0 { "warn" } else { "pass" })
            .await?;
    }
    // A short back-off ceiling: the agent's return is seen within a second.
    let adapter = Adapter::start_binary(
        "discovery-consul",
        &["--consul-addr", &consul.url(), "--backoff-max", "1s"],
    )
    .await?;
    let mut sub = Subscriber::watch(adapter.grpc(), "web").await?;
    sub.wait_for(DEADLINE, false, "both instances", |s| s.len() == 2)
        .await?;
    let before = ids(&sub);

    consul.stop();
    let message = adapter.explain(wait_status(&mut sub, pb::SyncState::Stale).await)?;
    ensure!(
        message.contains("GET /v1/health/service/web") && message.contains(&consul.url()),
        "the STALE message should name the call and the agent: {message:?}"
    );
    ensure!(
        ids(&sub) == before,
        "a STALE stream kept {:?}, not {before:?}",
        ids(&sub)
    );

    // Back on the same ports with fresh data: another instance only.
    consul.start_again().await?;
    consul
        .register_ttl("web", "web-9", "127.0.0.1", 42_009, 1)
        .await?;
    adapter.explain(
        sub.wait_for(DEADLINE, false, "the fresh agent's set", |s| {
            s.keys().collect::<Vec<_>>() == ["tributary-test/web-9"]
        })
        .await,
    )?;
    adapter.explain(wait_status(&mut sub, pb::SyncState::Recovered).await)?;

    // And the watch follows the fresh agent: not stuck on the old index.
    consul
        .register_ttl("web", "web-10", "127.0.0.1", 42_010, 1)
        .await?;
    adapter.explain(
        sub.wait_for(
            DEADLINE,
            false,
            "an instance added after the restart",
            |s| s.len() == 2 && s.contains_key("tributary-test/web-10"),
        )
        .await,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_datacenter_and_bad_arguments_are_clear_errors() -> Result<()> {
    let consul = Consul::start().await?;
    consul
        .register_ttl("web", "web-1", "127.0.0.1", 42_001, 1)
        .await?;
    let adapter =
        Adapter::start_binary("discovery-consul", &["--consul-addr", &consul.url()]).await?;

    let args = BTreeMap::from([("dc".to_string(), "no-such-dc".to_string())]);
    // The registry never answered well, so the stream carries no message
    // (the contract: nothing before the first snapshot); the error is in the
    // adapter's log and its error counter.
    let _sub = Subscriber::watch_with(adapter.grpc(), "web", args).await?;
    let deadline = std::time::Instant::now() + DEADLINE;
    let log = loop {
        let log = adapter.process().stderr();
        if log.contains("No path to datacenter") || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let line = log
        .lines()
        .find(|l| l.contains("No path to datacenter"))
        .unwrap_or_default();
    ensure!(
        line.contains("GET /v1/health/service/web") && line.contains("500"),
        "the log should name the call and Consul's answer: {line:?}\n{log}"
    );
    let errors = integration::scrape(adapter.metrics()).await?.get(
        "discovery_registry_errors_total",
        &[("service", "web{dc=no-such-dc}")],
    );
    ensure!(
        errors.is_some_and(|n| n >= 1.0),
        "registry errors: {errors:?}"
    );

    for (k, v, want) in [
        ("tags", "x", "unknown watch argument"),
        ("passing", "maybe", "passing"),
        ("consistency", "eventual", "default, stale or consistent"),
    ] {
        let args = BTreeMap::from([(k.to_string(), v.to_string())]);
        let err = Subscriber::watch_with(adapter.grpc(), "web", args)
            .await
            .expect_err("a bad argument is refused");
        let (code, msg) = refusal(&err).expect("a gRPC status");
        ensure!(
            code == tonic::Code::InvalidArgument && msg.contains(want),
            "{k}={v}: {code:?} {msg:?}"
        );
    }
    Ok(())
}
