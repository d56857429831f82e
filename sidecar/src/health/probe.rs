//! Active probes, one kind per check type: an HTTP request whose status
//! decides, a TCP connect, or a `grpc.health.v1.Health/Check` call.
//!
//! Each endpoint's probe task owns its [`Prober`], and with it the probe's
//! connection: HTTP probes keep theirs alive between probes (one connection
//! per endpoint, made again when it breaks; see `http_probe.rs`), as gRPC
//! channels do, so a probe costs one request rather than a handshake. TCP
//! probes connect every time: connecting is the check.

use std::{fmt, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, uri::PathAndQuery};
use tokio::net::TcpStream;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{
    http_probe::{HttpProbe, RequestParts},
    hysteresis::Outcome,
    passive::StatusSet,
};
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
    Http(HttpProbe),
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
            ActiveCheckType::Http => {
                let own_host =
                    HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?;
                Prober::Http(HttpProbe::new(RequestParts {
                    method: &spec.method,
                    path: &spec.path,
                    host: spec.host.as_ref().unwrap_or(&own_host),
                    headers: &spec.headers,
                    body: &spec.body,
                }))
            }
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
            Prober::Http(http) => match tokio::time::timeout(timeout, http.probe(addr)).await {
                Ok(Ok(status)) => Probed {
                    outcome: spec.classify(status),
                    detail: Detail::Status(status),
                },
                Ok(Err(e)) => failed(e),
                Err(_) => timed_out(timeout),
            },
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
