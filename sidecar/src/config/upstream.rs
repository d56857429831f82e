//! Upstreams: a set of endpoints and how to balance, retry and time out
//! requests to them.
//!
//! The fields are APISIX's upstream fields with APISIX's defaults, so an
//! APISIX upstream carries over with few changes. Our additions:
//! `protocol`, `retry_on_status`, the `discovery` list and `slow_start`.
//! Timeouts and the keep-alive pool are in `connection.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::checks::Checks;
use super::connection::{KeepalivePool, Timeouts};
use super::de::{self as helpers, U32_MAX};
use super::node::{Node, NodesSpec, Source};

/// The port of a node written without one, for every supported scheme
/// (APISIX uses 443 for `https`/`grpcs`, which we do not support yet).
pub const DEFAULT_NODE_PORT: u16 = 80;

/// A set of endpoints, from static nodes and discovery sources, and how to
/// send requests to them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "UpstreamSpec")]
pub struct Upstream {
    /// Unique name; routes and TCP listeners refer to it. Required.
    pub name: String,
    /// Free text for people; unused by the sidecar. APISIX `desc`.
    pub desc: Option<String>,
    /// The balancer. Default `roundrobin`.
    pub r#type: BalancerType,
    /// What `chash` hashes on. Default `vars`.
    pub hash_on: HashOn,
    /// For `chash`, the name to hash, per `hash_on`: a variable for `vars`
    /// (`remote_addr`, `uri`, `request_uri`, `host`, `arg_<name>`,
    /// `http_<name>`, `cookie_<name>`), a header or cookie name, or a
    /// template such as `$host$request_uri` for `vars_combinations`.
    /// Default `remote_addr` for `vars`, none otherwise.
    pub key: String,
    /// Static endpoints. Default none.
    pub nodes: Vec<Node>,
    /// Discovery sources. Default none. An upstream needs nodes, a source or both.
    pub discovery: Vec<Source>,
    /// The protocol family spoken to the endpoints. Default `http`.
    pub scheme: Scheme,
    /// The HTTP version spoken to the endpoints. Default `http1` for scheme
    /// `http`, `h2c` for `grpc`. Our addition.
    pub protocol: UpstreamProtocol,
    /// How many times a failed request is retried on another endpoint.
    /// `None` (the default) means as in APISIX: the number of available
    /// endpoints minus one. `Some(0)` turns retries off.
    pub retries: Option<u32>,
    /// How long retries may go on, from the first attempt. Default 0: no limit.
    pub retry_timeout: Duration,
    /// Response statuses that count as a failure to retry, for idempotent
    /// methods, in `400..=599`. Default none: only connection errors and
    /// timeouts are retried. Our addition.
    pub retry_on_status: Vec<u16>,
    /// Connect, send and read timeouts.
    pub timeout: Timeouts,
    /// What `Host` header requests carry upstream. Default `pass`.
    pub pass_host: PassHost,
    /// The `Host` header for `pass_host: rewrite` (ignored otherwise).
    pub upstream_host: Option<String>,
    /// Idle connections kept to the endpoints.
    pub keepalive_pool: KeepalivePool,
    /// Active and passive health checks. Default none: endpoints are healthy
    /// unless the registry says otherwise.
    pub checks: Option<Checks>,
    /// A new endpoint's weight ramps up from near zero over this window.
    /// Default none: full weight at once. Our addition.
    pub slow_start: Option<Duration>,
}

/// The balancing algorithm, APISIX's upstream `type`.
pub use crate::balance::BalancerType;

/// What consistent hashing hashes on, APISIX's `hash_on` (`consumer` is
/// refused: the sidecar has no consumers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum HashOn {
    /// A request variable named by `key`.
    #[default]
    Vars,
    /// The request header named by `key`.
    Header,
    /// The cookie named by `key`.
    Cookie,
    /// The template in `key`, variables written `$name`.
    VarsCombinations,
}

/// The protocol family spoken to an upstream's endpoints, APISIX's `scheme`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Scheme {
    /// Plain-text HTTP.
    #[default]
    Http,
    /// Plain-text gRPC (HTTP/2).
    Grpc,
}

/// The HTTP version spoken to an upstream's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 over plain text with prior knowledge.
    H2c,
    /// The version of the downstream request.
    Auto,
}

/// What `Host` header a request carries upstream, APISIX's `pass_host`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PassHost {
    /// The client's `Host`, unchanged.
    #[default]
    Pass,
    /// The chosen endpoint's `host:port`.
    Node,
    /// `upstream_host`.
    Rewrite,
}

/// An upstream as written, before defaults that depend on other fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamSpec {
    name: String,
    #[serde(default)]
    desc: Option<String>,
    #[serde(default)]
    r#type: BalancerType,
    #[serde(default)]
    hash_on: HashOn,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    nodes: Option<NodesSpec>,
    #[serde(default)]
    discovery_type: Option<String>,
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    discovery_args: Option<BTreeMap<String, String>>,
    #[serde(default)]
    discovery: Option<Vec<Source>>,
    #[serde(default)]
    scheme: Scheme,
    #[serde(default)]
    protocol: Option<UpstreamProtocol>,
    #[serde(default, deserialize_with = "helpers::opt_int::<_, _, 0, U32_MAX>")]
    retries: Option<u32>,
    #[serde(default, deserialize_with = "helpers::secs")]
    retry_timeout: Duration,
    #[serde(default, deserialize_with = "helpers::statuses::<_, 400, 599>")]
    retry_on_status: Vec<u16>,
    #[serde(default)]
    timeout: Timeouts,
    #[serde(default)]
    pass_host: PassHost,
    #[serde(default)]
    upstream_host: Option<String>,
    #[serde(default)]
    keepalive_pool: KeepalivePool,
    #[serde(default)]
    checks: Option<Checks>,
    #[serde(default, deserialize_with = "helpers::opt_pos_secs")]
    slow_start: Option<Duration>,
}

// === impl Upstream ===

impl TryFrom<UpstreamSpec> for Upstream {
    type Error = String;

    fn try_from(spec: UpstreamSpec) -> Result<Self, String> {
        let apisix_source = spec.discovery_type.is_some()
            || spec.service_name.is_some()
            || spec.discovery_args.is_some();
        let discovery = match spec.discovery {
            Some(_) if apisix_source => {
                return Err(
                    "give `discovery_type`/`service_name`/`discovery_args` or the \
                            `discovery` list, not both"
                        .into(),
                );
            }
            Some(list) => list,
            // Missing parts stay empty for validation to name.
            None if apisix_source => vec![Source {
                discovery_type: spec.discovery_type.unwrap_or_default(),
                service_name: spec.service_name.unwrap_or_default(),
                discovery_args: spec.discovery_args.unwrap_or_default(),
                priority: 0,
            }],
            None => Vec::new(),
        };
        let key = match (spec.key, spec.hash_on) {
            (Some(key), _) => key,
            (None, HashOn::Vars) => "remote_addr".to_owned(),
            (None, _) => String::new(),
        };
        let nodes = spec.nodes.unwrap_or_default().0;
        Ok(Upstream {
            name: spec.name,
            desc: spec.desc,
            r#type: spec.r#type,
            hash_on: spec.hash_on,
            key,
            nodes: nodes
                .into_iter()
                .map(|n| n.resolve(DEFAULT_NODE_PORT))
                .collect(),
            discovery,
            scheme: spec.scheme,
            protocol: spec.protocol.unwrap_or(match spec.scheme {
                Scheme::Http => UpstreamProtocol::Http1,
                Scheme::Grpc => UpstreamProtocol::H2c,
            }),
            retries: spec.retries,
            retry_timeout: spec.retry_timeout,
            retry_on_status: spec.retry_on_status,
            timeout: spec.timeout,
            pass_host: spec.pass_host,
            upstream_host: spec.upstream_host,
            keepalive_pool: spec.keepalive_pool,
            checks: spec.checks,
            slow_start: spec.slow_start,
        })
    }
}

// === impl HashOn ===

impl TryFrom<String> for HashOn {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "vars" => Ok(HashOn::Vars),
            "header" => Ok(HashOn::Header),
            "cookie" => Ok(HashOn::Cookie),
            "vars_combinations" => Ok(HashOn::VarsCombinations),
            "consumer" => Err("`consumer` is not supported: the sidecar has no consumers".into()),
            _ => Err(format!(
                "unknown hash_on `{name}`, expected one of vars, header, cookie, vars_combinations"
            )),
        }
    }
}

// === impl Scheme ===

impl TryFrom<String> for Scheme {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "http" => Ok(Scheme::Http),
            "grpc" => Ok(Scheme::Grpc),
            "https" | "grpcs" => Err(format!(
                "scheme `{name}` is not supported yet: the sidecar has no upstream TLS"
            )),
            "tcp" | "tls" | "udp" => Err(format!(
                "scheme `{name}` is an APISIX stream scheme; for raw TCP, use a listener with \
                 `protocol: tcp`"
            )),
            _ => Err(format!("unknown scheme `{name}`, expected http or grpc")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(yaml: &str) -> Result<Upstream, serde_saphyr::Error> {
        serde_saphyr::from_str(yaml)
    }

    #[test]
    fn apisix_defaults() {
        let u = upstream("name: web\nnodes: {\"a:1\": 1}\n").expect("parses");
        assert_eq!(u.r#type, BalancerType::RoundRobin);
        assert_eq!(u.hash_on, HashOn::Vars);
        assert_eq!(u.key, "remote_addr");
        assert_eq!(u.scheme, Scheme::Http);
        assert_eq!(u.protocol, UpstreamProtocol::Http1);
        assert_eq!(u.retries, None);
        assert_eq!(u.retry_timeout, Duration::ZERO);
        assert!(u.retry_on_status.is_empty());
        assert_eq!(u.timeout, Timeouts::default());
        assert_eq!(u.timeout.read, Duration::from_secs(6));
        assert_eq!(u.pass_host, PassHost::Pass);
        assert_eq!(u.keepalive_pool.size, 320);
        assert_eq!(u.keepalive_pool.idle_timeout, Duration::from_secs(60));
        assert_eq!(u.keepalive_pool.requests, 1000);
        assert_eq!((u.checks, u.slow_start), (None, None));
        assert!(u.discovery.is_empty());
    }

    #[test]
    fn grpc_defaults_to_h2c() {
        let u = upstream("name: g\nscheme: grpc\nnodes: {\"a:1\": 1}\n").expect("parses");
        assert_eq!(u.protocol, UpstreamProtocol::H2c);
    }

    #[test]
    fn apisix_discovery_is_one_source() {
        let u = upstream(
            "name: w\ndiscovery_type: nacos\nservice_name: web\ndiscovery_args: {group_name: g}\n",
        )
        .expect("parses");
        assert_eq!(u.discovery.len(), 1);
        assert_eq!(u.discovery[0].discovery_type, "nacos");
        assert_eq!(
            u.discovery[0]
                .discovery_args
                .get("group_name")
                .map(String::as_str),
            Some("g")
        );
        assert!(upstream("name: w\nservice_name: a\ndiscovery: []\n").is_err());
    }

    #[test]
    fn refused_schemes_and_hash_on() {
        for bad in [
            "scheme: https",
            "scheme: grpcs",
            "scheme: tcp",
            "hash_on: consumer",
            "type: random",
        ] {
            let err = upstream(&format!("name: w\n{bad}\n")).expect_err(bad);
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn fractional_and_bad_seconds() {
        let u = upstream("name: w\ntimeout: {connect: 0.5}\nretry_timeout: 1.5\n").expect("parses");
        assert_eq!(u.timeout.connect, Duration::from_millis(500));
        assert_eq!(u.timeout.send, Duration::from_secs(6));
        assert_eq!(u.retry_timeout, Duration::from_millis(1500));
        for bad in [
            "timeout: {read: 0}",
            "timeout: {read: -1}",
            "timeout: {read: 5s}",
            "retry_timeout: -1",
        ] {
            assert!(upstream(&format!("name: w\n{bad}\n")).is_err(), "{bad}");
        }
    }
}
