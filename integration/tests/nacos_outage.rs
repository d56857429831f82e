//! The Nacos server stopped and started again: subscribers keep the last set
//! with a STALE status while it is down, then get RECOVERED and follow
//! changes again once it is back, in push mode.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use integration::{Adapter, Nacos, NacosInstance, Subscriber};
use tributary_proto::v1::{SyncState, endpoint_update::Kind};

const DEADLINE: Duration = Duration::from_secs(10);

/// Reconnection attempts back off up to `--backoff-max`; the restarted
/// server is seen within a few of them.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(40);

/// The ids (`ip:port`) of the instances the server lists for `web`, sorted.
async fn server_ids(nacos: &Nacos) -> Result<Vec<String>> {
    let (status, body) = nacos
        .get("/nacos/v1/ns/instance/list?serviceName=web&healthyOnly=false")
        .await?;
    ensure!(status == 200, "instance list: HTTP {status}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body)?;
    let mut ids: Vec<String> = json["hosts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|h| format!("{}:{}", h["ip"].as_str().unwrap_or("?"), h["port"]))
        .collect();
    ids.sort();
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_turns_the_set_stale_and_a_restart_recovers_it() -> Result<()> {
    let mut nacos = Nacos::start(&[]).await?;
    let a = NacosInstance::new("web", "127.0.0.1", 43_001);
    nacos.register(&a).await?;
    let mut args = nacos.adapter_args();
    args.extend(["--backoff-max", "2s", "--resync-interval", "2s"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let adapter = Adapter::start_binary("discovery-nacos", &args).await?;
    let mut sub = Subscriber::watch(adapter.grpc(), "web").await?;
    sub.recv_change(DEADLINE).await?;
    ensure!(
        sub.set().contains_key(&a.id()),
        "first snapshot: {:?}",
        sub.set()
    );
    let before = sub.set().clone();

    let result = async {
        nacos.stop();
        let stopped = Instant::now();
        let why = sub.wait_status(SyncState::Stale, DEADLINE).await?.message;
        println!(
            "stale {} ms after the server stopped: {why}",
            stopped.elapsed().as_millis()
        );
        ensure!(sub.set() == &before, "the set changed while stale");
        ensure!(
            why.contains("nacos"),
            "the stale message names nothing: {why:?}"
        );

        nacos.restart().await?;
        let restarted = Instant::now();
        // Back in sync: RECOVERED, and the set the server lists now. That is
        // the set from before the outage when rnacos kept its persistent
        // instance, which it does not always (it may also answer for a
        // moment before it has reloaded it).
        let deadline = Instant::now() + RECOVERY_DEADLINE;
        let mut recovered = false;
        loop {
            let server = server_ids(&nacos).await?;
            let held: Vec<String> = sub.set().keys().cloned().collect();
            if recovered && held == server {
                println!(
                    "recovered and in sync ({} of {} endpoints kept by the server) {} ms after it answered again",
                    held.len(),
                    before.len(),
                    restarted.elapsed().as_millis()
                );
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "not back in sync within {RECOVERY_DEADLINE:?}: recovered={recovered}, \
                 held {held:?}, the server lists {server:?}"
            );
            // A short wait for the next message; none is fine.
            if let Ok(m) = sub.recv(Duration::from_millis(300)).await
                && let Some(Kind::Status(st)) = &m.kind
            {
                recovered |= st.state == SyncState::Recovered as i32;
            }
        }

        // And pushes flow again (a snapshot if the service was not found).
        let b = NacosInstance::new("web", "127.0.0.1", 43_002);
        nacos.register(&b).await?;
        sub.wait_for(
            RECOVERY_DEADLINE,
            false,
            "an instance registered after the restart",
            |s| s.contains_key(&b.id()),
        )
        .await?;
        let fresh = {
            let mut s = Subscriber::watch(adapter.grpc(), "web").await?;
            s.recv_change(DEADLINE).await?;
            s.set().clone()
        };
        ensure!(
            &fresh == sub.set(),
            "a new subscriber sees {fresh:?}, the old one {:?}",
            sub.set()
        );
        Ok(())
    };
    adapter.explain(result.await)
}
