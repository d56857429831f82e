//! Health checks, APISIX's `checks`: every field of `checks.active` and
//! `checks.passive`, with APISIX's defaults and bounds (its `schema_def.lua`).
//!
//! APISIX requires active checks with passive ones, since traffic alone
//! cannot show that an ejected endpoint recovered. We also take passive
//! checks alone: an ejection then ends after a time that backs off (see
//! `health/passive.rs`). We add a `grpc` active probe (`grpc.health.v1`);
//! `https` is refused until the sidecar has upstream TLS.

use std::time::Duration;

use http::{HeaderName, Method};
use serde::Deserialize;

use super::de::{self as helpers, U32_MAX};

/// Health checks for an upstream's endpoints: active, passive or both.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// Probes sent to every endpoint. Default none; `checks` needs this,
    /// `passive` or both.
    #[serde(default)]
    pub active: Option<ActiveCheck>,
    /// Health judged from live traffic. Default none.
    #[serde(default)]
    pub passive: Option<PassiveCheck>,
}

/// Probes sent to every endpoint on a timer, APISIX's `checks.active`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveCheck {
    /// What a probe is. Default `http`.
    pub r#type: ActiveCheckType,
    /// How long a probe may take, in seconds. Default 1.
    #[serde(deserialize_with = "helpers::pos_secs")]
    pub timeout: Duration,
    /// How many endpoints are probed at once, at least 1. Default 10.
    #[serde(deserialize_with = "helpers::int::<_, _, 1, U32_MAX>")]
    pub concurrency: u32,
    /// The `Host` header of HTTP probes. Default: the endpoint's host.
    pub host: Option<String>,
    /// The port to probe, `1..=65535`. Default: the endpoint's port.
    #[serde(deserialize_with = "helpers::opt_int::<_, _, 1, 65535>")]
    pub port: Option<u16>,
    /// The method of HTTP probes. Default `GET`.
    #[serde(deserialize_with = "helpers::method")]
    pub http_method: Method,
    /// The path of HTTP probes, starting with `/`. Default `/`.
    pub http_path: String,
    /// The body of HTTP probes. Default empty.
    pub http_req_body: String,
    /// Whether HTTPS probes check the certificate. Default `true`; unused
    /// until `https` probes are supported.
    pub https_verify_certificate: bool,
    /// Extra headers of HTTP probes, written `"Name: value"`. Default none.
    #[serde(deserialize_with = "helpers::header_lines")]
    pub req_headers: Vec<(HeaderName, String)>,
    /// When a probed endpoint counts as healthy.
    pub healthy: ActiveHealthy,
    /// When a probed endpoint counts as unhealthy.
    pub unhealthy: ActiveUnhealthy,
}

/// What an active probe is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ActiveCheckType {
    /// An HTTP request; healthy statuses decide.
    #[default]
    Http,
    /// A TCP connect.
    Tcp,
    /// A `grpc.health.v1.Health/Check` call. Our addition.
    Grpc,
}

/// When a probed endpoint counts as healthy again.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveHealthy {
    /// Seconds between probes of a healthy endpoint (APISIX: an integer of
    /// at least 1; we also take fractions). Default 1.
    #[serde(deserialize_with = "helpers::pos_secs")]
    pub interval: Duration,
    /// Statuses that count as a success, in `200..=599`. Default `[200, 302]`.
    #[serde(deserialize_with = "helpers::statuses::<_, 200, 599>")]
    pub http_statuses: Vec<u16>,
    /// Consecutive successes that make an endpoint healthy, `1..=254`. Default 2.
    #[serde(deserialize_with = "helpers::int::<_, _, 1, 254>")]
    pub successes: u32,
}

/// When a probed endpoint counts as unhealthy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveUnhealthy {
    /// Seconds between probes of an unhealthy endpoint. Default 1.
    #[serde(deserialize_with = "helpers::pos_secs")]
    pub interval: Duration,
    /// Statuses that count as a failure, in `200..=599`. Default
    /// `[429, 404, 500, 501, 502, 503, 504, 505]`.
    #[serde(deserialize_with = "helpers::statuses::<_, 200, 599>")]
    pub http_statuses: Vec<u16>,
    /// Consecutive HTTP failures that make an endpoint unhealthy, `1..=254`. Default 5.
    #[serde(deserialize_with = "helpers::int::<_, _, 1, 254>")]
    pub http_failures: u32,
    /// Consecutive TCP failures that make an endpoint unhealthy, `1..=254`. Default 2.
    #[serde(deserialize_with = "helpers::int::<_, _, 1, 254>")]
    pub tcp_failures: u32,
    /// Consecutive probe timeouts that make an endpoint unhealthy, `1..=254`. Default 3.
    #[serde(deserialize_with = "helpers::int::<_, _, 1, 254>")]
    pub timeouts: u32,
}

/// Health judged from live traffic, APISIX's `checks.passive`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveCheck {
    /// What is judged. Default `http`.
    pub r#type: PassiveCheckType,
    /// When traffic shows an endpoint healthy.
    pub healthy: PassiveHealthy,
    /// When traffic shows an endpoint unhealthy.
    pub unhealthy: PassiveUnhealthy,
}

/// What passive checks judge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum PassiveCheckType {
    /// Response statuses, connection failures and timeouts.
    #[default]
    Http,
    /// Connection failures and timeouts only.
    Tcp,
}

/// When traffic shows an endpoint healthy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealthy {
    /// Statuses that count as a success, in `200..=599`. Default: 200–208,
    /// 226 and 300–308.
    #[serde(deserialize_with = "helpers::statuses::<_, 200, 599>")]
    pub http_statuses: Vec<u16>,
    /// Consecutive successes that make an endpoint healthy, `0..=254`
    /// (0: never from traffic). Default 5.
    #[serde(deserialize_with = "helpers::int::<_, _, 0, 254>")]
    pub successes: u32,
}

/// When traffic shows an endpoint unhealthy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveUnhealthy {
    /// Statuses that count as a failure, in `200..=599`. Default `[429, 500, 503]`.
    #[serde(deserialize_with = "helpers::statuses::<_, 200, 599>")]
    pub http_statuses: Vec<u16>,
    /// Consecutive HTTP failures that make an endpoint unhealthy, `0..=254`
    /// (0: not counted). Default 5.
    #[serde(deserialize_with = "helpers::int::<_, _, 0, 254>")]
    pub http_failures: u32,
    /// Consecutive TCP failures that make an endpoint unhealthy, `0..=254`. Default 2.
    #[serde(deserialize_with = "helpers::int::<_, _, 0, 254>")]
    pub tcp_failures: u32,
    /// Consecutive timeouts that make an endpoint unhealthy, `0..=254`. Default 7.
    #[serde(deserialize_with = "helpers::int::<_, _, 0, 254>")]
    pub timeouts: u32,
}

// === impl ActiveCheck ===

impl Default for ActiveCheck {
    fn default() -> Self {
        ActiveCheck {
            r#type: ActiveCheckType::Http,
            timeout: Duration::from_secs(1),
            concurrency: 10,
            host: None,
            port: None,
            http_method: Method::GET,
            http_path: "/".to_owned(),
            http_req_body: String::new(),
            https_verify_certificate: true,
            req_headers: Vec::new(),
            healthy: ActiveHealthy::default(),
            unhealthy: ActiveUnhealthy::default(),
        }
    }
}

// === impl ActiveCheckType ===

impl TryFrom<String> for ActiveCheckType {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "http" => Ok(ActiveCheckType::Http),
            "tcp" => Ok(ActiveCheckType::Tcp),
            "grpc" => Ok(ActiveCheckType::Grpc),
            "https" => Err(https_unsupported()),
            _ => Err(format!(
                "unknown check type `{name}`, expected http, tcp or grpc"
            )),
        }
    }
}

// === impl ActiveHealthy ===

impl Default for ActiveHealthy {
    fn default() -> Self {
        ActiveHealthy {
            interval: Duration::from_secs(1),
            http_statuses: vec![200, 302],
            successes: 2,
        }
    }
}

// === impl ActiveUnhealthy ===

impl Default for ActiveUnhealthy {
    fn default() -> Self {
        ActiveUnhealthy {
            interval: Duration::from_secs(1),
            http_statuses: vec![429, 404, 500, 501, 502, 503, 504, 505],
            http_failures: 5,
            tcp_failures: 2,
            timeouts: 3,
        }
    }
}

// === impl PassiveCheckType ===

impl TryFrom<String> for PassiveCheckType {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "http" => Ok(PassiveCheckType::Http),
            "tcp" => Ok(PassiveCheckType::Tcp),
            "https" => Err(https_unsupported()),
            _ => Err(format!("unknown check type `{name}`, expected http or tcp")),
        }
    }
}

// === impl PassiveHealthy ===

impl Default for PassiveHealthy {
    fn default() -> Self {
        let mut http_statuses: Vec<u16> = (200..=208).collect();
        http_statuses.push(226);
        http_statuses.extend(300..=308);
        PassiveHealthy {
            http_statuses,
            successes: 5,
        }
    }
}

// === impl PassiveUnhealthy ===

impl Default for PassiveUnhealthy {
    fn default() -> Self {
        PassiveUnhealthy {
            http_statuses: vec![429, 500, 503],
            http_failures: 5,
            tcp_failures: 2,
            timeouts: 7,
        }
    }
}

fn https_unsupported() -> String {
    "check type `https` is not supported yet: the sidecar has no upstream TLS".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apisix_defaults() {
        let c: Checks = serde_saphyr::from_str("active: {}\npassive: {}\n").expect("parses");
        let a = c.active.as_ref().expect("active");
        assert_eq!(a.r#type, ActiveCheckType::Http);
        assert_eq!((a.timeout, a.concurrency), (Duration::from_secs(1), 10));
        assert_eq!((a.http_method.as_str(), a.http_path.as_str()), ("GET", "/"));
        assert!(
            a.https_verify_certificate && a.req_headers.is_empty() && a.http_req_body.is_empty()
        );
        assert_eq!(a.healthy.http_statuses, vec![200, 302]);
        assert_eq!(
            (a.healthy.interval, a.healthy.successes),
            (Duration::from_secs(1), 2)
        );
        assert_eq!(
            a.unhealthy.http_statuses,
            vec![429, 404, 500, 501, 502, 503, 504, 505]
        );
        let u = &a.unhealthy;
        assert_eq!((u.http_failures, u.tcp_failures, u.timeouts), (5, 2, 3));
        let p = c.passive.expect("passive");
        assert_eq!(p.r#type, PassiveCheckType::Http);
        assert_eq!(p.healthy.http_statuses.len(), 19);
        assert_eq!(p.healthy.successes, 5);
        assert_eq!(p.unhealthy.http_statuses, vec![429, 500, 503]);
        let u = &p.unhealthy;
        assert_eq!((u.http_failures, u.tcp_failures, u.timeouts), (5, 2, 7));
    }

    #[test]
    fn all_active_fields() {
        let yaml = "active:\n  type: grpc\n  timeout: 0.5\n  concurrency: 2\n  host: h\n  port: 9000\n  \
                    http_method: HEAD\n  http_path: /health\n  http_req_body: x\n  \
                    https_verify_certificate: false\n  req_headers: [\"User-Agent: probe\"]\n";
        let c: Checks = serde_saphyr::from_str(yaml).expect("parses");
        let a = c.active.expect("active");
        assert_eq!(a.r#type, ActiveCheckType::Grpc);
        assert_eq!(a.port, Some(9000));
        assert_eq!(a.req_headers[0].1, "probe");
    }

    #[test]
    fn passive_alone_parses() {
        let c: Checks = serde_saphyr::from_str("passive: {}").expect("parses");
        assert_eq!((c.active, c.passive), (None, Some(PassiveCheck::default())));
    }

    #[test]
    fn refusals() {
        for bad in [
            "active: {type: https}",
            "active: {healthy: {successes: 0}}",
            "active: {unhealthy: {http_failures: 255}}",
            "active: {healthy: {http_statuses: [200, 200]}}",
            "active: {healthy: {http_statuses: [100]}}",
            "active: {req_headers: [\"no colon\"]}",
            "active: {}\npassive: {type: https}",
            "active: {}\npassive: {unhealthy: {timeouts: -1}}",
        ] {
            assert!(
                serde_saphyr::from_str::<Checks>(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
