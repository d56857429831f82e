//! Trace export for adapters, configured by the standard `OTEL_*`
//! environment variables alone: on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, unless `OTEL_SDK_DISABLED`
//! is `true` or `OTEL_TRACES_EXPORTER` is `none`. The SDK reads the rest
//! (headers, timeout, sampler, batch sizes, `OTEL_SERVICE_NAME`).

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
    let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or(var("OTEL_EXPORTER_OTLP_PROTOCOL"));
    // Tributary's default transport is gRPC, as for the sidecar.
    let exporter = match protocol {
        None => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build(),
        Some(_) => opentelemetry_otlp::SpanExporter::builder().build(),
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

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            tracing::warn!(error = %e, "span export did not finish cleanly");
        }
    }
}
