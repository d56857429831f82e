//! Sending one encoded export request to the collector: a unary gRPC call
//! to `TraceService/Export` over tonic's channel, or an HTTP/protobuf POST
//! over hyper-util's client. Both read the answer's `partial_success`
//! (spans the collector rejected).
//!
//! The request is encoded behind room for gRPC's 5-byte message prefix, so
//! either protocol sends the very bytes the encoder wrote: the gRPC call is
//! made on the channel itself rather than through a tonic codec, which
//! copies every message into its own buffer (a quarter of a megabyte per
//! batch, about a thousand instructions per traced request).

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tonic::{
    codegen::Service,
    transport::{Channel, Endpoint},
};

use super::{
    otel::TraceSettings,
    pb::{Field, fields},
};
use crate::config::OtlpProtocol;

/// The length of gRPC's message prefix: a compression flag and a 32-bit
/// big-endian length.
pub(crate) const GRPC_PREFIX: usize = 5;

/// One encoded `ExportTraceServiceRequest`, behind a gRPC message prefix.
#[derive(Clone, Debug)]
pub(crate) struct Framed(Bytes);

impl Framed {
    /// Fills in the prefix of `buf`, whose first [`GRPC_PREFIX`] bytes were
    /// left for it.
    pub(crate) fn new(mut buf: BytesMut) -> Self {
        let len = u32::try_from(buf.len() - GRPC_PREFIX)
            .expect("invariant: a batch encodes to far less than 4 GiB");
        buf[0] = 0;
        buf[1..GRPC_PREFIX].copy_from_slice(&len.to_be_bytes());
        Self(buf.freeze())
    }

    /// The message as a gRPC request body.
    pub(crate) fn grpc(&self) -> Bytes {
        self.0.clone()
    }

    /// The message alone.
    pub(crate) fn message(&self) -> Bytes {
        self.0.slice(GRPC_PREFIX..)
    }
}

/// The gRPC method of OTLP trace export.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The largest answer read from a collector.
const MAX_ANSWER: usize = 64 * 1024;

/// What the collector said about an accepted request.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Accepted {
    /// Spans it rejected (`partial_success.rejected_spans`).
    pub(crate) rejected: u64,
    /// Its message, if any.
    pub(crate) message: String,
}

/// Where encoded batches go: the collector, or a fake in tests.
pub(crate) trait Sink {
    /// Sends one encoded `ExportTraceServiceRequest`.
    fn send(&mut self, body: Framed) -> impl Future<Output = Result<Accepted, String>>;
}

/// The collector, over the configured protocol (one value per export
/// thread: the size difference of the variants does not matter).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Collector {
    Grpc {
        channel: Channel,
        /// The call's fixed headers: content type, `te`, the timeout and
        /// the configured ones.
        headers: HeaderMap,
    },
    Http {
        client: Client<HttpConnector, Full<Bytes>>,
        uri: Uri,
        headers: HeaderMap,
    },
}

// === impl Collector ===

impl Collector {
    /// Prepares the connection (made on first use); must run inside the
    /// export thread's runtime. Fails on a bad endpoint or header.
    pub(crate) fn new(s: &TraceSettings) -> Result<Self, String> {
        match s.protocol {
            OtlpProtocol::Grpc => {
                let channel = Endpoint::from_shared(s.endpoint.clone())
                    .map_err(|e| format!("bad OTLP endpoint {:?}: {e}", s.endpoint))?
                    .connect_timeout(s.batch.timeout)
                    .connect_lazy();
                let mut headers = HeaderMap::new();
                for (k, v) in &s.headers {
                    // gRPC metadata keys are lowercase header names.
                    let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .map_err(|_| format!("bad OTLP header name {k:?}"))?;
                    let value = HeaderValue::from_str(v)
                        .map_err(|_| format!("OTLP header {k}: bad value"))?;
                    headers.insert(name, value);
                }
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
                // At most eight digits (gRPC over HTTP/2, "Requests").
                let ms = s.batch.timeout.as_millis().clamp(1, 99_999_999);
                headers.insert(
                    HeaderName::from_static("grpc-timeout"),
                    HeaderValue::try_from(format!("{ms}m"))
                        .expect("invariant: digits and a unit are a valid header value"),
                );
                Ok(Self::Grpc { channel, headers })
            }
            OtlpProtocol::HttpProtobuf => {
                let uri: Uri = s
                    .endpoint
                    .parse()
                    .map_err(|e| format!("bad OTLP endpoint {:?}: {e}", s.endpoint))?;
                if uri.scheme_str() != Some("http") {
                    return Err(format!(
                        "OTLP endpoint {:?}: only http:// is supported",
                        s.endpoint
                    ));
                }
                let mut headers = HeaderMap::new();
                for (k, v) in &s.headers {
                    let name = HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("bad OTLP header name {k:?}"))?;
                    let value = HeaderValue::from_str(v)
                        .map_err(|_| format!("OTLP header {k}: bad value"))?;
                    headers.insert(name, value);
                }
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                );
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(s.batch.timeout));
                connector.set_nodelay(true);
                Ok(Self::Http {
                    client: Client::builder(TokioExecutor::new()).build(connector),
                    uri,
                    headers,
                })
            }
        }
    }
}

impl Sink for Collector {
    async fn send(&mut self, body: Framed) -> Result<Accepted, String> {
        match self {
            Self::Grpc { channel, headers } => {
                let mut req = http::Request::new(tonic::body::Body::new(Full::new(body.grpc())));
                *req.method_mut() = Method::POST;
                // The channel adds the collector's scheme and authority.
                *req.uri_mut() = Uri::from_static(EXPORT_PATH);
                *req.headers_mut() = headers.clone();
                std::future::poll_fn(|cx| channel.poll_ready(cx))
                    .await
                    .map_err(|e| format!("cannot reach the collector: {e}"))?;
                let resp = channel
                    .call(req)
                    .await
                    .map_err(|e| format!("cannot reach the collector: {e}"))?;
                let (parts, body) = resp.into_parts();
                if !parts.status.is_success() {
                    return Err(format!("the collector answered HTTP {}", parts.status));
                }
                // A call that fails at once answers with headers only.
                grpc_status(&parts.headers)?;
                let answer = Limited::new(body, MAX_ANSWER)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the collector's answer: {e}"))?;
                match answer.trailers() {
                    Some(t) => grpc_status(t)?,
                    None if parts.headers.contains_key(GRPC_STATUS) => {}
                    None => return Err("the collector's answer has no grpc-status".to_owned()),
                }
                partial_success(grpc_message(&answer.to_bytes())?)
            }
            Self::Http {
                client,
                uri,
                headers,
            } => {
                let mut req = http::Request::new(Full::new(body.message()));
                *req.method_mut() = Method::POST;
                *req.uri_mut() = uri.clone();
                *req.headers_mut() = headers.clone();
                let resp = client
                    .request(req)
                    .await
                    .map_err(|e| format!("cannot reach the collector: {e}"))?;
                let status = resp.status();
                let body = Limited::new(resp.into_body(), MAX_ANSWER)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the collector's answer: {e}"))?
                    .to_bytes();
                if !status.is_success() {
                    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                    return Err(format!("the collector answered {status}: {text}"));
                }
                partial_success(&body)
            }
        }
    }
}

/// Reads `ExportTraceServiceResponse.partial_success` (field 1:
/// `rejected_spans` 1, `error_message` 2).
pub(crate) fn partial_success(answer: &[u8]) -> Result<Accepted, String> {
    let bad = |()| "the collector's answer is not an ExportTraceServiceResponse".to_owned();
    let mut accepted = Accepted::default();
    for f in fields(answer) {
        if let (1, Field::Bytes(ps)) = f.map_err(bad)? {
            for f in fields(ps) {
                match f.map_err(bad)? {
                    (1, Field::Varint(n)) => accepted.rejected = n,
                    (2, Field::Bytes(m)) => {
                        accepted.message = String::from_utf8_lossy(m).into_owned();
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(accepted)
}

const GRPC_STATUS: &str = "grpc-status";

/// `Err` with the collector's status and message unless `grpc-status` in
/// `headers` is absent or 0 (OK). Not tonic's `Status::from_header_map`:
/// it panics on a malformed `grpc-status-details`, which a collector may send.
fn grpc_status(headers: &HeaderMap) -> Result<(), String> {
    let Some(code) = headers.get(GRPC_STATUS) else {
        return Ok(());
    };
    if code == "0" {
        return Ok(());
    }
    let code = code.to_str().unwrap_or("?");
    let name = code
        .parse::<i32>()
        .map(|c| format!("{:?}", tonic::Code::from(c)))
        .unwrap_or_else(|_| code.to_owned());
    let message = headers
        .get("grpc-message")
        .map(|m| percent_decode(m.as_bytes()))
        .unwrap_or_default();
    Err(format!("the collector answered {name}: {message}"))
}

/// gRPC's `grpc-message` is percent-encoded (gRPC over HTTP/2, "Responses").
fn percent_decode(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            v[i],
            v.get(i + 1).copied().and_then(hex),
            v.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The one message of a unary gRPC answer body (empty for none).
fn grpc_message(body: &[u8]) -> Result<&[u8], String> {
    if body.is_empty() {
        return Ok(body);
    }
    let bad = || "the collector's answer is not one gRPC message".to_owned();
    let (head, rest) = body.split_at_checked(GRPC_PREFIX).ok_or_else(bad)?;
    if head[0] != 0 {
        return Err("the collector's answer is compressed, which was not asked for".to_owned());
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    rest.get(..len).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_framed_request_carries_its_length_and_the_message_alone() {
        let mut buf = BytesMut::from(&[9u8; GRPC_PREFIX][..]);
        buf.extend_from_slice(b"otlp");
        let f = Framed::new(buf);
        assert_eq!(&f.grpc()[..], b"\0\0\0\0\x04otlp");
        assert_eq!(&f.message()[..], b"otlp");
    }

    #[test]
    fn grpc_answers_are_read_and_failures_named() {
        assert_eq!(grpc_message(b"\0\0\0\0\x02hi"), Ok(&b"hi"[..]));
        assert_eq!(grpc_message(b""), Ok(&b""[..]));
        assert!(grpc_message(b"\0\0\0\0\x09hi").is_err(), "cut short");
        assert!(grpc_message(b"\0\0").is_err(), "no whole prefix");
        assert!(grpc_message(b"\x01\0\0\0\x02hi").is_err(), "compressed");

        let mut h = HeaderMap::new();
        assert_eq!(grpc_status(&h), Ok(()));
        h.insert(GRPC_STATUS, HeaderValue::from_static("0"));
        assert_eq!(grpc_status(&h), Ok(()));
        h.insert(GRPC_STATUS, HeaderValue::from_static("14"));
        h.insert("grpc-message", HeaderValue::from_static("no%20route%zz"));
        assert_eq!(
            grpc_status(&h),
            Err("the collector answered Unavailable: no route%zz".to_owned())
        );
        h.insert(GRPC_STATUS, HeaderValue::from_static("x"));
        assert!(grpc_status(&h).unwrap_err().contains("answered x"));
    }

    /// A real gRPC server (tonic's, serving only the health service):
    /// the export call reaches it and its "no such method" answer, which
    /// comes as headers only, is named.
    #[tokio::test]
    async fn a_grpc_server_without_the_trace_service_is_named() {
        use tokio_stream::wrappers::TcpListenerStream;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("bound");
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        let settings = TraceSettings {
            endpoint: format!("http://{addr}"),
            protocol: OtlpProtocol::Grpc,
            headers: vec![("X-Tenant".into(), "a".into())],
            service_name: "test".into(),
            sampler: super::super::otel::SamplerChoice::ParentOn,
            batch: super::super::export::BatchConfig {
                queue: 10,
                batch: 10,
                interval: Duration::from_secs(60),
                timeout: Duration::from_secs(10),
            },
        };
        let mut collector = Collector::new(&settings).expect("valid settings");
        let empty = Framed::new(BytesMut::from(&[0u8; GRPC_PREFIX][..]));
        let err = collector
            .send(empty)
            .await
            .expect_err("no trace service there");
        assert!(err.contains("Unimplemented"), "{err}");
        let _ = stop.send(());
        server.await.expect("joined").expect("served");
    }

    #[test]
    fn partial_success_is_read() {
        // partial_success { rejected_spans: 3, error_message: "full" }
        let answer = [0x0a, 0x08, 0x08, 0x03, 0x12, 0x04, b'f', b'u', b'l', b'l'];
        assert_eq!(
            partial_success(&answer),
            Ok(Accepted {
                rejected: 3,
                message: "full".into()
            })
        );
        assert_eq!(partial_success(&[]), Ok(Accepted::default()));
        assert!(partial_success(&[0x0a, 0x09, 0x08]).is_err());
    }
}
