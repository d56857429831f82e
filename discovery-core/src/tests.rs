//! Runtime tests over a registry double fed by channels: sharing, versions,
//! stale status, validation, the emptying guard and lagging subscribers.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::{Stream, StreamExt, stream::BoxStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tributary_proto::v1::{
    self as pb, endpoint_discovery_server::EndpointDiscovery, endpoint_update::Kind,
};

use crate::{
    Answer, Backoff, Endpoint, Registry, RegistryError, Target, hub::Hub, metrics::CoreMetrics,
    server::Service, watch::WatchConfig,
};

type Feed = mpsc::UnboundedSender<Result<Answer, RegistryError>>;

/// A registry whose answers the test sends by hand.
#[derive(Default, Clone)]
struct Fake {
    opened: Arc<AtomicUsize>,
    feeds: Arc<Mutex<HashMap<String, Feed>>>,
}

impl Registry for Fake {
    fn watch(&self, target: &Target) -> BoxStream<'static, Result<Answer, RegistryError>> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::unbounded_channel();
        self.feeds
            .lock()
            .unwrap()
            .insert(target.service.clone(), tx);
        UnboundedReceiverStream::new(rx).boxed()
    }
}

impl Fake {
    async fn feed(&self, service: &str) -> Feed {
        for _ in 0..1000 {
            if let Some(f) = self.feeds.lock().unwrap().get(service) {
                return f.clone();
            }
            tokio::task::yield_now().await;
        }
        panic!("no watch of {service} was opened");
    }
}

fn ep(port: u32, weight: i64) -> Endpoint {
    Endpoint {
        address: "10.0.0.1".into(),
        port,
        weight: Some(weight),
        ..Default::default()
    }
}

fn service(fake: &Fake, guard_share: Option<f64>) -> Service<Fake> {
    let cfg = WatchConfig {
        guard_share,
        guard_grace: Duration::from_secs(30),
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(100)),
    };
    let metrics = CoreMetrics::default();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // Nobody stops these services: keep the sender for the test's life.
    std::mem::forget(stop_tx);
    Service::new(
        Arc::new(Hub::new(Arc::new(fake.clone()), cfg, metrics.clone())),
        metrics,
        stop,
    )
}

async fn subscribe(
    svc: &Service<Fake>,
    name: &str,
) -> impl Stream<Item = Result<pb::EndpointUpdate, tonic::Status>> + Unpin + use<> {
    let req = pb::WatchRequest {
        service: name.into(),
        ..Default::default()
    };
    svc.watch(tonic::Request::new(req))
        .await
        .unwrap()
        .into_inner()
}

async fn next(
    s: &mut (impl Stream<Item = Result<pb::EndpointUpdate, tonic::Status>> + Unpin),
) -> pb::EndpointUpdate {
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("an update within 5 s")
        .expect("stream open")
        .expect("no error")
}

fn snapshot_ports(u: &pb::EndpointUpdate) -> Vec<u32> {
    match &u.kind {
        Some(Kind::Snapshot(s)) => s.endpoints.iter().map(|e| e.port).collect(),
        k => panic!("expected a snapshot, got {k:?}"),
    }
}

fn delta(u: &pb::EndpointUpdate) -> (Vec<u32>, Vec<String>) {
    match &u.kind {
        Some(Kind::Delta(d)) => (
            d.upserts.iter().map(|e| e.port).collect(),
            d.removals.clone(),
        ),
        k => panic!("expected a delta, got {k:?}"),
    }
}

fn status(u: &pb::EndpointUpdate) -> (i32, String) {
    match &u.kind {
        Some(Kind::Status(s)) => (s.state, s.message.clone()),
        k => panic!("expected a status, got {k:?}"),
    }
}

#[tokio::test]
async fn snapshot_first_then_versioned_deltas() {
    let fake = Fake::default();
    let svc = service(&fake, None);
    let mut s = subscribe(&svc, "web").await;
    let feed = fake.feed("web").await;
    feed.send(Ok(Answer::Found(vec![ep(1, 1), ep(2, 1)])))
        .unwrap();
    let first = next(&mut s).await;
    assert_eq!(snapshot_ports(&first), [1, 2]);

    feed.send(Ok(Answer::Found(vec![ep(1, 5), ep(3, 1)])))
        .unwrap();
    let d = next(&mut s).await;
    assert_eq!(d.version, first.version + 1);
    assert_eq!(delta(&d), (vec![1, 3], vec!["10.0.0.1:2".to_string()]));

    // An unchanged answer sends nothing; the next change is exactly +1.
    feed.send(Ok(Answer::Found(vec![ep(1, 5), ep(3, 1)])))
        .unwrap();
    feed.send(Ok(Answer::Found(vec![ep(1, 5)]))).unwrap();
    let d2 = next(&mut s).await;
    assert_eq!(d2.version, d.version + 1);
    assert_eq!(delta(&d2).1, ["10.0.0.1:3"]);
}

#[tokio::test]
async fn subscribers_share_one_watch_that_closes_after_the_last() {
    let fake = Fake::default();
    let svc = service(&fake, None);
    let mut subs = Vec::new();
    for _ in 0..100 {
        subs.push(subscribe(&svc, "web").await);
    }
    let feed = fake.feed("web").await;
    feed.send(Ok(Answer::Found(vec![ep(1, 1)]))).unwrap();
    let mut versions = Vec::new();
    for s in &mut subs {
        versions.push(next(s).await.version);
    }
    assert!(versions.iter().all(|v| *v == versions[0]));
    assert_eq!(
        fake.opened.load(Ordering::SeqCst),
        1,
        "one registry watch for 100 subscribers"
    );
    drop(subs);
    tokio::time::timeout(Duration::from_secs(5), feed.closed())
        .await
        .expect("the registry watch is dropped after the last subscriber leaves");
}

#[tokio::test]
async fn errors_turn_stale_and_keep_the_set() {
    let fake = Fake::default();
    let svc = service(&fake, None);
    let mut s = subscribe(&svc, "web").await;
    let feed = fake.feed("web").await;
    feed.send(Ok(Answer::Found(vec![ep(1, 1)]))).unwrap();
    let v = next(&mut s).await.version;
    feed.send(Err(RegistryError::new("registry unreachable")))
        .unwrap();
    let st = next(&mut s).await;
    assert_eq!(
        status(&st),
        (pb::SyncState::Stale as i32, "registry unreachable".into())
    );
    assert_eq!(st.version, v, "a status does not change the version");
    feed.send(Ok(Answer::Found(vec![ep(1, 1), ep(2, 1)])))
        .unwrap();
    let d = next(&mut s).await;
    assert_eq!(delta(&d).0, [2]);
    assert_eq!(
        status(&next(&mut s).await).0,
        pb::SyncState::Recovered as i32
    );
}

#[tokio::test]
async fn a_malformed_endpoint_is_dropped_and_the_rest_served() {
    let fake = Fake::default();
    let svc = service(&fake, None);
    let mut s = subscribe(&svc, "web").await;
    fake.feed("web")
        .await
        .send(Ok(Answer::Found(vec![
            ep(0, 1),
            ep(2, -3),
            ep(3, 1),
            ep(3, 1),
        ])))
        .unwrap();
    assert_eq!(snapshot_ports(&next(&mut s).await), [3]);
}

#[tokio::test]
async fn not_found_is_an_empty_flagged_snapshot_and_appearing_resets() {
    let fake = Fake::default();
    let svc = service(&fake, None);
    let mut s = subscribe(&svc, "ghost").await;
    let feed = fake.feed("ghost").await;
    feed.send(Ok(Answer::NotFound)).unwrap();
    let u = next(&mut s).await;
    match &u.kind {
        Some(Kind::Snapshot(snap)) => assert!(snap.not_found && snap.endpoints.is_empty()),
        k => panic!("{k:?}"),
    }
    feed.send(Ok(Answer::Found(vec![ep(1, 1)]))).unwrap();
    let u2 = next(&mut s).await;
    assert_eq!(snapshot_ports(&u2), [1]);
    assert_eq!(u2.version, u.version + 1);
}

#[tokio::test(start_paused = true)]
async fn the_guard_holds_back_sudden_emptying_for_the_grace_period() {
    let fake = Fake::default();
    let svc = service(&fake, Some(0.5));
    let mut s = subscribe(&svc, "web").await;
    let feed = fake.feed("web").await;
    feed.send(Ok(Answer::Found(vec![
        ep(1, 1),
        ep(2, 1),
        ep(3, 1),
        ep(4, 1),
    ])))
    .unwrap();
    next(&mut s).await;
    // Removing one of four is below the share: applied at once.
    feed.send(Ok(Answer::Found(vec![ep(1, 1), ep(2, 1), ep(3, 1)])))
        .unwrap();
    assert_eq!(delta(&next(&mut s).await).1.len(), 1);
    // Removing everything is held back and reported.
    feed.send(Ok(Answer::Found(vec![]))).unwrap();
    let st = next(&mut s).await;
    let (state, msg) = status(&st);
    assert_eq!(state, pb::SyncState::Stale as i32);
    assert!(msg.contains("held back"), "{msg}");
    tokio::time::advance(Duration::from_secs(29)).await;
    tokio::task::yield_now().await;
    // After the grace period the emptying applies.
    let d = next(&mut s).await;
    assert_eq!(delta(&d).1.len(), 3);
}

#[tokio::test]
async fn a_lagging_subscriber_gets_a_snapshot_not_a_gap() {
    let fake = Fake::default();
    let svc = service(&fake, None);
    let mut s = subscribe(&svc, "web").await;
    let feed = fake.feed("web").await;
    feed.send(Ok(Answer::Found(vec![ep(1, 1)]))).unwrap();
    let v = next(&mut s).await.version;
    // Several versions pass while the subscriber does not read.
    for p in 2..6 {
        feed.send(Ok(Answer::Found(vec![ep(1, 1), ep(p, 1)])))
            .unwrap();
    }
    // Let the watch task publish them all.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let u = next(&mut s).await;
    assert!(u.version > v + 1);
    assert_eq!(snapshot_ports(&u), [1, 5]);
}
