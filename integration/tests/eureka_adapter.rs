//! `discovery-eureka` against the real Eureka server: registrations, changes,
//! status overrides and cancellations arrive as deltas; a one-instance
//! application and a VIP address are served; the server going away keeps the
//! last set with a STALE status, and its return brings the set back.
//!
//! One server for the whole scenario (a JVM start is slow), restarted once
//! on the same port for the outage.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, Result, anyhow, bail, ensure};
use integration::{
    Adapter, EurekaInstance, EurekaServer, Subscriber, closed_port, connect, describe, refusal,
};
use tonic::Code;
use tributary_proto::v1::{self as pb, endpoint_update::Kind};

/// How long the adapter (fetching every second) gets to show one change.
const DEADLINE: Duration = Duration::from_secs(15);

fn instance(app: &str, id: &str, port: u16, weight: u32) -> EurekaInstance {
    let mut i = EurekaInstance::new(app, id, port);
    i.metadata = vec![
        ("weight".into(), weight.to_string()),
        ("zone".into(), "zone-a".into()),
    ];
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_arrive_as_deltas_and_an_outage_keeps_the_set() -> Result<()> {
    let server = EurekaServer::start().await?;
    let a1 = instance("web", "web-1", 9001, 2);
    let a2 = instance("web", "web-2", 9002, 1);
    let solo = instance("solo", "solo-1", 9100, 1);
    for i in [&a1, &a2, &solo] {
        server.register(i).await?;
    }
    // The first URL has nothing behind it: the adapter fails over.
    let urls = format!("http://{}/eureka,{}", closed_port()?, server.url());
    let adapter = Adapter::start_binary(
        "discovery-eureka",
        &[
            "--eureka-url",
            &urls,
            "--fetch-interval",
            "1s",
            // A restarted server is empty until its clients register again:
            // the guard keeps the set through that (see docs/adapters/eureka.md).
            "--empty-guard-share",
            "0.6",
            "--empty-guard-grace",
            "60s",
        ],
    )
    .await?;
    let result = scenario(&adapter, server, [a1, a2, solo]).await;
    adapter.explain(result)
}

async fn scenario(
    adapter: &Adapter,
    server: EurekaServer,
    [a1, a2, solo]: [EurekaInstance; 3],
) -> Result<()> {
    let grpc = adapter.grpc();
    let mut web = Subscriber::watch(grpc, "web").await?;
    let first = web.recv_change(DEADLINE).await?;
    ensure!(
        matches!(first.kind, Some(Kind::Snapshot(_))) && web.set().len() == 2,
        "first message: {}",
        describe(&first)
    );
    let e1 = &web.set()["web-1"];
    ensure!(
        (e1.address.as_str(), e1.port, e1.weight, e1.zone.as_str())
            == ("127.0.0.1", 9001, Some(2), "zone-a")
            && e1.health == pb::Health::Healthy as i32,
        "web-1 maps wrongly: {e1:?}"
    );

    // A one-instance application (the real server writes it as a
    // one-element array; older ones as an object, see the unit tests).
    let raw = server.get("/eureka/apps/SOLO").await?.ok()?.text();
    println!("one-instance application as the server writes it: {raw}");
    let mut one = Subscriber::watch(grpc, "solo").await?;
    one.recv_change(DEADLINE).await?;
    ensure!(
        one.set().keys().collect::<Vec<_>>() == ["solo-1"],
        "{:?}",
        one.set()
    );

    // A VIP address across applications, and a missing application.
    let by_vip = BTreeMap::from([("by".to_string(), "vip".to_string())]);
    let mut vip = Subscriber::watch_with(grpc, "WEB.vip", by_vip).await?;
    vip.recv_change(DEADLINE).await?;
    ensure!(vip.set().len() == 2, "by VIP: {:?}", vip.set().keys());
    let mut missing = Subscriber::watch(grpc, "no-such-app").await?;
    missing.recv_change(DEADLINE).await?;
    ensure!(
        missing.not_found(),
        "a missing application must be not found"
    );

    // Arguments are checked; the registry lists its applications and VIPs.
    let bad = BTreeMap::from([("by".to_string(), "name".to_string())]);
    let err = match Subscriber::watch_with(grpc, "web", bad).await {
        Ok(_) => bail!("a watch with by=name was accepted"),
        Err(e) => e,
    };
    let (code, message) = refusal(&err).ok_or_else(|| anyhow!("not a gRPC refusal: {err:#}"))?;
    ensure!(
        code == Code::InvalidArgument && message.contains("\"by\": \"name\" is not one of"),
        "expected INVALID_ARGUMENT naming the argument, got {code:?}: {message:?}"
    );
    let mut client = connect(grpc).await?;
    let apps = client
        .list_services(pb::ListServicesRequest::default())
        .await?
        .into_inner()
        .services;
    ensure!(apps == ["SOLO", "WEB"], "ListServices answered {apps:?}");
    let vips = client
        .list_services(pb::ListServicesRequest {
            args: [("by".to_string(), "vip".to_string())].into(),
        })
        .await?
        .into_inner()
        .services;
    ensure!(
        vips == ["solo.vip", "web.vip"],
        "ListServices by VIP answered {vips:?}"
    );

    // Registered, changed, drained and cancelled: each a delta.
    let mut a3 = instance("web", "web-3", 9003, 1);
    server.register(&a3).await?;
    web.wait_for(DEADLINE, true, "the registered web-3", |s| {
        s.contains_key("web-3")
    })
    .await?;
    a3.metadata[0].1 = "7".into();
    server.register(&a3).await?;
    web.wait_for(DEADLINE, true, "web-3's new weight", |s| {
        s["web-3"].weight == Some(7)
    })
    .await?;
    server.set_status("web", "web-1", "OUT_OF_SERVICE").await?;
    web.wait_for(DEADLINE, true, "web-1 draining", |s| {
        s["web-1"].health == pb::Health::Draining as i32
    })
    .await?;
    server.cancel("web", "web-3").await?;
    web.wait_for(DEADLINE, true, "web-3 cancelled", |s| {
        !s.contains_key("web-3")
    })
    .await?;
    ensure!(
        web.set()["web-2"].health == pb::Health::Healthy as i32 && web.set().len() == 2,
        "other endpoints changed: {:?}",
        web.set()
    );

    // The server goes away: the set stays, STALE.
    let before = web.set().clone();
    let port = server.addr().port();
    server.process().kill()?;
    server.process().wait_exit(DEADLINE).await?;
    drop(server);
    let stale = web.wait_status(pb::SyncState::Stale, DEADLINE).await?;
    println!("stale: {}", stale.message);
    ensure!(
        web.set() == &before,
        "the set changed while the server was down"
    );

    // A watch opened during the outage (another target: new arguments)
    // starts with the last known set, then STALE.
    let args = BTreeMap::from([("address".to_string(), "ip".to_string())]);
    let mut late = Subscriber::watch_with(grpc, "web", args).await?;
    let first = late.recv_change(DEADLINE).await?;
    ensure!(
        matches!(first.kind, Some(Kind::Snapshot(_))) && late.set() == &before,
        "a watch opened during the outage began with {}",
        describe(&first)
    );
    let is_stale = |s: &pb::Status| s.state == pb::SyncState::Stale as i32;
    if !late.statuses().iter().any(is_stale) {
        late.wait_status(pb::SyncState::Stale, DEADLINE).await?;
    }
    drop(late);

    // It comes back empty; its clients see heartbeats fail and register
    // again, as Eureka clients do. The set never empties on the way.
    let server = EurekaServer::start_on(port).await?;
    for i in [&a1, &a2, &solo] {
        let known = server.heartbeat(&i.app, &i.id).await?;
        ensure!(!known, "a restarted server cannot know {}", i.id);
        server.register(i).await?;
    }
    let deadline = tokio::time::Instant::now() + DEADLINE * 2;
    let mut recovered = false;
    // Until both are back: a fetch can fall between the two registrations.
    let both_back = |set: &integration::EndpointSet| {
        ["web-1", "web-2"].iter().all(|id| {
            set.get(*id)
                .is_some_and(|e| e.health == pb::Health::Healthy as i32)
        })
    };
    while !(recovered && both_back(web.set())) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = web
            .recv(left)
            .await
            .context("waiting for the set after the restart")?;
        ensure!(
            !web.set().is_empty(),
            "the set emptied during the restart: {}",
            describe(&m)
        );
        if let Some(Kind::Status(s)) = &m.kind {
            recovered |= s.state == pb::SyncState::Recovered as i32;
        }
    }
    ensure!(
        web.set().keys().collect::<Vec<_>>() == ["web-1", "web-2"],
        "{:?}",
        web.set().keys()
    );
    Ok(())
}
