//! The health checker following an upstream's set: probes start for added
//! endpoints and stop at once for removed ones, whose state is dropped;
//! nothing is probed once the upstream is gone; a reload keeps verdicts and
//! clears those of checks it removes, and passive ejections that only the
//! removed probes could end.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::net::TcpListener;

use super::{
    Health, Upstream,
    merge::{Candidate, Merged},
};
use crate::{config, discovery::Discovery, health::Attempt};

/// A TCP listener that counts the connections it accepts.
async fn counting_listener() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            c.fetch_add(1, Ordering::Relaxed);
        }
    });
    (addr, count)
}

fn upstream_cfg(addrs: &[SocketAddr], checks: &str) -> Arc<config::Upstream> {
    let nodes: Vec<String> = addrs.iter().map(|a| format!("\"{a}\": 1")).collect();
    let yaml = format!("name: web\nnodes: {{{}}}\n{checks}", nodes.join(", "));
    Arc::new(serde_saphyr::from_str(&yaml).expect("upstream config"))
}

const TCP_CHECKS: &str =
    "checks:\n  active: {type: tcp, healthy: {interval: 0.02}, unhealthy: {interval: 0.02}}\n";

fn candidate(addr: SocketAddr) -> Candidate {
    Candidate {
        id: addr.to_string().into(),
        addr,
        weight: 1,
        priority: 0,
        zone: "".into(),
        source: "static".into(),
        registry_health: Health::Healthy,
    }
}

/// Waits until `f` holds, for at most 5 s.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether `count` stays put over a few probe intervals.
async fn stays(count: &AtomicUsize) -> bool {
    // A probe in flight when its task was aborted may still land.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let before = count.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(150)).await;
    count.load(Ordering::Relaxed) == before
}

#[tokio::test]
async fn probes_follow_the_set_and_stop_with_the_upstream() {
    let (a, a_count) = counting_listener().await;
    let (b, b_count) = counting_listener().await;
    let discovery = Discovery::new("test");
    let up = Upstream::start(upstream_cfg(&[a, b], TCP_CHECKS), &discovery, None)
        .await
        .expect("upstream");
    until("both probed", || {
        a_count.load(Ordering::Relaxed) > 0 && b_count.load(Ordering::Relaxed) > 0
    })
    .await;

    // b leaves the set: its probes stop and its live state is dropped.
    let b_state = Arc::downgrade(&up.state().endpoints[1].state);
    up.rebuild(Merged {
        endpoints: vec![candidate(a)],
        sources: Vec::new(),
    });
    until("b's state dropped", || b_state.upgrade().is_none()).await;
    assert!(stays(&b_count).await, "b is still probed");
    let a_before = a_count.load(Ordering::Relaxed);
    until("a still probed", || {
        a_count.load(Ordering::Relaxed) > a_before
    })
    .await;

    // b comes back: probed again, with a fresh state.
    up.rebuild(Merged {
        endpoints: vec![candidate(a), candidate(b)],
        sources: Vec::new(),
    });
    let b_before = b_count.load(Ordering::Relaxed);
    until("b probed again", || {
        b_count.load(Ordering::Relaxed) > b_before
    })
    .await;

    // The upstream goes (a reload dropped it): nothing is probed any more.
    drop(up);
    assert!(stays(&a_count).await, "a is still probed");
    assert!(stays(&b_count).await, "b is still probed");
}

#[tokio::test]
async fn a_reload_keeps_verdicts_and_clears_those_of_removed_checks() {
    let (a, _) = counting_listener().await;
    // Nothing listens on b: its probes fail, and it turns unhealthy.
    let b: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let discovery = Discovery::new("test");
    let cfg = upstream_cfg(&[a, b], TCP_CHECKS);
    let first = Upstream::start(cfg.clone(), &discovery, None)
        .await
        .expect("upstream");
    let b_state = first.state().endpoints[1].state.clone();
    until("b unhealthy", || b_state.health() == Health::Unhealthy).await;

    // Same checks, new config object: the verdict carries over.
    let second = Upstream::start(cfg, &discovery, Some(&first))
        .await
        .expect("upstream");
    second.take_over(&first);
    assert!(Arc::ptr_eq(&second.state().endpoints[1].state, &b_state));
    assert_eq!(b_state.health(), Health::Unhealthy);
    assert!(second.panic.episodes() == 0, "a is still available");

    // Checks removed: nothing would ever bring b back, so the verdict goes.
    let third = Upstream::start(upstream_cfg(&[a, b], ""), &discovery, Some(&second))
        .await
        .expect("upstream");
    third.take_over(&second);
    assert_eq!(third.state().endpoints[1].state.health(), Health::Healthy);
}

#[tokio::test]
async fn a_passive_ejection_waiting_for_removed_probes_is_cleared() {
    let (a, _) = counting_listener().await;
    let discovery = Discovery::new("test");
    // Probes too rare to restore the endpoint during the test.
    let both = "checks:\n  active: {type: tcp, healthy: {interval: 60}}\n  passive: {}\n";
    let first = Upstream::start(upstream_cfg(&[a], both), &discovery, None)
        .await
        .expect("upstream");
    let e = first.state().endpoints[0].clone();
    first.record(&e, Attempt::ConnectFailed);
    first.record(&e, Attempt::ConnectFailed);
    assert_eq!(e.state.health(), Health::Unhealthy);
    assert_eq!(first.panic.episodes(), 1);

    // Passive checks alone from now on: nothing would end that ejection.
    let passive = "checks:\n  passive: {}\n";
    let second = Upstream::start(upstream_cfg(&[a], passive), &discovery, Some(&first))
        .await
        .expect("upstream");
    second.take_over(&first);
    assert_eq!(e.state.health(), Health::Healthy);
}
