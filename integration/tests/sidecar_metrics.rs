//! The sidecar's `/metrics`: health and discovery state in Prometheus text,
//! following the live state (a backend failing its health path shows as
//! unhealthy by the active check and overall, and leaves the available count).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use integration::{Backend, Metrics, Sidecar};

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_endpoint_health() -> Result<()> {
    let good = Backend::start("good").await?;
    let bad = Backend::start_with("bad", &["--health-status", "500"]).await?;
    let config = format!(
        "\
admin: {{address: 127.0.0.1:0}}
listeners:
  - {{name: http, address: 127.0.0.1:0}}
routes:
  - {{name: all, uri: /*, upstream: web}}
upstreams:
  - name: web
    checks:
      active:
        http_path: /health
        healthy: {{interval: 0.2, successes: 1}}
        unhealthy: {{interval: 0.2, http_failures: 1}}
    nodes: {{\"{}\": 1, \"{}\": 1}}
",
        good.addr(),
        bad.addr()
    );
    let sidecar = Sidecar::start(&config).await?;
    let (good, bad) = (good.addr().to_string(), bad.addr().to_string());
    let start = Instant::now();
    loop {
        let text = sidecar.admin_get("/metrics").await?.text();
        let m = Metrics::parse(&text);
        let healthy = |endpoint: &str, check: &str| {
            m.get(
                "sidecar_endpoint_healthy",
                &[
                    ("upstream", "web"),
                    ("endpoint", endpoint),
                    ("check", check),
                ],
            )
        };
        let settled = healthy(&bad, "active") == Some(0.0)
            && healthy(&bad, "combined") == Some(0.0)
            && healthy(&good, "active") == Some(1.0)
            && healthy(&good, "combined") == Some(1.0)
            && healthy(&bad, "registry") == Some(1.0)
            && m.get("sidecar_upstream_endpoints", &[("upstream", "web")]) == Some(2.0)
            && m.get(
                "sidecar_upstream_available_endpoints",
                &[("upstream", "web")],
            ) == Some(1.0)
            && m.get("sidecar_upstream_panic", &[("upstream", "web")]) == Some(0.0);
        if settled {
            return Ok(());
        }
        if start.elapsed() > DEADLINE {
            bail!(
                "metrics did not show the failing backend as unhealthy:\n{}\n{}",
                m.show("sidecar_endpoint_healthy"),
                m.show("sidecar_upstream_available_endpoints")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
