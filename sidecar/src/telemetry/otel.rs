//! The trace pipeline's settings, from the standard `OTEL_*` environment
//! variables overridden by the config's `telemetry` section, and the tracer
//! provider built from them.

use std::{sync::Arc, time::Duration};

use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider},
};

use super::{
    export::{BatchConfig, ExportQueue, ExportStats, QueueProcessor},
    send::Collector,
};
use crate::config::{OtlpProtocol, Telemetry};

/// Where and how spans are exported, resolved from config and environment.
/// Its `Debug` shows header names only: their values are often secrets.
#[derive(Clone, PartialEq)]
pub(crate) struct TraceSettings {
    /// The full export URI (for HTTP, with its `/v1/traces` path).
    pub(crate) endpoint: String,
    pub(crate) protocol: OtlpProtocol,
    /// Headers sent with each export: `OTEL_EXPORTER_OTLP_HEADERS`, then
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, then the config's, a later one
    /// replacing an earlier one of the same name.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) service_name: String,
    pub(crate) sampler: SamplerChoice,
    pub(crate) batch: BatchConfig,
}

impl std::fmt::Debug for TraceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceSettings")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("service_name", &self.service_name)
            .field("sampler", &self.sampler)
            .field("batch", &self.batch)
            .finish()
    }
}

/// The sampler, as `OTEL_TRACES_SAMPLER` names them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentOn,
    ParentOff,
    ParentRatio(f64),
}

impl PartialEq for BatchConfig {
    fn eq(&self, o: &Self) -> bool {
        (self.queue, self.batch, self.interval, self.timeout)
            == (o.queue, o.batch, o.interval, o.timeout)
    }
}

/// Resolves the settings; `Ok(None)` when traces are off. `env` reads an
/// environment variable (tests pass a map).
pub(crate) fn resolve(
    cfg: &Telemetry,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<TraceSettings>, String> {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let signal_endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let base_endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT");
    let env_off = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let has_endpoint =
        cfg.otlp_endpoint.is_some() || signal_endpoint.is_some() || base_endpoint.is_some();
    let on = cfg.traces.unwrap_or(has_endpoint && !env_off);
    if !on {
        return Ok(None);
    }
    let protocol = match cfg.otlp_protocol {
        Some(p) => p,
        None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            // The OTLP exporter spec's default transport.
            None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported (grpc or http/protobuf)"
                ));
            }
        },
    };
    let with_path = |base: &str| match protocol {
        OtlpProtocol::Grpc => base.to_owned(),
        OtlpProtocol::HttpProtobuf if base.trim_end_matches('/').ends_with("/v1/traces") => {
            base.to_owned()
        }
        OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
    };
    let default_base = match protocol {
        OtlpProtocol::Grpc => "http://localhost:4317",
        OtlpProtocol::HttpProtobuf => "http://localhost:4318",
    };
    let endpoint = match (&cfg.otlp_endpoint, signal_endpoint, base_endpoint) {
        (Some(c), _, _) => with_path(c),
        (None, Some(signal), _) => signal,
        (None, None, Some(base)) => with_path(&base),
        (None, None, None) => with_path(default_base),
    };
    let service_name = cfg
        .service_name
        .clone()
        .or_else(|| env("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| "tributary-sidecar".to_owned());
    let sampler = match cfg.sampling_ratio {
        Some(r) => SamplerChoice::ParentRatio(r),
        None => sampler_from_env(env("OTEL_TRACES_SAMPLER"), env("OTEL_TRACES_SAMPLER_ARG"))?,
    };
    let num = |k: &str| -> Result<Option<u64>, String> {
        env(k)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{k}={v:?} is not a positive whole number"))
            })
            .transpose()
    };
    let timeout = match cfg.otlp_timeout {
        Some(t) => t,
        None => num("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")?
            .or(num("OTEL_EXPORTER_OTLP_TIMEOUT")?)
            .map_or(Duration::from_secs(10), Duration::from_millis),
    };
    let queue = match cfg.span_queue_size {
        Some(q) => q,
        None => num("OTEL_BSP_MAX_QUEUE_SIZE")?.map_or(2048, |n| n as usize),
    };
    let batch = match cfg.span_batch_size {
        Some(b) => b,
        None => num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")?.map_or(512, |n| n as usize),
    }
    .min(queue);
    let interval = match cfg.span_export_interval {
        Some(d) => d,
        None => {
            num("OTEL_BSP_SCHEDULE_DELAY")?.map_or(Duration::from_secs(1), Duration::from_millis)
        }
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut add = |k: String, v: String| {
        headers.retain(|(old, _)| !old.eq_ignore_ascii_case(&k));
        headers.push((k, v));
    };
    for var in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        if let Some(raw) = env(var) {
            for (k, v) in parse_headers(var, &raw)? {
                add(k, v);
            }
        }
    }
    for (k, v) in &cfg.otlp_headers.0 {
        add(k.clone(), v.clone());
    }
    Ok(Some(TraceSettings {
        endpoint,
        protocol,
        headers,
        service_name,
        sampler,
        batch: BatchConfig {
            queue,
            batch,
            interval,
            timeout,
        },
    }))
}

fn sampler_from_env(name: Option<String>, arg: Option<String>) -> Result<SamplerChoice, String> {
    let ratio = || -> Result<f64, String> {
        match &arg {
            None => Ok(1.0),
            Some(a) => a
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("OTEL_TRACES_SAMPLER_ARG={a:?} is not a ratio in 0..=1")),
        }
    };
    Ok(match name.as_deref().map(str::trim) {
        None | Some("parentbased_always_on") => SamplerChoice::ParentOn,
        Some("always_on") => SamplerChoice::AlwaysOn,
        Some("always_off") => SamplerChoice::AlwaysOff,
        Some("traceidratio") => SamplerChoice::Ratio(ratio()?),
        Some("parentbased_always_off") => SamplerChoice::ParentOff,
        Some("parentbased_traceidratio") => SamplerChoice::ParentRatio(ratio()?),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER={other:?} is not supported (always_on, always_off, \
                 traceidratio, parentbased_always_on, parentbased_always_off, \
                 parentbased_traceidratio)"
            ));
        }
    })
}

impl SamplerChoice {
    /// The same sampler for the SDK's tracer (discovery updates).
    fn sdk_sampler(self) -> Sampler {
        let parent = |s| Sampler::ParentBased(Box::new(s));
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentOn => parent(Sampler::AlwaysOn),
            Self::ParentOff => parent(Sampler::AlwaysOff),
            Self::ParentRatio(r) => parent(Sampler::TraceIdRatioBased(r)),
        }
    }
}

/// The header pairs of an `OTEL_EXPORTER_OTLP_*HEADERS` value:
/// `key=value` separated by commas, values percent-decoded.
fn parse_headers(var: &str, raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("{var}: {:?} is not key=value", pair.trim()))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(format!("{var}: a header has no name"));
            }
            let v = percent_decode(v.trim())
                .ok_or_else(|| format!("{var}: the value of {k} is badly percent-encoded"))?;
            Ok((k.to_owned(), v))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Starts the pipeline: the export thread behind its queue, and the SDK
/// tracer provider (discovery updates) feeding the same queue.
pub(crate) fn start(
    s: &TraceSettings,
    stats: Arc<ExportStats>,
) -> Result<(ExportQueue, SdkTracerProvider), String> {
    let resource = Resource::builder()
        .with_service_name(s.service_name.clone())
        .build();
    let settings = s.clone();
    let queue = ExportQueue::start(
        move || Collector::new(&settings),
        resource.clone(),
        s.batch.in_records(),
        stats,
    )?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(QueueProcessor(queue.clone()))
        .with_sampler(s.sampler.sdk_sampler())
        .with_resource(resource)
        .build();
    Ok((queue, provider))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        let cfg = Telemetry::default();
        assert_eq!(resolve(&cfg, env(&[])).unwrap(), None);
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        assert_eq!(resolve(&cfg, env(&vars)).unwrap(), None);
        let cfg = Telemetry {
            traces: Some(false),
            otlp_endpoint: Some("http://c:4317".into()),
            ..Telemetry::default()
        };
        assert_eq!(resolve(&cfg, env(&[])).unwrap(), None);
    }

    #[test]
    fn the_default_transport_is_otlp_over_http() {
        let cfg = Telemetry {
            traces: Some(true),
            ..Telemetry::default()
        };
        let s = resolve(&cfg, env(&[])).unwrap().unwrap();
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(s.endpoint, "http://localhost:4318/v1/traces");
        let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
        let s = resolve(&Telemetry::default(), env(&vars)).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://c:4318/v1/traces");
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ];
        let s = resolve(&Telemetry::default(), env(&vars)).unwrap().unwrap();
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
        assert_eq!(s.endpoint, "http://c:4317");
    }

    #[test]
    fn environment_configures_and_config_overrides() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ];
        let s = resolve(&Telemetry::default(), env(&vars)).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://env:4318/v1/traces");
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(s.service_name, "from-env");
        assert_eq!(s.sampler, SamplerChoice::ParentRatio(0.25));
        assert_eq!((s.batch.queue, s.batch.batch), (100, 100));
        assert_eq!(s.batch.interval, Duration::from_millis(200));

        let cfg = Telemetry {
            otlp_endpoint: Some("http://cfg:4317".into()),
            otlp_protocol: Some(OtlpProtocol::Grpc),
            service_name: Some("from-config".into()),
            sampling_ratio: Some(0.5),
            ..Telemetry::default()
        };
        let s = resolve(&cfg, env(&vars)).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://cfg:4317");
        assert_eq!(s.service_name, "from-config");
        assert_eq!(s.sampler, SamplerChoice::ParentRatio(0.5));
    }

    #[test]
    fn headers_come_from_both_variables_and_the_config() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=general, tenant=a%20b,x-shared=1",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "API-Key=traces"),
        ];
        let mut cfg = Telemetry::default();
        cfg.otlp_headers
            .0
            .insert("x-shared".into(), "from-config".into());
        let s = resolve(&cfg, env(&vars)).unwrap().unwrap();
        assert!(!format!("{s:?}").contains("from-config"), "{s:?}");
        let mut h = s.headers.clone();
        h.sort();
        assert_eq!(
            h,
            [
                ("API-Key".to_owned(), "traces".to_owned()),
                ("tenant".to_owned(), "a b".to_owned()),
                ("x-shared".to_owned(), "from-config".to_owned()),
            ]
        );
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "novalue"),
        ];
        let e = resolve(&Telemetry::default(), env(&vars)).unwrap_err();
        assert!(e.contains("OTEL_EXPORTER_OTLP_TRACES_HEADERS"), "{e}");
    }

    #[test]
    fn bad_environment_values_are_named() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
        ];
        let e = resolve(&Telemetry::default(), env(&vars)).unwrap_err();
        assert!(e.contains("OTEL_TRACES_SAMPLER"), "{e}");
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ];
        assert!(resolve(&Telemetry::default(), env(&vars)).is_err());
    }
}
