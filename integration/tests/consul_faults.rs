//! `discovery-consul` against faults a real Consul cannot be made to show on
//! demand, from the fault stub placed between the adapter and a real agent:
//! malformed JSON, a 500, a truncated body, a 50 MB body and a hang each turn
//! the stream STALE with a message naming the call and the fault, keep the
//! set, crash nothing, and the next good answer brings RECOVERED.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use integration::{Adapter, Consul, Fault, FaultStub, Subscriber};
use tributary_proto::v1 as pb;

/// A generous bound for one awaited change; not a measurement.
const DEADLINE: Duration = Duration::from_secs(20);

/// Alternatives: a message must contain one of them.
type Want = &'static [&'static str];

fn headers() -> Vec<(String, String)> {
    vec![
        ("content-type".into(), "application/json".into()),
        ("x-consul-index".into(), "999999".into()),
    ]
}

/// Reads messages until a new status in `state` arrives (one after the
/// first `seen` statuses); returns its message.
async fn next_status(s: &mut Subscriber, seen: usize, state: pb::SyncState) -> Result<String> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(st) = s.statuses()[seen..]
            .iter()
            .find(|st| st.state == state as i32)
        {
            return Ok(st.message.clone());
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        s.recv(left).await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_are_clear_errors_and_the_set_is_kept() -> Result<()> {
    let consul = Consul::start().await?;
    for (id, port) in [("web-1", 43_001), ("web-2", 43_002)] {
        consul.register_ttl("web", id, "127.0.0.1", port, 1).await?;
    }
    let stub = FaultStub::start(Some(consul.addr()), |_| Fault::forward()).await?;
    // A short wait, so that a fault set while a query blocks applies soon.
    let adapter = Adapter::start_binary(
        "discovery-consul",
        &[
            "--consul-addr",
            &stub.url(),
            "--wait",
            "500ms",
            "--request-timeout",
            "1s",
            "--backoff-max",
            "500ms",
        ],
    )
    .await?;
    let mut sub = Subscriber::watch(adapter.grpc(), "web").await?;
    // Both registered and passing: an instance the agent has not yet
    // synced to the catalog whole must not change the set mid-test.
    sub.wait_for(DEADLINE, false, "both instances healthy", |s| {
        s.len() == 2 && s.values().all(|e| e.health == pb::Health::Healthy as i32)
    })
    .await?;
    let before = sub.set().clone();

    let real = br#"[{"Node": {"Node": "n", "Address": "127.0.0.1"}, "Service": {"ID": "x", "Port": 1}, "Checks": []}]"#;
    let faults: Vec<(&str, Fault, Want)> = vec![
        (
            "malformed JSON",
            Fault::Reply {
                status: 200,
                headers: headers(),
                body: "[{\"Node\": ".into(),
            },
            &["malformed JSON answer: EOF while parsing"],
        ),
        (
            "a 500",
            Fault::Reply {
                status: 500,
                headers: vec![],
                body: "rpc error: boom".into(),
            },
            &["Consul answered 500 Internal Server Error: rpc error: boom"],
        ),
        (
            "a truncated body",
            Fault::Truncate {
                status: 200,
                headers: headers(),
                body: real[..].into(),
                cut: 40,
            },
            // The stub's cut comes before or after the head leaves.
            &[
                "truncated or broken body after",
                "connection closed before message completed",
            ],
        ),
        (
            "a 50 MB body",
            Fault::Huge {
                headers: headers(),
                size: 50 << 20,
            },
            &["over the limit of 16777216 bytes"],
        ),
        ("a hang", Fault::Hang, &["no answer within"]),
    ];
    for (what, fault, want) in faults {
        let seen = sub.statuses().len();
        stub.set_rule(move |parts| {
            if parts.uri.path() == "/v1/health/service/web" {
                fault.clone()
            } else {
                Fault::forward()
            }
        });
        let message = adapter.explain(next_status(&mut sub, seen, pb::SyncState::Stale).await)?;
        ensure!(
            message.contains(&format!("GET /v1/health/service/web at {}", stub.url()))
                && want.iter().any(|w| message.contains(w)),
            "{what}: the STALE message should name the call and {want:?}: {message:?}"
        );
        ensure!(
            sub.set() == &before,
            "{what}: the set changed from {before:?} to {:?}",
            sub.set()
        );
        ensure!(
            adapter.process().try_exit()?.is_none(),
            "{what}: the adapter exited"
        );

        let seen = sub.statuses().len();
        stub.set_rule(|_| Fault::forward());
        adapter.explain(next_status(&mut sub, seen, pb::SyncState::Recovered).await)?;
        ensure!(
            sub.set() == &before,
            "{what}: after recovery the set changed from {before:?} to {:?}",
            sub.set()
        );
        println!("{what}: {message}");
    }
    Ok(())
}

/// The index going backwards (as from a replaced server) makes the adapter
/// read afresh without an index at once, instead of blocking on the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_going_backwards_is_followed_by_a_query_without_index() -> Result<()> {
    let consul = Consul::start().await?;
    consul
        .register_ttl("web", "web-1", "127.0.0.1", 43_001, 1)
        .await?;
    let uris = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = uris.clone();
    // First, every answer claims a huge index.
    let stub = FaultStub::start(Some(consul.addr()), move |parts| {
        log.lock().unwrap().push(parts.uri.to_string());
        Fault::Forward {
            set_headers: vec![("x-consul-index".into(), "1000000".into())],
        }
    })
    .await?;
    let adapter = Adapter::start_binary(
        "discovery-consul",
        &["--consul-addr", &stub.url(), "--wait", "300ms"],
    )
    .await?;
    let mut sub = Subscriber::watch(adapter.grpc(), "web").await?;
    sub.wait_for(DEADLINE, false, "web-1", |s| s.len() == 1)
        .await?;
    let deadline = std::time::Instant::now() + DEADLINE;
    while !uris
        .lock()
        .unwrap()
        .iter()
        .any(|u| u.contains("index=1000000"))
    {
        if std::time::Instant::now() > deadline {
            bail!(
                "no query blocked on index 1000000: {:?}",
                uris.lock().unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Then the real, lower index comes through, with a change.
    let log = uris.clone();
    stub.set_rule(move |parts| {
        log.lock().unwrap().push(parts.uri.to_string());
        Fault::forward()
    });
    let mark = uris.lock().unwrap().len();
    consul
        .register_ttl("web", "web-2", "127.0.0.1", 43_002, 1)
        .await?;
    adapter.explain(
        sub.wait_for(DEADLINE, false, "web-2", |s| s.len() == 2)
            .await,
    )?;
    let after: Vec<String> = uris.lock().unwrap()[mark..].to_vec();
    // The first answer with the real index went backwards; the query after
    // it carries no index at all (never index=0).
    let health: Vec<&String> = after.iter().filter(|u| u.contains("/health/")).collect();
    ensure!(
        health.iter().any(|u| !u.contains("index=")),
        "no fresh query without an index after the index went back: {health:?}"
    );
    let resets = integration::scrape(adapter.metrics())
        .await?
        .get("consul_index_resets_total", &[]);
    ensure!(resets.is_some_and(|n| n >= 1.0), "index resets: {resets:?}");
    ensure!(
        uris.lock()
            .unwrap()
            .iter()
            .all(|u| !u.contains("index=0&") && !u.ends_with("index=0")),
        "index=0 was sent: {:?}",
        uris.lock().unwrap()
    );
    Ok(())
}

/// A server that answers every blocking query at once with the same index
/// (a misbehaving proxy or server) is queried at most once per
/// `--min-interval`, not in a tight loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_at_once_with_the_same_index_is_not_hammered() -> Result<()> {
    let body = r#"[{"Node": {"Node": "n", "Address": "127.0.0.1", "Datacenter": "dc1"},
                   "Service": {"ID": "web-1", "Port": 8080}, "Checks": []}]"#;
    let stub = FaultStub::start(None, move |_| Fault::Reply {
        status: 200,
        headers: headers(),
        body: body.into(),
    })
    .await?;
    let adapter = Adapter::start_binary(
        "discovery-consul",
        &["--consul-addr", &stub.url(), "--min-interval", "200ms"],
    )
    .await?;
    let mut sub = Subscriber::watch(adapter.grpc(), "web").await?;
    sub.wait_for(DEADLINE, false, "web-1", |s| s.contains_key("n/web-1"))
        .await?;
    // Ten more queries: with the rate limit they span at least nine
    // intervals (a lower bound the limiter guarantees; a tight loop would
    // make them in milliseconds).
    let start = stub.requests();
    let began = std::time::Instant::now();
    while stub.requests() < start + 10 {
        ensure!(
            began.elapsed() < DEADLINE,
            "only {} queries within {DEADLINE:?}",
            stub.requests() - start
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = began.elapsed();
    ensure!(
        took >= Duration::from_millis(9 * 200),
        "10 queries in {took:?} with --min-interval 200ms"
    );
    ensure!(
        sub.statuses().is_empty() && sub.version() == Some(1),
        "an unchanged index must send nothing: version {:?}, statuses {:?}",
        sub.version(),
        sub.statuses()
    );
    println!("10 queries in {took:?}");
    Ok(())
}
