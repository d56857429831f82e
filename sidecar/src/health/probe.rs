//! Active probes, one kind per check type: an HTTP request whose status
//! decides, a TCP connect, or a `grpc.health.v1.Health/Check` call.
//!
//! Each endpoint's probe task owns its [`Prober`], and with it the probe's
//! connection: HTTP probes keep theirs alive between probes (one connection
//! per endpoint, made again when it breaks), as gRPC channels do, so a probe
//! costs one request rather than a handshake. TCP probes connect every time:
//! connecting is the check.

use std::{fmt, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, header, uri::PathAndQuery};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{hysteresis::Outcome, passive::StatusSet};
use crate::config::{ActiveCheck, ActiveCheckType};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every probe of an upstream sends, built once from its config.
#[derive(Debug)]
pub(crate) struct ProbeSpec {
    kind: ActiveCheckType,
    method: Method,
    path: PathAndQuery,
    /// `checks.active.host`; the probed address when `None`.
    host: Option<HeaderValue>,
    headers: HeaderMap,
    body: Bytes,
    healthy: StatusSet,
    unhealthy: StatusSet,
}

/// One endpoint's prober and its connection.
pub(crate) enum Prober {
    Http {
        host: HeaderValue,
        conn: Option<SendRequest<Full<Bytes>>>,
    },
    Tcp,
    Grpc(HealthClient<Channel>),
    /// A test double: reports each probe's time, answers what it is fed.
    #[cfg(test)]
    Script(super::test_support::Script),
}

/// A probe's result: what it counts as (`None`: neither healthy nor
/// unhealthy, such as a status in neither list) and what happened.
#[derive(Debug)]
pub(crate) struct Probed {
    pub(crate) outcome: Option<Outcome>,
    pub(crate) detail: Detail,
}

/// What a probe saw, for logs.
#[derive(Debug)]
pub(crate) enum Detail {
    Status(u16),
    Connected,
    Serving(ServingStatus),
    Error(BoxError),
    TimedOut(Duration),
    #[cfg(test)]
    Scripted,
}

// === impl ProbeSpec ===

impl ProbeSpec {
    /// The probe of `c`; fails on a `host` or header value that cannot be
    /// sent (the config validates both, so this is a backstop).
    pub(crate) fn new(c: &ActiveCheck) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        for (name, value) in &c.req_headers {
            let v = HeaderValue::from_str(value.trim())
                .map_err(|e| format!("req_headers: {name}: {e}"))?;
            headers.append(name.clone(), v);
        }
        let host = c
            .host
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|e| format!("host: {e}"))?;
        Ok(ProbeSpec {
            kind: c.r#type,
            method: c.http_method.clone(),
            path: c.http_path.parse().map_err(|e| format!("http_path: {e}"))?,
            host,
            headers,
            body: Bytes::from(c.http_req_body.clone()),
            healthy: StatusSet::new(&c.healthy.http_statuses),
            unhealthy: StatusSet::new(&c.unhealthy.http_statuses),
        })
    }

    fn classify(&self, status: u16) -> Option<Outcome> {
        if self.healthy.contains(status) {
            Some(Outcome::Success)
        } else if self.unhealthy.contains(status) {
            Some(Outcome::HttpFailure)
        } else {
            None
        }
    }

    fn request(&self, host: &HeaderValue) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.path.clone().into();
        if !self.headers.is_empty() {
            *req.headers_mut() = self.headers.clone();
        }
        let host = self.host.as_ref().unwrap_or(host).clone();
        req.headers_mut().insert(header::HOST, host);
        req
    }
}

// === impl Prober ===

impl Prober {
    /// A prober for the endpoint at `addr` (already the probe port).
    pub(crate) fn new(
        spec: &ProbeSpec,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Self, String> {
        Ok(match spec.kind {
            ActiveCheckType::Http => Prober::Http {
                host: HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?,
                conn: None,
            },
            ActiveCheckType::Tcp => Prober::Tcp,
            ActiveCheckType::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| e.to_string())?
                    .connect_timeout(timeout)
                    .tcp_nodelay(true)
                    .connect_lazy();
                Prober::Grpc(HealthClient::new(channel))
            }
        })
    }

    /// Probes `addr` once, within `timeout`.
    pub(crate) async fn probe(
        &mut self,
        spec: &ProbeSpec,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Probed {
        match self {
            Prober::Http { host, conn } => {
                match tokio::time::timeout(timeout, http(spec, host, conn, addr)).await {
                    Ok(Ok(status)) => Probed {
                        outcome: spec.classify(status),
                        detail: Detail::Status(status),
                    },
                    Ok(Err(e)) => failed(e),
                    Err(_) => timed_out(timeout),
                }
            }
            Prober::Tcp => match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Probed {
                    outcome: Some(Outcome::Success),
                    detail: Detail::Connected,
                },
                Ok(Err(e)) => failed(e.into()),
                Err(_) => timed_out(timeout),
            },
            Prober::Grpc(client) => {
                let req = HealthCheckRequest {
                    service: String::new(),
                };
                match tokio::time::timeout(timeout, client.check(req)).await {
                    Ok(Ok(resp)) => {
                        let status = resp.into_inner().status();
                        let outcome = if status == ServingStatus::Serving {
                            Outcome::Success
                        } else {
                            Outcome::HttpFailure
                        };
                        Probed {
                            outcome: Some(outcome),
                            detail: Detail::Serving(status),
                        }
                    }
                    // No connection: a transport failure. Any other status
                    // is an answer, and says the server is not healthy.
                    Ok(Err(s)) if s.code() == tonic::Code::Unavailable => failed(s.into()),
                    Ok(Err(s)) => Probed {
                        outcome: Some(Outcome::HttpFailure),
                        detail: Detail::Error(s.into()),
                    },
                    Err(_) => timed_out(timeout),
                }
            }
            #[cfg(test)]
            Prober::Script(s) => s.probe().await,
        }
    }
}

/// One HTTP probe: on the kept connection if it is still open, made again
/// once if that fails (the server may have closed it while idle).
async fn http(
    spec: &ProbeSpec,
    host: &HeaderValue,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
) -> Result<u16, BoxError> {
    if let Some(send) = conn.as_mut().filter(|s| !s.is_closed())
        && let Ok(status) = exchange(send, spec.request(host)).await
    {
        return Ok(status);
    }
    *conn = None;
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (mut send, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the prober drops `send`, or the peer closes.
        let _ = connection.await;
    });
    let status = exchange(&mut send, spec.request(host)).await?;
    *conn = Some(send);
    Ok(status)
}

/// Sends one request and reads the whole response, so the connection can
/// carry the next probe.
async fn exchange(
    send: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<u16, BoxError> {
    send.ready().await?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(status)
}

fn failed(e: BoxError) -> Probed {
    Probed {
        outcome: Some(Outcome::TcpFailure),
        detail: Detail::Error(e),
    }
}

fn timed_out(timeout: Duration) -> Probed {
    Probed {
        outcome: Some(Outcome::Timeout),
        detail: Detail::TimedOut(timeout),
    }
}

// === impl Detail ===

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Detail::Status(s) => write!(f, "status {s}"),
            Detail::Connected => f.write_str("connected"),
            Detail::Serving(s) => write!(f, "gRPC health {}", s.as_str_name()),
            Detail::Error(e) => {
                write!(f, "{e}")?;
                let mut source = e.source();
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
            Detail::TimedOut(t) => write!(f, "no answer within {t:?}"),
            #[cfg(test)]
            Detail::Scripted => f.write_str("scripted"),
        }
    }
}
