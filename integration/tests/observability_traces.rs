//! Traces end to end with the real OpenTelemetry Collector: a request with a
//! `traceparent` goes through the sidecar to a demo backend that shows the
//! headers it got; the backend saw the same trace with the sidecar's client
//! span as parent, and the collector received the server and client spans
//! with the HTTP semantic-convention attributes and the balancer's
//! explanation, over OTLP/gRPC and OTLP/HTTP; the file adapter's and the
//! sidecar's spans of one discovery update carry the same version.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use hyper::Method;
use integration::{
    Adapter, Backend, Collector, EndpointFile, ExportedSpan, Fault, FaultStub, HttpClient, Sidecar,
    Subscriber, closed_port, empty_body, http_request, read_body, scrape, service_file,
    wait_for_metrics, web_config, workspace_binary,
};

const DEADLINE: Duration = Duration::from_secs(20);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// OTLP span kinds.
const SERVER: i64 = 2;
const CLIENT: i64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_traced_through_the_sidecar_to_the_collector() -> Result<()> {
    let collector = Collector::start().await?;
    let backend = Backend::start("a").await?;
    // A weight-0 node: listed in the explanation as skipped.
    let idle = closed_port()?;
    let nodes = format!("    nodes: {{\"{}\": 1, \"{idle}\": 0}}\n", backend.addr());
    // No protocol set: the default, OTLP/HTTP.
    let endpoint = format!("http://{}", collector.http());
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let sidecar = Sidecar::start_with_env(&web_config(None, &nodes), &[], &env).await?;
    let http = sidecar.listener("http")?;

    let req = http_request(Method::GET, http, "/headers?x=1")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .header("tracestate", "vendor=opaque")
        .header("user-agent", "observability-test")
        .body(empty_body())?;
    let reply = HttpClient::http1().send(req).await?.ok()?;
    let seen = reply.text();
    ensure!(
        seen.lines().any(|l| l == "tracestate: vendor=opaque"),
        "the backend did not get the caller's tracestate:\n{seen}"
    );
    let traceparent = seen
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .with_context(|| format!("the backend got no traceparent:\n{seen}"))?;
    let parts: Vec<&str> = traceparent.split('-').collect();
    ensure!(
        parts.len() == 4 && parts[1] == TRACE_ID && parts[3] == "01",
        "the backend got traceparent {traceparent:?}, not trace {TRACE_ID} sampled"
    );
    let client_span_id = parts[2].to_owned();
    ensure!(
        client_span_id != PARENT_ID,
        "the sidecar passed the caller's span on instead of its own"
    );

    let spans = sidecar.explain(
        collector
            .wait_for_spans(DEADLINE, "the sidecar's server and client spans", |s| {
                find(s, SERVER).is_some() && find(s, CLIENT).is_some()
            })
            .await,
    )?;
    let server = find(&spans, SERVER).expect("waited for");
    let client = find(&spans, CLIENT).expect("waited for");
    ensure!(
        server.service == "tributary-sidecar",
        "service {:?}",
        server.service
    );
    ensure!(
        server.parent_span_id == PARENT_ID,
        "server span parent {:?}",
        server.parent_span_id
    );
    ensure!(
        client.span_id == client_span_id && client.parent_span_id == server.span_id,
        "client span {} (parent {}) is not what the backend saw ({client_span_id}) under the server span {}",
        client.span_id,
        client.parent_span_id,
        server.span_id
    );
    let port = backend.addr().port().to_string();
    let want_server = [
        ("http.request.method", "GET"),
        ("url.path", "/headers"),
        ("url.query", "x=1"),
        ("url.scheme", "http"),
        ("http.response.status_code", "200"),
        ("network.peer.address", "127.0.0.1"),
        ("client.address", "127.0.0.1"),
        ("server.address", "127.0.0.1"),
        ("network.protocol.version", "1.1"),
        ("user_agent.original", "observability-test"),
        ("tributary.route", "default"),
        ("tributary.upstream", "web"),
    ];
    check_attrs(server, &want_server)?;
    let want_client = [
        ("http.request.method", "GET"),
        ("http.response.status_code", "200"),
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
        ("network.peer.address", "127.0.0.1"),
        ("network.peer.port", port.as_str()),
        ("tributary.upstream", "web"),
        ("tributary.attempt", "1"),
        ("tributary.balancer", "roundrobin"),
        ("tributary.balancer.panic", "false"),
    ];
    check_attrs(client, &want_client)?;
    let url = format!("http://{}/headers?x=1", backend.addr());
    ensure!(client.attr("url.full").as_deref() == Some(url.as_str()));
    ensure!(client.attr("tributary.endpoint") == Some(backend.addr().to_string()));
    ensure!(client.attr("tributary.endpoint_set.generation").is_some());
    let chosen = format!("{} chosen weight=1.0000", backend.addr());
    let candidates = client.attr_list("tributary.balancer.candidates");
    ensure!(candidates == [chosen.clone()], "candidates {candidates:?}");
    let skipped = client.attr_list("tributary.balancer.skipped");
    ensure!(
        skipped == [format!("{idle} weight=0.0000: weight 0")],
        "skipped {skipped:?}"
    );

    // OTLP/gRPC: a second sidecar exports through the collector's gRPC port.
    let endpoint = format!("http://{}", collector.grpc());
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_SERVICE_NAME", "sidecar-over-grpc"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let nodes = format!("    nodes: {{\"{}\": 1}}\n", backend.addr());
    let over_grpc = Sidecar::start_with_env(&web_config(None, &nodes), &[], &env).await?;
    HttpClient::http1()
        .get(over_grpc.listener("http")?, "/")
        .await?
        .ok()?;
    over_grpc.explain(
        collector
            .wait_for_spans(DEADLINE, "spans sent over OTLP/gRPC", |s| {
                s.iter()
                    .any(|s| s.service == "sidecar-over-grpc" && s.kind == SERVER)
            })
            .await,
    )?;
    Ok(())
}

/// The server span covers the response body: with 50 MB streamed through,
/// it ends after the client had the response head (and the client span,
/// which ends at the head, before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_span_ends_with_the_response_body() -> Result<()> {
    let collector = Collector::start().await?;
    let stub = FaultStub::start(None, |_| Fault::Huge {
        headers: Vec::new(),
        size: 50 << 20,
    })
    .await?;
    let endpoint = format!("http://{}", collector.http());
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let nodes = format!("    nodes: {{\"{}\": 1}}\n", stub.addr());
    let sidecar = Sidecar::start_with_env(&web_config(None, &nodes), &[], &env).await?;
    let req = http_request(Method::GET, sidecar.listener("http")?, "/big")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .body(empty_body())?;
    let resp = HttpClient::http1().start(req).await?;
    ensure!(resp.status() == 200, "status {}", resp.status());
    let head_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let mut got = 0usize;
    read_body(resp.into_body(), DEADLINE, |b| {
        got += b.len();
        Ok(())
    })
    .await?;
    ensure!(got == 50 << 20, "read {got} bytes");
    let spans = sidecar.explain(
        collector
            .wait_for_spans(DEADLINE, "the spans of the big response", |s| {
                find(s, SERVER).is_some() && find(s, CLIENT).is_some()
            })
            .await,
    )?;
    let (server, client) = (
        find(&spans, SERVER).expect("waited for"),
        find(&spans, CLIENT).expect("waited for"),
    );
    ensure!(
        client.end_unix_nanos <= head_at && server.end_unix_nanos > head_at,
        "client span ended at {}, server span at {}, the client had the head at {head_at}",
        client.end_unix_nanos,
        server.end_unix_nanos
    );
    ensure!(server.attr("http.response.status_code").as_deref() == Some("200"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_stops_tracing_until_one_answers_on_its_port() -> Result<()> {
    let backend = Backend::start("a").await?;
    let port = closed_port()?;
    let endpoint = format!("http://{port}");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let nodes = format!("    nodes: {{\"{}\": 1}}\n", backend.addr());
    let sidecar = Sidecar::start_with_env(&web_config(None, &nodes), &[], &env).await?;
    let http = sidecar.listener("http")?;
    let client = HttpClient::http1();

    // Requests are served while the export of their spans fails; then the
    // sidecar sheds: later requests are not traced, and that is counted.
    client.get(http, "/").await?.ok()?;
    wait_for_metrics(
        sidecar.admin(),
        DEADLINE,
        "shedding after a failed export",
        "sidecar_trace_shedding",
        |m| m.get("sidecar_trace_shedding", &[]) == Some(1.0),
    )
    .await?;
    for _ in 0..5 {
        client.get(http, "/").await?.ok()?;
    }
    let m = scrape(sidecar.admin()).await?;
    ensure!(
        m.get("sidecar_trace_requests_untraced_total", &[]) == Some(5.0),
        "untraced: {}",
        m.show("sidecar_trace_requests_untraced_total")
    );
    ensure!(
        m.get("sidecar_trace_spans_failed_total", &[])
            .is_some_and(|n| n >= 1.0)
    );
    ensure!(m.get("sidecar_trace_shed_episodes_total", &[]) == Some(1.0));

    // A collector comes up on that port: a probe finds it, tracing resumes,
    // and a request's spans arrive.
    let collector = Collector::start_on(port).await?;
    wait_for_metrics(
        sidecar.admin(),
        DEADLINE,
        "tracing resumed after the collector came up",
        "sidecar_trace_shedding",
        |m| m.get("sidecar_trace_shedding", &[]) == Some(0.0),
    )
    .await?;
    let req = http_request(Method::GET, http, "/after")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .body(empty_body())?;
    client.send(req).await?.ok()?;
    sidecar.explain(
        collector
            .wait_for_spans(DEADLINE, "spans after the collector came up", |s| {
                find(s, SERVER).is_some_and(|s| s.attr("url.path").as_deref() == Some("/after"))
                    && find(s, CLIENT).is_some()
            })
            .await,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_updates_are_traced_by_the_adapter_and_the_sidecar_with_one_version() -> Result<()>
{
    let collector = Collector::start().await?;
    let (a, b) = (Backend::start("a").await?, Backend::start("b").await?);
    let file = EndpointFile::new(&service_file("web", [&a]))?;
    // The adapter exports over its default transport, OTLP/HTTP; the
    // sidecar over gRPC.
    let endpoint = format!("http://{}", collector.http());
    let grpc_endpoint = format!("http://{}", collector.grpc());
    let adapter = Adapter::start("discovery-file", traced_file_adapter(&file, &endpoint)?).await?;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc_endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let upstream = "    discovery_type: file\n    service_name: web\n";
    let sidecar =
        Sidecar::start_with_env(&web_config(Some(adapter.grpc()), upstream), &[], &env).await?;
    sidecar.wait_ready(DEADLINE).await?;
    file.write(&service_file("web", [&a, &b]))?;

    // Version 2 is the delta that added b: both ends traced it.
    let spans = adapter.explain(
        collector
            .wait_for_spans(
                DEADLINE,
                "version 2 from the adapter and the sidecar",
                |s| {
                    update(s, "discovery-file", "2").is_some()
                        && update(s, "tributary-sidecar", "2").is_some()
                },
            )
            .await,
    )?;
    let sent = update(&spans, "discovery-file", "2").expect("waited for");
    let got = update(&spans, "tributary-sidecar", "2").expect("waited for");
    ensure!(sent.attr("discovery.kind").as_deref() == Some("delta"));
    ensure!(sent.attr("discovery.upserts").as_deref() == Some("1"));
    ensure!(got.attr("discovery.kind").as_deref() == Some("delta"));
    ensure!(got.attr("discovery.endpoints").as_deref() == Some("2"));
    ensure!(got.attr("discovery.adapter").as_deref() == Some("file"));
    Ok(())
}

/// An adapter that stops exports what it has not sent yet, even on a
/// runtime of one worker thread (the export runs on that runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_exports_its_last_spans_when_it_stops() -> Result<()> {
    let collector = Collector::start().await?;
    let a = Backend::start("a").await?;
    let file = EndpointFile::new(&service_file("web", [&a]))?;
    let endpoint = format!("http://{}", collector.http());
    let mut cmd = traced_file_adapter(&file, &endpoint)?;
    // Nothing leaves on the schedule: only the flush at the stop.
    cmd.env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .env("TOKIO_WORKER_THREADS", "1");
    let adapter = Adapter::start("discovery-file", cmd).await?;
    let mut sub = Subscriber::watch(adapter.grpc(), "web").await?;
    sub.wait_for(DEADLINE, false, "the snapshot", |s| s.len() == 1)
        .await?;
    adapter.process().terminate()?;
    adapter.process().wait_exit(DEADLINE).await?;
    adapter.explain(
        collector
            .wait_for_spans(DEADLINE, "the adapter's snapshot span", |s| {
                update(s, "discovery-file", "1").is_some()
            })
            .await,
    )?;
    Ok(())
}

/// `discovery-file` over `file`, exporting its spans to `endpoint` over the
/// default transport every 100 ms.
fn traced_file_adapter(file: &EndpointFile, endpoint: &str) -> Result<std::process::Command> {
    let path = file.path().to_str().context("non-UTF-8 temp path")?;
    let mut cmd = std::process::Command::new(workspace_binary("discovery-file")?);
    cmd.args(["--file", path])
        .args(integration::loopback_args())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    Ok(cmd)
}

fn find(spans: &[ExportedSpan], kind: i64) -> Option<&ExportedSpan> {
    spans
        .iter()
        .find(|s| s.kind == kind && s.trace_id == TRACE_ID)
}

fn update<'a>(spans: &'a [ExportedSpan], service: &str, version: &str) -> Option<&'a ExportedSpan> {
    spans.iter().find(|s| {
        s.service == service
            && s.name == "discovery.update"
            && s.attr("discovery.service").as_deref() == Some("web")
            && s.attr("discovery.version").as_deref() == Some(version)
    })
}

fn check_attrs(span: &ExportedSpan, want: &[(&str, &str)]) -> Result<()> {
    for (k, v) in want {
        ensure!(
            span.attr(k).as_deref() == Some(*v),
            "{} span: {k} is {:?}, want {v:?}; attributes: {:?}",
            span.name,
            span.attr(k),
            span.attributes
        );
    }
    Ok(())
}
