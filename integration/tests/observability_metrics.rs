//! `/metrics` of the sidecar and of the file adapter: the request, attempt,
//! retry, discovery and registry series are there, move with traffic and
//! updates, and pass `promtool check metrics` without a lint warning; with
//! `endpoint_metrics: false` the attempt series lose the endpoint label.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration::{
    Adapter, Backend, EndpointFile, HttpClient, Metrics, Sidecar, closed_port, promtool_check,
    scrape, service_file, wait_for_metrics, web_config,
};

const DEADLINE: Duration = Duration::from_secs(15);
const REQUESTS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_and_adapter_metrics_move_and_pass_promtool() -> Result<()> {
    let (a, b) = (Backend::start("a").await?, Backend::start("b").await?);
    let file = EndpointFile::new(&service_file("web", [&a]))?;
    let path = file.path().to_str().context("non-UTF-8 temp path")?;
    let adapter = Adapter::start_binary("discovery-file", &["--file", path]).await?;
    // A static node where nothing listens: its attempts fail and are retried.
    let dead = closed_port()?;
    let upstream = format!(
        "    retries: 1\n    nodes: {{\"{dead}\": 1}}\n    discovery_type: file\n    service_name: web\n"
    );
    let config = web_config(Some(adapter.grpc()), &upstream);
    let sidecar = Sidecar::start(&config).await?;
    sidecar.wait_ready(DEADLINE).await?;
    let http = sidecar.listener("http")?;
    let client = HttpClient::http1();
    for _ in 0..REQUESTS {
        client.get(http, "/").await?.ok()?;
    }

    let text = sidecar.admin_get("/metrics").await?.text();
    let m = Metrics::parse(&text);
    let route = [("route", "default"), ("upstream", "web")];
    let ok = [
        ("route", "default"),
        ("upstream", "web"),
        ("code_class", "2xx"),
    ];
    ensure!(
        m.get("sidecar_requests_total", &ok) == Some(REQUESTS as f64),
        "{}",
        m.show("sidecar_requests_total")
    );
    ensure!(m.get("sidecar_request_duration_seconds_count", &route) == Some(REQUESTS as f64));
    ensure!(
        m.get("sidecar_request_duration_seconds_sum", &route)
            .is_some_and(|s| s > 0.0)
    );
    ensure!(m.get("sidecar_requests_in_flight", &route) == Some(0.0));
    let good = a.addr().to_string();
    let dead_s = dead.to_string();
    fn at(ep: &str) -> [(&str, &str); 2] {
        [("upstream", "web"), ("endpoint", ep)]
    }
    let good_attempts = m
        .get(
            "sidecar_upstream_attempt_duration_seconds_count",
            &at(&good),
        )
        .unwrap_or(0.0);
    let dead_attempts = m
        .get(
            "sidecar_upstream_attempt_duration_seconds_count",
            &at(&dead_s),
        )
        .unwrap_or(0.0);
    let retries = m
        .get("sidecar_upstream_retries_total", &[("upstream", "web")])
        .unwrap_or(-1.0);
    ensure!(
        good_attempts == REQUESTS as f64 && dead_attempts >= 1.0 && retries == dead_attempts,
        "attempts: good {good_attempts}, dead {dead_attempts}, retries {retries}\n{}",
        m.show("sidecar_upstream_attempt_duration_seconds_count")
    );
    ensure!(m.get("sidecar_upstream_attempt_failures_total", &at(&dead_s)) == Some(dead_attempts));
    ensure!(m.get("sidecar_upstream_attempt_failures_total", &at(&good)) == Some(0.0));
    ensure!(
        m.get("sidecar_endpoint_health_transitions_total", &at(&good))
            .is_some()
    );
    ensure!(m.get("sidecar_trace_spans_dropped_total", &[]) == Some(0.0));
    // Keep-alive: the 20 requests to the good backend opened few connections
    // (one per client connection at most), and they stay pooled.
    let web = [("upstream", "web")];
    let opened = m.get("sidecar_upstream_connections_opened_total", &web);
    let open = m.get("sidecar_upstream_connections", &web);
    ensure!(
        opened.is_some_and(|n| (1.0..=2.0).contains(&n)) && open.is_some_and(|n| n >= 1.0),
        "connections opened {opened:?}, open {open:?}"
    );
    let version = m
        .get("sidecar_discovery_source_version", &[("upstream", "web")])
        .context("no sidecar_discovery_source_version")?;
    promtool_check(&text).context("the sidecar's /metrics")?;

    // The adapter: one subscriber and watch, a snapshot sent, file reads timed.
    let am = scrape(adapter.metrics()).await?;
    ensure!(am.get("discovery_subscribers", &[("service", "web")]) == Some(1.0));
    ensure!(am.get("discovery_watches", &[]) == Some(1.0));
    ensure!(
        am.get("discovery_updates_sent_total", &[("kind", "snapshot")])
            .is_some_and(|n| n >= 1.0)
    );
    let reads = |m: &Metrics| {
        m.get(
            "discovery_registry_request_duration_seconds_count",
            &[("operation", "read_file"), ("outcome", "ok")],
        )
        .unwrap_or(0.0)
    };
    let reads_before = reads(&am);
    ensure!(
        reads_before >= 1.0,
        "{}",
        am.show("discovery_registry_request_duration_seconds_count")
    );

    // An update: a delta goes out, the file is read again, the sidecar's
    // source version moves.
    file.write(&service_file("web", [&a, &b]))?;
    let am = wait_for_metrics(
        adapter.metrics(),
        DEADLINE,
        "a delta sent after the file changed",
        "discovery_updates_sent_total",
        |m| {
            m.get("discovery_updates_sent_total", &[("kind", "delta")])
                .is_some_and(|n| n >= 1.0)
        },
    )
    .await?;
    ensure!(reads(&am) > reads_before);
    sidecar
        .wait_upstreams(DEADLINE, "b in the set", |u| {
            u.addresses("web").contains(&b.addr().to_string())
        })
        .await?;
    let m = Metrics::parse(&sidecar.admin_get("/metrics").await?.text());
    let now = m.get("sidecar_discovery_source_version", &[("upstream", "web")]);
    ensure!(
        now.is_some_and(|v| v > version),
        "version {now:?} after {version}"
    );
    let adapter_text = reqwest_text(adapter.metrics()).await?;
    promtool_check(&adapter_text).context("the adapter's /metrics")?;

    // Without the endpoint label: one attempt series per upstream, its
    // count the sum of the endpoints' (so nothing was lost).
    sidecar.reload(&format!("{config}telemetry:\n  endpoint_metrics: false\n"))?;
    let before = m
        .get(
            "sidecar_upstream_attempt_duration_seconds_count",
            &at(&good),
        )
        .unwrap_or(0.0);
    let m = wait_for_scrape(&sidecar, |m| {
        m.show("sidecar_upstream_attempt_duration_seconds_count")
            .matches("endpoint")
            .count()
            == 0
    })
    .await?;
    let total = m
        .get(
            "sidecar_upstream_attempt_duration_seconds_count",
            &[("upstream", "web")],
        )
        .unwrap_or(0.0);
    ensure!(
        total >= before + dead_attempts,
        "summed attempts {total} < {before} + {dead_attempts}"
    );
    Ok(())
}

async fn wait_for_scrape(sidecar: &Sidecar, done: impl Fn(&Metrics) -> bool) -> Result<Metrics> {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let m = Metrics::parse(&sidecar.admin_get("/metrics").await?.text());
        if done(&m) {
            return Ok(m);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the reload did not drop the endpoint label: {}",
            m.show("sidecar_upstream_attempt_duration_seconds_count")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The adapter's `/metrics` text as served.
async fn reqwest_text(addr: std::net::SocketAddr) -> Result<String> {
    let reply = HttpClient::http1().get(addr, "/metrics").await?.ok()?;
    Ok(reply.text())
}
