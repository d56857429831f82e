//! A fault-injecting HTTP/1.1 stub and proxy, for the registry faults a real
//! server cannot be made to show on demand: a malformed or truncated body, a
//! header that goes backwards, a 50 MB body, a response that never comes.
//!
//! It is only for those. Everything a real registry can show (registration,
//! health changes, restarts, outages) is tested against the real registry;
//! the stub sits in front of it ([`Fault::Forward`]) or replaces it for the
//! one faulty answer a test needs.
//!
//! A [`Rule`] decides per request what the stub does. The stub counts the
//! requests it got, those in flight and the most ever in flight at once, so a
//! test can also see how an adapter paces its registry calls.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{Request, Response, StatusCode, body::Frame, body::Incoming, http::request::Parts};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::{net::TcpListener, sync::watch};

use crate::BoxError;

/// What the stub does with one request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answers with this status, these headers and this body.
    Reply {
        /// The status code.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// The whole body.
        body: Bytes,
    },
    /// Declares `body`'s full length, sends its first `cut` bytes and closes
    /// the connection.
    Truncate {
        /// The status code.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// The body as it should have been.
        body: Bytes,
        /// How many bytes are really sent.
        cut: usize,
    },
    /// Answers 200 with a body of `size` bytes (a JSON array of one long
    /// string, valid if read whole), streamed without a length.
    Huge {
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// The body's size in bytes (at least 2).
        size: usize,
    },
    /// Never answers; the connection stays open until the client leaves.
    Hang,
    /// Forwards the request to the upstream given at start, then replaces or
    /// adds these response headers.
    Forward {
        /// Headers set on the upstream's response.
        set_headers: Vec<(String, String)>,
    },
}

/// Decides what the stub does with a request (its head: method, URI,
/// headers).
pub type Rule = Arc<dyn Fn(&Parts) -> Fault + Send + Sync>;

/// A running stub; it stops when dropped.
pub struct FaultStub {
    addr: SocketAddr,
    rule: Arc<Mutex<Rule>>,
    counts: Arc<Counts>,
    _stop: watch::Sender<()>,
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

type StubBody = UnsyncBoxBody<Bytes, BoxError>;

// === impl Fault ===

impl Fault {
    /// A 200 with a JSON body.
    pub fn json(body: impl Into<Bytes>) -> Self {
        Self::Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    /// Forwards to the upstream unchanged.
    pub fn forward() -> Self {
        Self::Forward {
            set_headers: Vec::new(),
        }
    }
}

// === impl FaultStub ===

impl FaultStub {
    /// Starts a stub on a loopback port the OS chooses. `upstream` is where
    /// [`Fault::Forward`] sends requests (a forward without one answers 502).
    pub async fn start(
        upstream: Option<SocketAddr>,
        rule: impl Fn(&Parts) -> Fault + Send + Sync + 'static,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("fault stub: cannot bind a loopback port")?;
        let addr = listener.local_addr()?;
        let rule: Arc<Mutex<Rule>> = Arc::new(Mutex::new(Arc::new(rule)));
        let counts = Arc::new(Counts::default());
        let (stop_tx, stop_rx) = watch::channel(());
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let state = Arc::new(Shared {
            upstream,
            rule: rule.clone(),
            counts: counts.clone(),
            client,
        });
        tokio::spawn(accept_loop(listener, state, stop_rx));
        Ok(Self {
            addr,
            rule,
            counts,
            _stop: stop_tx,
        })
    }

    /// The address the stub listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the rule for the requests that come next.
    pub fn set_rule(&self, rule: impl Fn(&Parts) -> Fault + Send + Sync + 'static) {
        *self.rule.lock().expect("fault stub rule lock poisoned") = Arc::new(rule);
    }

    /// How many requests the stub has received.
    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::SeqCst)
    }

    /// How many requests are being answered now.
    pub fn in_flight(&self) -> u64 {
        self.counts.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests ever in flight at once.
    pub fn max_in_flight(&self) -> u64 {
        self.counts.max_in_flight.load(Ordering::SeqCst)
    }
}

struct Shared {
    upstream: Option<SocketAddr>,
    rule: Arc<Mutex<Rule>>,
    counts: Arc<Counts>,
    client: Client<HttpConnector, Incoming>,
}

async fn accept_loop(listener: TcpListener, state: Arc<Shared>, mut stop: watch::Receiver<()>) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let state = state.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(stream);
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
        });
    }
}

async fn handle(state: &Shared, req: Request<Incoming>) -> Response<StubBody> {
    let c = &state.counts;
    c.requests.fetch_add(1, Ordering::SeqCst);
    let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    c.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(c.clone());

    let (parts, body) = req.into_parts();
    let rule = state
        .rule
        .lock()
        .expect("fault stub rule lock poisoned")
        .clone();
    match rule(&parts) {
        Fault::Reply {
            status,
            headers,
            body,
        } => reply(status, &headers, full(body)),
        Fault::Truncate {
            status,
            headers,
            body,
            cut,
        } => truncated(status, &headers, body, cut),
        Fault::Huge { headers, size } => reply(200, &headers, huge(size)),
        Fault::Hang => std::future::pending().await,
        Fault::Forward { set_headers } => {
            let Some(upstream) = state.upstream else {
                return reply(502, &[], full("fault stub: no upstream to forward to"));
            };
            let mut req = Request::from_parts(parts, body);
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            *req.uri_mut() = match format!("http://{upstream}{path}").parse() {
                Ok(uri) => uri,
                Err(e) => return reply(502, &[], full(format!("fault stub: {e}"))),
            };
            match state.client.request(req).await {
                Ok(resp) => {
                    let (mut parts, body) = resp.into_parts();
                    for (k, v) in &set_headers {
                        if let (Ok(k), Ok(v)) = (
                            hyper::header::HeaderName::from_bytes(k.as_bytes()),
                            hyper::header::HeaderValue::from_str(v),
                        ) {
                            parts.headers.insert(k, v);
                        }
                    }
                    Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
                }
                Err(e) => reply(502, &[], full(format!("fault stub: upstream: {e}"))),
            }
        }
    }
}

struct InFlight(Arc<Counts>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn full(body: impl Into<Bytes>) -> StubBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn reply(status: u16, headers: &[(String, String)], body: StubBody) -> Response<StubBody> {
    let mut b = Response::builder().status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK));
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(body)
        .unwrap_or_else(|e| Response::new(full(format!("fault stub: bad reply: {e}"))))
}

/// A body that declares its full length but ends with an error after `cut`
/// bytes: hyper then closes the connection with the body short.
fn truncated(
    status: u16,
    headers: &[(String, String)],
    body: Bytes,
    cut: usize,
) -> Response<StubBody> {
    let len = body.len();
    let sent = body.slice(..cut.min(len));
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(sent)),
        Err("fault stub: truncated on purpose".into()),
    ];
    let stream = StreamBody::new(futures_util::stream::iter(frames));
    let mut resp = reply(status, headers, stream.boxed_unsync());
    resp.headers_mut()
        .insert(hyper::header::CONTENT_LENGTH, len.into());
    resp
}

/// `["xxx…x"]` of `size` bytes, made chunk by chunk and sent without a
/// length, so that a client has to count what it reads.
fn huge(size: usize) -> StubBody {
    const CHUNK: usize = 64 * 1024;
    let size = size.max(4);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
    tokio::spawn(async move {
        let mut sent = 0;
        while sent < size {
            let n = CHUNK.min(size - sent);
            let mut chunk = vec![b'x'; n];
            if sent == 0 {
                chunk[..2].copy_from_slice(b"[\"");
            }
            if sent + n == size {
                chunk[n - 2..].copy_from_slice(b"\"]");
            }
            sent += n;
            if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                return;
            }
        }
    });
    StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed_unsync()
}
