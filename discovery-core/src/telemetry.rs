//! Trace export for adapters, configured by the standard `OTEL_*`
//! environment variables alone: on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, unless `OTEL_SDK_DISABLED`
//! is `true` or `OTEL_TRACES_EXPORTER` is `none`. Spans go over OTLP/HTTP
//! unless the protocol variables say `grpc`. The SDK reads the rest
//! (headers, sampler, batch sizes, `OTEL_SERVICE_NAME`).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use opentelemetry_http::{HttpClient, HttpError, hyper::HyperClient};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};

/// Keeps span export running; flushes it when dropped.
#[derive(Debug)]
pub(crate) struct TracingGuard(SdkTracerProvider);

/// Starts span export if the environment asks for it; `service` is the
/// default `service.name`. Must run inside the tokio runtime.
pub(crate) fn init(service: &str) -> Result<Option<TracingGuard>, String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let off = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or(var("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let Some(endpoint) = endpoint.filter(|_| !off) else {
        return Ok(None);
    };
    let exporter = match protocol(var)? {
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build(),
        Protocol::HttpProtobuf => {
            let timeout = timeout(var)?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_timeout(timeout)
                .with_http_client(OnRuntime {
                    client: HyperClient::with_default_connector(timeout, None),
                    rt: tokio::runtime::Handle::current(),
                })
                .build()
        }
    }
    .map_err(|e| format!("cannot export spans to {endpoint}: {e}"))?;
    let name = var("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_owned());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(name.clone()).build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing::info!(%endpoint, service = %name, "exporting spans");
    Ok(Some(TracingGuard(provider)))
}

/// An OTLP/HTTP client whose requests run on the adapter's runtime. The
/// SDK exports from a thread of its own without one, and hyper's client
/// needs one to connect (the gRPC exporter's channel already runs there).
#[derive(Debug)]
struct OnRuntime {
    client: HyperClient,
    rt: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.rt
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

/// The longest wait for one export: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`,
/// else `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds; 10 s by default.
fn timeout(var: impl Fn(&str) -> Option<String>) -> Result<Duration, String> {
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ] {
        if let Some(v) = var(name) {
            return v
                .trim()
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| format!("{name}={v:?} is not a number of milliseconds"));
        }
    }
    Ok(Duration::from_secs(10))
}

/// The OTLP transports an adapter exports over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// The transport that `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else
/// `OTEL_EXPORTER_OTLP_PROTOCOL`, names: `http/protobuf` when neither is set
/// (the OTLP exporter specification's default, and the sidecar's).
fn protocol(var: impl Fn(&str) -> Option<String>) -> Result<Protocol, String> {
    let (name, value) = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(v) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v),
        None => match var("OTEL_EXPORTER_OTLP_PROTOCOL") {
            Some(v) => ("OTEL_EXPORTER_OTLP_PROTOCOL", v),
            None => return Ok(Protocol::HttpProtobuf),
        },
    };
    match value.trim() {
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        "grpc" => Ok(Protocol::Grpc),
        other => Err(format!(
            "{name}={other:?} is not supported (grpc or http/protobuf)"
        )),
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            tracing::warn!(error = %e, "span export did not finish cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(set: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            set.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_protocol_defaults_to_http_and_the_signal_variable_wins() {
        assert_eq!(protocol(vars(&[])), Ok(Protocol::HttpProtobuf));
        let general = [("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        assert_eq!(protocol(vars(&general)), Ok(Protocol::Grpc));
        let both = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ];
        assert_eq!(protocol(vars(&both)), Ok(Protocol::HttpProtobuf));
    }

    #[test]
    fn the_timeout_is_read_in_milliseconds_and_a_bad_one_named() {
        assert_eq!(timeout(vars(&[])), Ok(Duration::from_secs(10)));
        let set = [
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "250"),
        ];
        assert_eq!(timeout(vars(&set)), Ok(Duration::from_millis(250)));
        let e = timeout(vars(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")])).unwrap_err();
        assert!(e.contains("OTEL_EXPORTER_OTLP_TIMEOUT"), "{e}");
    }

    #[test]
    fn an_unsupported_protocol_is_named() {
        let e = protocol(vars(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")])).unwrap_err();
        assert!(e.contains("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), "{e}");
        assert!(e.contains("http/json"), "{e}");
    }
}
