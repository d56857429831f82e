//! The `telemetry` section: logs, the access log, trace export and metric
//! cardinality. Every trace field is optional: when left out, the standard
//! `OTEL_*` environment variable decides (see `docs/observability.md`).

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::Deserialize;

use super::de;

/// Logs, traces and their export, and metric labels.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// A `tracing` filter: a level (`error`, `warn`, `info`, `debug`,
    /// `trace`, `off`), optionally followed by `target=level` directives
    /// separated by commas. Default `info`.
    pub log_level: String,
    /// How log lines are written. Default `text`.
    pub log_format: LogFormat,
    /// Whether to log one line per proxied request (target `access`), with
    /// its trace id. Default `false`.
    pub access_log: bool,
    /// Whether to export spans. Default: on when an OTLP endpoint is set here
    /// or in `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    pub traces: Option<bool>,
    /// Where to export spans, an `http://` or `https://` URI. Overrides
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` and `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`. Overrides `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`
    /// and `OTEL_EXPORTER_OTLP_PROTOCOL`; default `http/protobuf`.
    pub otlp_protocol: Option<OtlpProtocol>,
    /// Headers sent with each export (for example an API key). Added to
    /// those of `OTEL_EXPORTER_OTLP_HEADERS`. Never logged.
    pub otlp_headers: Headers,
    /// Longest wait for one export, in seconds. Overrides
    /// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` / `OTEL_EXPORTER_OTLP_TIMEOUT`;
    /// default 10.
    #[serde(deserialize_with = "de::opt_pos_secs")]
    pub otlp_timeout: Option<Duration>,
    /// The `service.name` resource of exported spans. Overrides
    /// `OTEL_SERVICE_NAME`; default `tributary-sidecar`.
    pub service_name: Option<String>,
    /// The fraction of new traces sampled, in `0..=1`; a request whose
    /// `traceparent` says sampled or not is followed (parent-based).
    /// Overrides `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`; default 1.
    #[serde(deserialize_with = "de::opt_ratio")]
    pub sampling_ratio: Option<f64>,
    /// Spans waiting for export; beyond this they are dropped and counted
    /// (`sidecar_trace_spans_dropped_total`). A request's spans wait
    /// together and count as two. Overrides `OTEL_BSP_MAX_QUEUE_SIZE`;
    /// default 2048.
    #[serde(deserialize_with = "de::opt_int::<_, _, 1, 1_000_000>")]
    pub span_queue_size: Option<usize>,
    /// Most spans in one export. Overrides `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`;
    /// default 512.
    #[serde(deserialize_with = "de::opt_int::<_, _, 1, 100_000>")]
    pub span_batch_size: Option<usize>,
    /// Longest time a span waits for its batch, in seconds. Overrides
    /// `OTEL_BSP_SCHEDULE_DELAY` (milliseconds); default 1.
    #[serde(deserialize_with = "de::opt_pos_secs")]
    pub span_export_interval: Option<Duration>,
    /// Whether attempt metrics carry an `endpoint` label. Off, they are
    /// summed per upstream: bounded cardinality for large upstreams.
    /// Default `true`.
    pub endpoint_metrics: bool,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (default port 4317).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318, path `/v1/traces`):
    /// the default, as the OTLP exporter specification says.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Export headers; their values stay out of `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Headers(pub BTreeMap<String, String>);

// === impl Telemetry ===

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            access_log: false,
            traces: None,
            otlp_endpoint: None,
            otlp_protocol: None,
            otlp_headers: Headers::default(),
            otlp_timeout: None,
            service_name: None,
            sampling_ratio: None,
            span_queue_size: None,
            span_batch_size: None,
            span_export_interval: None,
            endpoint_metrics: true,
        }
    }
}

// === impl Headers ===

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_leave_traces_to_the_environment() {
        let t: Telemetry = serde_saphyr::from_str("{}").expect("parses");
        assert_eq!(t, Telemetry::default());
        assert_eq!(t.log_level, "info");
        assert_eq!(
            (t.traces, t.service_name, t.sampling_ratio),
            (None, None, None)
        );
        assert!(t.endpoint_metrics);
    }

    #[test]
    fn fields_parse_and_headers_stay_secret() {
        let t: Telemetry = serde_saphyr::from_str(
            "sampling_ratio: 0.1\nlog_format: json\notlp_protocol: http/protobuf\n\
             otlp_headers: {x-api-key: s3cret}\nspan_queue_size: 10\notlp_timeout: 0.5",
        )
        .expect("parses");
        assert_eq!(
            (t.sampling_ratio, t.log_format),
            (Some(0.1), LogFormat::Json)
        );
        assert_eq!(t.otlp_protocol, Some(OtlpProtocol::HttpProtobuf));
        assert_eq!(t.span_queue_size, Some(10));
        assert_eq!(t.otlp_timeout, Some(Duration::from_millis(500)));
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(serde_saphyr::from_str::<Telemetry>("sampling_ratio: 1.5").is_err());
        assert!(serde_saphyr::from_str::<Telemetry>("span_queue_size: 0").is_err());
        assert!(serde_saphyr::from_str::<Telemetry>("otlp_protocol: http/json").is_err());
    }
}
