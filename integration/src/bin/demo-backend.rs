//! A small HTTP backend for the demo and the end-to-end tests: answers with
//! its name, and offers a few endpoints that make proxy behaviour visible.
//!
//! Serves HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one port and prints
//! `listening http=<addr>` once bound.
//!
//! - `GET /` and anything unmatched: `hello from <name>` (header `x-backend`)
//! - `/delay/<ms>`: answers after that many milliseconds
//! - `/status/<code>`: answers with that status
//! - `/headers`: the request's headers, one per line
//! - `/upload`: reads the whole body and answers with its length in bytes
//! - `/echo`: streams the request body back
//! - `/health`: answers the health status (`--health-status`, default 200)
//! - `/set-health/<code>`: sets the health status
//! - `grpc.health.v1.Health` (over h2c): `SERVING` while the health status
//!   is 2xx, `NOT_SERVING` otherwise

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tonic::codegen::Service;
use tonic_health::{ServingStatus, server::HealthReporter};

/// A demo HTTP backend.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Name to answer with.
    #[arg(long, default_value = "backend")]
    name: String,
    /// The status `/health` answers at start.
    #[arg(long, default_value_t = 200)]
    health_status: u16,
    /// Extra latency added to every answer but `/health`, in milliseconds
    /// (to make one backend slower than another).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// What every connection shares.
struct Backend {
    name: Arc<str>,
    health: AtomicU16,
    reporter: HealthReporter,
    delay: Duration,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    println!("listening http={}", listener.local_addr()?);
    let (reporter, grpc_health) = tonic_health::server::health_reporter();
    let backend = Arc::new(Backend {
        name: args.name.into(),
        health: AtomicU16::new(0),
        reporter,
        delay: Duration::from_millis(args.delay_ms),
    });
    set_health(&backend, args.health_status).await;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let backend = backend.clone();
        let grpc_health = grpc_health.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let backend = backend.clone();
                let mut grpc_health = grpc_health.clone();
                async move {
                    if req.uri().path().starts_with("/grpc.health.v1.Health/") {
                        let resp = grpc_health.call(req).await?;
                        return Ok(resp.map(|b| b.map_err(BoxError::from).boxed_unsync()));
                    }
                    handle(req, &backend).await
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn set_health(backend: &Backend, status: u16) {
    backend.health.store(status, Ordering::Relaxed);
    let serving = if (200..300).contains(&status) {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    backend.reporter.set_service_status("", serving).await;
}

async fn handle(req: Request<Incoming>, backend: &Backend) -> Result<Response<Body>, Infallible> {
    let name = &backend.name;
    let path = req.uri().path().to_string();
    if !backend.delay.is_zero() && path != "/health" {
        tokio::time::sleep(backend.delay).await;
    }
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let resp = match (parts.next().unwrap_or(""), parts.next()) {
        ("delay", Some(ms)) => {
            let ms = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, format!("{name} waited {ms} ms\n"))
        }
        ("status", Some(code)) => {
            let code = code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok());
            text(code.unwrap_or(StatusCode::BAD_REQUEST), format!("{name}\n"))
        }
        ("headers", None) => {
            let mut out = String::new();
            for (k, v) in req.headers() {
                out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("<binary>")));
            }
            text(StatusCode::OK, out)
        }
        ("upload", None) => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(e) => return Ok(text(StatusCode::BAD_REQUEST, format!("{e}\n"))),
                }
            }
            text(StatusCode::OK, format!("{n}\n"))
        }
        ("echo", None) => Response::new(req.into_body().map_err(BoxError::from).boxed_unsync()),
        ("health", None) => {
            let code = backend.health.load(Ordering::Relaxed);
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            text(code, format!("{name} health {}\n", code.as_u16()))
        }
        ("set-health", Some(code)) => match code.parse::<u16>() {
            Ok(c) if StatusCode::from_u16(c).is_ok() => {
                set_health(backend, c).await;
                text(StatusCode::OK, format!("{name} health set to {c}\n"))
            }
            _ => text(StatusCode::BAD_REQUEST, format!("bad status {code:?}\n")),
        },
        _ => text(StatusCode::OK, format!("hello from {name}\n")),
    };
    let mut resp = resp;
    if let Ok(v) = name.parse() {
        resp.headers_mut().insert("x-backend", v);
    }
    Ok(resp)
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}
