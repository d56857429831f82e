//! A small HTTP client for tests, on hyper-util's pooled client: HTTP/1.1 or
//! h2c with prior knowledge, every exchange bounded by a timeout, bodies
//! either whole or streamed both ways.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use futures_util::Stream;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{
    HeaderMap, Method, Request, Response, StatusCode, Version, body::Frame, body::Incoming,
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// Any error a body may carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body: empty, whole, or a stream made on the fly.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// How long an exchange may take unless the client says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled client speaking one HTTP version.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<HttpConnector, Body>,
    timeout: Duration,
}

/// A whole response.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The HTTP version the response came in.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

// === impl HttpClient ===

impl HttpClient {
    /// HTTP/1.1 with keep-alive.
    pub fn http1() -> Self {
        Self::build(false)
    }

    /// HTTP/2 over cleartext, prior knowledge (no upgrade).
    pub fn h2c() -> Self {
        Self::build(true)
    }

    fn build(h2: bool) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .http2_only(h2)
            .build(connector);
        Self {
            client,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client (sharing its pool) with another exchange timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            client: self.client.clone(),
            timeout,
        }
    }

    /// `GET http://{addr}{path}`, whole.
    pub async fn get(&self, addr: SocketAddr, path: &str) -> Result<Reply> {
        self.send(http_request(Method::GET, addr, path).body(empty_body())?)
            .await
    }

    /// Sends `req` and reads the whole response, all within the timeout.
    pub async fn send(&self, req: Request<Body>) -> Result<Reply> {
        let what = format!("{} {}", req.method(), req.uri());
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| anyhow!("{what}: {}", chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| anyhow!("{what}: reading the body: {e}"))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| anyhow!("{what}: no whole answer within {:?}", self.timeout))?
    }

    /// Sends `req` and returns once the response head arrives (within the
    /// timeout), leaving its body to stream.
    pub async fn start(&self, req: Request<Body>) -> Result<Response<Incoming>> {
        let what = format!("{} {}", req.method(), req.uri());
        tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| anyhow!("{what}: no response head within {:?}", self.timeout))?
            .map_err(|e| anyhow!("{what}: {}", chain(&e)))
    }
}

// === impl Reply ===

impl Reply {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text, if present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Fails unless the status is 200, showing the body.
    pub fn ok(self) -> Result<Self> {
        if self.status == StatusCode::OK {
            Ok(self)
        } else {
            Err(anyhow!("answered {}: {}", self.status, self.text().trim()))
        }
    }
}

/// A request builder for `http://{addr}{path}`.
pub fn http_request(method: Method, addr: SocketAddr, path: &str) -> hyper::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
}

/// An empty body.
pub fn empty_body() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body of these bytes.
pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body streamed from `chunks`, each made when the connection asks for
/// it, so a large body is never held whole.
pub fn streamed_body<S>(chunks: S) -> Body
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    use futures_util::StreamExt;
    StreamBody::new(chunks.map(|b| Ok::<_, BoxError>(Frame::data(b)))).boxed_unsync()
}

/// An error with its sources, on one line: hyper's top-level messages
/// ("client error (Connect)") say little alone.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Reads the rest of a streamed response body, calling `each` on every data
/// chunk, within `timeout`.
pub async fn read_body(
    body: Incoming,
    timeout: Duration,
    mut each: impl FnMut(&Bytes) -> Result<()>,
) -> Result<()> {
    let mut body = body;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.context("reading the response body")?;
            if let Some(data) = frame.data_ref() {
                each(data)?;
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| anyhow!("the response body did not end within {timeout:?}"))?
}
