//! Bad DNS answers from a real BIND 9: SRV targets that do not resolve (no
//! such name, no address records, a CNAME loop) are dropped with an error
//! naming them while the rest of the set is served; a watched name turned
//! into a CNAME loop makes the watch stale with its set kept; answers too
//! big for UDP come whole over TCP.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Result, ensure};
use integration::{Bind, Subscriber, ZONE, scrape, start_dns_adapter, wait_for_status};
use tributary_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_targets_that_do_not_resolve_are_dropped_and_the_rest_served() -> Result<()> {
    let bind = Bind::start(
        "good IN A 127.0.0.1\n\
         txtonly IN TXT \"no address here\"\n\
         loop1 IN CNAME loop2\nloop2 IN CNAME loop1\n\
         _mixed._tcp IN SRV 0 1 9001 good\n\
         _mixed._tcp IN SRV 0 1 9002 nohost\n\
         _mixed._tcp IN SRV 0 1 9003 txtonly\n\
         _mixed._tcp IN SRV 0 1 9004 loop1\n",
    )
    .await?;
    let adapter = start_dns_adapter(bind.addr(), &[]).await?;
    let result = async {
        let name = format!("_mixed._tcp.{ZONE}");
        let mut sub = Subscriber::watch(adapter.grpc(), &name).await?;
        sub.recv_change(Duration::from_secs(10)).await?;
        let ids: Vec<&String> = sub.set().keys().collect();
        ensure!(ids == ["127.0.0.1:9001"], "served {ids:?}");
        let log = adapter.process().stderr();
        for want in [
            "target nohost.tributary.test.: no such name (NXDOMAIN)",
            "target txtonly.tributary.test.: no A or AAAA records",
            "target loop1.tributary.test.: CNAME loop: loop1.tributary.test. -> \
             loop2.tributary.test. -> loop1.tributary.test.",
        ] {
            ensure!(log.contains(want), "the log lacks {want:?}");
        }
        let m = scrape(adapter.metrics()).await?;
        let dropped = m.get("discovery_dns_dropped_targets_total", &[("service", &name)]);
        ensure!(
            dropped.is_some_and(|n| n >= 3.0),
            "dropped targets: {dropped:?}"
        );
        // A new good target still comes as a delta.
        bind.update(&format!("update add {name} 1 SRV 0 1 9005 good.{ZONE}"))
            .await?;
        sub.wait_for(Duration::from_secs(5), true, "9005", |s| {
            s.contains_key("127.0.0.1:9005")
        })
        .await?;
        ensure!(sub.set().len() == 2, "{:?}", sub.set().keys());
        Ok(())
    };
    adapter.explain(bind.explain(result.await))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_turned_into_a_cname_loop_is_stale_with_its_set_kept() -> Result<()> {
    let bind = Bind::start("svc IN A 127.0.0.1\nsvc IN A 127.0.0.2\n").await?;
    let adapter = start_dns_adapter(bind.addr(), &[]).await?;
    let result = async {
        let args = BTreeMap::from([("port".to_string(), "80".to_string())]);
        let mut sub = Subscriber::watch_with(adapter.grpc(), &format!("svc.{ZONE}"), args).await?;
        sub.recv_change(Duration::from_secs(10)).await?;
        let before = sub.set().clone();
        ensure!(before.len() == 2, "{:?}", before.keys());
        bind.update(&format!(
            "update delete svc.{ZONE} A\nupdate add svc.{ZONE} 1 CNAME svc2.{ZONE}\n\
             update add svc2.{ZONE} 1 CNAME svc.{ZONE}"
        ))
        .await?;
        let stale =
            wait_for_status(&mut sub, pb::SyncState::Stale, Duration::from_secs(10)).await?;
        println!("stale: {:?}", stale.message);
        ensure!(
            stale.message.contains(
                "CNAME loop: svc.tributary.test. -> svc2.tributary.test. -> svc.tributary.test."
            ),
            "{:?}",
            stale.message
        );
        ensure!(
            sub.set() == &before,
            "the set changed: {:?}",
            sub.set().keys()
        );
        Ok(())
    };
    adapter.explain(bind.explain(result.await))
}

/// 100 A records (about 1.7 KB) and 100 SRV records (about 2.2 KB; BIND
/// allows 100 records a set) do not fit a UDP answer (hickory offers 1232
/// bytes): `named` sets the truncation
/// bit, hickory asks again over TCP, and the set is complete. `named`'s
/// query log shows both queries of each name, the second with `T` (TCP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_too_big_for_udp_come_whole_over_tcp() -> Result<()> {
    let mut records = String::new();
    for i in 1..=100 {
        records.push_str(&format!("big IN A 127.0.1.{i}\n"));
    }
    records.push_str("lo IN A 127.0.0.1\n");
    for port in 10_000..10_100 {
        records.push_str(&format!("_many._tcp IN SRV 0 1 {port} lo\n"));
    }
    let bind = Bind::start(&records).await?;
    let adapter = start_dns_adapter(bind.addr(), &[]).await?;
    let result = async {
        let args = BTreeMap::from([
            ("type".to_string(), "a".to_string()),
            ("port".to_string(), "80".to_string()),
        ]);
        let mut big = Subscriber::watch_with(adapter.grpc(), &format!("big.{ZONE}"), args).await?;
        big.recv_change(Duration::from_secs(10)).await?;
        ensure!(
            big.set().len() == 100,
            "{} of 100 addresses",
            big.set().len()
        );
        let mut many = Subscriber::watch(adapter.grpc(), &format!("_many._tcp.{ZONE}")).await?;
        many.recv_change(Duration::from_secs(10)).await?;
        ensure!(
            many.set().len() == 100,
            "{} of 100 SRV endpoints",
            many.set().len()
        );
        let log = bind.log();
        for q in [
            "big.tributary.test IN A",
            "_many._tcp.tributary.test IN SRV",
        ] {
            let flags: Vec<&str> = log
                .lines()
                .filter_map(|l| l.split_once(&format!("query: {q} "))?.1.split(' ').next())
                .collect();
            ensure!(
                flags.iter().any(|f| !f.contains('T')) && flags.iter().any(|f| f.contains('T')),
                "expected a UDP and a TCP query of {q:?}, named logged the flags {flags:?}"
            );
        }
        Ok(())
    };
    adapter.explain(bind.explain(result.await))
}
