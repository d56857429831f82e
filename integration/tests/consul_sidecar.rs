//! The sidecar following `discovery-consul` over a real Consul agent: a new
//! instance reaches the sidecar's endpoint set soon after Consul's blocking
//! query returns (the time is measured and printed, not asserted), and TTL
//! checks flipping between passing, warning and critical show as health
//! changes at the sidecar.

use std::{
    net::SocketAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Result, bail};
use integration::{Adapter, Consul, Sidecar, Subscriber, Upstreams};

/// A generous bound for one awaited change; not a measurement.
const DEADLINE: Duration = Duration::from_secs(10);

/// Upstream `web` from the consul adapter at `adapter`, warning checks
/// draining the endpoint.
fn config(adapter: SocketAddr) -> String {
    format!(
        "\
admin:
  address: 127.0.0.1:0
listeners:
  - name: http
    address: 127.0.0.1:0
adapters:
  consul:
    address: http://{adapter}
routes:
  - name: default
    uri: /*
    upstream: web
upstreams:
  - name: web
    discovery_type: consul
    service_name: web
    discovery_args: {{warning: draining}}
"
    )
}

/// The registry's health of the endpoint at `addr`, as the sidecar shows it.
fn registry_health(u: &Upstreams, addr: &str) -> Option<String> {
    u.endpoints("web")
        .iter()
        .find(|e| e["address"] == addr)
        .and_then(|e| e["checks"]["registry"].as_str())
        .map(str::to_string)
}

async fn start(consul: &Consul) -> Result<(Adapter, Sidecar)> {
    consul
        .register_ttl("web", "web-1", "127.0.0.1", 41_001, 1)
        .await?;
    // Debug lines of the adapter's own crate carry the time each blocking
    // query returned.
    let adapter = Adapter::start_binary(
        "discovery-consul",
        &[
            "--consul-addr",
            &consul.url(),
            "--log-level",
            "info,discovery_consul=debug",
        ],
    )
    .await?;
    let sidecar = Sidecar::start(&config(adapter.grpc())).await?;
    sidecar.wait_ready(DEADLINE).await?;
    Ok((adapter, sidecar))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_reaches_the_sidecar_and_the_time_is_reported() -> Result<()> {
    let consul = Consul::start().await?;
    let (adapter, sidecar) = start(&consul).await?;
    let mut sub = Subscriber::watch(adapter.grpc(), "web").await?;
    sub.recv_change(DEADLINE).await?;

    let mut to_sidecar = Vec::new();
    let mut to_subscriber = Vec::new();
    let mut seen_at = Vec::new();
    for i in 0..5u16 {
        let port = 41_100 + i;
        let addr = format!("127.0.0.1:{port}");
        let id = format!("web-x{i}");
        // The agent answers the PUT once the catalog has the instance; the
        // blocking query returns at about the same moment.
        consul
            .register_ttl("web", &id, "127.0.0.1", port, 1)
            .await?;
        let registered = Instant::now();
        let want = format!("tributary-test/{id}");
        sub.wait_for(DEADLINE, true, "the new instance", |s| {
            s.contains_key(&want)
        })
        .await?;
        to_subscriber.push(registered.elapsed());
        let deadline = registered + DEADLINE;
        loop {
            let u = sidecar.upstreams().await?;
            if u.addresses("web").contains(&addr) {
                to_sidecar.push(registered.elapsed());
                seen_at.push(seconds_of_day(SystemTime::now()));
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{addr} did not reach the sidecar within {DEADLINE:?}: {}",
                    u.0
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let show = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "registration acknowledged -> subscriber: [{}] ms; -> sidecar /upstreams: [{}] ms",
        show(&to_subscriber),
        show(&to_sidecar)
    );
    // From the adapter's log line for the answer with the new instance (the
    // blocking query returning) to the sidecar showing it; same clock.
    let log = adapter.process().stderr();
    let from_answer: Vec<Duration> = seen_at
        .iter()
        .enumerate()
        .filter_map(|(i, seen)| {
            let want = format!("entries={}", i + 2);
            let line = log
                .lines()
                .find(|l| l.contains("consul answer") && l.split_whitespace().any(|w| w == want))?;
            let answered = log_seconds_of_day(line)?;
            Some(Duration::from_secs_f64(
                (seen - answered).rem_euclid(86_400.0),
            ))
        })
        .collect();
    println!(
        "blocking query returned (adapter log) -> sidecar /upstreams: [{}] ms",
        show(&from_answer)
    );
    Ok(())
}

fn seconds_of_day(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64().rem_euclid(86_400.0))
}

/// Reads `…THH:MM:SS.ffffffZ` at the start of a log line.
fn log_seconds_of_day(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split_once('T')?.1;
    let time = time.strip_suffix('Z')?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_warning_and_critical_show_as_health_at_the_sidecar() -> Result<()> {
    let consul = Consul::start().await?;
    let (_adapter, sidecar) = start(&consul).await?;
    let addr = "127.0.0.1:41001";
    let steps = [
        ("warn", "draining"),
        ("fail", "unhealthy"),
        ("pass", "healthy"),
        ("fail", "unhealthy"),
        ("warn", "draining"),
        ("pass", "healthy"),
    ];
    sidecar
        .wait_upstreams(DEADLINE, "web-1 healthy", |u| {
            registry_health(u, addr).as_deref() == Some("healthy")
        })
        .await?;
    for (state, want) in steps {
        consul.set_check("web-1-ttl", state).await?;
        sidecar
            .explain(
                sidecar
                    .wait_upstreams(DEADLINE, &format!("check {state} -> {want}"), |u| {
                        registry_health(u, addr).as_deref() == Some(want)
                    })
                    .await,
            )
            .map(drop)?;
    }
    Ok(())
}
