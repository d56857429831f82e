//! The Nacos server stopped and started again: subscribers keep the last set
//! with a STALE status while it is down, then get RECOVERED and follow
//! changes again once it is back, in push mode.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use integration::{Adapter, Nacos, NacosInstance, Subscriber};
use tributary_proto::v1::{SyncState, endpoint_update::Kind};

const DEADLINE: Duration = Duration::from_secs(10);

/// Reconnection attempts back off up to `--backoff-max`; the restarted
/// server is seen within a few of them.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(40);

/// Reads until a status message with `state` comes; fails on any change to
/// the set meanwhile.
async fn wait_status(s: &mut Subscriber, state: SyncState, within: Duration) -> Result<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = s.recv(left).await?;
        match m.kind {
            Some(Kind::Status(st)) if st.state == state as i32 => return Ok(st.message),
            Some(Kind::Status(_)) => {}
            other => bail!("waiting for {state:?}, the set changed: {other:?}"),
        }
    }
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
        let why = wait_status(&mut sub, SyncState::Stale, DEADLINE).await?;
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
        // The persistent instance is still registered after the restart.
        // rnacos may answer for a moment before it has reloaded it (a
        // not-found service, passed on as such); the re-subscription brings
        // the stream back to the same set, with RECOVERED.
        let deadline = Instant::now() + RECOVERY_DEADLINE;
        let mut recovered = false;
        while !(recovered && sub.set() == &before) {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = sub.recv(left).await?;
            if let Some(Kind::Status(st)) = &m.kind {
                recovered |= st.state == SyncState::Recovered as i32;
            }
        }
        println!(
            "recovered and in sync {} ms after the server answered again",
            restarted.elapsed().as_millis()
        );

        // And pushes flow again.
        let b = NacosInstance::new("web", "127.0.0.1", 43_002);
        nacos.register(&b).await?;
        sub.wait_for(
            RECOVERY_DEADLINE,
            true,
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
