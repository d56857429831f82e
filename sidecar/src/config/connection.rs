//! How connections to an upstream's endpoints behave: APISIX's `timeout`
//! and `keepalive_pool`, with APISIX's bounds.

use std::time::Duration;

use serde::Deserialize;

use super::de::{self as helpers, U32_MAX};

/// Default connect, send and read timeout, in seconds (see [`Timeouts`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6);

/// Timeouts for one attempt, APISIX's `timeout`, in seconds (fractions
/// allowed, more than 0). Each defaults to 6; unlike APISIX, any of the three
/// may be left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// To establish a connection.
    #[serde(deserialize_with = "helpers::pos_secs")]
    pub connect: Duration,
    /// Between two successive writes of the request.
    #[serde(deserialize_with = "helpers::pos_secs")]
    pub send: Duration,
    /// Between two successive reads of the response.
    #[serde(deserialize_with = "helpers::pos_secs")]
    pub read: Duration,
}

/// Idle connections kept to an upstream, APISIX's `keepalive_pool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepalivePool {
    /// Idle connections kept per upstream, at least 1. Default 320.
    #[serde(deserialize_with = "helpers::int::<_, _, 1, U32_MAX>")]
    pub size: u32,
    /// An idle connection is closed after this long, in seconds. Default 60.
    #[serde(deserialize_with = "helpers::secs")]
    pub idle_timeout: Duration,
    /// A connection is closed after serving this many requests, at least 1.
    /// Default 1000.
    #[serde(deserialize_with = "helpers::int::<_, _, 1, U32_MAX>")]
    pub requests: u32,
}

// === impl Timeouts ===

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_TIMEOUT,
            send: DEFAULT_TIMEOUT,
            read: DEFAULT_TIMEOUT,
        }
    }
}

// === impl KeepalivePool ===

impl Default for KeepalivePool {
    fn default() -> Self {
        KeepalivePool {
            size: 320,
            idle_timeout: Duration::from_secs(60),
            requests: 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let t: Timeouts = serde_saphyr::from_str("{}").expect("parses");
        assert_eq!(
            (t.connect, t.send, t.read),
            (DEFAULT_TIMEOUT, DEFAULT_TIMEOUT, DEFAULT_TIMEOUT)
        );
        let k: KeepalivePool = serde_saphyr::from_str("{}").expect("parses");
        assert_eq!(
            (k.size, k.idle_timeout, k.requests),
            (320, Duration::from_secs(60), 1000)
        );
    }

    #[test]
    fn bounds() {
        let k: KeepalivePool = serde_saphyr::from_str("idle_timeout: 0").expect("parses");
        assert_eq!(k.idle_timeout, Duration::ZERO);
        for bad in [
            "size: 0",
            "requests: 0",
            "idle_timeout: -1",
            "size: 1.5",
            "sizes: 1",
        ] {
            assert!(
                serde_saphyr::from_str::<KeepalivePool>(bad).is_err(),
                "{bad}"
            );
        }
        for bad in [
            "connect: 0",
            "send: -1",
            "read: .nan",
            "read: 5s",
            "write: 1",
        ] {
            assert!(serde_saphyr::from_str::<Timeouts>(bad).is_err(), "{bad}");
        }
    }
}
