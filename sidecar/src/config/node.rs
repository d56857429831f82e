//! Where an upstream's endpoints come from: static nodes, written either way
//! APISIX allows, and discovery sources.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::de as helpers;
use super::de::U32_MAX;

/// A static endpoint of an upstream, APISIX's node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    /// An IP address or a host name (IPv6 without brackets).
    pub host: String,
    /// The port, `1..=65535`. When left out: 80 (schemes `http`, `grpc`), as
    /// in APISIX.
    pub port: u16,
    /// Relative share of requests; `0` sends none. Default 1 (APISIX
    /// requires it in the list form).
    pub weight: u32,
    /// Nodes of a higher priority take all traffic; lower ones are used only
    /// when no higher one is available. Default 0, as in APISIX.
    pub priority: i32,
}

/// A discovery source: one service watched through one adapter.
///
/// Written APISIX style on the upstream itself (`discovery_type`,
/// `service_name`, `discovery_args`: one source of priority 0), or as our
/// `discovery` list, which allows several.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The adapter to ask: a key of the config's `adapters`. Required.
    pub discovery_type: String,
    /// The registry's name for the service. Required.
    pub service_name: String,
    /// Registry-specific arguments passed to the adapter as they are, such as
    /// `namespace_id` or `group_name` for Nacos. Default: none.
    #[serde(default)]
    pub discovery_args: BTreeMap<String, String>,
    /// Like a node's priority, for every endpoint of this source: a migration
    /// can list the new registry at a lower priority than the old one.
    /// Default 0. Our addition.
    #[serde(default)]
    pub priority: i32,
}

/// The `nodes` of an upstream as written: a list of node objects, or a map
/// of `"host:port"` to weight.
#[derive(Debug, Default)]
pub(super) struct NodesSpec(pub(super) Vec<NodeSpec>);

/// A node as written; its port may be left for the scheme to decide.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeSpec {
    host: String,
    #[serde(default, deserialize_with = "helpers::opt_int::<_, _, 1, 65535>")]
    port: Option<u16>,
    #[serde(
        default = "default_weight",
        deserialize_with = "helpers::int::<_, _, 0, U32_MAX>"
    )]
    weight: u32,
    #[serde(default)]
    priority: i32,
}

/// A weight in the map form of `nodes`.
struct Weight(u32);

fn default_weight() -> u32 {
    1
}

// === impl NodeSpec ===

impl NodeSpec {
    /// The node, with `default_port` when none was written.
    pub(super) fn resolve(self, default_port: u16) -> Node {
        Node {
            host: self.host,
            port: self.port.unwrap_or(default_port),
            weight: self.weight,
            priority: self.priority,
        }
    }
}

// === impl NodesSpec ===

impl<'de> Deserialize<'de> for NodesSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodesVisitor)
    }
}

struct NodesVisitor;

impl<'de> Visitor<'de> for NodesVisitor {
    type Value = NodesSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of {host, port, weight, priority} or a map of \"host:port\" to weight")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodesSpec, A::Error> {
        let mut nodes = Vec::new();
        while let Some(node) = seq.next_element()? {
            nodes.push(node);
        }
        Ok(NodesSpec(nodes))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodesSpec, A::Error> {
        let mut nodes = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let (host, port) = split_host_port(&key).map_err(de::Error::custom)?;
            let Weight(weight) = map.next_value()?;
            nodes.push(NodeSpec {
                host,
                port,
                weight,
                priority: 0,
            });
        }
        Ok(NodesSpec(nodes))
    }
}

// === impl Weight ===

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        helpers::int::<D, u32, 0, U32_MAX>(d).map(Weight)
    }
}

/// Splits `host:port`, `[v6]:port`, `host` or a bare IPv6 address.
fn split_host_port(key: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = key.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("`{key}` has no closing `]`"));
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("`{key}` is not `[address]:port`")),
            },
        }
    } else {
        match key.rsplit_once(':') {
            // More than one colon without brackets: an IPv6 address, no port.
            Some((host, _)) if host.contains(':') => (key, None),
            Some((host, port)) => (host, Some(port)),
            None => (key, None),
        }
    };
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => return Err(format!("the port in `{key}` is not in 1..=65535")),
        },
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(yaml: &str) -> Result<Vec<Node>, serde_saphyr::Error> {
        let spec: NodesSpec = serde_saphyr::from_str(yaml)?;
        Ok(spec.0.into_iter().map(|n| n.resolve(80)).collect())
    }

    fn node(host: &str, port: u16, weight: u32, priority: i32) -> Node {
        let host = host.to_owned();
        Node {
            host,
            port,
            weight,
            priority,
        }
    }

    #[test]
    fn map_form() {
        let got =
            nodes("\"127.0.0.1:5432\": 1\n\"[::1]:8080\": 0\nexample.com: 3\n").expect("parses");
        assert_eq!(
            got,
            vec![
                node("127.0.0.1", 5432, 1, 0),
                node("::1", 8080, 0, 0),
                node("example.com", 80, 3, 0)
            ]
        );
    }

    #[test]
    fn list_form() {
        let yaml = "- {host: 10.0.0.1, port: 8080, weight: 5, priority: -1}\n- host: web\n";
        let got = nodes(yaml).expect("parses");
        assert_eq!(
            got,
            vec![node("10.0.0.1", 8080, 5, -1), node("web", 80, 1, 0)]
        );
    }

    #[test]
    fn bad_nodes() {
        for bad in [
            "\"a:0\": 1",
            "\"a:70000\": 1",
            "\"a:x\": 1",
            "\"[::1\": 1",
            "a: -1",
            "- {host: a, port: 0}",
            "- {host: a, port: 65536}",
            "- {host: a, weight: -2}",
            "- {host: a, weight: 5000000000}",
            "- {host: a, wieght: 2}",
            "- {port: 80}",
            "web",
        ] {
            assert!(nodes(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn source_defaults() {
        let s: Source =
            serde_saphyr::from_str("discovery_type: consul\nservice_name: web").expect("parses");
        assert_eq!((s.priority, s.discovery_args.len()), (0, 0));
    }
}
