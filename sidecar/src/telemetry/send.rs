//! Sending one encoded export request to the collector: a unary gRPC call
//! to `TraceService/Export` over tonic with a codec that passes the bytes
//! through, or an HTTP/protobuf POST over hyper-util's client. Both read
//! the answer's `partial_success` (spans the collector rejected).

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tonic::{
    Status,
    client::Grpc,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Channel, Endpoint},
};

use super::{
    otel::TraceSettings,
    pb::{Field, fields},
};
use crate::config::OtlpProtocol;

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
    fn send(&mut self, body: Bytes) -> impl Future<Output = Result<Accepted, String>>;
}

/// The collector, over the configured protocol (one value per export
/// thread: the size difference of the variants does not matter).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Collector {
    Grpc {
        grpc: Grpc<Channel>,
        metadata: MetadataMap,
        timeout: Duration,
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
                let mut metadata = MetadataMap::new();
                for (k, v) in &s.headers {
                    let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .map_err(|_| format!("bad OTLP header name {k:?}"))?;
                    let value = MetadataValue::try_from(v.as_str())
                        .map_err(|_| format!("OTLP header {k}: bad value"))?;
                    metadata.insert(key, value);
                }
                Ok(Self::Grpc {
                    grpc: Grpc::new(channel),
                    metadata,
                    timeout: s.batch.timeout,
                })
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
    async fn send(&mut self, body: Bytes) -> Result<Accepted, String> {
        match self {
            Self::Grpc {
                grpc,
                metadata,
                timeout,
            } => {
                let mut req = tonic::Request::new(body);
                *req.metadata_mut() = metadata.clone();
                req.set_timeout(*timeout);
                grpc.ready()
                    .await
                    .map_err(|e| format!("cannot reach the collector: {e}"))?;
                let answer = grpc
                    .unary(
                        req,
                        http::uri::PathAndQuery::from_static(EXPORT_PATH),
                        RawCodec,
                    )
                    .await
                    .map_err(|s| {
                        format!("the collector answered {:?}: {}", s.code(), s.message())
                    })?;
                partial_success(&answer.into_inner())
            }
            Self::Http {
                client,
                uri,
                headers,
            } => {
                let mut req = http::Request::new(Full::new(body));
                *req.method_mut() = http::Method::POST;
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

/// A gRPC codec for bytes already encoded.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
