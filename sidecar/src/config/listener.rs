//! Listeners: the sockets the sidecar accepts connections on.
//!
//! Not an APISIX object (APISIX sets its ports in `config.yaml`); an HTTP
//! listener hands requests to routes, a TCP listener forwards bytes to one
//! upstream.

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;

use super::de;

/// A socket the sidecar accepts connections on.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name; routes refer to it in their `listeners`. Required.
    pub name: String,
    /// `IP:port` to bind, such as `127.0.0.1:8080` or `[::1]:8080`. Port `0`
    /// picks a free port. Required.
    #[serde(deserialize_with = "de::socket_addr")]
    pub address: SocketAddr,
    /// What the listener speaks. Default `http`.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// The upstream a `tcp` listener forwards to: required for `tcp`,
    /// refused for `http` (whose requests go through routes).
    #[serde(default)]
    pub upstream: Option<String>,
    /// How long an HTTP connection may go without a complete request head
    /// while none of its requests is in progress: a client sending its
    /// headers too slowly, or a keep-alive connection left idle, is closed
    /// after between once and twice this (checked once per period). Seconds,
    /// more than 0. Default 30.
    #[serde(
        default = "default_client_header_timeout",
        deserialize_with = "de::pos_secs"
    )]
    pub client_header_timeout: Duration,
}

fn default_client_header_timeout() -> Duration {
    Duration::from_secs(30)
}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// HTTP/1.1 and HTTP/2 (prior-knowledge h2c), matched against routes.
    #[default]
    Http,
    /// Raw TCP, forwarded to the listener's `upstream`.
    Tcp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_defaults_to_http() {
        let l: Listener =
            serde_saphyr::from_str("name: http\naddress: 127.0.0.1:8080\n").expect("parses");
        assert_eq!(l.protocol, ListenerProtocol::Http);
        assert_eq!(l.upstream, None);
        assert_eq!(l.client_header_timeout, Duration::from_secs(30));
        assert_eq!(l.address, "127.0.0.1:8080".parse().expect("address"));
    }

    #[test]
    fn ipv6_and_tcp() {
        let l: Listener = serde_saphyr::from_str(
            "name: db\naddress: \"[::1]:15432\"\nprotocol: tcp\nupstream: pg\nclient_header_timeout: 0.5\n",
        )
        .expect("parses");
        assert_eq!(l.protocol, ListenerProtocol::Tcp);
        assert_eq!(l.upstream.as_deref(), Some("pg"));
        assert_eq!(l.client_header_timeout, Duration::from_millis(500));
        let zero = serde_saphyr::from_str::<Listener>(
            "name: h\naddress: 127.0.0.1:1\nclient_header_timeout: 0\n",
        );
        assert!(zero.is_err());
    }
}
