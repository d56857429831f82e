//! The sidecar's health checks against real backends: active HTTP, TCP and
//! gRPC probes, passive checks from live traffic and their way back, the
//! registry's view, retries hiding a killed backend, and panic mode.
//!
//! Every wait polls `/upstreams` up to a deadline; the deadlines that
//! matter are derived from the configured thresholds and intervals.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use integration::{
    Adapter, EndpointFile,
    health_support::{Backend, Sidecar, client, verdict},
    web_config, web_nodes,
};
use serde_json::Value;

/// Slack over a computed bound, for scheduling and polling on a busy machine.
const SLACK: Duration = Duration::from_millis(1500);

fn healthy(e: &Value) -> bool {
    e["health"] == "healthy" && e["available"] == true
}

fn unhealthy(e: &Value) -> bool {
    e["health"] == "unhealthy" && e["available"] == false
}

/// Sends `n` requests for `path` one after another; returns the names of
/// the backends that answered 2xx, and the statuses of the others.
async fn spray(sidecar: &Sidecar, path: &str, n: usize) -> Result<(Vec<String>, Vec<u16>)> {
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let r = sidecar.get("http", path).await?;
        if (200..300).contains(&r.status) {
            ok.push(r.backend.unwrap_or_default());
        } else {
            failed.push(r.status);
        }
    }
    Ok((ok, failed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_http_checks_eject_a_killed_backend_and_restore_it() -> Result<()> {
    let a = Backend::start("a").await?;
    let b = Backend::start("b").await?;
    let sidecar = Sidecar::start(&web_config(
        None,
        &format!(
            "{}    retries: 0\n    checks:\n      active:\n        http_path: /health\n        \
         timeout: 0.5\n        healthy: {{interval: 0.2, successes: 2}}\n        \
         unhealthy: {{interval: 0.1, tcp_failures: 2}}\n",
            web_nodes(&[a.addr(), b.addr()])
        ),
    ))
    .await?;
    sidecar.explain(kill_and_restart(&sidecar, &a, b).await)
}

async fn kill_and_restart(sidecar: &Sidecar, a: &Backend, b: Backend) -> Result<()> {
    let (served, _) = spray(sidecar, "/", 10).await?;
    ensure!(
        served.iter().any(|n| n == "b"),
        "b got no traffic: {served:?}"
    );

    // Killed: 2 failed probes at the healthy interval (0.2 s) eject it.
    let addr = b.kill().await?;
    let bound = Duration::from_millis(2 * 200) + SLACK;
    let (e, took) = sidecar
        .wait_endpoint("web", addr, "ejected", bound, unhealthy)
        .await?;
    ensure!(verdict(&e, "active") == "unhealthy", "{e:#}");
    ensure!(verdict(&e, "registry") == "healthy", "{e:#}");
    println!("killed backend ejected after {took:?}");
    let (served, failed) = spray(sidecar, "/", 20).await?;
    ensure!(
        failed.is_empty(),
        "requests failed after the ejection: {failed:?}"
    );
    ensure!(served.iter().all(|n| n == a.name()), "{served:?}");

    // Back on the same port: 2 passing probes at the unhealthy interval.
    let _b = Backend::start_at("b", addr).await?;
    let bound = Duration::from_millis(2 * 100) + SLACK;
    let (_, took) = sidecar
        .wait_endpoint("web", addr, "restored", bound, healthy)
        .await?;
    println!("restarted backend restored after {took:?}");
    let (served, failed) = spray(sidecar, "/", 10).await?;
    ensure!(failed.is_empty(), "{failed:?}");
    ensure!(
        served.iter().any(|n| n == "b"),
        "b got no traffic: {served:?}"
    );

    let log = sidecar.process().stderr();
    ensure!(
        log.contains("endpoint health changed") && log.contains("tcp_failures"),
        "no transition log line:\n{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failing_its_health_path_is_ejected_while_its_port_is_open() -> Result<()> {
    let a = Backend::start("a").await?;
    let b = Backend::start("b").await?;
    let sidecar = Sidecar::start(&web_config(
        None,
        &format!(
            "{}    checks:\n      active:\n        http_path: /health\n        \
         healthy: {{interval: 0.1, successes: 2}}\n        \
         unhealthy: {{interval: 0.1, http_failures: 3}}\n",
            web_nodes(&[a.addr(), b.addr()])
        ),
    ))
    .await?;
    let http = client();
    sidecar.explain(
        async {
            b.set_health(&http, 500).await?;
            let bound = Duration::from_millis(3 * 100) + SLACK;
            let (e, _) = sidecar
                .wait_endpoint("web", b.addr(), "ejected", bound, unhealthy)
                .await?;
            ensure!(
                e["checks"]["active"]["consecutive"]["successes"] == 0,
                "{e:#}"
            );
            // b still serves `/`, but gets none of it.
            let (served, _) = spray(&sidecar, "/", 20).await?;
            ensure!(served.iter().all(|n| n == "a"), "{served:?}");

            b.set_health(&http, 200).await?;
            let bound = Duration::from_millis(2 * 100) + SLACK;
            sidecar
                .wait_endpoint("web", b.addr(), "restored", bound, healthy)
                .await?;
            Ok(())
        }
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_backend_reporting_not_serving_is_ejected() -> Result<()> {
    let a = Backend::start("a").await?;
    let b = Backend::start("b").await?;
    let sidecar = Sidecar::start(&web_config(
        None,
        &format!(
            "{}    checks:\n      active:\n        type: grpc\n        \
         healthy: {{interval: 0.1, successes: 2}}\n        \
         unhealthy: {{interval: 0.1, http_failures: 2}}\n",
            web_nodes(&[a.addr(), b.addr()])
        ),
    ))
    .await?;
    let http = client();
    sidecar.explain(
        async {
            // Healthy probes first: both serve grpc.health.v1.
            sidecar
                .wait_endpoint("web", b.addr(), "probed", SLACK, |e| {
                    e["checks"]["active"]["consecutive"]["successes"]
                        .as_u64()
                        .is_some_and(|n| n >= 2)
                })
                .await?;
            b.set_health(&http, 503).await?;
            let bound = Duration::from_millis(2 * 100) + SLACK;
            sidecar
                .wait_endpoint("web", b.addr(), "ejected", bound, unhealthy)
                .await?;
            ensure!(healthy(&sidecar.endpoint("web", a.addr()).await?));
            let log = sidecar.process().stderr();
            ensure!(
                log.contains("NOT_SERVING"),
                "the log does not say why:\n{log}"
            );

            b.set_health(&http, 200).await?;
            sidecar
                .wait_endpoint("web", b.addr(), "restored", bound, healthy)
                .await?;
            Ok(())
        }
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_checks_alone_eject_after_failed_requests_and_back_off() -> Result<()> {
    let a = Backend::start("a").await?;
    let b = Backend::start("b").await?;
    let sidecar = Sidecar::start(&web_config(
        None,
        &format!(
            "{}    retries: 0\n    checks:\n      passive:\n        \
         unhealthy: {{http_statuses: [500], http_failures: 3, tcp_failures: 2}}\n",
            web_nodes(&[a.addr(), b.addr()])
        ),
    ))
    .await?;
    sidecar.explain(passive_alone(&sidecar, &a, b).await)
}

async fn passive_alone(sidecar: &Sidecar, a: &Backend, b: Backend) -> Result<()> {
    let http = client();
    // b answers 500 on /health: exactly 3 such answers eject it.
    b.set_health(&http, 500).await?;
    let (_, failed) = spray(sidecar, "/health", 30).await?;
    ensure!(failed == [500, 500, 500], "{failed:?}");
    let e = sidecar.endpoint("web", b.addr()).await?;
    ensure!(
        verdict(&e, "passive") == "ejected" && unhealthy(&e),
        "{e:#}"
    );
    let first = e["checks"]["passive"]["ejected_for_ms"]
        .as_u64()
        .unwrap_or(0);
    ensure!(
        (8_000..=10_000).contains(&first),
        "a first ejection of {first} ms"
    );

    // No probes: after the ejection time it is half-open, one success
    // restores it.
    b.set_health(&http, 200).await?;
    let bound = Duration::from_secs(10) + SLACK;
    sidecar
        .wait_endpoint("web", b.addr(), "half-open", bound, |e| {
            verdict(e, "passive") == "half_open" && e["available"] == true
        })
        .await?;
    let (served, failed) = spray(sidecar, "/health", 4).await?;
    ensure!(
        failed.is_empty() && served.iter().any(|n| n == "b"),
        "{served:?} {failed:?}"
    );
    let e = sidecar.endpoint("web", b.addr()).await?;
    ensure!(verdict(&e, "passive") == "healthy", "{e:#}");

    // Killed soon after: 2 connection failures eject it, for twice as long.
    let addr = b.kill().await?;
    let (_, failed) = spray(sidecar, "/", 30).await?;
    ensure!(failed == [502, 502], "{failed:?}");
    let e = sidecar.endpoint("web", addr).await?;
    let second = e["checks"]["passive"]["ejected_for_ms"]
        .as_u64()
        .unwrap_or(0);
    ensure!(
        (18_000..=20_000).contains(&second) && e["checks"]["passive"]["ejections"] == 2,
        "{e:#}"
    );
    ensure!(a.name() == "a");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passively_ejected_backend_returns_when_active_probes_pass() -> Result<()> {
    let a = Backend::start("a").await?;
    let b = Backend::start("b").await?;
    // Probes look at `/`, which b still serves; traffic to /health fails.
    let sidecar = Sidecar::start(&web_config(
        None,
        &format!(
            "{}    retries: 0\n    checks:\n      active:\n        http_path: /\n        \
         healthy: {{interval: 0.5, successes: 2}}\n        unhealthy: {{interval: 0.3}}\n      \
         passive:\n        unhealthy: {{http_statuses: [500], http_failures: 3}}\n",
            web_nodes(&[a.addr(), b.addr()])
        ),
    ))
    .await?;
    let http = client();
    sidecar.explain(
        async {
            b.set_health(&http, 500).await?;
            let (_, failed) = spray(&sidecar, "/health", 12).await?;
            ensure!(failed == [500, 500, 500], "{failed:?}");
            // Two probes at the unhealthy interval bring it back.
            let bound = Duration::from_millis(500 + 300) + SLACK;
            let (e, took) = sidecar
                .wait_endpoint("web", b.addr(), "restored", bound, healthy)
                .await?;
            ensure!(verdict(&e, "passive") == "healthy", "{e:#}");
            println!("restored by probes after {took:?}");
            let log = sidecar.process().stderr();
            ensure!(
                log.contains("active probes passed since the ejection"),
                "no log line for the restore:\n{log}"
            );
            Ok(())
        }
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retries_a_backend_killed_under_load_fails_no_request() -> Result<()> {
    let a = Backend::start("a").await?;
    let b = Backend::start("b").await?;
    let sidecar = Arc::new(
        Sidecar::start(&web_config(
            None,
            &format!(
                "{}    retries: 1\n    checks:\n      active:\n        http_path: /health\n        \
             healthy: {{interval: 0.2}}\n        unhealthy: {{interval: 0.2, tcp_failures: 2}}\n",
                web_nodes(&[a.addr(), b.addr()])
            ),
        ))
        .await?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, errors) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (sidecar, stop) = (sidecar.clone(), stop.clone());
            let (sent, errors) = (sent.clone(), errors.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let ok = sidecar
                        .get("http", "/")
                        .await
                        .is_ok_and(|r| r.status == 200);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let result = async {
        // Steady load on both, then b dies.
        while sent.load(Ordering::Relaxed) < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let addr = b.kill().await?;
        let bound = Duration::from_millis(2 * 200) + SLACK;
        sidecar
            .wait_endpoint("web", addr, "ejected", bound, unhealthy)
            .await?;
        let after = sent.load(Ordering::Relaxed);
        while sent.load(Ordering::Relaxed) < after + 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.context("load task")?;
    }
    sidecar.explain(result)?;
    let (sent, errors) = (sent.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
    println!("{sent} requests, {errors} failed");
    ensure!(errors == 0, "{errors} of {sent} requests failed");
    ensure!(a.name() == "a");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_endpoint_is_unhealthy_panic_mode_keeps_traffic_flowing() -> Result<()> {
    let a = Backend::start("a").await?;
    let b = Backend::start("b").await?;
    let sidecar = Sidecar::start(&web_config(
        None,
        &format!(
            "{}    checks:\n      active:\n        http_path: /health\n        \
         healthy: {{interval: 0.1, successes: 1}}\n        \
         unhealthy: {{interval: 0.1, http_failures: 1}}\n",
            web_nodes(&[a.addr(), b.addr()])
        ),
    ))
    .await?;
    let http = client();
    sidecar.explain(
        async {
            a.set_health(&http, 500).await?;
            b.set_health(&http, 500).await?;
            let up = sidecar
                .wait_upstream("web", "in panic mode", SLACK, |u| {
                    u["panic"]["active"] == true
                })
                .await?;
            ensure!(up["panic"]["episodes"] == 1, "{up:#}");
            let (served, failed) = spray(&sidecar, "/", 20).await?;
            ensure!(failed.is_empty() && served.len() == 20, "{failed:?}");
            let up = sidecar.upstream("web").await?;
            ensure!(up["panic"]["requests"].as_u64() >= Some(20), "{up:#}");
            // Logged once for the episode, not per request.
            let log = sidecar.process().stderr();
            ensure!(
                log.matches("panic mode, sending to all").count() == 1,
                "{log}"
            );

            a.set_health(&http, 200).await?;
            sidecar
                .wait_upstream("web", "out of panic mode", SLACK, |u| {
                    u["panic"]["active"] == false
                })
                .await?;
            let (served, _) = spray(&sidecar, "/", 10).await?;
            ensure!(served.iter().all(|n| n == "a"), "{served:?}");
            ensure!(sidecar.process().stderr().contains("panic mode over"));
            Ok(())
        }
        .await,
    )
}

/// The registry's view and the checks' verdicts are kept apart: a draining
/// endpoint gets no new requests, and a failed probe's verdict survives an
/// update from the registry (a weight change) and a config reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_views_and_check_verdicts_do_not_override_each_other() -> Result<()> {
    let a = Backend::start("a").await?;
    let b = Backend::start("b").await?;
    let file_text = |b_weight: u32, b_health: &str| {
        format!(
            "services:\n  web:\n    - {{id: a, address: 127.0.0.1, port: {}}}\n    \
             - {{id: b, address: 127.0.0.1, port: {}, weight: {b_weight}, health: {b_health}}}\n",
            a.addr().port(),
            b.addr().port()
        )
    };
    let file = EndpointFile::new(&file_text(1, "draining"))?;
    let path = file.path().to_str().context("non-UTF-8 temp path")?;
    let adapter = Adapter::start_binary("discovery-file", &["--file", path]).await?;
    let cfg = |read: u32| {
        format!(
            "adapters: {{file: {{address: \"http://{}\"}}}}\n{}",
            adapter.grpc(),
            web_config(
                None,
                &format!(
                    "    discovery_type: file\n    service_name: web\n    \
                 timeout: {{read: {read}}}\n    checks:\n      active:\n        \
                 http_path: /health\n        healthy: {{interval: 0.1, successes: 1}}\n        \
                 unhealthy: {{interval: 0.1, http_failures: 1}}\n"
                )
            )
        )
    };
    let sidecar = Sidecar::start(&cfg(6)).await?;
    let http = client();
    sidecar.explain(
        async {
            let (e, _) = sidecar
                .wait_endpoint("web", b.addr(), "draining", SLACK * 4, |e| {
                    e["health"] == "draining"
                })
                .await?;
            ensure!(
                verdict(&e, "active") == "healthy" && e["available"] == false,
                "{e:#}"
            );
            let (served, _) = spray(&sidecar, "/", 10).await?;
            ensure!(served.iter().all(|n| n == "a"), "{served:?}");

            // Healthy in the registry, but its probe fails: still unhealthy.
            b.set_health(&http, 503).await?;
            file.write(&file_text(1, "healthy"))?;
            let (e, _) = sidecar
                .wait_endpoint("web", b.addr(), "registry-healthy", SLACK * 4, |e| {
                    verdict(e, "registry") == "healthy"
                })
                .await?;
            let (e, _) = if verdict(&e, "active") == "unhealthy" {
                (e, Duration::ZERO)
            } else {
                sidecar
                    .wait_endpoint("web", b.addr(), "probed down", SLACK, unhealthy)
                    .await?
            };
            ensure!(unhealthy(&e), "{e:#}");

            // A weight change from the registry keeps the verdict.
            let generation = sidecar.upstream("web").await?["generation"].clone();
            file.write(&file_text(3, "healthy"))?;
            let (e, _) = sidecar
                .wait_endpoint("web", b.addr(), "reweighted", SLACK * 4, |e| {
                    e["weight"] == 3
                })
                .await?;
            ensure!(
                unhealthy(&e) && verdict(&e, "active") == "unhealthy",
                "{e:#}"
            );
            ensure!(sidecar.upstream("web").await?["generation"] != generation);

            // So does a reload that changes the upstream (the new upstream
            // counts its generations from 0 again).
            let before = sidecar.upstream("web").await?["generation"].as_u64();
            sidecar.reload(&cfg(7))?;
            sidecar
                .wait_upstream("web", "reloaded", SLACK * 4, |u| {
                    u["generation"].as_u64() < before
                })
                .await?;
            let e = sidecar.endpoint("web", b.addr()).await?;
            ensure!(
                unhealthy(&e) && verdict(&e, "active") == "unhealthy",
                "{e:#}"
            );

            b.set_health(&http, 200).await?;
            sidecar
                .wait_endpoint("web", b.addr(), "restored", SLACK, healthy)
                .await?;
            Ok(())
        }
        .await,
    )
}
