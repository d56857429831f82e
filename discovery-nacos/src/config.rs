//! What the Nacos registry needs to know: the servers, how to reach and
//! authenticate with them, and how instances become endpoints.

use std::{fmt, str::FromStr, time::Duration};

use crate::convert::EndpointOptions;

/// How a watch learns about changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Nacos 2 gRPC subscription: the server pushes every change. While no
    /// gRPC session can be had, the v1 HTTP query is polled instead.
    Push,
    /// The v1 HTTP query, every poll interval.
    Poll,
}

/// One Nacos server: its HTTP API base URL and its gRPC port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddr {
    /// `http://host:port` or `https://host:port`, without a trailing slash.
    pub base: String,
    /// The host, as given.
    pub host: String,
    /// The HTTP port.
    pub port: u16,
}

/// A user name and password for `POST /nacos/v1/auth/login`.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password; never shown.
    pub password: String,
}

/// Everything the registry needs; built by the binary from its flags.
#[derive(Clone, Debug)]
pub struct NacosConfig {
    /// The servers, tried in order; at least one.
    pub servers: Vec<ServerAddr>,
    /// gRPC port = HTTP port + this (Nacos' convention: 1000).
    pub grpc_port_offset: i32,
    /// Login credentials, when the servers require them.
    pub credentials: Option<Credentials>,
    /// Push or poll.
    pub mode: Mode,
    /// Time between two queries when polling.
    pub poll_interval: Duration,
    /// Time between two gRPC health checks of a push session.
    pub health_interval: Duration,
    /// Time between two re-subscriptions of a push session, which re-read the
    /// whole service in case a change was not pushed.
    pub resync_interval: Duration,
    /// Bound on every HTTP request and gRPC call, and on connecting.
    pub request_timeout: Duration,
    /// Largest response body (HTTP) or message (gRPC) read, in bytes.
    pub max_body: usize,
    /// Longest wait between reconnection attempts.
    pub backoff_max: Duration,
    /// How instances become endpoints.
    pub endpoints: EndpointOptions,
}

// === impl ServerAddr ===

impl ServerAddr {
    /// The gRPC address for this server, as a URI tonic connects to.
    pub(crate) fn grpc_uri(&self, offset: i32) -> Result<String, String> {
        let port = i32::from(self.port) + offset;
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                format!(
                    "{}: HTTP port {} + gRPC offset {offset} is not a port",
                    self.base, self.port
                )
            })?;
        let scheme = if self.base.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        Ok(format!("{scheme}://{}:{port}", self.host))
    }
}

impl FromStr for ServerAddr {
    type Err = String;

    /// `host:port`, `http://host:port` or `https://host:port`; the port
    /// defaults to 8848.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('/');
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
            Some((scheme, _)) => {
                return Err(format!("{s:?}: scheme {scheme:?} is not http or https"));
            }
            None => ("http", s),
        };
        if rest.contains('/') {
            return Err(format!(
                "{s:?}: give host:port only (the adapter adds /nacos/...)"
            ));
        }
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            // [v6-address]:port
            let (addr, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: unclosed '['"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{s:?}: expected ':' after ']'"))?,
                ),
            };
            (&rest[..addr.len() + 2], port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(format!("{s:?}: write an IPv6 address as [address]:port"));
                }
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = match port {
            None => 8848,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{s:?}: port {p:?} is not a port"))?,
        };
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        Ok(Self {
            base: format!("{scheme}://{host}:{port}"),
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

// === impl Credentials ===

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_parse() {
        let a: ServerAddr = "10.0.0.1:8848".parse().unwrap();
        assert_eq!(a.base, "http://10.0.0.1:8848");
        assert_eq!(a.grpc_uri(1000).unwrap(), "http://10.0.0.1:9848");
        let a: ServerAddr = "https://nacos.example.com/".parse().unwrap();
        assert_eq!(
            (a.base.as_str(), a.port),
            ("https://nacos.example.com:8848", 8848)
        );
        assert_eq!(a.grpc_uri(-8000).unwrap(), "https://nacos.example.com:848");
        let a: ServerAddr = "[::1]:9000".parse().unwrap();
        assert_eq!(a.base, "http://[::1]:9000");
        assert_eq!(a.grpc_uri(1).unwrap(), "http://[::1]:9001");
        assert!(a.grpc_uri(-9000).unwrap_err().contains("not a port"));
        for bad in ["ftp://x:1", "x:0", "x:http", "::1:80", "x:1/nacos", ":80"] {
            assert!(bad.parse::<ServerAddr>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn passwords_are_not_shown() {
        let c = Credentials {
            username: "nacos".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
