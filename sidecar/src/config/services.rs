//! The sidecar's own services: the discovery adapters it subscribes to and
//! its admin endpoint.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let admin: Admin = serde_saphyr::from_str("{}").expect("parses");
        assert_eq!(admin.address.to_string(), "127.0.0.1:9901");
        let a: Adapter = serde_saphyr::from_str("address: http://127.0.0.1:7070").expect("parses");
        assert_eq!(a.connect_timeout, Duration::from_secs(5));
    }

    #[test]
    fn fractional_seconds() {
        let a: Adapter =
            serde_saphyr::from_str("address: http://a:1\nconnect_timeout: 0.25").expect("parses");
        assert_eq!(a.connect_timeout, Duration::from_millis(250));
    }
}
