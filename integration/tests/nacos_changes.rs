//! Changes made through a real Nacos server's open API (register, re-weight,
//! disable, heartbeats stopping, deregister) reach a sidecar subscribed to
//! `discovery-nacos`, each as one delta, in push mode and in poll mode.
//!
//! Deadlines are generous bounds; the latencies are printed (run with
//! `--nocapture`) for the report, not asserted.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use integration::{Adapter, EndpointSet, Nacos, NacosInstance, Sidecar, Subscriber, Upstreams};
use tributary_proto::v1::{Health, SyncState};

/// Bound on one awaited change (push is expected within 1 s, polling within
/// the interval plus 1 s; the bound leaves room for a loaded machine).
const DEADLINE: Duration = Duration::from_secs(10);

/// Heartbeats stop: rnacos marks the instance unhealthy after its health
/// timeout (1 s here) plus 3 s, checked every few seconds.
const HEALTH_DEADLINE: Duration = Duration::from_secs(30);

fn sidecar_config(adapter: SocketAddr) -> String {
    format!(
        "\
admin:
  address: 127.0.0.1:0
listeners:
  - name: http
    address: 127.0.0.1:0
adapters:
  nacos:
    address: http://{adapter}
routes:
  - name: default
    uri: /*
    upstream: web
upstreams:
  - name: web
    discovery_type: nacos
    service_name: web
"
    )
}

fn weight_of(u: &Upstreams, addr: &str) -> Option<u64> {
    u.endpoints("web")
        .iter()
        .find(|e| e["address"] == addr)
        .and_then(|e| e["weight"].as_u64())
}

fn health_of(set: &EndpointSet, id: &str) -> Option<Health> {
    set.get(id).map(|e| e.health())
}

/// One change: what to do, what the subscriber's set must then show, and
/// what the sidecar's `/upstreams` must show.
struct Step<'a> {
    sub: &'a mut Subscriber,
    sidecar: &'a Sidecar,
    latencies: Vec<(String, Duration)>,
}

impl Step<'_> {
    async fn expect(
        &mut self,
        what: &str,
        deadline: Duration,
        set_ok: impl Fn(&EndpointSet) -> bool,
        sidecar_ok: impl Fn(&Upstreams) -> bool,
    ) -> Result<()> {
        let started = Instant::now();
        self.sub
            .wait_for(deadline, true, what, &set_ok)
            .await
            .with_context(|| format!("subscriber: {what}"))?;
        self.latencies.push((what.to_string(), started.elapsed()));
        self.sidecar
            .wait_upstreams(deadline, &format!("sidecar: {what}"), sidecar_ok)
            .await?;
        Ok(())
    }
}

async fn scenario(mode_args: &[&str], poll: bool) -> Result<()> {
    let nacos = Arc::new(Nacos::start(&[("RNACOS_NAMING_HEALTH_TIMEOUT_SECOND", "1")]).await?);
    let mut a = NacosInstance::new("web", "127.0.0.1", 41_001);
    a.weight = 2.0;
    nacos.register(&a).await?;

    let mut args = nacos.adapter_args();
    args.extend(mode_args.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let adapter = Adapter::start_binary("discovery-nacos", &args).await?;
    let sidecar = Sidecar::start(&sidecar_config(adapter.grpc())).await?;
    let mut sub = Subscriber::watch(adapter.grpc(), "web").await?;
    sub.recv_change(DEADLINE).await?;
    let result = async {
        sidecar
            .wait_upstreams(DEADLINE, "sidecar: first endpoint", |u| {
                weight_of(u, "127.0.0.1:41001") == Some(2)
            })
            .await?;
        let mut step = Step {
            sub: &mut sub,
            sidecar: &sidecar,
            latencies: Vec::new(),
        };

        let b = NacosInstance::new("web", "127.0.0.1", 41_002);
        nacos.register(&b).await?;
        step.expect(
            "registered instance",
            DEADLINE,
            |s| s.contains_key(&b.id()),
            |u| weight_of(u, "127.0.0.1:41002") == Some(1),
        )
        .await?;

        a.weight = 3.0;
        nacos.update(&a).await?;
        step.expect(
            "re-weighted instance",
            DEADLINE,
            |s| s.get(&a.id()).is_some_and(|e| e.weight == Some(3)),
            |u| weight_of(u, "127.0.0.1:41001") == Some(3),
        )
        .await?;

        a.enabled = false;
        nacos.update(&a).await?;
        // Nacos servers leave disabled instances out of their answers; one
        // that lists them gets them as unhealthy.
        step.expect(
            "disabled instance",
            DEADLINE,
            |s| health_of(s, &a.id()).is_none_or(|h| h == Health::Unhealthy),
            |u| {
                u.endpoints("web")
                    .iter()
                    .all(|e| e["address"] != "127.0.0.1:41001" || e["health"] == "unhealthy")
            },
        )
        .await?;

        a.enabled = true;
        nacos.update(&a).await?;
        step.expect(
            "re-enabled instance",
            DEADLINE,
            |s| health_of(s, &a.id()) == Some(Health::Healthy),
            |u| weight_of(u, "127.0.0.1:41001") == Some(3),
        )
        .await?;

        // An ephemeral instance kept alive by heartbeats, then left to fail.
        let mut c = NacosInstance::new("web", "127.0.0.1", 41_003);
        c.ephemeral = true;
        nacos.register(&c).await?;
        let beating = Arc::new(AtomicBool::new(true));
        let beats = tokio::spawn({
            let (nacos, c, beating) = (nacos.clone(), c.clone(), beating.clone());
            async move {
                loop {
                    if beating.load(Ordering::Relaxed) {
                        let _ = nacos.beat(&c).await;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
        let sick = async {
            step.expect(
                "ephemeral instance",
                DEADLINE,
                |s| health_of(s, &c.id()) == Some(Health::Healthy),
                |u| weight_of(u, "127.0.0.1:41003") == Some(1),
            )
            .await?;
            beating.store(false, Ordering::Relaxed);
            // Poll mode asks for unhealthy instances too and shows them so;
            // rnacos' push leaves them out.
            step.expect(
                "instance whose heartbeats stopped",
                HEALTH_DEADLINE,
                |s| match health_of(s, &c.id()) {
                    Some(h) => h == Health::Unhealthy,
                    None => !poll,
                },
                |u| {
                    u.endpoints("web")
                        .iter()
                        .all(|e| e["address"] != "127.0.0.1:41003" || e["health"] == "unhealthy")
                },
            )
            .await?;
            beating.store(true, Ordering::Relaxed);
            step.expect(
                "instance whose heartbeats resumed",
                HEALTH_DEADLINE,
                |s| health_of(s, &c.id()) == Some(Health::Healthy),
                |u| weight_of(u, "127.0.0.1:41003") == Some(1),
            )
            .await
        }
        .await;
        beats.abort();
        sick?;

        nacos.deregister(&b).await?;
        step.expect(
            "deregistered instance",
            DEADLINE,
            |s| !s.contains_key(&b.id()),
            |u| weight_of(u, "127.0.0.1:41002").is_none(),
        )
        .await?;

        for (what, took) in &step.latencies {
            println!("latency {mode_args:?}: {what}: {} ms", took.as_millis());
        }
        ensure!(
            sub.statuses()
                .iter()
                .all(|s| s.state != SyncState::Stale as i32),
            "unexpected stale status: {:?}",
            sub.statuses()
        );
        Ok(())
    }
    .await;
    sidecar.explain(adapter.explain(result))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_changes_reach_a_sidecar_as_deltas() -> Result<()> {
    // rnacos pushes no change when a heartbeat makes an instance healthy
    // again; the adapter's re-subscription catches it.
    scenario(&["--mode", "push", "--resync-interval", "2s"], false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_changes_reach_a_sidecar_as_deltas() -> Result<()> {
    scenario(&["--mode", "poll", "--poll-interval", "1s"], true).await
}
