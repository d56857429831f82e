//! The sidecar's own services: the discovery adapters it subscribes to, its
//! admin endpoint and its telemetry.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::de;

/// Default [`Adapter::connect_timeout`].
pub const DEFAULT_ADAPTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default [`Admin::address`]: loopback only.
pub const DEFAULT_ADMIN_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);

/// A discovery adapter: a process serving `discovery.v1.EndpointDiscovery`
/// over gRPC. Upstreams name it by its key in `adapters` (their
/// `discovery_type`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adapter {
    /// The adapter's gRPC endpoint, an `http://` or `https://` URI with a
    /// host and port, such as `http://127.0.0.1:7070`. Required.
    pub address: String,
    /// How long to wait for a connection to the adapter, in seconds. Default 5.
    #[serde(
        default = "default_adapter_connect_timeout",
        deserialize_with = "de::pos_secs"
    )]
    pub connect_timeout: Duration,
}

/// The admin endpoint: `/ready`, `/live`, `/metrics`, `/upstreams`, `/config`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// `IP:port` to bind. Default `127.0.0.1:9901`, loopback only.
    #[serde(deserialize_with = "de::socket_addr")]
    pub address: SocketAddr,
}

/// Logs, traces and their export.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// A `tracing` filter: a level (`error`, `warn`, `info`, `debug`,
    /// `trace`, `off`), optionally followed by `target=level` directives
    /// separated by commas. Default `info`.
    pub log_level: String,
    /// How log lines are written. Default `text`.
    pub log_format: LogFormat,
    /// Whether to log one line per proxied request. Default `false`.
    pub access_log: bool,
    /// Where to export spans with OTLP/gRPC, an `http://` or `https://` URI.
    /// Default none: no export unless the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` environment variable is set.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource of exported spans. Default `tributary-sidecar`.
    pub service_name: String,
    /// The fraction of new traces to sample, in `0..=1`. Default `1`.
    #[serde(deserialize_with = "de::ratio")]
    pub sampling_ratio: f64,
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

fn default_adapter_connect_timeout() -> Duration {
    DEFAULT_ADAPTER_CONNECT_TIMEOUT
}

// === impl Admin ===

impl Default for Admin {
    fn default() -> Self {
        Admin {
            address: DEFAULT_ADMIN_ADDRESS,
        }
    }
}

// === impl Telemetry ===

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            access_log: false,
            otlp_endpoint: None,
            service_name: "tributary-sidecar".to_owned(),
            sampling_ratio: 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let admin: Admin = serde_saphyr::from_str("{}").expect("parses");
        assert_eq!(admin.address.to_string(), "127.0.0.1:9901");
        let t: Telemetry = serde_saphyr::from_str("{}").expect("parses");
        assert_eq!(t, Telemetry::default());
        assert_eq!(t.log_level, "info");
        assert_eq!(t.service_name, "tributary-sidecar");
        assert_eq!(t.sampling_ratio, 1.0);
        let a: Adapter = serde_saphyr::from_str("address: http://127.0.0.1:7070").expect("parses");
        assert_eq!(a.connect_timeout, Duration::from_secs(5));
    }

    #[test]
    fn fractional_seconds_and_ratio() {
        let a: Adapter =
            serde_saphyr::from_str("address: http://a:1\nconnect_timeout: 0.25").expect("parses");
        assert_eq!(a.connect_timeout, Duration::from_millis(250));
        let t: Telemetry =
            serde_saphyr::from_str("sampling_ratio: 0.1\nlog_format: json").expect("parses");
        assert_eq!((t.sampling_ratio, t.log_format), (0.1, LogFormat::Json));
        assert!(serde_saphyr::from_str::<Telemetry>("sampling_ratio: 1.5").is_err());
    }
}
