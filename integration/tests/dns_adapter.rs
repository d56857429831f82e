//! `discovery-dns` against a real BIND 9 changed with `nsupdate`: SRV
//! changes arrive as deltas when the TTL runs out, a lowered TTL takes over
//! after the old one, address records serve on the watch's port, a missing
//! name is a not-found snapshot, a stopped server turns the watch stale
//! with its set kept, and only the lowest SRV priority group that resolves
//! is served.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, Result, ensure};
use integration::{
    Bind, Subscriber, ZONE, scrape, start_dns_adapter, wait_for_metrics, wait_for_status,
};
use tokio::time::Instant;
use tributary_proto::v1 as pb;

/// Slack on top of "TTL + 1 s" for a loaded machine: a bound, not a
/// measurement (the measured figures are printed).
const SLACK: Duration = Duration::from_secs(2);

fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Ids and weights of a set, sorted.
fn weights(s: &Subscriber) -> Vec<(String, u32)> {
    s.set()
        .values()
        .map(|e| (e.id.clone(), e.weight.unwrap_or(1)))
        .collect()
}

fn pairs(items: &[(&str, u32)]) -> Vec<(String, u32)> {
    items.iter().map(|(id, w)| (id.to_string(), *w)).collect()
}

/// Applies an update, then waits (deltas only) until the set has exactly
/// `want`; prints and returns how long that took after the update.
async fn change_and_wait(
    bind: &Bind,
    sub: &mut Subscriber,
    update: &str,
    ttl: Duration,
    want: &[(&str, u32)],
) -> Result<Duration> {
    bind.update(update).await?;
    let started = Instant::now();
    let want = pairs(want);
    let deadline = ttl + Duration::from_secs(1) + SLACK;
    sub.wait_for(deadline, true, &format!("{want:?}"), |set| {
        set.values()
            .map(|e| (e.id.clone(), e.weight.unwrap_or(1)))
            .collect::<Vec<_>>()
            == want
    })
    .await?;
    let took = started.elapsed();
    println!("{update:?} seen after {took:?} (TTL {ttl:?})");
    Ok(took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_changes_arrive_as_deltas_within_the_ttl() -> Result<()> {
    let bind = Bind::start("lo 2 IN A 127.0.0.1\n_web._tcp 2 IN SRV 0 10 9001 lo\n").await?;
    let adapter = start_dns_adapter(bind.addr(), &[]).await?;
    let result = async {
        let name = format!("_web._tcp.{ZONE}");
        let mut sub = Subscriber::watch(adapter.grpc(), &name).await?;
        sub.recv_change(Duration::from_secs(10)).await?;
        ensure!(
            weights(&sub) == pairs(&[("127.0.0.1:9001", 10)]),
            "{:?}",
            sub.set()
        );
        let e = &sub.set()["127.0.0.1:9001"];
        ensure!(
            e.address == "127.0.0.1"
                && e.port == 9001
                && e.metadata.get("target").map(String::as_str) == Some("lo.tributary.test.")
                && e.metadata.get("priority").map(String::as_str) == Some("0"),
            "{e:?}"
        );
        let ttl = Duration::from_secs(2);
        let srv = |rest: &str| format!("_web._tcp.{ZONE} 2 SRV {rest}");
        let mut took = Vec::new();
        took.push(
            change_and_wait(
                &bind,
                &mut sub,
                &format!("update add {}", srv("0 20 9002 lo.tributary.test.")),
                ttl,
                &[("127.0.0.1:9001", 10), ("127.0.0.1:9002", 20)],
            )
            .await?,
        );
        took.push(
            change_and_wait(
                &bind,
                &mut sub,
                &format!(
                    "update delete {}\nupdate add {}",
                    srv("0 10 9001 lo.tributary.test."),
                    srv("0 30 9001 lo.tributary.test.")
                ),
                ttl,
                &[("127.0.0.1:9001", 30), ("127.0.0.1:9002", 20)],
            )
            .await?,
        );
        took.push(
            change_and_wait(
                &bind,
                &mut sub,
                &format!("update delete {}", srv("0 20 9002 lo.tributary.test.")),
                ttl,
                &[("127.0.0.1:9001", 30)],
            )
            .await?,
        );
        println!("TTL 2 s: add, re-weight, remove seen after {took:?}");
        Ok(())
    };
    adapter.explain(bind.explain(result.await))
}

/// A TTL lowered from 5 s to 1 s is followed once the old one runs out:
/// the adapter's refresh wait drops to about 1 s and the next change comes
/// within 1 s + 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_ttl_takes_over_after_the_old_one() -> Result<()> {
    let bind = Bind::start("lo 5 IN A 127.0.0.1\n_slow._tcp 5 IN SRV 0 1 9001 lo\n").await?;
    let adapter = start_dns_adapter(bind.addr(), &[]).await?;
    let result = async {
        let name = format!("_slow._tcp.{ZONE}");
        let mut sub = Subscriber::watch(adapter.grpc(), &name).await?;
        sub.recv_change(Duration::from_secs(10)).await?;
        let refresh = |m: &integration::Metrics| {
            m.get(
                "discovery_dns_refresh_seconds",
                &[("service", name.as_str())],
            )
        };
        let before = refresh(&scrape(adapter.metrics()).await?);
        ensure!(
            before.is_some_and(|s| (5.0..=5.5).contains(&s)),
            "refresh wait with TTL 5: {before:?}"
        );
        // Lower both TTLs, and add a record, in one update.
        bind.update(&format!(
            "update delete lo.{ZONE} A\nupdate add lo.{ZONE} 1 A 127.0.0.1\n\
             update delete {name} SRV\nupdate add {name} 1 SRV 0 1 9001 lo.{ZONE}\n\
             update add {name} 1 SRV 0 1 9002 lo.{ZONE}"
        ))
        .await?;
        let started = Instant::now();
        sub.wait_for(Duration::from_secs(5 + 1) + SLACK, true, "9002", |s| {
            s.contains_key("127.0.0.1:9002")
        })
        .await?;
        println!(
            "change under the old TTL 5 s seen after {:?}",
            started.elapsed()
        );
        wait_for_metrics(
            adapter.metrics(),
            Duration::from_secs(5),
            "a refresh wait of about 1 s",
            "discovery_dns_refresh_seconds",
            |m| refresh(m).is_some_and(|s| s <= 1.2),
        )
        .await?;
        let took = change_and_wait(
            &bind,
            &mut sub,
            &format!("update add {name} 1 SRV 0 1 9003 lo.{ZONE}"),
            Duration::from_secs(1),
            &[
                ("127.0.0.1:9001", 1),
                ("127.0.0.1:9002", 1),
                ("127.0.0.1:9003", 1),
            ],
        )
        .await?;
        println!("after lowering the TTL to 1 s, an add is seen after {took:?}");
        Ok(())
    };
    adapter.explain(bind.explain(result.await))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_records_serve_on_the_watch_port() -> Result<()> {
    let bind = Bind::start("web IN A 127.0.0.1\nweb IN A 127.0.0.2\nweb IN AAAA ::1\n").await?;
    let adapter = start_dns_adapter(bind.addr(), &[]).await?;
    let result = async {
        let name = format!("web.{ZONE}");
        let mut both = Subscriber::watch_with(
            adapter.grpc(),
            &name,
            args(&[("port", "8080"), ("weight", "3")]),
        )
        .await?;
        both.recv_change(Duration::from_secs(10)).await?;
        ensure!(
            weights(&both)
                == pairs(&[
                    ("127.0.0.1:8080", 3),
                    ("127.0.0.2:8080", 3),
                    ("[::1]:8080", 3)
                ]),
            "{:?}",
            both.set()
        );
        let mut v4 = Subscriber::watch_with(
            adapter.grpc(),
            &name,
            args(&[("type", "a"), ("port", "80")]),
        )
        .await?;
        v4.recv_change(Duration::from_secs(10)).await?;
        ensure!(
            weights(&v4) == pairs(&[("127.0.0.1:80", 1), ("127.0.0.2:80", 1)]),
            "{:?}",
            v4.set()
        );
        // Another port of the same name shares the first watch's loop: three
        // registry watches, two resolution loops (A+AAAA, and A).
        let mut other =
            Subscriber::watch_with(adapter.grpc(), &name, args(&[("port", "9090")])).await?;
        other.recv_change(Duration::from_secs(10)).await?;
        ensure!(other.set().len() == 3 && other.set().contains_key("[::1]:9090"));
        wait_for_metrics(
            adapter.metrics(),
            Duration::from_secs(5),
            "3 watches over 2 resolution loops",
            "discovery_dns_loops",
            |m| {
                m.get("discovery_watches", &[]) == Some(3.0)
                    && m.get("discovery_dns_loops", &[]) == Some(2.0)
            },
        )
        .await?;
        drop(other);
        bind.update(&format!("update add web.{ZONE} 1 A 127.0.0.3"))
            .await?;
        v4.wait_for(Duration::from_secs(2) + SLACK, true, "127.0.0.3", |s| {
            s.contains_key("127.0.0.3:80")
        })
        .await?;
        // A watch without its port is refused, naming the argument.
        let err = Subscriber::watch(adapter.grpc(), &name).await.unwrap_err();
        let (code, message) = integration::refusal(&err).context("not a gRPC refusal")?;
        ensure!(
            code == tonic::Code::InvalidArgument && message.contains("\"port\""),
            "{code:?} {message}"
        );
        Ok(())
    };
    adapter.explain(bind.explain(result.await))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_name_is_a_not_found_snapshot_until_it_exists() -> Result<()> {
    let bind = Bind::start("lo IN A 127.0.0.1\n").await?;
    let adapter = start_dns_adapter(bind.addr(), &[]).await?;
    let result = async {
        // NXDOMAIN.
        let name = format!("_new._tcp.{ZONE}");
        let mut sub = Subscriber::watch(adapter.grpc(), &name).await?;
        sub.recv_change(Duration::from_secs(10)).await?;
        ensure!(sub.not_found() && sub.set().is_empty(), "{:?}", sub.set());
        // NODATA: the name exists, without SRV records.
        let mut nodata = Subscriber::watch_with(
            adapter.grpc(),
            &format!("lo.{ZONE}"),
            args(&[("type", "srv")]),
        )
        .await?;
        nodata.recv_change(Duration::from_secs(10)).await?;
        ensure!(nodata.not_found(), "NODATA: {:?}", nodata.set());
        // The name appears: a snapshot of it, no longer flagged.
        bind.update(&format!("update add {name} 1 SRV 0 1 9001 lo.{ZONE}"))
            .await?;
        let started = Instant::now();
        let m = sub.recv_change(Duration::from_secs(2) + SLACK).await?;
        println!("the new name was seen after {:?}", started.elapsed());
        ensure!(
            matches!(m.kind, Some(pb::endpoint_update::Kind::Snapshot(_)))
                && !sub.not_found()
                && sub.set().contains_key("127.0.0.1:9001"),
            "{m:?}"
        );
        Ok(())
    };
    adapter.explain(bind.explain(result.await))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_turns_the_watch_stale_and_keeps_the_set() -> Result<()> {
    let mut bind = Bind::start("lo IN A 127.0.0.1\n_web._tcp IN SRV 0 1 9001 lo\n").await?;
    let adapter = start_dns_adapter(bind.addr(), &[]).await?;
    let name = format!("_web._tcp.{ZONE}");
    let mut sub = Subscriber::watch(adapter.grpc(), &name).await?;
    adapter.explain(sub.recv_change(Duration::from_secs(10)).await)?;
    let before = sub.set().clone();

    bind.stop();
    let started = Instant::now();
    let stale = adapter
        .explain(wait_for_status(&mut sub, pb::SyncState::Stale, Duration::from_secs(10)).await)?;
    println!("stale after {:?}: {:?}", started.elapsed(), stale.message);
    ensure!(
        stale.message.contains(&name) && stale.message.contains("failed"),
        "the status should name the watched name and the failure: {:?}",
        stale.message
    );
    ensure!(
        sub.set() == &before,
        "the set changed while stale: {:?}",
        sub.set()
    );

    bind.restart().await?;
    let recovered = adapter.explain(
        wait_for_status(&mut sub, pb::SyncState::Recovered, Duration::from_secs(35)).await,
    )?;
    println!("recovered: {:?}", recovered.message);
    ensure!(
        sub.set() == &before,
        "the set changed on recovery: {:?}",
        sub.set()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lowest_priority_group_that_resolves_is_served() -> Result<()> {
    let bind = Bind::start(
        "a IN A 127.0.0.1\nb IN A 127.0.0.2\nc IN A 127.0.0.3\n\
         _prio._tcp IN SRV 10 1 9001 a\n_prio._tcp IN SRV 10 3 9002 b\n\
         _prio._tcp IN SRV 20 1 9003 c\n",
    )
    .await?;
    let adapter = start_dns_adapter(bind.addr(), &[]).await?;
    let result = async {
        let mut sub = Subscriber::watch(adapter.grpc(), &format!("_prio._tcp.{ZONE}")).await?;
        sub.recv_change(Duration::from_secs(10)).await?;
        ensure!(
            weights(&sub) == pairs(&[("127.0.0.1:9001", 1), ("127.0.0.2:9002", 3)]),
            "{:?}",
            sub.set()
        );
        let ttl = Duration::from_secs(1);
        // One target of the group gone: the rest of the group serves.
        change_and_wait(
            &bind,
            &mut sub,
            &format!("update delete a.{ZONE} A"),
            ttl,
            &[("127.0.0.2:9002", 3)],
        )
        .await?;
        // The whole group gone: the next group serves.
        change_and_wait(
            &bind,
            &mut sub,
            &format!("update delete b.{ZONE} A"),
            ttl,
            &[("127.0.0.3:9003", 1)],
        )
        .await?;
        ensure!(
            sub.set()["127.0.0.3:9003"]
                .metadata
                .get("priority")
                .map(String::as_str)
                == Some("20"),
            "{:?}",
            sub.set()
        );
        // Back: the lowest group takes over again.
        change_and_wait(
            &bind,
            &mut sub,
            &format!("update add a.{ZONE} 1 A 127.0.0.1"),
            ttl,
            &[("127.0.0.1:9001", 1)],
        )
        .await?;
        Ok::<_, anyhow::Error>(())
    };
    adapter.explain(bind.explain(result.await))
}

/// Names without a final dot get the search domains as the system's
/// resolver applies them: with `--search tributary.test`, `web` and
/// `_web._tcp` are found in the zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_domains_complete_relative_names() -> Result<()> {
    let bind = Bind::start("web IN A 127.0.0.1\n_web._tcp IN SRV 0 1 9001 web\n").await?;
    let adapter = start_dns_adapter(bind.addr(), &["--search", "tributary.test"]).await?;
    let result = async {
        let mut a = Subscriber::watch_with(adapter.grpc(), "web", args(&[("port", "80")])).await?;
        a.recv_change(Duration::from_secs(10)).await?;
        ensure!(
            weights(&a) == pairs(&[("127.0.0.1:80", 1)]),
            "{:?}",
            a.set()
        );
        let mut srv = Subscriber::watch(adapter.grpc(), "_web._tcp").await?;
        srv.recv_change(Duration::from_secs(10)).await?;
        ensure!(
            weights(&srv) == pairs(&[("127.0.0.1:9001", 1)]),
            "{:?}",
            srv.set()
        );
        Ok(())
    };
    adapter.explain(bind.explain(result.await))
}
