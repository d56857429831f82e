//! The `/v1/health/service/<name>` answer: its JSON shape, and how one
//! entry (node, service, checks) becomes an endpoint.
//!
//! Health: node and service checks both count. A critical check (other than
//! a maintenance one) makes the endpoint unhealthy; maintenance mode makes it
//! draining; a warning check makes it healthy or draining as the watch asks;
//! otherwise it is healthy.

use std::collections::BTreeMap;

use discovery_core::{Endpoint, Health};
use serde::Deserialize;

use crate::args::{AddressChoice, WarningAs};

/// One entry of the answer: an instance on its node, with its checks.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Entry {
    node: Node,
    service: Service,
    #[serde(default, deserialize_with = "null_default")]
    checks: Vec<Check>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Node {
    node: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    datacenter: String,
    #[serde(default, deserialize_with = "null_default")]
    tagged_addresses: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    meta: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Service {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default, deserialize_with = "null_default")]
    tags: Vec<String>,
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u32,
    #[serde(default, deserialize_with = "null_default")]
    tagged_addresses: BTreeMap<String, TaggedAddress>,
    #[serde(default, deserialize_with = "null_default")]
    meta: BTreeMap<String, String>,
    #[serde(default)]
    weights: Option<Weights>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TaggedAddress {
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Weights {
    #[serde(default)]
    passing: i64,
    #[serde(default)]
    warning: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Check {
    #[serde(rename = "CheckID", default)]
    check_id: String,
    #[serde(default)]
    status: String,
}

/// How entries become endpoints, from the watch's arguments.
#[derive(Clone, Debug, Default)]
pub(crate) struct Mapping {
    /// What a warning check makes of an endpoint.
    pub(crate) warning: WarningAs,
    /// Which address an endpoint gets.
    pub(crate) address: AddressChoice,
    /// The node meta key holding the zone; the datacenter when absent.
    pub(crate) zone_key: Option<String>,
}

/// The worst state of an entry's checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Worst {
    Passing,
    Warning,
    Maintenance,
    Critical,
}

/// Parses a whole answer.
pub(crate) fn parse(body: &[u8]) -> Result<Vec<Entry>, serde_json::Error> {
    serde_json::from_slice(body)
}

// === impl Mapping ===

impl Mapping {
    /// The endpoint an entry stands for.
    pub(crate) fn endpoint(&self, e: &Entry) -> Endpoint {
        let worst = worst(&e.checks);
        let health = match worst {
            Worst::Passing => Health::Healthy,
            Worst::Warning => match self.warning {
                WarningAs::Healthy => Health::Healthy,
                WarningAs::Draining => Health::Draining,
            },
            Worst::Maintenance => Health::Draining,
            Worst::Critical => Health::Unhealthy,
        };
        let weight = e.service.weights.as_ref().map(|w| match worst {
            Worst::Warning => w.warning,
            _ => w.passing,
        });
        let (address, port) = self.address_of(e);
        let mut metadata = e.service.meta.clone();
        for (k, v) in &e.node.meta {
            metadata.insert(format!("node.{k}"), v.clone());
        }
        if !e.service.tags.is_empty() {
            metadata.insert("tags".into(), e.service.tags.join(","));
        }
        let zone = self
            .zone_key
            .as_ref()
            .and_then(|k| e.node.meta.get(k))
            .filter(|z| !z.is_empty())
            .unwrap_or(&e.node.datacenter)
            .clone();
        Endpoint {
            id: format!("{}/{}", e.node.node, e.service.id),
            address,
            port,
            weight,
            health,
            zone,
            metadata,
        }
    }

    fn address_of(&self, e: &Entry) -> (String, u32) {
        let default = || {
            let a = if e.service.address.is_empty() {
                &e.node.address
            } else {
                &e.service.address
            };
            (a.clone(), e.service.port)
        };
        match self.address {
            AddressChoice::Service => default(),
            AddressChoice::Tagged(tag) => {
                if let Some(t) = e.service.tagged_addresses.get(tag)
                    && !t.address.is_empty()
                {
                    let port = if t.port == 0 { e.service.port } else { t.port };
                    return (t.address.clone(), port);
                }
                match e.node.tagged_addresses.get(tag) {
                    Some(a) if !a.is_empty() => (a.clone(), e.service.port),
                    _ => default(),
                }
            }
        }
    }
}

fn worst(checks: &[Check]) -> Worst {
    checks
        .iter()
        .map(|c| match c.status.as_str() {
            "passing" => Worst::Passing,
            "warning" => Worst::Warning,
            "critical" if is_maintenance(&c.check_id) => Worst::Maintenance,
            // "critical", and any status this adapter does not know.
            _ => Worst::Critical,
        })
        .max()
        .unwrap_or(Worst::Passing)
}

/// Consul's checks for node and service maintenance mode.
fn is_maintenance(check_id: &str) -> bool {
    check_id == "_node_maintenance" || check_id.starts_with("_service_maintenance:")
}

/// Reads `null` as the type's default (Consul writes `null` for empty maps
/// and lists in places).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real answer of consul 1.8.7: `web1` passing with weights 3/1 and
    /// tags; `web2` without a service address, its TTL check warning and
    /// the service in maintenance mode.
    const REAL: &[u8] = include_bytes!("testdata/health_service_web.json");

    fn check(id: &str, status: &str) -> Check {
        Check {
            check_id: id.into(),
            status: status.into(),
        }
    }

    #[test]
    fn a_real_answer_maps_to_endpoints() {
        let entries = parse(REAL).unwrap();
        let m = Mapping {
            zone_key: Some("zone".into()),
            ..Mapping::default()
        };
        let eps: Vec<Endpoint> = entries.iter().map(|e| m.endpoint(e)).collect();
        assert_eq!(eps.len(), 2);
        let web1 = &eps[0];
        assert_eq!(web1.id, "n1/web1");
        assert_eq!((web1.address.as_str(), web1.port), ("127.0.0.1", 8080));
        assert_eq!(web1.weight, Some(3));
        assert_eq!(web1.health, Health::Healthy);
        assert_eq!(web1.zone, "z1");
        assert_eq!(web1.metadata["version"], "1");
        assert_eq!(web1.metadata["tags"], "v1,x");
        assert_eq!(web1.metadata["node.zone"], "z1");
        let web2 = &eps[1];
        assert_eq!(web2.id, "n1/web2");
        // No service address: the node's.
        assert_eq!((web2.address.as_str(), web2.port), ("127.0.0.1", 8081));
        assert_eq!(web2.health, Health::Draining, "maintenance mode drains");
        assert!(!web2.metadata.contains_key("tags"));
        // Without a zone key, the datacenter is the zone.
        assert_eq!(Mapping::default().endpoint(&entries[0]).zone, "dc1");
        // Tagged addresses: the service's, with its port.
        let wan = Mapping {
            address: AddressChoice::Tagged("wan_ipv4"),
            ..Mapping::default()
        };
        assert_eq!(wan.endpoint(&entries[0]).address, "127.0.0.1");
        let lan = Mapping {
            address: AddressChoice::Tagged("lan"),
            ..Mapping::default()
        };
        assert_eq!(lan.endpoint(&entries[1]).port, 8081);
    }

    #[test]
    fn node_and_service_checks_both_count() {
        let cases = [
            (vec![], Worst::Passing),
            (
                vec![check("serfHealth", "passing"), check("a", "passing")],
                Worst::Passing,
            ),
            (
                vec![check("serfHealth", "passing"), check("a", "warning")],
                Worst::Warning,
            ),
            (
                vec![check("serfHealth", "critical"), check("a", "passing")],
                Worst::Critical,
            ),
            (
                vec![check("serfHealth", "warning"), check("a", "critical")],
                Worst::Critical,
            ),
            (
                vec![check("_node_maintenance", "critical")],
                Worst::Maintenance,
            ),
            (
                vec![
                    check("_service_maintenance:web1", "critical"),
                    check("a", "critical"),
                ],
                Worst::Critical,
            ),
            (vec![check("a", "unheard-of")], Worst::Critical),
        ];
        for (checks, want) in cases {
            assert_eq!(worst(&checks), want, "{checks:?}");
        }
    }

    #[test]
    fn warning_maps_by_option_and_takes_the_warning_weight() {
        let mut entries = parse(REAL).unwrap();
        let e = &mut entries[0];
        e.checks = vec![check("serfHealth", "passing"), check("web1-ttl", "warning")];
        let healthy = Mapping::default().endpoint(e);
        assert_eq!((healthy.health, healthy.weight), (Health::Healthy, Some(1)));
        let draining = Mapping {
            warning: WarningAs::Draining,
            ..Mapping::default()
        }
        .endpoint(e);
        assert_eq!(draining.health, Health::Draining);
        e.checks = vec![check("web1-ttl", "critical")];
        let down = Mapping::default().endpoint(e);
        assert_eq!((down.health, down.weight), (Health::Unhealthy, Some(3)));
    }

    #[test]
    fn malformed_answers_are_errors_and_nulls_are_empty() {
        for bad in [
            &b"{"[..],
            b"[{\"Node\": 1}]",
            b"{\"a\": []}",
            b"[{\"Service\": {}}]",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let e = parse(
            br#"[{"Node": {"Node": "n", "Address": "10.0.0.1", "Meta": null},
                 "Service": {"ID": "s", "Port": 80, "Tags": null, "Meta": null, "Weights": null},
                 "Checks": []}]"#,
        )
        .unwrap();
        let ep = Mapping::default().endpoint(&e[0]);
        assert_eq!((ep.address.as_str(), ep.weight), ("10.0.0.1", None));
        assert!(ep.metadata.is_empty());
    }
}
