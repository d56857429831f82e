//! `discovery-eureka` behind the fault stub, in front of the real Eureka
//! server, for the answers a real server cannot be made to give: a delta
//! whose hash code disagrees, a malformed, a truncated and a 50 MB body, a
//! server that never answers.
//! Basic auth rides along: every request must carry it, no log may show it.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use integration::{
    Adapter, EurekaInstance, EurekaServer, Fault, FaultStub, Subscriber, describe, scrape,
};
use tributary_proto::v1 as pb;

const DEADLINE: Duration = Duration::from_secs(15);
const PASSWORD: &str = "s3cret-Pa55";
/// `Basic base64("tributary:s3cret-Pa55")`.
const AUTHORIZATION: &str = "Basic dHJpYnV0YXJ5OnMzY3JldC1QYTU1";

/// What the stub saw: full fetches, and requests without the right
/// credentials.
#[derive(Default)]
struct Seen {
    full: AtomicU64,
    unauthorized: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disagreeing_hash_code_and_bad_bodies() -> Result<()> {
    let server = EurekaServer::start().await?;
    server
        .register(&EurekaInstance::new("pay", "pay-1", 9201))
        .await?;
    let seen = Arc::new(Seen::default());
    // Until the test says otherwise, deltas are frozen at this one (its hash
    // code matches pay-1 alone), so that pay-2 can only arrive through the
    // doctored delta below.
    let frozen = server.get("/eureka/apps/delta").await?.ok()?.body;
    let stub = {
        let (seen, frozen) = (seen.clone(), frozen.clone());
        FaultStub::start(Some(server.addr()), move |p| {
            observe(&seen, p);
            match p.uri.path() {
                "/eureka/apps/delta" => Fault::json(frozen.clone()),
                _ => Fault::forward(),
            }
        })
        .await?
    };
    let dir = tempfile::tempdir()?;
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n"))?;
    let url = format!("{}/eureka", stub.url());
    let adapter = Adapter::start_binary(
        "discovery-eureka",
        &[
            "--eureka-url",
            &url,
            "--fetch-interval",
            "1s",
            "--username",
            "tributary",
            "--password-file",
            password_file.to_str().context("non-UTF-8 temp path")?,
            "--request-timeout",
            "5s",
            "--log-level",
            "debug",
        ],
    )
    .await?;
    let result = scenario(&adapter, &server, &stub, &seen).await;
    let result = result.and_then(|()| {
        ensure!(
            seen.full.load(Ordering::SeqCst) > 0,
            "no request reached the stub"
        );
        ensure!(
            seen.unauthorized.load(Ordering::SeqCst) == 0,
            "requests without the basic-auth credentials"
        );
        ensure!(
            !adapter.process().stderr().contains(PASSWORD),
            "the password shows in the adapter's log"
        );
        Ok(())
    });
    adapter.explain(result)
}

fn observe(seen: &Seen, p: &hyper::http::request::Parts) {
    if p.uri.path() == "/eureka/apps" {
        seen.full.fetch_add(1, Ordering::SeqCst);
    }
    if p.headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(AUTHORIZATION) {
        seen.unauthorized.fetch_add(1, Ordering::SeqCst);
    }
}

async fn scenario(
    adapter: &Adapter,
    server: &EurekaServer,
    stub: &FaultStub,
    seen: &Arc<Seen>,
) -> Result<()> {
    let mut pay = Subscriber::watch(adapter.grpc(), "pay").await?;
    pay.recv_change(DEADLINE).await?;
    ensure!(pay.set().len() == 1, "{:?}", pay.set());

    // pay-2 registers; the next delta says so, plus a phantom instance the
    // server never had, under the server's own hash code (UP_2_). Applied,
    // it makes UP_3_: the adapter must fetch the whole registry instead.
    server
        .register(&EurekaInstance::new("pay", "pay-2", 9202))
        .await?;
    let real = server.get("/eureka/apps/delta").await?.ok()?.text();
    let doctored = add_phantom(&real)?;
    let fulls_before = seen.full.load(Ordering::SeqCst);
    let served = Arc::new(AtomicBool::new(false));
    let after_serving = Arc::new(Mutex::new(None));
    {
        let (seen, served, after) = (seen.clone(), served.clone(), after_serving.clone());
        stub.set_rule(move |p| {
            observe(&seen, p);
            if p.uri.path() == "/eureka/apps/delta" && !served.swap(true, Ordering::SeqCst) {
                return Fault::json(doctored.clone());
            }
            if served.load(Ordering::SeqCst) && p.uri.path() == "/eureka/apps" {
                after
                    .lock()
                    .expect("lock")
                    .get_or_insert(seen.full.load(Ordering::SeqCst));
            }
            Fault::forward()
        });
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !pay.set().contains_key("pay-2") {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = pay.recv_change(left).await.context("waiting for pay-2")?;
        ensure!(
            !pay.set().contains_key("phantom"),
            "the phantom was published: {}",
            describe(&m)
        );
    }
    ensure!(pay.set().len() == 2, "{:?}", pay.set().keys());
    ensure!(
        served.load(Ordering::SeqCst),
        "the doctored delta was never fetched"
    );
    ensure!(
        after_serving.lock().expect("lock").is_some()
            && seen.full.load(Ordering::SeqCst) > fulls_before,
        "no full fetch followed the disagreeing delta"
    );
    ensure!(
        adapter.process().stderr().contains("hash code differs"),
        "the mismatch was not logged"
    );
    let m = scrape(adapter.metrics()).await?;
    ensure!(
        m.get("eureka_reconciliations_total", &[])
            .is_some_and(|v| v >= 1.0),
        "eureka_reconciliations_total did not count the full fetch"
    );

    // Bad bodies: each a STALE status naming the problem, the set kept, and
    // the set back (RECOVERED) once the server answers properly again.
    let body = server.get("/eureka/apps").await?.ok()?.body;
    let cases = [
        (
            "malformed",
            Fault::json(
                "{\"applications\": {\"application\": [{\"name\": \"PAY\", \"instance\": [",
            ),
            "malformed JSON",
        ),
        (
            "truncated",
            Fault::Truncate {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.clone(),
                cut: body.len() / 2,
            },
            "GET http://",
        ),
        (
            "50 MB",
            Fault::Huge {
                headers: vec![("content-type".into(), "application/json".into())],
                size: 50_000_000,
            },
            "larger than the limit of 33554432 bytes",
        ),
        ("hang", Fault::Hang, "timed out"),
    ];
    for (case, fault, want) in cases {
        let held = pay.set().clone();
        let s = seen.clone();
        stub.set_rule(move |p| {
            observe(&s, p);
            fault.clone()
        });
        let stale = pay
            .wait_status(pb::SyncState::Stale, DEADLINE)
            .await
            .context(case)?;
        ensure!(
            stale.message.contains(want),
            "{case}: {:?} lacks {want:?}",
            stale.message
        );
        ensure!(pay.set() == &held, "{case}: the set changed");
        ensure!(
            adapter.process().try_exit()?.is_none(),
            "{case}: the adapter exited"
        );
        let s = seen.clone();
        stub.set_rule(move |p| {
            observe(&s, p);
            Fault::forward()
        });
        pay.wait_status(pb::SyncState::Recovered, DEADLINE)
            .await
            .context(case)?;
        println!("{case}: {}", stale.message);
    }
    let m = scrape(adapter.metrics()).await?;
    let errors = m
        .get(
            "eureka_fetches_total",
            &[("kind", "delta"), ("result", "error")],
        )
        .unwrap_or(0.0);
    ensure!(
        errors >= 3.0,
        "{errors} failed delta fetches counted, expected at least 3"
    );
    Ok(())
}

/// The delta with one more instance of PAY, `phantom`, marked ADDED.
fn add_phantom(delta: &str) -> Result<String> {
    let mut doc: serde_json::Value = serde_json::from_str(delta)?;
    let apps = doc["applications"]["application"]
        .as_array_mut()
        .context("the real delta has no application array")?;
    let pay = apps
        .iter_mut()
        .find(|a| a["name"] == "PAY")
        .context("the real delta lacks PAY")?;
    let instances = pay["instance"]
        .as_array_mut()
        .context("PAY has no instance array")?;
    let mut phantom = instances.first().context("PAY has no instance")?.clone();
    phantom["instanceId"] = "phantom".into();
    phantom["hostName"] = "phantom.test".into();
    phantom["actionType"] = "ADDED".into();
    instances.push(phantom);
    Ok(doc.to_string())
}
