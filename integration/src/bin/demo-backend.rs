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

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

/// A demo HTTP backend.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Name to answer with.
    #[arg(long, default_value = "backend")]
    name: String,
}

type Body = BoxBody<Bytes, hyper::Error>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    println!("listening http={}", listener.local_addr()?);
    let name: Arc<str> = args.name.into();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, name.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>, name: Arc<str>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
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
        ("echo", None) => Response::new(req.into_body().boxed()),
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
            .boxed(),
    );
    *r.status_mut() = status;
    r
}
