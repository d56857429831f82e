//! The admin API, loopback-only by default: `/live`, `/ready`, `/upstreams`
//! (JSON), `/metrics` (Prometheus text) and `/config`.

use std::{convert::Infallible, sync::Arc, time::Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::{
    app::App,
    health::{Counters, health_name, passive_name},
    upstream::{Endpoint, Upstream},
};

/// Serves the admin API on `listener` until the task is dropped.
pub async fn serve_admin(listener: TcpListener, app: Arc<App>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(route(&req, &app)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn route(req: &Request<Incoming>, app: &App) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n".into()),
        "/ready" => ready(app),
        "/upstreams" => upstreams(app),
        "/metrics" => match crate::metrics::render(app) {
            Ok(body) => {
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8"
                        .parse()
                        .expect("static header value"),
                );
                r
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        },
        "/config" => {
            let cur = app.current();
            let mut r = text(StatusCode::OK, cur.text.clone());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                "application/yaml".parse().expect("static header value"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /live /ready /upstreams /metrics /config\n".into(),
        ),
    }
}

fn ready(app: &App) -> Response<Full<Bytes>> {
    let cur = app.current();
    let waiting: Vec<&str> = cur
        .upstreams
        .iter()
        .filter(|u| !u.is_ready())
        .map(|u| &*u.name)
        .collect();
    if waiting.is_empty() {
        text(StatusCode::OK, "ready\n".into())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "waiting for the first endpoints of: {}\n",
                waiting.join(", ")
            ),
        )
    }
}

fn upstreams(app: &App) -> Response<Full<Bytes>> {
    let cur = app.current();
    let now = Instant::now();
    let ups: Vec<_> = cur
        .upstreams
        .iter()
        .map(|u| {
            let state = u.state();
            let endpoints: Vec<_> = state
                .endpoints
                .iter()
                .map(|e| {
                    json!({
                        "id": &*e.id,
                        "address": e.addr.to_string(),
                        "weight": e.weight,
                        "priority": e.priority,
                        "zone": &*e.zone,
                        "source": &*e.source,
                        "health": health_name(e.state.health()),
                        "checks": checks(u, e),
                        "available": e.is_available(),
                        "in_flight": e.state.in_flight(),
                        "ewma_ms": e.state.ewma_ns(now) / 1e6,
                    })
                })
                .collect();
            json!({
                "name": &*u.name,
                "type": format!("{:?}", u.balancer_type()),
                "generation": state.generation,
                "ready": u.is_ready(),
                "panic": {
                    "active": u.panic.is_active(),
                    "episodes": u.panic.episodes(),
                    "requests": u.panic.picks(),
                },
                "sources": state.sources,
                "endpoints": endpoints,
            })
        })
        .collect();
    let body = serde_json::to_string_pretty(&json!({ "upstreams": ups }))
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("static header value"),
    );
    r
}

/// Each verdict of an endpoint apart, with the checks' counters; `null`
/// for a check the upstream does not run.
fn checks(u: &Upstream, e: &Endpoint) -> serde_json::Value {
    let cell = e.state.verdicts();
    let counters = |c: Counters| {
        json!({
            "successes": c.successes,
            "http_failures": c.http_failures,
            "tcp_failures": c.tcp_failures,
            "timeouts": c.timeouts,
        })
    };
    let cfg = u.cfg.checks.as_ref();
    let active = cfg.and_then(|c| c.active.as_ref()).map(|_| {
        json!({
            "verdict": if cell.active_down() { "unhealthy" } else { "healthy" },
            "consecutive": counters(cell.active_counters()),
        })
    });
    let passive = cfg.and_then(|c| c.passive.as_ref()).map(|_| {
        json!({
            "verdict": passive_name(cell.passive()),
            "consecutive": counters(cell.passive_counters()),
            "ejections": cell.ejections(),
            "ejected_for_ms": cell.ejected_until().map(|t| {
                t.saturating_duration_since(tokio::time::Instant::now()).as_millis() as u64
            }),
        })
    });
    json!({
        "registry": health_name(cell.registry()),
        "active": active,
        "passive": passive,
    })
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        "text/plain; charset=utf-8"
            .parse()
            .expect("static header value"),
    );
    r
}
